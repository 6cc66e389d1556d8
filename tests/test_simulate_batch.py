"""Batches (cbtcompare.simulate.run_batch): the usage of each role as its backend reported it (prompt and
completion tokens, time), and how many sessions run at once, decided from the backends' capability flags,
with the same transcripts however many overlap. Real components: the embedded SmolLM2 GGUF as local
therapists, and the local Gemini REST stub (through the real google-genai SDK) as the endpoint patient."""

from __future__ import annotations

import pytest

from cbtcompare.models.base import BackendCapabilities, ModelSpec, Sampling
from cbtcompare.models.llamacpp_pool import MAX_CONTEXTS_PER_WEIGHTS
from cbtcompare.models.registry import Registry
from cbtcompare.simulate import BatchConfig, run_batch
from cbtcompare.simulate.batch import sessions_at_once

KEY_ENV = "CBTCOMPARE_TEST_BATCH_PATIENT_KEY"


def test_sessions_run_at_once_only_where_some_role_waits_on_a_network():
    # A llama.cpp-like local backend (a pool of MAX_CONTEXTS_PER_WEIGHTS contexts) and an endpoint.
    local = BackendCapabilities(
        backend="local", remote=False, local_weights=True, trainable=True, adapters=True, json_schema=True,
        grammar=True, seed=True, parallel_requests=MAX_CONTEXTS_PER_WEIGHTS,
    )  # fmt: skip
    remote = local.model_copy(update={"backend": "remote", "remote": True, "local_weights": False,
                                      "parallel_requests": None})  # fmt: skip
    assert sessions_at_once(8, [local, local, local]) == 1  # all local: they share the cores
    assert sessions_at_once(8, [remote, remote, remote]) == 8  # all endpoints: the study's concurrency
    # An endpoint patient beside local therapists: sessions overlap, as many as the local pool serves.
    assert sessions_at_once(8, [remote, local, local]) == min(8, MAX_CONTEXTS_PER_WEIGHTS) > 1
    assert sessions_at_once(2, [remote, local]) == 2 and sessions_at_once(1, [remote, local]) == 1
    assert sessions_at_once(8, [local, remote]) == min(8, MAX_CONTEXTS_PER_WEIGHTS)  # a remote therapist alike


@pytest.mark.slow
def test_a_batch_records_prompt_and_completion_tokens_and_time_per_role(registry, store):
    config = BatchConfig(
        name="usage-test", profiles=["reserved-retiree"], therapists=["smollm2-instruct"], patient="smollm2-instruct",
        turns=2, seed=5, therapist_sampling={"max_tokens": 12}, patient_sampling={"max_tokens": 12},
    )  # fmt: skip
    result = run_batch(config, registry, store)
    assert result.count("done") == 1 and result.concurrency == 1  # every model local: one at a time
    (run,) = result.runs
    transcript = store.get_transcript(run.transcript_id)
    usage = result.summary()["usage"]
    for role in ("therapist", "patient"):
        reported = transcript.meta["usage"][role]
        assert run.usage[role].prompt_tokens == reported["prompt_tokens"]
        assert usage[role]["prompt_tokens"] == reported["prompt_tokens"]
        assert usage[role]["completion_tokens"] == reported["completion_tokens"] > 0
        assert usage[role]["calls"] == reported["calls"] >= 1
        assert usage[role]["seconds"] == pytest.approx(reported["seconds"], abs=0.002) and reported["seconds"] > 0
        # Each call re-reads the conversation: the prompt is the bigger part of what the backend processed.
        assert usage[role]["prompt_tokens"] > usage[role]["completion_tokens"]
    # The therapist's second turn reads the patient's reply: its prompt is more than one system + opening.
    assert usage["therapist"]["calls"] == 2
    assert result.summary()["therapist_tokens"] == usage["therapist"]["completion_tokens"]


def _turn_texts(result, store) -> dict[tuple[str, str, int, int], list[tuple[str, str]]]:
    """Each session's turns keyed by what it is (profile, therapist, replicate, session), not by run order."""
    texts = {}
    for run in result.runs:
        transcript = store.get_transcript(run.transcript_id)
        key = (run.spec.profile_id, run.spec.therapist, run.spec.replicate, run.spec.session_index)
        texts[key] = [(turn.role, turn.text) for turn in transcript.turns]
    return texts


@pytest.mark.slow
def test_an_endpoint_patient_with_local_therapists_overlaps_sessions_and_changes_no_transcript(
    gemini_stub, store, monkeypatch
):
    # The endpoint patient is the local Gemini stub: deterministic by construction (a llama.cpp server's own
    # prefix cache makes its replies depend on the order requests arrive in, which is not what is tested
    # here), with a network wait before every answer for the local therapists' decoding to overlap.
    monkeypatch.setenv(KEY_ENV, gemini_stub.api_key)
    gemini_stub.delay_s = 0.3
    registry = Registry.from_files()
    patient = ModelSpec(
        name="ep-patient", backend="gemini", weights="gemini-stub", base_url=gemini_stub.base_url, api_key_env=KEY_ENV,
        timeout_s=60, sampling=Sampling(max_tokens=16),
    )  # fmt: skip
    registry.add(patient)

    def batch(name: str, concurrency: int):
        config = BatchConfig(
            name=name, profiles=["tangent-chef", "reserved-retiree"],
            therapists=["smollm2-instruct", "smollm2-cbt-prompted"], patient="ep-patient", turns=2, seed=4,
            concurrency=concurrency, therapist_sampling={"max_tokens": 16}, patient_sampling={"max_tokens": 16},
        )  # fmt: skip
        return run_batch(config, registry, store)

    serial = batch("mixed-serial", 1)
    overlapped = batch("mixed-overlapped", 4)
    assert serial.concurrency == 1 and overlapped.concurrency == min(4, MAX_CONTEXTS_PER_WEIGHTS) > 1
    assert serial.count("done") == overlapped.count("done") == 4 and not overlapped.summary()["errors"]
    runs = sorted(overlapped.runs, key=lambda r: r.started)
    assert any(later.started < earlier.finished for earlier, later in zip(runs, runs[1:], strict=False)), (
        "no two sessions overlapped in time"
    )
    # The same seeds give the same sessions whatever ran beside them and in whichever order they finished.
    texts = _turn_texts(overlapped, store)
    assert texts == _turn_texts(serial, store) and len(texts) == 4
    assert all(role == "therapist" and text for turns in texts.values() for role, text in turns[1::2])
    patient_usage = overlapped.summary()["usage"]["patient"]
    assert patient_usage["calls"] >= 4 and patient_usage["prompt_tokens"] > 0  # as the endpoint reported it
