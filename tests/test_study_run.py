"""`study run` for real on the embedded default model: a whole tiny study (sessions, quality gate, absolute
and pairwise judging, report, manifest), a second run that adds nothing, and a kill -9 in the middle of
each stage followed by a resume with no duplicate and nothing lost."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest
import yaml

from cbtcompare.store import Store

REPO = Path(__file__).resolve().parent.parent
PROFILES = ["reserved-retiree"]


def tiny_study(tmp_path: Path, name: str = "tiny") -> Path:
    """1 profile x (instruct, adapter) x 1 turn, one judge all-in-one with a small budget, both modes."""
    path = tmp_path / f"{name}.yaml"
    path.write_text(
        yaml.safe_dump(
            {
                "name": name,
                "arms": [{"family": "smollm2", "base": "smollm2-instruct", "tuned": "smollm2-cbt"}],
                "patient": {"model": "smollm2-instruct", "sampling": {"max_tokens": 16}},
                "profiles": {"curated": PROFILES},
                "turns": 1,
                "seed": 3,
                "therapist_sampling": {"max_tokens": 24},
                "summary": "none",
                "judging": {
                    "judges": ["smollm2-instruct"],
                    "mode": "both",
                    "pairs": [["tuned", "base"]],
                    "config": {"retries": 0, "max_evidence": 0, "justification_chars": 20, "max_tokens": 400},
                },
                "out": str(tmp_path / "out"),
            }
        ),
        encoding="utf-8",
    )
    return path


def study_command(path: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "cbtcompare", "study", "run", str(path), *extra]


def run_json(path: Path) -> dict:
    result = subprocess.run(study_command(path, "--json"), cwd=REPO, capture_output=True, text=True, timeout=1200)
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.splitlines()[-1])


def stored(tmp_path: Path) -> dict[str, object]:
    store = Store(f"sqlite:///{tmp_path / 'out' / 'study.sqlite'}")
    scores = store.list_scores()
    pairwise = store.list_pairwise_scores()
    return {
        "transcripts": sorted(s.id for s in store.list_transcripts(kind="simulation")),
        "results": {(r["transcript_id"], r["judge_name"], r["repeat"], r["result_id"]) for r in scores},
        "pairwise": {
            (r["transcript_a"], r["transcript_b"], r["judge_name"], r["repeat"], r["result_id"]) for r in pairwise
        },
        "pairwise_rows": pairwise,
        "score_rows": len(scores),
    }


def assert_no_duplicates(state: dict) -> None:
    per_judgement = Counter(key[:3] for key in state["results"])
    assert all(count == 1 for count in per_judgement.values()), per_judgement
    per_pair = Counter(key[:4] for key in state["pairwise"])
    assert all(count == 1 for count in per_pair.values()), per_pair


@pytest.mark.slow
def test_a_tiny_study_runs_end_to_end_and_a_second_run_adds_nothing(tmp_path: Path):
    path = tiny_study(tmp_path)
    started = time.perf_counter()
    summary = run_json(path)
    first_seconds = time.perf_counter() - started
    sessions = len(PROFILES) * 2
    assert summary["sessions"] == summary["sessions_planned"] == summary["sessions_added"] == sessions
    assert summary["quarantined"] == 0  # one-turn sessions: the patient only says its profile's opening
    assert summary["judged"] == sessions and summary["judgements_added"] == sessions
    assert summary["pairwise_added"] == len(PROFILES)
    assert summary["tokens"]["therapist"]["completion_tokens"] > 0 and summary["tokens"]["judge"]["seconds"] > 0
    # Tokens and time per role: the prompt tokens each backend reported too (what an endpoint's cost is of).
    therapist = summary["tokens"]["therapist"]
    assert therapist["prompt_tokens"] > therapist["completion_tokens"] and therapist["seconds"] > 0
    assert set(summary["tokens"]) == {"therapist", "patient", "judge"}
    ledger = [json.loads(line) for line in (Path(summary["out"]) / "usage.jsonl").read_text().splitlines()]
    session_rows = [row for row in ledger if row["stage"] == "sessions"]
    assert len(session_rows) == 2 * sessions and all(row["prompt_tokens"] >= 0 for row in session_rows)
    assert sum(row["prompt_tokens"] for row in session_rows if row["role"] == "therapist") == therapist["prompt_tokens"]
    report = Path(summary["report"])
    page = report.read_text(encoding="utf-8")
    assert report.name == "index.html" and "Pairwise win rates" in page and "Simulation quality gate" in page
    assert "Mean ± SD per model" in page
    assert (report.parent / "pairwise_win_rates.csv").is_file() and (report.parent / "quality_gate.csv").is_file()

    manifest = json.loads(Path(summary["manifest"]).read_text(encoding="utf-8"))
    assert manifest["study"]["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
    assert manifest["study"]["text"] == path.read_text(encoding="utf-8")
    tuned = manifest["models"]["smollm2-cbt"]["info"]
    assert len(tuned["weights_sha256"]) == 64 and len(tuned["adapter_sha256"]) == 64
    assert manifest["arms"]["smollm2-cbt"] == {"family": "smollm2", "variant": "tuned"}
    assert manifest["versions"]["prompts"]["judge_all_items"].startswith("judge_all_items@")
    assert manifest["seeds"]["run_seed"] == 3 and manifest["code"]["git_commit"]

    state = stored(tmp_path)
    assert len(state["transcripts"]) == sessions and len(state["results"]) == sessions
    orders = Counter((r["result_id"], r["item"], r["order"]) for r in state["pairwise_rows"])
    assert {order for (_, _, order) in orders} == {"AB", "BA"} and set(orders.values()) == {1}
    assert {r["outcome"] for r in state["pairwise_rows"]} <= {"A", "B", "tie", "inconsistent", "unscored"}

    report_written = report.stat().st_mtime_ns
    again_started = time.perf_counter()
    again = run_json(path)
    again_seconds = time.perf_counter() - again_started
    assert again["added_nothing"] is True and "nothing to do" in again["message"]
    assert again["sessions_added"] == again["judgements_added"] == again["pairwise_added"] == 0
    assert again["sessions"] == sessions and again["judged"] == sessions
    assert stored(tmp_path)["results"] == state["results"] and stored(tmp_path)["pairwise"] == state["pairwise"]
    assert report.stat().st_mtime_ns == report_written
    print(f"\ntiny study: first run {first_seconds:.1f} s, second run {again_seconds:.1f} s")

    status = subprocess.run(
        [sys.executable, "-m", "cbtcompare", "study", "status", str(path), "--json"],
        cwd=REPO, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert status.returncode == 0, status.stderr
    counts = json.loads(status.stdout)
    assert counts["sessions"]["due"] == counts["absolute"]["due"] == counts["pairwise"]["due"] == 0


def _stage_reached(tmp_path: Path, stage: str) -> bool:
    db = tmp_path / "out" / "study.sqlite"
    if not db.exists():
        return False
    store = Store(f"sqlite:///{db}")
    if stage == "sessions":
        return len(store.list_transcripts(kind="simulation")) >= 1
    if stage == "judge":
        return len({r["result_id"] for r in store.list_scores()}) >= 1
    return len({r["result_id"] for r in store.list_pairwise_scores()}) >= 1


@pytest.mark.slow
@pytest.mark.parametrize("stage", ["sessions", "judge", "pairwise"])
def test_a_study_killed_in_each_stage_resumes_with_no_duplicate_and_nothing_lost(tmp_path: Path, stage: str):
    path = tiny_study(tmp_path, f"kill-{stage}")
    process = subprocess.Popen(study_command(path), cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 900
    try:
        while not _stage_reached(tmp_path, stage):
            assert process.poll() is None, f"the study exited before reaching the {stage} stage"
            assert time.monotonic() < deadline, f"the {stage} stage not reached within 900 s"
            time.sleep(0.05)
        os.kill(process.pid, signal.SIGKILL)
    finally:
        process.wait(timeout=60)
    before = stored(tmp_path)
    assert_no_duplicates(before)

    summary = run_json(path)
    after = stored(tmp_path)
    sessions = len(PROFILES) * 2
    assert summary["sessions"] == sessions and len(after["transcripts"]) == sessions
    assert set(before["transcripts"]) <= set(after["transcripts"])  # nothing lost
    assert before["results"] <= after["results"] and before["pairwise"] <= after["pairwise"]
    assert_no_duplicates(after)
    assert len(after["results"]) == sessions and len(after["pairwise"]) == len(PROFILES)
    assert summary["sessions_added"] == sessions - len(before["transcripts"])
    assert summary["judgements_added"] == sessions - len(before["results"])
    assert Path(summary["report"]).is_file()
    assert run_json(path)["added_nothing"] is True


# A study run that kills itself with SIGKILL at an exact point of a stage that takes too little time to hit
# from outside: while the quality gate's verdicts are being written (half a temporary on disk), and in the
# report stage once the fresh report folder is written but before it is swapped in.
DYING_RUN = """
import os, signal, sys
from pathlib import Path
import cbtcompare.report
import cbtcompare.study.run as run
from cbtcompare.cli import main
stage, path = sys.argv[1], sys.argv[2]
if stage == "quality":
    write = run.write_json_atomically
    def dying(target, data):
        if target.name == "quality.json":
            (target.parent / ".quality.json.half.tmp").write_text('{"rate": ', encoding="utf-8")
            os.kill(os.getpid(), signal.SIGKILL)
        return write(target, data)
    run.write_json_atomically = dying
