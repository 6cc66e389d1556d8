"""`study plan`'s time estimate: the smoke study gives one on a fresh clone (no measurement stored yet,
from the speeds its study file states), and sessions overlap in the estimate exactly as run_batch runs
them (an endpoint's time divides by the sessions at once; local models' time does not)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import yaml

from cbtcompare.study import load_study
from cbtcompare.study.plan import plan_study

REPO = Path(__file__).resolve().parent.parent
SMOKE = REPO / "studies" / "smoke.yaml"


def test_study_plan_of_the_smoke_study_on_a_fresh_store_gives_a_time_estimate(tmp_path: Path):
    out = tmp_path / "fresh"
    result = subprocess.run(
        [sys.executable, "-m", "cbtcompare", "study", "plan", str(SMOKE), "--out", str(out), "--json"],
        cwd=REPO, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    plan = json.loads(result.stdout)
    assert plan["sessions"]["done"] == 0 and plan["sessions"]["due"] == plan["sessions"]["total"] > 0
    assert plan["ready"] is True
    roles = {(e["model"], e["role"]) for e in plan["estimate"]}
    assert {role for _, role in roles} == {"therapist", "patient", "judge"}
    for row in plan["estimate"]:
        assert row["seconds"] is not None and row["seconds"] > 0, row
        assert row["speed_source"].startswith("assumed in the study file on "), row  # says where it was measured
    assert plan["estimated_seconds"] == sum(e["seconds"] for e in plan["estimate"]) > 0
    assert not out.exists() or not any(out.iterdir())  # a plan leaves no store behind
    text = subprocess.run(
        [sys.executable, "-m", "cbtcompare", "study", "plan", str(SMOKE), "--out", str(out)],
        cwd=REPO, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert text.returncode == 0, text.stderr[-2000:]
    (total,) = [line for line in text.stdout.splitlines() if line.startswith("total:")]
    assert "unknown" not in total and ("s" in total or "min" in total), total


def test_the_plan_overlaps_sessions_where_the_patient_is_an_endpoint(tmp_path: Path):
    data = yaml.safe_load(SMOKE.read_text(encoding="utf-8"))
    data["models"] = [
        {"name": "ep-patient", "backend": "openai", "weights": "smollm2", "base_url": "http://127.0.0.1:9/v1"}
    ]  # never contacted: a plan only reads
    data["patient"] = {"model": "ep-patient", "sampling": {"max_tokens": 32}}
    data["concurrency"] = {"openai": 3}
    data["throughput"]["ep-patient"] = {"tokens_per_second": 50, "where": "a test server"}
    path = tmp_path / "mixed.yaml"
    path.write_text(yaml.safe_dump(data), encoding="utf-8")
    plan = plan_study(load_study(path), out=tmp_path / "out")
    parallel = {(e["model"], e["role"]): e["parallel"] for e in plan["estimate"]}
    assert parallel[("ep-patient", "patient")] == 3  # sessions overlap on the endpoint's network wait
    # Local therapists and the local judge share this machine's cores however many sessions overlap.
    assert {p for (_, role), p in parallel.items() if role != "patient"} == {1}
