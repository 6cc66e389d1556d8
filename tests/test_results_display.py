"""One way to show numbers: the HTML report and the Results tab format a table through report.display_frame,
so a p-value reads "< 0.001" (never 5.1e-09) in both, other numbers are rounded alike, and the CSVs keep
full precision. Property tests on tables nobody wrote by hand. All data here is synthetic."""

from __future__ import annotations

import html
import math
import re

import pandas as pd
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.pandas import column, data_frames

from cbtcompare import report
from cbtcompare.ui import results


def planted_table() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "analysis": ["primary: patient means", "secondary: session cells"],
            "test": ["paired t; Wilcoxon p = 5.08e-09", "paired t; Wilcoxon p = 0.04321"],
            "n_units": [20, 240],
            "mean_diff": [4.123456, 3.98765],
            "p_value": [5.08e-09, 0.04321],
            "p_first": [0.5, math.nan],
        }
    )


def cells_of_page(page: str) -> list[str]:
    cells = re.findall(r"<td>(.*?)</td>", page, flags=re.DOTALL)
    return [html.unescape(re.sub(r"<.*?>", "", cell)).strip() for cell in cells]


def test_the_page_and_the_results_tab_show_a_table_the_same_way(tmp_path):
    table = planted_table()
    bundle = report.ResultsBundle(tables={"tuned_vs_base": table})
    page = report.render_html(bundle, title="t", summary=[], csv_names=[])
    on_page = cells_of_page(page)
    on_screen = results.readable_frame(table, "tuned_vs_base")
    assert on_page == [str(v) for v in on_screen.to_numpy().ravel()]
    assert list(on_screen["p_value"]) == ["< 0.001", "0.043"] and list(on_screen["p_first"]) == ["0.500", ""]
    assert list(on_screen["test"]) == ["paired t; Wilcoxon p < 0.001", "paired t; Wilcoxon p = 0.043"]
    assert list(on_screen["mean_diff"]) == ["4.12", "3.99"] and list(on_screen["n_units"]) == [20, 240]
    assert "e-09" not in page.split("<h2>Conventions</h2>")[1]
    assert table.loc[0, "p_value"] == 5.08e-09  # the frame the CSV is written from is untouched


def test_a_note_on_the_page_writes_its_p_values_as_the_tab_does():
    note = "Random-slope model: likelihood-ratio (ML refits) p = 1.2e-07"
    page = report.render_html(report.ResultsBundle(notes=[note]), title="t", summary=[], csv_names=[])
    assert "p &lt; 0.001" in page and "1.2e-07" not in page
    assert results.readable_text(note) == note.replace("p = 1.2e-07", "p < 0.001")


@settings(max_examples=60, deadline=None)
@given(
    data_frames(
        [
            column("p_value", dtype=float),
            column("mean", dtype=float),
            column("label", elements=st.text()),
            column("flag", dtype=bool),
            column("count", dtype=int),
        ]
    )
)
def test_any_table_shows_the_same_on_the_page_and_the_tab_and_never_crashes(frame):
    shown = report.display_frame(frame)
    assert shown.shape == frame.shape and list(shown.columns) == list(frame.columns)
    assert all(v == "" or v == "< 0.001" or "e" not in v for v in shown["p_value"])
    if len(frame):
        assert results.readable_frame(frame).equals(shown)
        assert list(shown["count"]) == list(frame["count"]) and list(shown["flag"]) == list(frame["flag"])
