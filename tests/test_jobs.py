"""Training jobs as real subprocesses: progress from the log, abort that saves, resume from the checkpoint,
one job per device, atomic publishing, SIGKILL detected with adapters/ untouched, readable CLI errors."""

from __future__ import annotations

import hashlib
import json
import os
import re
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from test_training import write_sessions

from cbtcompare.cli import main as cli_main
from training.config import TrainConfig
from training.jobs import (
    JobBusy,
    JobError,
    abort_job,
    device_busy,
    device_name,
    ensure_registered,
    job_status,
    resume_job,
    start_job,
    wait_for,
)
from training.train_lora import gguf_as_transformers_folder, read_log

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture
def workspace(tmp_path, monkeypatch, default_gguf) -> dict[str, Path]:
    """A private data folder (so the device lock is this test's), runs and adapters folders, a tiny dataset."""
    gguf_as_transformers_folder(default_gguf)  # the jobs then load the cached base in a second
    monkeypatch.setenv("CBTCOMPARE_DATA_DIR", str(tmp_path / "data"))
    return {
        "runs": tmp_path / "runs",
        "adapters": tmp_path / "adapters",
        "dataset": write_sessions(tmp_path / "tiny.jsonl"),
    }


def tiny_config(workspace: dict[str, Path], **changes: object) -> TrainConfig:
    values = dict(name="job-cbt", dataset=str(workspace["dataset"]), max_steps=4, max_seq_len=128, save_steps=100,
                  learning_rate=1e-3, runs_dir=str(workspace["runs"]), adapters_dir=str(workspace["adapters"]))
    values.update(changes)
    return TrainConfig(**values)  # type: ignore[arg-type]


def wait_until(run_dir: Path, predicate, timeout_s: float = 900):  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        status = job_status(run_dir)
        if predicate(status) or status.finished:
            return status
        time.sleep(0.3)
    raise AssertionError(f"timed out; last status: {job_status(run_dir).summary()}")


