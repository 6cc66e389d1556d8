"""One classification of a model whichever path made its transcript: a Compare transcript and a simulated one of
the same model get the same (variant, family) in the results the statistics read, and the CLI says it too."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from cbtcompare.ctrs.results import transcript_columns
from cbtcompare.models.base import Sampling
from cbtcompare.patients import load_profile
from cbtcompare.simulate import SessionSettings, model_info, run_session
from cbtcompare.transcript import Transcript, Turn

REPO = Path(__file__).resolve().parent.parent
TINY = {"max_tokens": 8}


def cli(*args: str, db: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "cbtcompare", *args], cwd=REPO, capture_output=True, text=True, timeout=600,
        env={**os.environ, "CBTCOMPARE_DB_URL": db},
    )  # fmt: skip


@pytest.fixture(scope="module")
def prompted_model(registry):
    return registry.load("smollm2-cbt-prompted")


def compare_transcript(model) -> Transcript:
    """A transcript as the Compare tab stores it: the therapist's ModelInfo and spec, no recorded variant."""
    return Transcript(
        kind="compare",
        therapist=model_info(model),
        sampling=Sampling().model_dump(mode="json"),
        turns=[Turn(role="patient", text="I feel low."), Turn(role="therapist", text="Tell me more.", tokens=4)],
    )


@pytest.mark.slow
def test_a_compare_and_a_simulated_transcript_of_one_model_share_variant_and_family(prompted_model, instruct_model):
    simulated = run_session(
        prompted_model, instruct_model, load_profile("upset-student"),
        SessionSettings(max_turns=1, therapist_sampling=TINY, patient_sampling=TINY),
    )  # fmt: skip
    compared = compare_transcript(prompted_model)
    columns = [transcript_columns(t) for t in (compared, simulated)]
    assert [(c["variant"], c["family"]) for c in columns] == [("prompted", "smollm2")] * 2
    base = transcript_columns(compare_transcript(instruct_model))
    assert (base["variant"], base["family"]) == ("base", "smollm2")


def test_a_recorded_variant_and_family_win_over_the_classification(instruct_model):
    transcript = compare_transcript(instruct_model)
    transcript.meta.update({"variant": "tuned", "family": "llama"})
    assert (transcript_columns(transcript)["variant"], transcript_columns(transcript)["family"]) == ("tuned", "llama")


@pytest.mark.slow
def test_pair_and_simulate_json_carry_variant_and_family(tmp_path: Path):
    db = f"sqlite:///{tmp_path / 'cli.sqlite'}"
    pair = cli("pair", "--models", "smollm2-instruct,smollm2-cbt-prompted", "--message", "I feel stuck.",
               "--max-tokens", "8", "--json", db=db)  # fmt: skip
    assert pair.returncode == 0, pair.stderr
    replies = json.loads(pair.stdout)["replies"]
    assert [(r["variant"], r["family"]) for r in replies] == [("base", "smollm2"), ("prompted", "smollm2")]
    simulate = cli(
        "simulate", "--profile", "upset-student", "--therapists", "smollm2-cbt-prompted,smollm2-instruct",
        "--patient", "smollm2-instruct", "--turns", "1", "--max-tokens", "8", "--json", db=db,
    )  # fmt: skip
    assert simulate.returncode == 0, simulate.stderr
    sessions = [json.loads(line) for line in simulate.stdout.splitlines()]
    assert [(s["therapist"], s["variant"], s["family"]) for s in sessions] == [
        ("smollm2-cbt-prompted", "prompted", "smollm2"),
        ("smollm2-instruct", "base", "smollm2"),
    ]
