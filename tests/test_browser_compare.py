"""The Compare tab in headless Chromium (Playwright): type, watch every pane stream, trigger the crisis panel.

Takes the README's screenshot (assets/screenshots/compare.png). Skips, saying why, only when no
Chromium is installed; `make test` installs Debian's chromium when run as root, so CI runs it.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from fixtures_browser import needs_chromium

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
