"""Readable results, and lists that follow what is stored.

- The Results tab in headless Chromium (Playwright), as a person uses it: upload a scores CSV, compute, and
  read p-values as "< 0.001" (not 1.2e-09), numbers rounded, an empty table explained in words, and a
  library's warning in plain words. The downloaded CSVs keep full precision. Takes the README's screenshot
  (assets/screenshots/results.png).
- The Study tab's file list follows the study files: one uploaded after the page loaded (by another
  browser) shows without a reload (assets/screenshots/study.png).
- Property tests of the formatting helpers on input nobody wrote by hand.
Browser tests skip, saying why, only when no Chromium is installed.
"""

from __future__ import annotations

import math
import shutil

import pandas as pd
import pytest
from fixtures_browser import needs_chromium
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.pandas import column, data_frames
from playwright.sync_api import TimeoutError as PlaywrightTimeout
from test_stats import JUDGES, SEED, make_planted_scores

from cbtcompare.paths import REPO_ROOT
from cbtcompare.ui.results import EMPTY_REASONS, format_p, plain_note, readable_frame, readable_text

SCREENSHOTS = REPO_ROOT / "assets" / "screenshots"


# --- the helpers ------------------------------------------------------------------------------------------


@given(st.floats(allow_nan=True, allow_infinity=True))
def test_a_p_value_reads_as_people_write_it(p):
    shown = format_p(p)
    if not math.isfinite(p):
        assert shown == ""
    elif p < 0.001:
        assert shown == "< 0.001"
    else:
        assert "e" not in shown and abs(float(shown) - p) <= 0.0005


def test_a_table_keeps_its_rows_with_p_values_and_numbers_rounded():
    frame = pd.DataFrame({"model": ["a", "b"], "p_value": [1.2e-9, 0.04321], "mean": [6.123456, 7.0], "n": [3, 4]})
    shown = readable_frame(frame, "paper_table")
    assert list(shown.columns) == ["model", "p_value", "mean", "n"]
    assert list(shown["p_value"]) == ["< 0.001", "0.043"]
    assert list(shown["mean"]) == ["6.12", "7.00"]
    assert list(shown["model"]) == ["a", "b"] and list(shown["n"]) == [3, 4]
    assert frame["p_value"].iloc[0] == 1.2e-9, "the frame itself (what the CSVs are written from) is untouched"


@pytest.mark.parametrize("name", ["judge_alpha", "mixed_model", "tuned_vs_base", "not-a-table"])
def test_an_empty_table_says_why(name):
    shown = readable_frame(pd.DataFrame(), name)
    text = " ".join(str(v) for v in shown.iloc[:, 0])
    assert len(shown) == 1 and len(text.split()) >= 4
    if name in EMPTY_REASONS:
        assert text == EMPTY_REASONS[name]


@pytest.mark.parametrize(
    ("note", "words"),
    [
        ("Mixed model warning: Maximum Likelihood optimization failed to converge. Check mle_retvals", "rough"),
        ("Mixed model warning: The MLE may be on the boundary of the parameter space.", "hardly differ"),
        ("Mixed model warning: Random effects covariance is singular", "hardly differ"),
        ("Mixed model warning: The Hessian matrix at the estimated parameter values is not positive definite.",
         "unreliable"),
        ("Wilcoxon: RuntimeWarning: invalid value encountered in divide", "undefined"),
    ],
)  # fmt: skip
def test_a_library_warning_is_summarised_in_plain_words(note, words):
    plain = plain_note(note)
    assert words in plain and plain.startswith(note.split(":", 1)[0])
    assert "Library message" in plain  # the original stays, for whoever reports it


def test_a_p_value_written_inside_text_is_formatted_too():
    # Seen in the browser: the contrast table's analysis column read "... p = 5.08e-09".
    frame = pd.DataFrame({"analysis": ["Wilcoxon p = 5.08e-09", "t-test p=0.04321", "top = 3"]})
    assert list(readable_frame(frame)["analysis"]) == ["Wilcoxon p < 0.001", "t-test p = 0.043", "top = 3"]
    assert readable_text("Shapiro p = 1e-12 and p = 0.5") == "Shapiro p < 0.001 and p = 0.500"


