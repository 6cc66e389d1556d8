"""The Models tab's Connections area in headless Chromium (Playwright), as a person uses it: add the real
llama-cpp-python server (it wants an API key) as a session connection, test it, find it in another tab's
model picker, and check that the key never comes back to the page, nor reaches the store or the app's log,
and that another browser never sees the connection.

Takes the README's screenshot (assets/screenshots/models.png). Skips, saying why, only when no Chromium is
installed; `make test` installs Debian's chromium when run as root, so CI runs it.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from fixtures_browser import needs_chromium
from playwright.sync_api import TimeoutError as PlaywrightTimeout
from test_rate_browser import PageCapture

SCREENSHOT = Path(__file__).resolve().parent.parent / "assets" / "screenshots" / "models.png"
NAME = "session-llama-server"

pytestmark = [
    pytest.mark.slow,
    pytest.mark.browser,
    needs_chromium,
]


def picker_offers(page, elem_id: str, name: str, timeout_ms: int = 30_000) -> bool:  # type: ignore[no-untyped-def]
    """Whether the dropdown `elem_id` lists `name`, opening it again until the page's refresh brings it."""
    deadline = page.evaluate("() => Date.now()") + timeout_ms
    box = page.locator(f"#{elem_id} input").first
    box.wait_for(state="visible", timeout=timeout_ms)
    while page.evaluate("() => Date.now()") < deadline:
        box.click()
        try:
            page.locator("[role=option]").first.wait_for(timeout=3_000)
        except PlaywrightTimeout:
            box.evaluate("e => e.blur()")
            continue
        shown = [line.strip() for text in page.locator("[role=option]").all_inner_texts() for line in text.split("\n")]
        box.evaluate("e => e.blur()")  # closes the list, so the next click opens it afresh
        if name in shown:
            return True
        page.wait_for_timeout(1_000)
    return False


def test_a_session_connection_is_tested_offered_in_other_tabs_and_its_key_never_comes_back(
    page, browser, app_url, app_data_dir, llama_server
):
    capture = PageCapture(page)
    page.set_viewport_size({"width": 1400, "height": 1200})
    page.goto(app_url)
    page.get_by_role("tab", name="Models").click()
    page.locator("#connection-kind").get_by_label("OpenAI-compatible endpoint").check()
    page.locator("#connection-name input, #connection-name textarea").first.fill(NAME)
    page.locator("#connection-model input, #connection-model textarea").first.fill("local")
    page.locator("#connection-url input, #connection-url textarea").first.fill(llama_server.base_url)
    key_box = page.locator("#connection-key input, #connection-key textarea").first
    key_box.fill(llama_server.api_key)
    page.locator("#connection-add").click()
    result = page.locator("#connection-result")
    result.get_by_text(f"{NAME} answered").wait_for(timeout=120_000)
    assert key_box.input_value() == "", "the key box is cleared once the key reached the server"
    assert NAME in page.locator("#connections-table").inner_text()
    assert NAME in page.locator("#models-table").inner_text()
    SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SCREENSHOT), full_page=True)
    assert SCREENSHOT.stat().st_size > 20_000

    page.get_by_role("tab", name="Judge").click(timeout=120_000)  # the shared machine can be slow to settle
    assert picker_offers(page, "judge-models", NAME), "the connection never reached the Judge tab's picker"

    other = browser.new_context().new_page()
    try:
        other.goto(app_url)
        other.get_by_role("tab", name="Judge").click()
        other.locator("#judge-models input").first.wait_for()
        other.wait_for_timeout(6_000)  # a picker refresh has happened
        assert not picker_offers(other, "judge-models", NAME, timeout_ms=2_000), "another browser sees it"
        other.get_by_role("tab", name="Models").click()
        assert NAME not in other.locator("#connections-table").inner_text()
    finally:
        other.context.close()

    page.wait_for_timeout(500)
    seen = capture.text()
    assert NAME in seen, "the capture saw the page's responses (so it would have seen the key)"
    assert llama_server.api_key not in seen
    for path in app_data_dir.rglob("*"):
        if path.is_file():
            assert llama_server.api_key.encode() not in path.read_bytes(), f"the key reached {path}"
