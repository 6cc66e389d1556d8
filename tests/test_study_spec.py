"""Study files: the shipped ones load, errors name the file, the entry and the field, and no input crashes
the loader; `study plan` names what is missing for the paper's study without downloading anything."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cbtcompare.study import StudyFileInvalid, load_study, parse_study

REPO = Path(__file__).resolve().parent.parent
SMOKE = REPO / "studies" / "smoke.yaml"
PAPER = REPO / "studies" / "paper-2412.00251.yaml"


def smoke_data() -> dict:
    return yaml.safe_load(SMOKE.read_text(encoding="utf-8"))


def test_the_shipped_studies_load_with_an_explicit_base_tuned_mapping():
    smoke = load_study(SMOKE)
    assert smoke.sha256 == hashlib.sha256(SMOKE.read_bytes()).hexdigest()
    mapping = smoke.spec.arm_of()
    assert {variant for _, variant in mapping.values()} == {"base", "tuned", "prompted"}
    assert len(smoke.spec.profiles.references(smoke.folder)) == 2
    paper = load_study(PAPER)
    families = {family for family, _ in paper.spec.arm_of().values()}
    assert len(families) == 3 and len(paper.spec.therapist_names()) == 6
    assert paper.spec.judging.config.temperature == 0.1 and paper.spec.judging.mode == "both"
    assert all(isinstance(model, object) for model in paper.spec.models)  # inline model specs validated


def test_an_error_names_the_file_the_entry_and_the_field(tmp_path: Path):
    data = smoke_data()
    data["arms"].append({"family": "qwen", "base": "q-base", "tuned": ["not", "a", "name"]})
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(data), encoding="utf-8")
    with pytest.raises(StudyFileInvalid) as caught:
        load_study(path)
    message = str(caught.value)
    assert str(path) in message and "arms[1] (family 'qwen').tuned" in message

    data = smoke_data()
    data["judging"]["config"]["temprature"] = 0.2
    data["profiles"] = {}
    with pytest.raises(StudyFileInvalid) as caught:
        parse_study(yaml.safe_dump(data), "typo.yaml")
    message = str(caught.value)
    assert "typo.yaml" in message and "judging.config.temprature" in message and "profiles" in message


def test_arms_must_not_share_a_model_or_a_family():
    data = smoke_data()
    data["arms"].append({"family": "again", "base": "smollm2-instruct"})
    with pytest.raises(StudyFileInvalid, match="smollm2-instruct"):
        parse_study(yaml.safe_dump(data))
    data = smoke_data()
    data["judging"]["pairs"] = [["tuned", "tuned"]]
    with pytest.raises(StudyFileInvalid, match=r"judging\.pairs"):
        parse_study(yaml.safe_dump(data))


AWKWARD = st.sampled_from(
    ["\u2028", "\u2029", "\u0085", "\x00", "\t", ": ", "- ", "[", "]", "{", "}", "'", '"', "\\", "&a", "*a",
     "!!python/object", "<|im_start|>",
     "name: x\n", "arms:\n", "  - family: f\n", "    base: b\n", "\ufeff", "%YAML 1.1\n", "\U0001f600"]
)  # fmt: skip


@settings(deadline=None, max_examples=80, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.one_of(st.text(max_size=20), AWKWARD), max_size=30).map("".join))
def test_any_text_is_a_study_or_a_typed_error(text: str):
    try:
        study = parse_study(text, "fuzz.yaml")
    except StudyFileInvalid as exc:
        assert str(exc).startswith("fuzz.yaml: ")
    else:
        assert study.spec.arms


@settings(deadline=None, max_examples=25)
@given(
    field=st.sampled_from(["name", "turns", "sessions", "seed", "arms", "patient", "judging", "profiles"]),
    value=st.recursive(
        st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=True), st.text(max_size=30)),
        lambda inner: st.one_of(st.lists(inner, max_size=3), st.dictionaries(st.text(max_size=8), inner, max_size=3)),
        max_leaves=12,
    ),
)
def test_any_value_in_any_field_is_accepted_or_named(field: str, value: object):
    data = smoke_data()
    data[field] = value
    try:
        parse_study(yaml.safe_dump(data, allow_unicode=True), "f.yaml")
    except StudyFileInvalid as exc:
        assert field in str(exc) or "YAML" in str(exc)


def test_deeply_nested_or_huge_input_is_refused_with_a_reason():
    with pytest.raises(StudyFileInvalid, match="nested too deeply|not valid YAML"):
        parse_study("[" * 50_000 + "]" * 50_000, "deep.yaml")
    with pytest.raises(StudyFileInvalid, match="at most"):
        parse_study("a" * 2_000_000, "huge.yaml")


def run_cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "cbtcompare", *args], cwd=REPO, capture_output=True, text=True, timeout=300,
        env={**os.environ, **(env or {})},
    )  # fmt: skip


def test_study_plan_for_the_paper_names_what_is_missing_and_downloads_nothing(tmp_path: Path):
    hub = tmp_path / "hf-home"
    env = {"HF_HOME": str(hub), "HF_HUB_OFFLINE": "0", "DEEPSEEK_API_KEY": "", "GEMINI_API_KEY": ""}
    out = tmp_path / "paper-out"
    result = run_cli("study", "plan", str(PAPER), "--out", str(out), "--json", env=env)
    assert result.returncode == 0, result.stderr
    plan = json.loads(result.stdout)
    assert plan["ready"] is False
    missing = {m["name"]: m["missing"] for m in plan["models"] if not m["available"]}
    assert len(missing) == 8  # six GGUFs, the patient's key, the judge's key (or package)
    tuned = missing["llama31-8b-cbt"]
    assert "not downloaded here" in tuned and "huggingface-cli download" in tuned
    assert "DEEPSEEK_API_KEY" in missing["deepseek-patient"]
    assert plan["sessions"]["due"] == 6 * 10 * 20
    assert plan["absolute"]["total"] == plan["sessions"]["total"] and plan["pairwise"]["total"] == 3 * 10 * 20
    assert plan["estimated_seconds"] and plan["estimated_seconds"] > 3600  # assumed speeds cover every model
    assert not any(p.is_file() for p in hub.rglob("*")) if hub.exists() else True  # nothing downloaded
    assert not out.exists() or not any(out.iterdir())  # and no store left behind
    text = run_cli("study", "plan", str(PAPER), "--out", str(out), env=env)
    assert text.returncode == 0 and "MISSING llama31-8b-cbt" in text.stdout and "total:" in text.stdout


def test_study_run_refuses_a_study_whose_models_are_missing_and_says_which(tmp_path: Path):
    result = run_cli(
        "study", "run", str(PAPER), "--out", str(tmp_path / "o"), env={"HF_HOME": str(tmp_path / "hf")}
    )
    assert result.returncode == 2
    assert "not available here" in result.stderr and "gemini-judge" in result.stderr