def tree_digest(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.mark.slow
def test_a_job_reports_progress_aborts_with_a_checkpoint_and_resumes_to_a_published_adapter(workspace):
    from cbtcompare.models.registry import Registry

    status = start_job(tiny_config(workspace))
    run_dir = status.run_dir
    assert status.pid and (run_dir / "config.yaml").is_file()
    running = wait_until(run_dir, lambda s: s.step >= 1)
    assert running.state == "running" and running.loss and running.max_steps == 4 and running.progress >= 0.25
    assert running.losses[0][0] == 1
    with pytest.raises(JobBusy, match="one job at a time"):
        start_job(tiny_config(workspace, name="second"))

    abort_job(run_dir)
    aborted = wait_for(run_dir, timeout_s=900)
    assert aborted.state == "aborted", aborted.summary()
    checkpoints = sorted((run_dir / "checkpoints").glob("checkpoint-*"))
    assert checkpoints and (run_dir / "adapter" / "adapter_model.safetensors").is_file()
    stopped_at = int(checkpoints[-1].name.split("-")[1])
    assert stopped_at < 4
    assert not (workspace["adapters"] / "job-cbt").exists()  # an aborted run publishes nothing
    assert device_busy(device_name()) is None

    resume_job(run_dir)
    done = wait_for(run_dir, timeout_s=900)
    assert done.state == "completed", done.summary()
    records = read_log(run_dir / "train_log.jsonl")
    resumed = next(r for r in records if r["event"] == "resume")
    assert resumed["checkpoint"].endswith(checkpoints[-1].name)
    after = [r["step"] for r in records[records.index(resumed):] if r["event"] == "step"]
    assert after[0] == stopped_at + 1 and after[-1] == 4
    published = workspace["adapters"] / "job-cbt"
    assert done.published == str(published) and (published / "adapter.gguf").is_file()
    registry = Registry.from_files()
    assert ensure_registered(registry, done) == "job-cbt"
    assert registry.spec("job-cbt").adapter == str(published / "adapter.gguf")


@pytest.mark.slow
def test_a_sigkilled_job_is_reported_dead_and_leaves_published_adapters_alone(workspace, capsys):
    earlier = workspace["adapters"] / "job-cbt"
    earlier.mkdir(parents=True)
    (earlier / "adapter.gguf").write_bytes(b"GGUF earlier adapter")
    (earlier / "manifest.json").write_text(json.dumps({"name": "job-cbt", "run": "earlier"}))
    before = tree_digest(workspace["adapters"])

    status = start_job(tiny_config(workspace, overwrite=True, max_steps=50))
    run_dir = status.run_dir
    wait_until(run_dir, lambda s: s.step >= 1)
    os.killpg(json.loads((run_dir / "job.json").read_text())["pgid"], signal.SIGKILL)
    dead = wait_until(run_dir, lambda s: s.state == "dead", timeout_s=30)
    assert dead.state == "dead"
    assert "killed" in dead.error and "Nothing was published" in dead.error
    assert tree_digest(workspace["adapters"]) == before
    assert device_busy(device_name()) is None  # the kernel freed the lock with the process

    assert cli_main(["train", "status", str(run_dir)]) == 1
    assert "gone without a final status" in capsys.readouterr().out


def test_bad_requests_are_refused_before_a_process_starts(workspace, capsys):
    with pytest.raises(JobError, match="does not exist"):
        start_job(tiny_config(workspace, dataset=str(workspace["runs"] / "missing.jsonl")))
    with pytest.raises(JobError, match="unknown base model"):
        start_job(tiny_config(workspace, base_model="no-such-model"))
    taken = workspace["adapters"] / "job-cbt"
    taken.mkdir(parents=True)
    with pytest.raises(JobError, match="already published"):
        start_job(tiny_config(workspace))
    assert not workspace["runs"].exists() or not any(workspace["runs"].iterdir())

    assert cli_main(["train", "start", "--set", f"dataset={workspace['runs'] / 'missing.jsonl'}"]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert cli_main(["train", "start", "--set", "lora_r=0"]) == 2
    assert "lora_r" in capsys.readouterr().err
    assert cli_main(["train", "status", "no-such-run"]) == 2
    assert "no run" in capsys.readouterr().err


@pytest.mark.slow
def test_an_invalid_dataset_fails_the_job_with_the_validator_report(workspace):
    bad = workspace["dataset"]
    bad.write_text(bad.read_text() + '{"id": "x", "messages": [{"role": "user", "content": ""}]}\n')
    status = start_job(tiny_config(workspace))
    failed = wait_for(status.run_dir, timeout_s=900)
    assert failed.state == "failed"
    assert "line 4" in failed.error and "empty patient turn" in failed.error
    assert device_busy(device_name()) is None


@pytest.fixture
def train_app_url(tmp_path) -> Iterator[str]:
    """An app of its own with an admin secret: starting, aborting and resuming jobs need it."""
    from fixtures_app import start_app

    (tmp_path / "app").mkdir()
    process, url = start_app(tmp_path / "app", {"CBTCOMPARE_ADMIN_SECRET": TRAIN_TAB_SECRET})
    yield url
    process.terminate()
    process.wait(timeout=30)


TRAIN_TAB_SECRET = "train-tab-admin-secret-for-tests"


@pytest.mark.slow
def test_the_train_tab_shows_the_validator_report_and_refuses_bad_starts(train_app_url, tmp_path):
    from gradio_client import Client

    client = Client(train_app_url, verbose=False)
    bad = write_sessions(tmp_path / "bad.jsonl")
    bad.write_text(bad.read_text() + "not json\n")
    report = client.predict(str(bad), api_name="/train_validate")
    assert "INVALID" in report and "line 4: error: not valid JSON" in report
    form = [TRAIN_TAB_SECRET, "smollm2-135m-cpu", str(tmp_path / "missing.jsonl"), "embedded:smollm2", "ui-cbt",
            1e-3, 2, 1, 128, 8, 16, False]
    with pytest.raises(Exception, match="does not exist"):
        client.predict(*form, api_name="/train_start")
    form[2], form[3] = str(bad), "no-such-model"
    with pytest.raises(Exception, match="unknown base model"):
        client.predict(*form, api_name="/train_start")

    # A real job from the tab: it starts, the poll shows its progress, abort stops it with a checkpoint.
    good = write_sessions(tmp_path / "good.jsonl")
    form[2], form[3], form[4], form[6] = str(good), "embedded:smollm2", "ui-cbt-test", 50
    status, _progress, _plot, _log, runs = client.predict(*form, api_name="/train_start")
    assert "ui-cbt-test" in status and ("starting" in status or "running" in status)
    deadline = time.monotonic() + 120
    while "step 1/" not in status and "step 2/" not in status and time.monotonic() < deadline:
        time.sleep(1)
        status, progress, _plot, log = client.predict(api_name="/train_poll")
    assert "running" in status, status
    assert re.search(r"<progress id='train-progress' value='\d+' max='50'", progress), progress  # the bar beside
    client.predict(TRAIN_TAB_SECRET, api_name="/train_abort")
    while "aborted" not in status and time.monotonic() < deadline:
        time.sleep(1)
        status, progress, _plot, log = client.predict(api_name="/train_poll")
    assert "aborted" in status, status
    assert not (REPO / "adapters" / "ui-cbt-test").exists()