else:
    write_results = cbtcompare.report.write_results
    def dying(*args, **kwargs):
        write_results(*args, **kwargs)
        os.kill(os.getpid(), signal.SIGKILL)
    cbtcompare.report.write_results = dying
sys.exit(main(["study", "run", path]))
"""


@pytest.mark.slow
@pytest.mark.parametrize("stage", ["quality", "report"])
def test_a_kill_in_the_quality_gate_or_the_report_stage_resumes_and_leaves_no_half_file(tmp_path: Path, stage: str):
    path = tiny_study(tmp_path, f"kill-{stage}")
    died = subprocess.run(
        [sys.executable, "-c", DYING_RUN, stage, str(path)], cwd=REPO, capture_output=True, text=True, timeout=1200
    )
    assert died.returncode == -signal.SIGKILL, died.stderr[-3000:]
    out = tmp_path / "out"
    before = stored(tmp_path)
    assert_no_duplicates(before)
    assert not (out / "report" / "index.html").exists()
    if stage == "quality":
        assert (out / ".quality.json.half.tmp").exists() and not before["results"]
    else:
        assert [p.name for p in out.glob(".report-*")] and len(before["results"]) == len(PROFILES) * 2

    summary = run_json(path)
    after = stored(tmp_path)
    assert before["results"] <= after["results"] and set(before["transcripts"]) <= set(after["transcripts"])
    assert_no_duplicates(after)
    assert len(after["results"]) == len(PROFILES) * 2 and len(after["pairwise"]) == len(PROFILES)
    assert Path(summary["report"]).is_file() and summary["report_written"] is True
    assert not list(out.glob(".quality.json.*.tmp")) and not list(out.glob(".report-*"))
    assert json.loads((out / "quality.json").read_text(encoding="utf-8"))["rate"]["sessions"] == len(PROFILES) * 2
    if stage == "report":  # everything but the report was stored before the kill
        assert summary["sessions_added"] == summary["judgements_added"] == summary["pairwise_added"] == 0
        assert summary["added_nothing"] is False and "missing report was written" in summary["message"]
    again = run_json(path)
    assert again["added_nothing"] is True and again["report_written"] is False
