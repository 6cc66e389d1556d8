"""How many sessions run at once: one rule (sessions_at_once) read from each backend's `parallel_requests`
capability, for batches and matched groups alike. Capabilities come from the real backend classes through
registry.backend_capabilities (nothing is loaded); the group test runs the embedded SmolLM2 GGUF as local
therapists beside the local Gemini REST stub (through the real google-genai SDK) as the endpoint patient."""

from __future__ import annotations

import threading
import time

import pytest

from cbtcompare.models.base import ModelSpec, Sampling
from cbtcompare.models.llamacpp_pool import MAX_CONTEXTS_PER_WEIGHTS
from cbtcompare.models.registry import BACKENDS, Registry, backend_capabilities
from cbtcompare.patients import load_profile
from cbtcompare.simulate import SessionSettings
from cbtcompare.simulate.batch import sessions_at_once
from cbtcompare.simulate.group import GroupHooks, run_group

KEY_ENV = "CBTCOMPARE_TEST_GROUP_PATIENT_KEY"


def caps(*backends: str):
    return [backend_capabilities(b) for b in backends]


def test_every_backend_says_how_many_requests_one_loaded_model_serves_at_once():
    declared = {name: backend_capabilities(name).parallel_requests for name in BACKENDS}
    # Endpoints: no limit on this side (the server queues its own); hf generates under one lock per base;
    # llama.cpp serves as many requests as its context pool holds contexts over one GGUF.
    assert declared == {"openai": None, "gemini": None, "hf": 1, "llamacpp": MAX_CONTEXTS_PER_WEIGHTS}


def test_sessions_at_once_follows_the_backends_of_the_roles_in_the_batch():
    assert sessions_at_once(8, caps("llamacpp", "llamacpp", "hf")) == 1  # all local: they share the cores
    assert sessions_at_once(8, caps("gemini", "openai", "openai")) == 8  # all endpoints: as many as asked
    # An endpoint patient beside llama.cpp therapists: as many as the context pool serves (today's rule).
    assert sessions_at_once(8, caps("gemini", "llamacpp", "llamacpp")) == min(8, MAX_CONTEXTS_PER_WEIGHTS) > 1
    assert sessions_at_once(2, caps("openai", "llamacpp")) == 2 and sessions_at_once(1, caps("openai", "llamacpp")) == 1
    # A backend that serves one request at a time bounds the batch however many are asked for.
    assert sessions_at_once(8, caps("gemini", "llamacpp", "hf")) == 1


@pytest.mark.slow
def test_a_group_with_an_endpoint_patient_overlaps_its_local_therapists_by_the_same_rule(gemini_stub, monkeypatch):
    monkeypatch.setenv(KEY_ENV, gemini_stub.api_key)
    gemini_stub.delay_s = 0.3  # a network wait the other therapist's decoding can overlap
    registry = Registry.from_files()
    registry.add(
        ModelSpec(
            name="ep-patient", backend="gemini", weights="gemini-stub", base_url=gemini_stub.base_url,
            api_key_env=KEY_ENV, timeout_s=60, sampling=Sampling(max_tokens=12),
        )
    )  # fmt: skip
    therapists = [registry.load("smollm2-instruct"), registry.load("smollm2-cbt-prompted")]
    patient = registry.load("ep-patient")
    expected = sessions_at_once(len(therapists), caps("gemini", "llamacpp", "llamacpp"))
    assert expected == 2  # the rule lets both therapists' sessions run at once here

    seen: dict[str, list[float]] = {}
    lock = threading.Lock()

    def on_turn(transcript, turn) -> None:  # type: ignore[no-untyped-def]
        with lock:
            seen.setdefault(transcript.therapist_name, []).append(time.perf_counter())

    settings = SessionSettings(max_turns=3, seed=2, therapist_sampling={"max_tokens": 12})
    transcripts = run_group(
        therapists, patient, load_profile("reserved-retiree"), settings, hooks=GroupHooks(on_turn=on_turn)
    )
    assert [t.therapist_name for t in transcripts] == ["smollm2-instruct", "smollm2-cbt-prompted"]
    first, second = (seen[name] for name in ("smollm2-instruct", "smollm2-cbt-prompted"))
    assert len(first) >= 3 and len(second) >= 3
    # One after the other, every turn of the first session would come before every turn of the second.
    assert min(second) < max(first) and min(first) < max(second), "the two sessions did not overlap in time"
