"""The Rate tab in headless Chromium (Playwright): read-to-the-end gating, a full rating, and no leaks to the page.

Every response body the page receives (documents, scripts, JSON, the SSE streams of the queue) and
every websocket frame is captured and searched for the canary names, prompts and ids planted in the
study's transcripts, before and after each rating is stored. Skips, saying why, only when no Chromium
is installed; `make test` installs Debian's chromium when run as root, so CI runs it.
"""

from __future__ import annotations

import io
import os
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from fixtures_browser import needs_chromium
from sqlalchemy import func, select
from test_rating import ITEMS, LEAK_STRINGS, canary_pair, pairs_jsonl

from cbtcompare import rating
from cbtcompare.store import Store, ratings

SCREENSHOT = Path(__file__).resolve().parent.parent / "assets" / "screenshots" / "rate.png"

pytestmark = [
    pytest.mark.slow,
    pytest.mark.browser,
    needs_chromium,
]


# Runs in the page before its own scripts: keeps the text of every fetch response body (read from a clone,
# chunk by chunk, so the queue's streamed SSE responses are kept as they arrive), EventSource message and
# websocket message the page's scripts receive.
CAPTURE_SCRIPT = """
(() => {
  const entries = [];
  window.__capturedPayloads = entries;
  const keep = (url) => { const entry = { url: String(url), text: "" }; entries.push(entry); return entry; };
  const originalFetch = window.fetch.bind(window);
  window.fetch = async (...args) => {
    const response = await originalFetch(...args);
    const entry = keep(response.url);
    try {
      const reader = response.clone().body.getReader();
      const decoder = new TextDecoder();
      (async () => {
        for (;;) {
          const { done, value } = await reader.read();
          if (done) break;
          entry.text += decoder.decode(value, { stream: true });
        }
      })().catch((error) => { entry.text += "<capture error " + error + ">"; });
    } catch (error) {
      entry.text += "<capture error " + error + ">";
    }
    return response;
  };
  for (const name of ["EventSource", "WebSocket"]) {
    const Original = window[name];
    if (!Original) continue;
    const Wrapped = function (...args) {
      const source = new Original(...args);
      const entry = keep(args[0]);
      source.addEventListener("message", (event) => { entry.text += String(event.data) + "\\n"; });
      return source;
    };
    Wrapped.prototype = Original.prototype;
    Object.assign(Wrapped, Original);
    window[name] = Wrapped;
  }
})();
"""


class PageCapture:
    """What a page receives: every finished response body and websocket frame (seen by the browser), and
    every fetch body, EventSource and websocket message (seen by the page's scripts, CAPTURE_SCRIPT)."""

    def __init__(self, page) -> None:  # type: ignore[no-untyped-def]
        self.page = page
        self.parts: list[str] = []
        self.lock = threading.Lock()
        page.add_init_script(CAPTURE_SCRIPT)
        page.on("requestfinished", self._finished)
        page.on("websocket", lambda ws: ws.on("framereceived", self._add))

    def _add(self, payload: str | bytes) -> None:
        text = payload.decode("utf-8", errors="replace") if isinstance(payload, bytes) else str(payload)
        with self.lock:
            self.parts.append(text)

    def _finished(self, request) -> None:  # type: ignore[no-untyped-def]
        response = request.response()
        if response is None:
            return
        try:
            self._add(response.body())
        except Exception as exc:  # noqa: BLE001 - a body the browser did not keep (e.g. a redirect) holds no data
            self._add(f"<no body: {exc}>")

    def text(self) -> str:
        in_page = self.page.evaluate("() => (window.__capturedPayloads || []).map(e => e.url + '\\n' + e.text)")
        with self.lock:
            return "\n".join([*self.parts, *in_page])


def stored(store: Store, study_id: str) -> int:
    with store.read() as conn:
        query = select(func.count()).select_from(ratings).where(ratings.c.study_id == study_id)
        return conn.execute(query).scalar_one()


def pick(page, elem_id: str, value: int) -> None:  # type: ignore[no-untyped-def]
    """Choose `value` in the compact item dropdown `elem_id`, as a person does with the keyboard: type the
    level into the box, press Enter; again if the page was still busy and the box did not take it."""
    box = page.locator(f"#{elem_id} input").first
    for _ in range(3):
        box.click()
        box.fill(str(value))
        page.locator("[data-testid=dropdown-option]").first.wait_for(timeout=10_000)  # the list has opened
        box.press("Enter")
        box.evaluate("e => e.blur()")
        if box.input_value() == str(value):
            return
        page.wait_for_timeout(500)
    assert box.input_value() == str(value), f"{elem_id} shows {box.input_value()!r}"


