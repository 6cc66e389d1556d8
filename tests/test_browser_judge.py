"""The Judge tab in headless Chromium (Playwright), as a person uses it: the list follows the store, the paper's
rubric is the default, a refusal is said in words where the person looks, and a run shows its progress.

Before the fixes the stored-transcript list was read once when the server started (0 shown with 20 stored),
the default rubric was the classic 0-6 with four names for two rubrics, a refused request left text-less red
"Error" badges, and the progress bar sat at 0.0% for minutes. Takes the README's screenshot
(assets/screenshots/judge.png).
"""

from __future__ import annotations

import contextlib
import re
import uuid
from pathlib import Path

import pytest
from fixtures_browser import needs_chromium
from playwright.sync_api import TimeoutError as PlaywrightTimeout

from cbtcompare.store import Store
from cbtcompare.transcript import Transcript, Turn

SCREENSHOT = Path(__file__).resolve().parent.parent / "assets" / "screenshots" / "judge.png"

pytestmark = [pytest.mark.slow, pytest.mark.browser, needs_chromium]
OPTION = "[data-testid=dropdown-option]"  # one entry of an open Gradio dropdown


def dropdown_options(page, elem_id: str) -> list[str]:  # type: ignore[no-untyped-def]
    """What a Gradio dropdown offers when a person opens it."""
    field = page.locator(f"#{elem_id} input").first
    field.click()
    options = page.locator(OPTION)
    with contextlib.suppress(PlaywrightTimeout):  # nothing to offer (yet)
        options.first.wait_for(timeout=5_000)
    texts = [text.strip() for text in options.all_inner_texts()]
    field.press("Escape")
    page.locator("body").click(position={"x": 5, "y": 5})
    return texts


def open_judge_tab(page, app_url: str) -> None:  # type: ignore[no-untyped-def]
    page.set_viewport_size({"width": 1400, "height": 1300})
    page.goto(app_url)
    page.get_by_role("tab", name="Judge").click()
    page.locator("#judge-run").wait_for()


def store_transcripts(app_data_dir: Path, therapist: str, count: int) -> list[str]:
    """Transcripts stored behind the page's back, as another tab or `python -m cbtcompare simulate` would."""
    store = Store(f"sqlite:///{app_data_dir / 'cbtcompare.sqlite'}")
    transcripts = [
        Transcript(
            id=f"{therapist}-{uuid.uuid4().hex[:8]}",
            kind="compare",
            therapist={"name": therapist},
            turns=[
                Turn(role="therapist", text="What would you like to put on our agenda today?"),
                Turn(role="patient", text=f"I keep thinking I'm useless ({index})."),
                Turn(role="therapist", text="When you think that, what goes through your mind? Let's write it down."),
            ],
        )
        for index in range(count)
    ]
    store.save_transcripts(transcripts)
    return [t.id for t in transcripts]


def test_the_stored_list_follows_the_store_without_a_reload(page, app_url, app_data_dir):
    open_judge_tab(page, app_url)
    therapist = f"live-{uuid.uuid4().hex[:6]}"
    assert not any(therapist in option for option in dropdown_options(page, "judge-stored"))
    store_transcripts(app_data_dir, therapist, 3)
    # no reload, no Refresh click: the list looks again by itself
    page.locator("#judge-stored input").first.click()
    page.locator(OPTION, has_text=therapist).first.wait_for(timeout=30_000)
    assert sum(therapist in option for option in dropdown_options(page, "judge-stored")) == 3
    page.reload()
    page.get_by_role("tab", name="Judge").click()
    assert sum(therapist in option for option in dropdown_options(page, "judge-stored")) == 3


def test_one_name_per_rubric_and_the_papers_by_default(page, app_url):
    open_judge_tab(page, app_url)
    shown = page.locator("#judge-rubric input").first.input_value()
    assert "1-10" in shown and "paper" in shown.lower()
    options = dropdown_options(page, "judge-rubric")
    assert len(options) == 2, options  # was four: paper, classic, paper_1_10, classic_0_6
    assert any("0-6" in option for option in options)


def test_a_refusal_is_said_in_words_then_a_run_shows_progress_and_its_table(page, app_url, app_data_dir):
    open_judge_tab(page, app_url)
    page.locator("#judge-run").click()
    status = page.locator("#judge-status")
    status.get_by_text("pick stored transcripts or upload a file first").wait_for(timeout=60_000)
    assert "Not judged" in status.inner_text()
    # no text-less red badge anywhere: every "Error" on the page comes with its reason
    badges = page.locator("span.error >> visible=true")
    assert [text for text in badges.all_inner_texts() if text.strip() == "Error"] == []

    therapist = f"judged-{uuid.uuid4().hex[:6]}"
    store_transcripts(app_data_dir, therapist, 1)
    page.locator("#judge-stored input").first.click()
    page.locator(OPTION, has_text=therapist).first.wait_for(timeout=30_000)
    page.locator(OPTION, has_text=therapist).first.click()
    page.locator("body").click(position={"x": 5, "y": 5})
    page.locator("#judge-run").click()
    # the old refusal is gone at once, and the run says where it is
    status.get_by_text("pick stored transcripts").wait_for(state="detached", timeout=30_000)
    # .first: while the status line re-renders, the old and the new text may both be on the page for a moment
    status.get_by_text(re.compile(r"Judging: call 1 of 1 running, \d+ s so far")).first.wait_for(timeout=60_000)
    status.get_by_text("Judged 1 transcript(s) with 1 judge(s)").wait_for(timeout=600_000)
    table = page.locator("#judge-table")
    table.get_by_text("TOTAL").first.wait_for()
    assert therapist in table.inner_text()
    SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SCREENSHOT), full_page=True)
    assert SCREENSHOT.stat().st_size > 20_000
