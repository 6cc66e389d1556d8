"""`python -m cbtcompare report --json`: one machine-readable object with the same numbers as the page and
its CSVs (the primary analysis, the sensitivity rows, the power table) and every file written. Planted
data with a known effect in a real SQLite store, read by the real CLI (builders from test_report_planted)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pandas as pd
import pytest
from test_report_planted import CELLS, N_PATIENTS, SLOPE_SD, cli, patient_se, row, store_scores
from test_stats import JUDGES, make_planted_scores

pytestmark = pytest.mark.slow  # the real CLI on a few thousand score rows

EFFECT = 4.0


def _no_nan(token: str) -> float:
    raise AssertionError(f"not JSON: {token}")


@pytest.fixture(scope="module")
def json_report(tmp_path_factory) -> tuple[Path, dict, str]:
    folder = tmp_path_factory.mktemp("json-report")
    store_scores(folder / "data", make_planted_scores(seed=102, effect=EFFECT, slope_sd=SLOPE_SD, judges=(JUDGES[0],)))
    out = folder / "report"
    done = cli(folder / "data", "report", "--out", str(out), "--json")
    assert done.returncode == 0, done.stderr
    # The whole of stdout is one JSON object (notes go to stderr), with no NaN a strict reader refuses.
    summary = json.loads(done.stdout, parse_constant=_no_nan)
    return out, summary, (out / "index.html").read_text(encoding="utf-8")


def _same(json_row: dict, csv_row: pd.Series) -> None:
    for column, expected in csv_row.items():
        got = json_row[column]
        if isinstance(expected, str):
            assert got == expected, column
        elif pd.isna(expected):
            assert got in (None, ""), column
        else:
            assert got == pytest.approx(float(expected), rel=1e-12, abs=1e-12), column


def test_report_json_lists_every_file_it_wrote(json_report):
    out, summary, _ = json_report
    assert Path(summary["index"]) == out / "index.html"
    assert sorted(summary["files"]) == sorted(str(path) for path in out.iterdir())
    assert str(out / "tuned_vs_base.csv") in summary["files"] and str(out / "power.csv") in summary["files"]


def test_report_json_gives_the_primary_and_sensitivity_rows_with_the_pages_numbers(json_report):
    out, summary, page = json_report
    table = pd.read_csv(out / "tuned_vs_base.csv", keep_default_na=False, na_values=[""])
    primary = summary["primary"]
    _same(primary, row(table, "analysis", "primary"))
    _, se = patient_se(N_PATIENTS, CELLS, slope_sd=SLOPE_SD)
    assert primary["unit"] == "patient" and primary["n_units"] == N_PATIENTS
    assert abs(primary["mean_diff"] - EFFECT) < 3 * se and primary["ci_low"] < EFFECT < primary["ci_high"]
    (sensitivity,) = summary["sensitivity"]
    _same(sensitivity, row(table, "analysis", "sensitivity"))
    assert sensitivity["measure"] == "total_complete"
    # Every row of the table, in the page's order; the page shows the same numbers rounded to 2 decimals.
    assert [r["analysis"] for r in summary["tuned_vs_base"]] == table["analysis"].tolist()
    for json_row, (_, csv_row) in zip(summary["tuned_vs_base"], table.iterrows(), strict=True):
        _same(json_row, csv_row)
    for value in (primary["mean_diff"], primary["ci_low"], primary["ci_high"], sensitivity["mean_diff"]):
        assert f"<td>{value:.2f}</td>" in page


def test_report_json_gives_the_power_table(json_report):
    out, summary, _ = json_report
    table = pd.read_csv(out / "power.csv", keep_default_na=False, na_values=[""])
    assert len(summary["power"]) == len(table) == 2
    for json_row, (_, csv_row) in zip(summary["power"], table.iterrows(), strict=True):
        _same(json_row, csv_row)
    assert all(0 < r["power_for_difference"] <= 1 and r["n_patients"] == N_PATIENTS for r in summary["power"])
    assert not any(isinstance(v, float) and math.isnan(v) for r in summary["power"] for v in r.values())