def fill_form(page, a: int, b: int) -> None:  # type: ignore[no-untyped-def]
    for side, value in (("A", a), ("B", b)):
        for item in ITEMS:
            pick(page, f"rate-{side}-{item}", value)
    page.locator("#rate-confidence").get_by_label("4", exact=True).check()
    page.locator("#rate-comment textarea").fill("B set a clearer agenda.")


@pytest.fixture(scope="module")
def rating_mode_app(tmp_path_factory) -> Iterator[tuple[str, Path]]:
    """The app as raters get it (CBTCOMPARE_MODE=rating), with no minimum reading time (the long pairs here
    would take minutes; test_rating_mode_app.py checks that time). A full app is no blind setting: its Judge
    tab lists every stored transcript by design, and those lists now follow the store."""
    from fixtures_app import start_app

    data_dir = tmp_path_factory.mktemp("rate-browser-app")
    process, url = start_app(data_dir, {"CBTCOMPARE_MODE": "rating", "CBTCOMPARE_READING_WPM": "1e9"})
    yield url, data_dir
    process.terminate()
    try:
        process.wait(timeout=20)
    except subprocess.TimeoutExpired:
        process.kill()


def test_rating_in_the_browser_is_gated_by_reading_and_leaks_nothing(page, rating_mode_app):
    app_url, app_data_dir = rating_mode_app
    store = Store(f"sqlite:///{app_data_dir / 'cbtcompare.sqlite'}")
    pairs = [canary_pair(f"browser{i}-{os.urandom(3).hex()}", turns=4, long=True) for i in range(2)]
    uploaded = rating.store_uploaded_pairs(store, io.StringIO(pairs_jsonl(pairs)))
    created = rating.create_study(store, uploaded, rating.StudySpec(raters=1, seed=3), source="browser test")
    forbidden = [*LEAK_STRINGS, *[t.id for pair in pairs for t in pair], *[t.group_id for pair in pairs for t in pair]]
    capture = PageCapture(page)

    def assert_no_leak(when: str) -> None:
        text = capture.text()
        leaked = [s for s in forbidden if s in text]
        assert not leaked, f"sent to the page {when}: {leaked}"

    page.set_viewport_size({"width": 1400, "height": 1000})
    page.goto(app_url)
    page.get_by_role("tab", name="Rate").click()
    page.locator("#rate-code input, #rate-code textarea").first.fill(created.invite_codes[0])
    page.locator("#rate-start").click()
    pair = page.locator("#rate-pair [data-view]")
    pair.wait_for(timeout=30_000)
    verdict = page.locator("#rate-verdict-b")  # the one-click verdict right under the pair
    assert not page.locator("#rate-preference").is_visible(), "the verdict buttons replace the preference radio"
    assert not page.locator("#rate-submit").is_visible()
    for number in (1, 2):
        page.get_by_text(f"Pair {number} of 2.").wait_for()
        assert "[name removed]" in pair.inner_text() and "zorblat" not in pair.inner_text()
        panes = [page.locator(f"#rate-pair [data-pane='{side}']") for side in ("a", "b")]
        assert all(p.evaluate("e => e.scrollHeight > e.clientHeight + 50") for p in panes), "panes must scroll"
        verdict_box = page.locator("#rate-verdicts").bounding_box()
        assert verdict_box["y"] < page.locator("#rate-items").bounding_box()["y"], "verdicts come before the items"
        fill_form(page, a=8, b=6)
        assert verdict.is_disabled()
        panes[0].evaluate("e => { e.scrollTop = e.scrollHeight; }")
        page.wait_for_timeout(600)
        assert verdict.is_disabled(), "one transcript read is not enough"
        panes[1].hover()
        page.mouse.wheel(0, 20_000)
        page.wait_for_function("() => !document.querySelector('#rate-verdict-b').disabled", timeout=10_000)
        assert_no_leak(f"before pair {number} was rated")
        assert stored(store, created.study_id) == number - 1
        if number == 1:
            page.screenshot(path=str(SCREENSHOT), full_page=True)
        verdict.click()
        page.locator("#rate-saved").get_by_text(f"Saved pair {number} of 2: B is better").wait_for(timeout=30_000)
        if number == 1:
            page.get_by_text("Pair 2 of 2.").wait_for(timeout=30_000)
            assert stored(store, created.study_id) == 1
            assert "1 of 2 pairs rated" in page.locator("#rate-progress").inner_text()
            assert verdict.is_disabled()
    page.get_by_text("All your pairs are rated").wait_for(timeout=30_000)
    assert stored(store, created.study_id) == 2
    record = rating.export_records(store, created.study_id)[0]
    assert record["preference"] == "B" and record["B_agenda"] == 6 and record["comment"] == "B set a clearer agenda."
    page.wait_for_timeout(500)
    text = capture.text()
    assert_no_leak("during the whole session")
    # The capture saw the pairs themselves (so it would have seen a leak), scrubbed.
    assert "Homework A for browser0" in text and "Homework B for browser1" in text and "[name removed]" in text
