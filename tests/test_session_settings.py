"""SessionSettings and the one shared-sampling rule: the first therapist's spec sampling for everyone, and only
the fields a caller set explicitly on top (a pydantic default never overrides a spec value)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cbtcompare.models.base import ModelSpec, Sampling
from cbtcompare.simulate import SessionSettings, shared_sampling

REPO = Path(__file__).resolve().parent.parent
PAIR = ["smollm2-cbt-prompted", "smollm2-instruct"]


def cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "cbtcompare", *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
        env=dict(os.environ),
    )


def spec(name: str = "a", **sampling: object) -> ModelSpec:
    return ModelSpec(name=name, backend="llamacpp", weights="x.gguf", sampling=Sampling(**sampling))


def test_a_tab_built_sampling_keeps_the_spec_repeat_penalty(registry):
    """The Compare tab builds Sampling(temperature, top_p, max_tokens); its repeat_penalty default (1.0) must
    not replace the spec's 1.1, which `pair` uses."""
    specs = [registry.spec(name) for name in PAIR]
    spec_penalty = specs[0].sampling.repeat_penalty
    assert spec_penalty != Sampling().repeat_penalty, "the shipped spec no longer differs from the default"
    from_tab = Sampling(temperature=0.3, top_p=0.9, max_tokens=40)
    resolved = shared_sampling(specs, from_tab)
    assert (resolved.temperature, resolved.top_p, resolved.max_tokens) == (0.3, 0.9, 40)
    assert resolved.repeat_penalty == spec_penalty
    # The first therapist's sampling wins for everyone, whatever the second's spec says.
    other = spec("b", repeat_penalty=1.3, temperature=0.1)
    assert shared_sampling([specs[0], other], None) == specs[0].sampling
    assert shared_sampling([other, specs[0]], None).repeat_penalty == 1.3


@pytest.mark.slow
def test_pair_cli_and_a_compare_session_resolve_the_same_sampling(registry):
    from cbtcompare.compare import CompareSession

    result = cli("pair", "--models", ",".join(PAIR), "--message", "I feel stuck.", "--max-tokens", "8",
                 "--temperature", "0.3", "--json")  # fmt: skip
    assert result.returncode == 0, result.stderr
    from_cli = Sampling.model_validate(json.loads(result.stdout)["sampling"])
    tab = shared_sampling([registry.spec(n) for n in PAIR], Sampling(temperature=0.3, max_tokens=8))
    session = CompareSession(registry, PAIR, sampling=tab, seed=0)
    assert session.sampling == from_cli
    assert from_cli.repeat_penalty == registry.spec(PAIR[0]).sampling.repeat_penalty


def test_a_merged_sampling_counts_its_merged_fields_as_explicit():
    base = spec(repeat_penalty=1.2, max_tokens=200)
    resolved = shared_sampling([base], Sampling().merged(max_tokens=30))
    assert resolved.max_tokens == 30 and resolved.repeat_penalty == 1.2
    assert shared_sampling([base], {"max_tokens": None, "temperature": 0.2}).max_tokens == 200


def test_session_settings_coerce_and_resolve_overrides():
    settings_ = SessionSettings(max_turns="3", therapist_sampling={"max_tokens": "12"}, patient_sampling=None)
    assert settings_.max_turns == 3 and settings_.therapist_sampling == {"max_tokens": 12}
    assert settings_.patient_sampling == {}
    first, second = spec("a", repeat_penalty=1.1), spec("b", repeat_penalty=1.4)
    assert settings_.therapist_sampling_for([first, second]) == first.sampling.merged(max_tokens=12)
    assert SessionSettings(patient_sampling={"temperature": 0.1}).patient_sampling_for(second).repeat_penalty == 1.4


def test_bad_overrides_name_the_field_and_the_value():
    with pytest.raises(ValueError, match=r"therapist_sampling: max_tokens: .*greater than or equal to 1.*\(got -1\)"):
        SessionSettings(therapist_sampling={"max_tokens": -1})
    with pytest.raises(ValueError, match=r"therapist sampling: topk: extra inputs are not permitted"):
        shared_sampling([spec()], {"topk": 5})
    with pytest.raises(ValueError, match="at least one therapist spec"):
        shared_sampling([], None)
    with pytest.raises(ValueError, match="mapping of sampling fields"):
        SessionSettings(patient_sampling=["max_tokens", 3])


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True) | st.text(),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3),
    max_leaves=6,
)
keys = st.sampled_from(sorted(Sampling.model_fields)) | st.text(max_size=30)


@settings(max_examples=200, deadline=None)
@given(st.dictionaries(keys, json_values, max_size=6))
def test_arbitrary_overrides_give_a_sampling_or_an_error_naming_a_field(overrides):
    base = spec(repeat_penalty=1.1, max_tokens=200)
    try:
        resolved = shared_sampling([base], overrides)
    except ValueError as exc:
        message = str(exc)
        assert message.startswith("therapist sampling: ")
        named = [key for key, value in overrides.items() if value is not None]
        assert any(f"sampling: {key}" in message for key in named), message
        return
    for name in Sampling.model_fields:
        given_value = overrides.get(name)
        if given_value is None:
            assert getattr(resolved, name) == getattr(base.sampling, name)


settings_fields = st.sampled_from(sorted(SessionSettings.model_fields)) | st.text(max_size=20)


@settings(max_examples=150, deadline=None)
@given(st.dictionaries(settings_fields, json_values | st.dictionaries(keys, json_values, max_size=3), max_size=6))
def test_arbitrary_settings_validate_or_name_what_to_fix(data):
    try:
        resolved = SessionSettings.model_validate(data)
    except ValueError as exc:  # pydantic's ValidationError is a ValueError
        assert any(name in str(exc) for name in data), str(exc)
        return
    assert 1 <= resolved.max_turns <= 200
    # Whatever was accepted resolves to a valid Sampling on top of any spec.
    assert isinstance(resolved.therapist_sampling_for([spec()]), Sampling)
    assert isinstance(resolved.patient_sampling_for(spec()), Sampling)
