"""The Compare tab in headless Chromium (Playwright): type, watch every pane stream, trigger the crisis panel.

Takes the README's screenshot (assets/screenshots/compare.png). Skips, saying why, only when no
Chromium is installed; `make test` installs Debian's chromium when run as root, so CI runs it.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from fixtures_browser import needs_chromium
from playwright.sync_api import expect
from test_browser_compare_sessions import REPLY_S, open_compare, pick, replies, send, set_number

SCREENSHOT = Path(__file__).resolve().parent.parent / "assets" / "screenshots" / "compare.png"

pytestmark = [
    pytest.mark.slow,
    pytest.mark.browser,
    needs_chromium,
]


def test_compare_tab_streams_every_pane_and_shows_the_crisis_panel(page, app_url):
    page.set_viewport_size({"width": 1400, "height": 1100})
    page.goto(app_url)
    page.get_by_text("not therapy and not a substitute for a clinician").first.wait_for()
    box = page.locator("#message textarea")
    box.fill("I failed my exam and I keep thinking I'm useless.")
    page.locator("#send").click()
    for pane in ("#pane-0", "#pane-1"):
        page.locator(pane).get_by_text("techniques:").first.wait_for(timeout=90_000)
        page.locator(pane).get_by_text("I keep thinking I'm useless").first.wait_for()
    assert page.locator("#pane-stats-0").inner_text().count("tokens/s") == 1
    assert not page.locator("#crisis-panel").is_visible()

    box.fill("Honestly I just want to go to sleep and never wake up.")
    box.press("Enter")
    panel = page.locator("#crisis-panel")
    panel.wait_for(state="visible", timeout=90_000)
    assert "988" in panel.inner_text() and "findahelpline.com" in panel.inner_text()
    page.locator("#pane-1").get_by_text("techniques:").nth(1).wait_for(timeout=90_000)
    SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SCREENSHOT), full_page=True)
    assert SCREENSHOT.stat().st_size > 20_000


def test_a_reloaded_conversation_shows_its_crisis_panel_again(page, app_url):
    """Issue 15: after a reload the conversation came back from the browser without its crisis panel."""
    open_compare(page, app_url)
    pick(page, 2, "(none)")
    set_number(page, "max tokens", 16)
    send(page, "I have a plan to kill myself tonight.")
    panel = page.locator("#crisis-panel")
    panel.wait_for(state="visible", timeout=REPLY_S)
    for i in (0, 1):
        expect(replies(page, i)).to_have_count(1, timeout=REPLY_S)
    expect(page.locator("#download")).to_be_enabled(timeout=60_000)  # the send has finished and is kept

    page.reload()
    page.locator("#pane-0").get_by_text("a plan to kill myself").first.wait_for(timeout=60_000)
    expect(panel).to_be_visible(timeout=30_000)
    assert "988" in panel.inner_text()
    expect(page.locator("#crisis-dismiss")).to_be_visible()
