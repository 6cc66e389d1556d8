"""The Train tab in headless Chromium (Playwright): a browser that opens the page while a job runs follows it
(progress bar with the time left, the job's log beside the loss plot), and the adapter the job publishes is
offered by the other tabs' model pickers at once, without a restart or a reload.

The job here is a run folder as start_job leaves it (config.yaml, job.json naming a live process, the
trainer's JSONL log and stdout) with a stand-in process, so the test takes seconds rather than the
15 minutes a real job needs on a shared CPU; tests/test_jobs.py runs real jobs from the tab. Before the
fix a returning browser showed no run at all, there was no progress bar or log, and a published adapter
reached the other tabs only after a restart. Takes the README's screenshot (assets/screenshots/train.png).
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
from fixtures_browser import needs_chromium
from test_browser_judge import OPTION, dropdown_options
from test_pickers import job_run, publish_adapter

from training.jobs import JOB_NAME, STDOUT_NAME
from training.staging import process_start_ticks
from training.train_lora import LOG_NAME

SCREENSHOT = Path(__file__).resolve().parent.parent / "assets" / "screenshots" / "train.png"

pytestmark = [pytest.mark.slow, pytest.mark.browser, needs_chromium]


def log_records(run_dir: Path, *records: dict) -> None:
    with (run_dir / LOG_NAME).open("a", encoding="utf-8") as handle:
        for record in records:
            handle.write(json.dumps(record) + "\n")


def running_job(app_data_dir: Path, name: str) -> tuple[Path, subprocess.Popen]:
    """A job four steps into ten, at 10 s a step, whose process is alive."""
    run_dir = job_run(app_data_dir / "runs", app_data_dir / "job-adapters", name)
    process = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(900)"])
    now = time.time()
    (run_dir / JOB_NAME).write_text(json.dumps({
        "pid": process.pid, "pgid": process.pid, "start_ticks": process_start_ticks(process.pid), "name": name,
        "device": "cpu", "started": now - 60, "resumed": False,
    }), encoding="utf-8")  # fmt: skip
    log_records(
        run_dir,
        {"event": "start", "time": now - 59, "pid": process.pid, "resume": False},
        {"event": "phase", "time": now - 58, "phase": "training"},
        {"event": "train_begin", "time": now - 50, "step": 0, "max_steps": 10},
        *({"event": "step", "time": now - 50 + 10 * step, "step": step, "max_steps": 10, "loss": 3.0 - 0.2 * step,
           "lr": 1e-3, "tokens_per_s": 120.0} for step in range(1, 5)),
    )  # fmt: skip
    (run_dir / STDOUT_NAME).write_text(
        "loading base embedded:smollm2\n{'loss': 2.2, 'grad_norm': 1.4, 'learning_rate': 0.001, 'epoch': 0.4}\n",
        encoding="utf-8",
    )
    return run_dir, process


def test_a_returning_browser_follows_the_job_and_its_adapter_reaches_every_picker(page, app_url, app_data_dir):
    name = f"browser-cbt-{uuid.uuid4().hex[:6]}"
    run_dir, process = running_job(app_data_dir, name)
    try:
        page.set_viewport_size({"width": 1400, "height": 1500})
        page.goto(app_url)  # the person comes back: no run picked in this browser yet
        page.get_by_role("tab", name="Train").click()
        status = page.locator("#train-status")
        status.get_by_text(f"{run_dir.name}: running").wait_for(timeout=60_000)
        progress = page.locator("#train-progress-text")
        assert "step 4/10" in progress.inner_text() and "40%" in progress.inner_text()
        assert "1 min 00 s left" in progress.inner_text()  # six steps at 10 s each
        assert page.locator("#train-progress").get_attribute("value") == "4"
        log = page.locator("#train-log textarea")
        assert "'grad_norm': 1.4" in log.input_value()
        assert run_dir.name in page.locator("#train-runs input").first.input_value()

        # the job goes on while the page is open: the bar, the log and the plot follow
        log_records(run_dir, {"event": "step", "time": time.time(), "step": 5, "max_steps": 10, "loss": 1.9})
        with (run_dir / STDOUT_NAME).open("a", encoding="utf-8") as handle:
            handle.write("{'loss': 1.9, 'epoch': 0.5}\n")
        progress.get_by_text("step 5/10").wait_for(timeout=30_000)
        assert "'loss': 1.9" in log.input_value()
        SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(SCREENSHOT), full_page=True)
        assert SCREENSHOT.stat().st_size > 20_000

        # it publishes and ends
        adapter = publish_adapter(app_data_dir / "job-adapters", name)
        log_records(
            run_dir,
            {"event": "published", "time": time.time(), "path": str(adapter), "name": name},
            {"event": "end", "time": time.time(), "status": "completed", "step": 10, "final_loss": 1.5},
        )
        process.kill()
        process.wait()
        status.get_by_text(f"Registered as {name}").wait_for(timeout=30_000)
        assert "completed" in status.inner_text()

        # the other tabs offer it at once, without a reload
        page.get_by_role("tab", name="Judge").click()
        page.locator("#judge-models input").first.click()
        page.locator(OPTION, has_text=name).first.wait_for(timeout=30_000)
        assert name in dropdown_options(page, "judge-models")

        # and Compare chats with it at once
        page.get_by_role("tab", name="Compare").click()
        page.locator("#compare-model-1 input").first.click()
        page.locator(OPTION, has_text=name).first.wait_for(timeout=30_000)
        page.locator(OPTION, has_text=name).first.click()
        page.locator("#message textarea").fill("I failed my exam and I keep thinking I'm useless.")
        page.locator("#send").click()
        page.locator("#pane-1").get_by_text("techniques:").first.wait_for(timeout=180_000)
        assert name in page.locator("#pane-header-1").inner_text()
    finally:
        process.kill()
        process.wait()


def test_a_refused_start_is_said_in_the_status_line_without_error_badges(page, app_url):
    # Before: the refusal was a toast, and text-less red "Error" badges stayed over the status, plot and log.
    page.goto(app_url)
    page.get_by_role("tab", name="Train").click()
    page.locator("#train-start").click()
    status = page.locator("#train-status")
    status.get_by_text("Not started").wait_for(timeout=60_000)
    assert "admin" in status.inner_text().lower()  # the reason: no (or a wrong) admin secret
    page.wait_for_timeout(1_000)
    badges = page.locator("span.error >> visible=true")
    assert [text for text in badges.all_inner_texts() if text.strip() == "Error"] == []
    page.locator("#train-abort").click()  # the next action says its own reason and replaces the first
    status.get_by_text("Not aborted").wait_for(timeout=60_000)
    assert "Not started" not in status.inner_text()
