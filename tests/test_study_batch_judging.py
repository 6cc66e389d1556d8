"""`judge --all --batch ID` and `judge --pairwise --batch ID` on stored sessions, with the real default model
as judge: what is scored is skipped on the next run, pairs are judged in both orders, and a session the
quality gate flags is left out."""

from __future__ import annotations

import json
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

from cbtcompare.store import Store
from cbtcompare.transcript import Transcript, Turn

REPO = Path(__file__).resolve().parent.parent
BATCH = "synthetic@0000"
LINES = [
    ("patient", "I've been feeling really down since I lost my job."),
    ("therapist", "That sounds hard. What would you like to put on our agenda today?"),
    ("patient", "Maybe how I keep staying in bed."),
    ("therapist", "Let's look at that. What goes through your mind when you stay in bed?"),
]


def session(variant: str, group: str, patient_reply: str | None = None) -> Transcript:
    turns = [Turn(role=role, text=text) for role, text in LINES]
    if patient_reply is not None:
        turns[2] = Turn(role="patient", text=patient_reply)
    return Transcript(
        kind="simulation",
        group_id=group,
        therapist={"name": f"synthetic-{variant}"},
        meta={"family": "synthetic", "variant": variant, "profile_id": "p1", "session_index": 1},
        turns=turns,
    )


def judge(db: str, *extra: str) -> dict:
    command = [
        sys.executable, "-m", "cbtcompare", "judge", "--rubric", "paper", "--judge", "smollm2-instruct",
        "--batch", BATCH, "--store", db, "--retries", "0", "--max-evidence", "0", "--justification-chars", "20",
        "--max-tokens", "400", "--json", *extra,
    ]  # fmt: skip
    result = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=1500)
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.splitlines()[-1])


@pytest.mark.slow
def test_judge_all_and_pairwise_over_a_batch_skip_what_is_already_judged(tmp_path: Path):
    db = f"sqlite:///{tmp_path / 'batch.sqlite'}"
    store = Store(db)
    base, tuned = session("base", "g1"), session("tuned", "g1")
    flagged = session("base", "g2", patient_reply="As an AI language model, how can I help you today?")
    for index, transcript in enumerate([base, tuned, flagged]):
        store.save_batch_run(f"{BATCH}|run{index}", BATCH, transcript, "done")

    first = judge(db, "--all")
    assert (first["added"], first["skipped"], first["quarantined"], first["sessions"]) == (2, 0, 1, 3)
    scored = {r["transcript_id"] for r in store.list_scores()}
    assert scored == {base.id, tuned.id}  # the flagged session was quarantined
    again = judge(db, "--all")
    assert (again["added"], again["skipped"]) == (0, 2)
    assert len({r["result_id"] for r in store.list_scores()}) == 2

    pairwise = judge(db, "--pairwise")
    assert (pairwise["added"], pairwise["planned"]) == (1, 1)
    rows = store.list_pairwise_scores()
    assert {(r["transcript_a"], r["transcript_b"]) for r in rows} == {(tuned.id, base.id)}
    per_item = Counter(r["item"] for r in rows)
    assert set(per_item.values()) == {2} and {r["order"] for r in rows} == {"AB", "BA"}
    assert pairwise["inconsistent_items"] == sum(1 for r in rows if r["outcome"] == "inconsistent") // 2
    assert judge(db, "--pairwise")["skipped"] == 1
