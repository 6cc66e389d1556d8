"""The Simulate tab in headless Chromium (Playwright), as a user does it: start a batch, press Stop.

Before the fix the batch's stop event never reached the Stop button, so a started batch ran to the end.
Skips, saying why, only when no Chromium is installed.
"""

from __future__ import annotations

import re
import time

import pytest
from fixtures_browser import needs_chromium

pytestmark = [pytest.mark.slow, pytest.mark.browser, needs_chromium]


def test_stop_ends_a_started_batch_and_says_how_many_ran(page, app_url, app_data_dir):
    from cbtcompare.patients import curated_profiles
    from cbtcompare.store import Store

    replicates = 3
    total = len(curated_profiles()) * replicates * 2  # the tab's two default therapists, every profile
    page.set_viewport_size({"width": 1400, "height": 1100})
    page.goto(app_url)
    page.get_by_role("tab", name="Simulate").click()
    page.get_by_text("Batch: profiles x therapists x replicates").click()
    page.locator("#sim-batch-name textarea").fill("browser-stop-batch")
    for field, value in (("#sim-replicates", replicates), ("#sim-turns", 1), ("#sim-max-tokens", 24)):
        box = page.locator(f"{field} input[type=number]")
        box.fill(str(value))
        box.press("Tab")
    page.locator("#sim-batch-run").click()
    status = page.locator("#sim-batch-status")
    status.get_by_text("running").wait_for(timeout=120_000)
    batch_id = re.search(r"Batch (\S+@\w+)", status.inner_text()).group(1)
    assert batch_id.startswith("browser-stop-batch@")
    store = Store(f"sqlite:///{app_data_dir / 'cbtcompare.sqlite'}")
    deadline = time.monotonic() + 600
    while not store.batch_runs(batch_id):
        assert time.monotonic() < deadline, "no session of the batch was stored within 600 s"
        time.sleep(0.2)
    page.locator("#sim-stop").click()
    status.get_by_text("stopped").wait_for(timeout=300_000)
    runs = store.batch_runs(batch_id)
    assert 1 <= len(runs) < total, "the batch went on to the end after Stop"
    assert {row.status for row in runs.values()} == {"done"}
    shown = status.inner_text()
    assert f"{len(runs)} done" in shown and f"of {total} sessions" in shown and "stored" in shown
