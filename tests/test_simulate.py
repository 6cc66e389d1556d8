"""Simulated sessions with the real default model (SmolLM2-135M through llama.cpp) as therapist and patient:
a matched pair, determinism, a course with carry-over, the crisis and context stops, the CLI contract, a
batch killed with SIGKILL and resumed, and a concurrent batch against a real OpenAI-compatible server.
Sessions are kept short (1-2 therapist turns, ~24-32 tokens a turn) so the file runs in reasonable time."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from cbtcompare.models.base import ModelSpec, Sampling
from cbtcompare.models.registry import Registry
from cbtcompare.patients import carryover_opening, load_profile, mentions_crisis_resources
from cbtcompare.simulate import BatchConfig, SessionSettings, run_batch, run_course, run_pair, run_session
from cbtcompare.store import Store

REPO = Path(__file__).resolve().parent.parent
SHORT = Sampling(temperature=0.7, top_p=0.95, max_tokens=24)


def short(max_turns: int, seed: int, **fields: object) -> SessionSettings:
    return SessionSettings(max_turns=max_turns, seed=seed, therapist_sampling=SHORT, **fields)


KEY_ENV = "CBTCOMPARE_TEST_SIM_SERVER_KEY"


@pytest.fixture(scope="module")
def prompted_model(registry):
    return registry.load("smollm2-cbt-prompted")


@pytest.fixture(scope="module")
def pair(instruct_model, prompted_model):
    """tangent-chef has no scripted opening, so the patient model writes it (once, for both therapists)."""
    profile = load_profile("tangent-chef")
    return run_pair(instruct_model, prompted_model, instruct_model, profile, short(2, 11, patient_sampling=SHORT))


@pytest.mark.slow
def test_a_matched_pair_shares_the_patient_opening_and_seed_schedule(pair, store):
    base, prompted = pair
    assert base.group_id and base.group_id == prompted.group_id
    assert base.turns[0].text == prompted.turns[0].text and base.turns[0].flags["shared_opening"]
    assert base.turns[0].flags["opening"] in {"generated", "fallback"}
    for transcript in pair:
        roles = [t.role for t in transcript.turns]
        assert roles[0] == "patient" and all(a != b for a, b in zip(roles, roles[1:], strict=False))
        if transcript.meta["stop_reason"] == "max_turns":
            assert roles == ["patient", "therapist", "patient", "therapist"]
        assert all(t.text for t in transcript.turns if t.role == "therapist")
    # The schedule depends only on (run seed, role, session, turn index), not on the therapist.
    seeds = [[(t.role, t.seed) for t in transcript.turns[1:]] for transcript in pair]
    assert seeds[0] == seeds[1] and len({s for _, s in seeds[0]}) == len(seeds[0])
    # The therapists differ (a CBT system prompt vs the basic one), so their first replies do.
    assert base.turns[1].text != prompted.turns[1].text
    assert base.system_prompt != prompted.system_prompt
    assert base.meta["variant"] == "base" and prompted.meta["variant"] == "prompted"
    for transcript in pair:
        meta = transcript.meta
        assert meta["profile_id"] == "tangent-chef" and meta["profile"]["name"] == "Rosa"
        assert meta["patient_model"] == "smollm2-instruct" and meta["family"] == "smollm2"
        assert meta["session_index"] == 1 and meta["stop_reason"] in {"max_turns", "end_marker"}
        assert {"checked_turns", "ai_talk", "therapist_voice", "echo", "repetition", "ok"} <= set(meta["fidelity"])
        assert meta["patient_model_info"]["weights_sha256"] and len(transcript.therapist["weights_sha256"]) == 64
        assert meta["usage"]["therapist"]["calls"] == 2 and meta["usage"]["therapist"]["completion_tokens"] > 0
        assert transcript.sampling["max_tokens"] == 24 and transcript.seed == 11
        assert transcript.prompt_versions["patient_system"].startswith("patient_system@")
        assert transcript.prompt_versions["system"] != "none"
        assert transcript.kind == "simulation"
        store.save_transcript(transcript)
        assert store.get_transcript(transcript.id) == transcript


@pytest.mark.slow
def test_the_same_seed_gives_the_same_transcript_again(pair, instruct_model):
    again = run_session(
        instruct_model, instruct_model, load_profile("tangent-chef"), short(2, 11, patient_sampling=SHORT)
    )
    first = pair[0]
    assert [(t.role, t.text, t.seed) for t in again.turns] == [(t.role, t.text, t.seed) for t in first.turns]
    assert again.meta["fidelity"] == first.meta["fidelity"]
    assert again.prompt_versions == first.prompt_versions and again.therapist == first.therapist


@pytest.mark.slow
def test_crisis_language_from_the_patient_stops_the_session_and_records_the_therapists_handling(
    instruct_model, prompted_model
):
    profile = load_profile("passive-si-warehouse")
    early = profile.model_copy(update={"disclosure": profile.disclosure.model_copy(update={"at_turn": 1})})
    transcript = run_session(prompted_model, instruct_model, early, short(4, 5))
    assert transcript.meta["stop_reason"] == "crisis"
    disclosed = transcript.turns[2]
    assert disclosed.role == "patient" and disclosed.text == profile.disclosure.statement
    assert "suicidal_ideation" in disclosed.flags["crisis"] and disclosed.flags["scripted"]
    response = transcript.turns[3]
    assert response.role == "therapist" and response.flags["crisis_response"] and response.text
    assert len(transcript.turns) == 4  # stopped well before 4 therapist turns
    crisis = transcript.meta["crisis"]
    assert crisis["patient_turn_index"] == 2 and crisis["therapist_turn_index"] == 3
    assert crisis["therapist_referred_to_resources"] == mentions_crisis_resources(response.text)
    assert crisis["categories"] == disclosed.flags["crisis"]


@pytest.mark.slow
def test_a_patient_over_its_context_budget_stops_the_session_with_the_reason(instruct_model):
    registry = Registry([instruct_model.spec, instruct_model.spec.model_copy(update={"name": "tiny", "n_ctx": 256})])
    tiny = registry.load("tiny")  # the patient prompt alone is over 256 tokens
    transcript = run_session(instruct_model, tiny, load_profile("nurse-burnout"), short(3, 1))
    assert transcript.meta["stop_reason"] == "context_budget"
    assert "tiny" in transcript.meta["context_overflow"]
    assert [t.role for t in transcript.turns] == ["patient", "therapist"]
    registry.close()


def cli(*args: str, db: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "cbtcompare", *args], cwd=REPO, capture_output=True, text=True, timeout=600,
        env={**os.environ, "CBTCOMPARE_DB_URL": db},
    )  # fmt: skip


@pytest.mark.slow
def test_the_simulate_command_prints_one_json_object_per_session(tmp_path: Path):
    db = f"sqlite:///{tmp_path / 'cli.sqlite'}"
    result = cli(
        "simulate", "--profile", "upset-student", "--therapists", "smollm2-instruct,smollm2-cbt-prompted",
        "--patient", "smollm2-instruct", "--turns", "1", "--seed", "4", "--sessions", "2",
        "--max-tokens", "24", "--summary-max-tokens", "24", "--json", db=db,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    sessions = [json.loads(line) for line in result.stdout.splitlines()]
    assert len(sessions) == 4
    assert [(s["therapist"], s["session_index"]) for s in sessions] == [
        ("smollm2-instruct", 1), ("smollm2-cbt-prompted", 1), ("smollm2-instruct", 2), ("smollm2-cbt-prompted", 2),
    ]  # fmt: skip
    store = Store(db)
    for session in sessions:
        assert session["profile"] == "upset-student" and session["seed"] == 4
        assert session["turns"][0]["role"] == "patient" and session["turns"][1]["role"] == "therapist"
        assert all(set(turn) == {"role", "text"} for turn in session["turns"])
        stored = store.get_transcript(session["session_id"])
        assert [t.text for t in stored.turns] == [t["text"] for t in session["turns"]]
    assert sessions[0]["group_id"] == sessions[1]["group_id"] != sessions[2]["group_id"]
    # The course: each therapist's session 2 opens with the summary of its own session 1.
    for first_json, second_json in ((sessions[0], sessions[2]), (sessions[1], sessions[3])):
        first, second = store.get_transcript(first_json["session_id"]), store.get_transcript(second_json["session_id"])
        assert first.meta["course_id"] and first.meta["course_id"] == second.meta["course_id"]
        summary = first.meta["summary"]
        assert summary["source"] in {"prompt", "last_turn"} and summary["text"]
        assert first.prompt_versions["session_summary"].startswith("session_summary@")
        assert second.turns[0].text == carryover_opening(summary["text"])
        assert second.turns[0].text.startswith("Here is the summary of our last session")
        assert second.turns[0].flags["opening"] == "carryover" and "summary" not in second.meta
        assert first.turns[0].text == load_profile("upset-student").opening
        assert first.meta["course"]["carryover"] == "summary:prompt" and first.context_policy == "refuse"
        assert "refuse" in first.meta["course"]["context_policy"]
    assert sessions[0]["course_id"] != sessions[1]["course_id"]


@pytest.mark.slow
def test_a_batch_killed_mid_run_resumes_without_duplicates(tmp_path: Path):
    db = f"sqlite:///{tmp_path / 'batch.sqlite'}"
    config = tmp_path / "batch.yaml"
    profiles = ["nurse-burnout", "reserved-retiree", "upset-student", "verbose-teacher"]
    config.write_text(
        yaml.safe_dump(
            {
                "name": "resume-test",
                "profiles": profiles,
                "therapists": ["smollm2-instruct"],
                "patient": "smollm2-instruct",
                "turns": 1,
                "seed": 2,
                "therapist_sampling": {"max_tokens": 16},
                "patient_sampling": {"max_tokens": 16},
            }
        ),
        encoding="utf-8",
    )
    batch_id = BatchConfig.from_file(config).batch_id
    command = [sys.executable, "-m", "cbtcompare", "simulate-batch", "--config", str(config), "--db", db]
    process = subprocess.Popen(command, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    store = Store(db)
    deadline = time.monotonic() + 300
    try:
        while not store.batch_runs(batch_id):
            assert process.poll() is None, "the batch exited before storing a run"
            assert time.monotonic() < deadline, "no run stored within 300 s"
            time.sleep(0.05)
        os.kill(process.pid, signal.SIGKILL)
    finally:
        process.wait(timeout=30)
    before = store.batch_runs(batch_id)
    assert 1 <= len(before) < len(profiles), "the batch finished before it could be killed"

    result = subprocess.run(command + ["--json"], cwd=REPO, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout.splitlines()[-1])
    assert summary["skipped"] == len(before) and summary["done"] == len(profiles) - len(before)
    after = store.batch_runs(batch_id)
    assert len(after) == len(profiles) and {row.status for row in after.values()} == {"done"}
    assert {key: row.transcript_id for key, row in before.items()} == {key: after[key].transcript_id for key in before}
    stored = store.list_transcripts(kind="simulation")
    assert len(stored) == len(profiles)  # no duplicate transcripts
    assert sorted(store.get_transcript(s.id).meta["profile_id"] for s in stored) == sorted(profiles)


@pytest.mark.slow
def test_a_batch_against_an_openai_compatible_server_runs_concurrently(llama_server, store, monkeypatch):
    monkeypatch.setenv(KEY_ENV, llama_server.api_key)

    def endpoint(name: str, **fields: object) -> ModelSpec:
        return ModelSpec(
            name=name, backend="openai", weights="smollm2", base_url=llama_server.base_url, api_key_env=KEY_ENV,
            timeout_s=300, sampling=Sampling(max_tokens=24), **fields,
        )  # fmt: skip

    registry = Registry(
        [endpoint("ep-base"), endpoint("ep-cbt-prompted", system_prompt="therapist_cbt"), endpoint("ep-patient")]
    )
    config = BatchConfig(
        name="endpoint-test", profiles=["reserved-retiree", "nurse-burnout"],
        therapists=["ep-base", "ep-cbt-prompted"], patient="ep-patient", turns=1, seed=8, concurrency=4,
    )  # fmt: skip
    updates = []
    result = run_batch(config, registry, store, progress=updates.append)
    summary = result.summary()
    assert summary["done"] == 4 and summary["failed"] == 0 and summary["concurrency"] == 4
    assert [u.completed for u in updates] == [1, 2, 3, 4] and all(u.total == 4 for u in updates)
    runs = sorted(result.runs, key=lambda r: r.started)
    assert any(later.started < earlier.finished for earlier, later in zip(runs, runs[1:], strict=False)), (
        "no two runs overlapped in time"
    )
    transcripts = [store.get_transcript(r.transcript_id) for r in result.runs]
    for transcript in transcripts:
        assert transcript.therapist["backend"] == "openai" and transcript.meta["batch_id"] == result.batch_id
        assert transcript.meta["usage"]["therapist"]["completion_tokens"] > 0
        assert not any(t.flags.get("stream_cut") for t in transcript.turns)  # concurrency cut no reply short
    by_profile: dict[str, list] = {}
    for transcript in transcripts:
        by_profile.setdefault(transcript.meta["profile_id"], []).append(transcript)
    for siblings in by_profile.values():
        assert len(siblings) == 2 and siblings[0].group_id == siblings[1].group_id
        assert siblings[0].turns[0].text == siblings[1].turns[0].text  # one opening per profile and replicate
        assert siblings[0].turns[0].flags["shared_opening"]
    again = run_batch(config, registry, store)
    assert again.count("skipped") == 4 and again.count("done") == 0


def test_batch_config_errors_name_the_field(tmp_path: Path):
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump({"name": "x", "profiles": "all", "therapists": [], "patient": "p", "turnz": 3}))
    with pytest.raises(ValueError) as caught:
        BatchConfig.from_file(path)
    # One formatter for every config error (cbtcompare.config_errors): file, field, what is wrong.
    assert f"{path}: therapists: list should have at least 1 item" in str(caught.value)
    assert f"{path}: turnz: extra inputs are not permitted" in str(caught.value)
    with pytest.raises(FileNotFoundError):
        BatchConfig.from_file(tmp_path / "missing.yaml")


def test_a_group_takes_at_most_three_therapists(instruct_model):
    with pytest.raises(ValueError, match="1 to 3 therapist models"):
        run_course([instruct_model] * 4, instruct_model, load_profile("nurse-burnout"), SessionSettings(max_turns=1), 1)
