"""Endpoint cost of a study: tokens its remote models reported (the usage ledger) x the study file's prices,
and the estimate `study plan` gives for the paper's study. Planted ledgers with known answers."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cbtcompare.study import load_study
from cbtcompare.study.cost import endpoint_costs, read_usage_ledger
from cbtcompare.study.plan import build_registry, is_remote, study_costs

REPO = Path(__file__).resolve().parent.parent
PAPER = REPO / "studies" / "paper-2412.00251.yaml"


def write_ledger(path: Path, rows: list[dict], cut_last: bool = False) -> None:
    text = "".join(json.dumps(row) + "\n" for row in rows)
    if cut_last:
        text += '{"stage": "sessions", "role": "patient", "model": "deepseek-pat'  # a kill mid-line
    path.write_text(text, encoding="utf-8")


def test_cost_is_reported_tokens_times_price_for_endpoints_only(tmp_path: Path):
    study = load_study(PAPER)
    registry = build_registry(study)
    price = study.spec.prices["deepseek-patient"]
    write_ledger(
        tmp_path / "usage.jsonl",
        [
            {
                "stage": "sessions",
                "role": "patient",
                "model": "deepseek-patient",
                "prompt_tokens": 1_500_000,
                "completion_tokens": 300_000,
                "seconds": 10.0,
            },
            {
                "stage": "sessions",
                "role": "patient",
                "model": "deepseek-patient",
                "prompt_tokens": 500_000,
                "completion_tokens": 200_000,
                "seconds": 5.0,
            },
            {
                "stage": "sessions",
                "role": "therapist",
                "model": "llama31-8b-cbt",
                "prompt_tokens": 9_000_000,
                "completion_tokens": 900_000,
                "seconds": 100.0,
            },
            {
                "stage": "judge",
                "role": "judge",
                "model": "gemini-judge",
                "completion_tokens": 1_000_000,
                "seconds": 50.0,
            },
        ],  # fmt: skip
        cut_last=True,
    )
    rows = {row["model"]: row for row in study_costs(study, tmp_path, registry)}
    assert "llama31-8b-cbt" not in rows  # local weights: no per-token cost
    patient = rows["deepseek-patient"]
    assert patient["prompt_tokens"] == 2_000_000 and patient["completion_tokens"] == 500_000
    expected = 2.0 * price.input_per_million + 0.5 * price.output_per_million
    assert patient["cost"] == pytest.approx(expected) and not patient["lower_bound"]
    judge = rows["gemini-judge"]
    assert judge["lower_bound"] and "not logged" in judge["note"]
    assert judge["cost"] == pytest.approx(1.0 * study.spec.prices["gemini-judge"].output_per_million)


def test_a_remote_model_without_a_price_or_without_reported_prompt_tokens_gets_no_guess(tmp_path: Path):
    study = load_study(PAPER)
    registry = build_registry(study)
    write_ledger(
        tmp_path / "usage.jsonl",
        [{"stage": "sessions", "role": "patient", "model": "deepseek-patient", "prompt_tokens": None,
          "completion_tokens": 10, "seconds": 1.0}],
    )  # fmt: skip
    totals = read_usage_ledger(tmp_path / "usage.jsonl").values()
    (unreported,) = endpoint_costs(totals, study.spec.prices, lambda name: is_remote(registry, name))
    assert unreported.lower_bound and "did not report prompt tokens" in unreported.note
    (unpriced,) = endpoint_costs(totals, {}, lambda name: is_remote(registry, name))
    assert unpriced.cost is None and "no price for deepseek-patient" in unpriced.note
    assert endpoint_costs(totals, study.spec.prices, lambda name: False) == []


def test_study_plan_for_the_paper_states_time_and_cost_with_their_basis(tmp_path: Path):
    result = subprocess.run(
        [sys.executable, "-m", "cbtcompare", "study", "plan", str(PAPER), "--out", str(tmp_path / "out"), "--json"],
        cwd=REPO, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    plan = json.loads(result.stdout)
    spec = yaml.safe_load(PAPER.read_text(encoding="utf-8"))
    rows = {(e["model"], e["role"]): e for e in plan["estimate"]}
    patient = rows[("deepseek-patient", "patient")]
    sessions = 6 * spec["profiles"]["sampled"]["n"] * spec["sessions"]
    assert plan["sessions"]["due"] == sessions == 1200
    assert patient["calls"] == sessions * (spec["turns"] - 1)
    assert patient["completion_tokens"] == patient["calls"] * spec["patient"]["sampling"]["max_tokens"]
    price = spec["prices"]["deepseek-patient"]
    expected = patient["prompt_tokens"] / 1e6 * price["input_per_million"] + (
        patient["completion_tokens"] / 1e6 * price["output_per_million"]
    )
    assert patient["cost"] == pytest.approx(expected, abs=0.01) and patient["currency"] == "USD"
    therapist = rows[("llama31-8b-cbt", "therapist")]
    per_therapist = sessions // 6
    # every turn, plus the carry-over summary the therapist writes after each session
    assert therapist["calls"] == per_therapist * spec["turns"] + per_therapist
    assert therapist["cost"] is None and "A100" in therapist["speed_source"]
    assert plan["estimated_cost"]["USD"] == pytest.approx(sum(e["cost"] or 0 for e in plan["estimate"]), abs=0.05)


LEDGER_VALUES = st.one_of(
    st.none(), st.booleans(), st.integers(), st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=40),
    st.lists(st.integers(), max_size=3), st.dictionaries(st.text(max_size=5), st.integers(), max_size=2),
)  # fmt: skip


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    rows=st.lists(
        st.dictionaries(
            st.sampled_from(["model", "role", "completion_tokens", "prompt_tokens", "seconds", "stage"]),
            LEDGER_VALUES,
            max_size=6,
        ),
        max_size=8,
    ),
    junk=st.text(max_size=200),
)
def test_any_ledger_gives_finite_totals_or_skips_the_line(tmp_path: Path, rows: list[dict], junk: str):
    path = tmp_path / "usage.jsonl"
    lines = [json.dumps(row, allow_nan=True) for row in rows] + junk.splitlines()
    path.write_text("\n".join(lines), encoding="utf-8", errors="surrogatepass")
    totals = read_usage_ledger(path)
    for total in totals.values():
        assert all(math.isfinite(v) and v >= 0 for v in (total.completion_tokens, total.seconds, total.prompt_tokens))
    keys = {(str(r["model"]), str(r["role"])) for r in rows if {"model", "role"} <= r.keys()}
    assert set(totals) <= keys  # junk lines never make a row
