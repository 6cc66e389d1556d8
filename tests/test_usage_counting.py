"""Usage counting when a backend reports no prompt tokens: such calls are counted apart
(RoleUsage.calls_without_prompt_tokens), carried through the batch summary, the study's `tokens` and its
usage ledger, and turn an endpoint's cost into a marked lower bound instead of a silent one. Real
components: the gemini backend (the real google-genai SDK) against two local Gemini REST stubs, one of
which, like some proxies and older servers, sends no usageMetadata at all."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest
from gemini_stub import GeminiStub
from hypothesis import given, settings
from hypothesis import strategies as st

from cbtcompare.models.base import ModelSpec, Sampling
from cbtcompare.models.registry import Registry
from cbtcompare.simulate import BatchConfig, run_batch
from cbtcompare.study.cost import endpoint_costs, read_usage_ledger
from cbtcompare.study.run import session_usage
from cbtcompare.study.spec import Price

THERAPIST_KEY_ENV = "CBTCOMPARE_TEST_USAGE_THERAPIST_KEY"
PATIENT_KEY_ENV = "CBTCOMPARE_TEST_USAGE_PATIENT_KEY"
PRICE = Price(input_per_million=1.0, output_per_million=2.0)


class NoUsageGeminiStub(GeminiStub):
    """The same Gemini wire format with the usageMetadata left out of every response."""

    @staticmethod
    def _response(model, pieces, finish, prompt_tokens, *, final, only_last=False):  # type: ignore[no-untyped-def]
        body = GeminiStub._response(model, pieces, finish, prompt_tokens, final=final, only_last=only_last)
        body.pop("usageMetadata")
        return body


@pytest.fixture
def silent_stub() -> Iterator[NoUsageGeminiStub]:
    stub = NoUsageGeminiStub(api_key="silent-key-0123456789abcdef")
    try:
        yield stub
    finally:
        stub.close()


@pytest.fixture
def batch_result(gemini_stub, silent_stub, store, monkeypatch):  # type: ignore[no-untyped-def]
    monkeypatch.setenv(THERAPIST_KEY_ENV, gemini_stub.api_key)
    monkeypatch.setenv(PATIENT_KEY_ENV, silent_stub.api_key)
    registry = Registry(
        [
            ModelSpec(name="ep-therapist", backend="gemini", weights="gemini-stub", base_url=gemini_stub.base_url,
                      api_key_env=THERAPIST_KEY_ENV, timeout_s=60, sampling=Sampling(max_tokens=16)),
            ModelSpec(name="ep-patient", backend="gemini", weights="gemini-stub", base_url=silent_stub.base_url,
                      api_key_env=PATIENT_KEY_ENV, timeout_s=60, sampling=Sampling(max_tokens=16)),
        ]
    )  # fmt: skip
    config = BatchConfig(
        name="usage-counting", profiles=["reserved-retiree", "tangent-chef"], therapists=["ep-therapist"],
        patient="ep-patient", turns=3, seed=1,
    )  # fmt: skip
    return run_batch(config, registry, store), store


def test_calls_without_reported_prompt_tokens_are_counted_apart_in_a_batch(batch_result):
    result, store = batch_result
    assert result.count("done") == 2, result.summary()["errors"]
    usage = result.summary()["usage"]
    patient, therapist = usage["patient"], usage["therapist"]
    # The silent server's every call is one without prompt tokens; none is passed off as a count of 0.
    assert patient["calls"] >= 4 and patient["calls_without_prompt_tokens"] == patient["calls"]
    assert patient["prompt_tokens"] == 0
    assert therapist["calls"] == 6 and therapist["calls_without_prompt_tokens"] == 0 and therapist["prompt_tokens"] > 0
    for run in result.runs:
        stored = store.get_transcript(run.transcript_id).meta["usage"]
        assert stored["patient"]["calls_without_prompt_tokens"] == stored["patient"]["calls"] >= 2
        assert stored["therapist"]["calls_without_prompt_tokens"] == 0


def test_a_cost_from_incomplete_counts_is_a_marked_lower_bound_in_the_study_totals_and_ledger(batch_result, tmp_path):
    result, _ = batch_result
    tokens, rows = session_usage(result.runs, "ep-patient")
    calls = result.summary()["usage"]["patient"]["calls"]
    assert tokens["patient"]["calls_without_prompt_tokens"] == calls
    assert tokens["therapist"]["calls_without_prompt_tokens"] == 0 and tokens["therapist"]["prompt_tokens"] > 0
    ledger = tmp_path / "usage.jsonl"
    ledger.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    totals = read_usage_ledger(ledger)
    assert totals[("ep-patient", "patient")].calls_without_prompt_count == calls
    costs = {row.role: row for row in endpoint_costs(totals.values(), {"ep-patient": PRICE, "ep-therapist": PRICE},
                                                     lambda name: True)}  # fmt: skip
    assert costs["patient"].lower_bound and costs["patient"].note.startswith("lower bound")
    assert f"for {calls} call(s)" in costs["patient"].note
    assert not costs["therapist"].lower_bound and costs["therapist"].note == ""


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(),
    lambda children: st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=5), children, max_size=3),
    max_leaves=8,
)


@settings(max_examples=150, deadline=None)
@given(unreported=json_values, prompt=st.none() | st.integers(0, 10**12))
def test_any_calls_without_prompt_tokens_value_is_counted_or_the_line_skipped(tmp_path_factory, unreported, prompt):
    ledger = tmp_path_factory.mktemp("ledger") / "usage.jsonl"
    row = {"stage": "sessions", "role": "patient", "model": "m", "completion_tokens": 3, "seconds": 0.5,
           "prompt_tokens": prompt, "calls_without_prompt_tokens": unreported}  # fmt: skip
    ledger.write_text(json.dumps(row) + "\n", encoding="utf-8")
    totals = read_usage_ledger(ledger)
    valid = isinstance(unreported, int) and not isinstance(unreported, bool) and unreported >= 0
    if not valid:
        assert totals == {}  # not a count this code wrote: skipped, never a crash or a guess
        return
    (total,) = totals.values()
    # A row that reports no prompt tokens at all stands for at least one call without them.
    assert total.calls_without_prompt_count == (unreported if prompt is not None else max(unreported, 1))
    assert total.prompt_tokens == (prompt or 0)