def test_a_note_that_is_no_warning_is_left_as_it_is():
    note = "Inter-judge agreement not computed: the scores come from one judge"
    assert plain_note(note) == note


@settings(max_examples=60, deadline=None)
@given(
    data_frames(
        [
            column("p_value", dtype=float),
            column("mean", dtype=float),
            column("label", elements=st.text()),
            column("count", dtype=int),
        ]
    ),
    st.text(max_size=30),
    st.text(max_size=400),
)
def test_any_table_or_note_gives_a_readable_table_never_a_crash(frame, name, note):
    shown = readable_frame(frame, name)
    assert len(shown) == max(len(frame), 1)
    if len(frame):
        assert list(shown.columns) == list(frame.columns)
        assert all(v == "" or v == "< 0.001" or "e" not in v for v in shown["p_value"])
    assert isinstance(plain_note(note), str) and note[:40].split(":", 1)[0] in plain_note(note)


# --- the Results tab in the browser -------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.browser
@needs_chromium
def test_results_read_as_people_read_them(page, app_url, tmp_path):
    scores = make_planted_scores(seed=SEED, n_patients=8, n_sessions=2, judges=(JUDGES[0],))
    upload = tmp_path / "scores.csv"
    scores.to_csv(upload, index=False)
    page.set_viewport_size({"width": 1400, "height": 1200})
    page.goto(app_url)
    page.get_by_role("tab", name="Results").click()
    page.locator("#results-source").get_by_label("Upload a CSV").check()
    page.locator("#results-upload input[type=file]").set_input_files(str(upload))
    page.locator("#results-upload").get_by_text("scores.csv").first.wait_for(timeout=120_000)
    page.locator("#results-compute").click()
    notes = page.locator("#results-notes")
    notes.get_by_text("transcripts,").first.wait_for(timeout=240_000)
    contrast = page.locator("#results-tuned_vs_base").inner_text()
    assert "< 0.001" in contrast, contrast[:800]
    assert "e-" not in contrast, "a p-value in scientific notation"
    page.get_by_text("Inter-judge reliability (Krippendorff").click()  # open its accordion (one judge here)
    alpha = page.locator("#results-judge_alpha")
    alpha.get_by_text(EMPTY_REASONS["judge_alpha"][:30]).first.wait_for(state="attached", timeout=30_000)
    assert EMPTY_REASONS["judge_alpha"] in alpha.text_content()
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SCREENSHOTS / "results.png"), full_page=True)
    # The download keeps full precision: readable_frame formats a copy (test_a_table_keeps_its_rows_...).


# --- the Study tab's list follows the files ---------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.browser
@needs_chromium
def test_a_study_file_added_after_the_page_loaded_shows_in_the_list(page, app_url, app_data_dir):
    page.set_viewport_size({"width": 1400, "height": 1000})
    page.goto(app_url)
    page.get_by_role("tab", name="Study").click()
    box = page.locator("#study-file input").first
    box.wait_for(state="visible")
    uploads = app_data_dir / "studies" / "uploads"
    uploads.mkdir(parents=True, exist_ok=True)
    added = uploads / "added-after-load.yaml"
    shutil.copyfile(REPO_ROOT / "studies" / "smoke.yaml", added)
    deadline = page.evaluate("() => Date.now()") + 30_000
    seen: list[str] = []
    while page.evaluate("() => Date.now()") < deadline:
        box.click()
        try:
            page.locator("[role=option]").first.wait_for(timeout=3_000)
            seen = [t.strip() for t in page.locator("[role=option]").all_inner_texts()]
        except PlaywrightTimeout:
            pass
        box.evaluate("e => e.blur()")
        if any(t.endswith(str(added)) for t in seen):
            break
        page.wait_for_timeout(1_000)
    assert any(t.endswith(str(added)) for t in seen), seen
    page.screenshot(path=str(SCREENSHOTS / "study.png"), full_page=True)
    added.unlink()
