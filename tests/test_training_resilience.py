"""Training survives a kill: real subprocess jobs SIGKILLed mid-checkpoint and mid-publish, then resumed.

Each job is the tiny CPU run (the default SmolLM2 base, a three-session dataset, a few steps of 128 tokens).
The kill lands at a chosen moment by freezing the job's process group (SIGSTOP) the instant the folder
being written appears, checking that it is caught half-written, then sending SIGKILL.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from test_training import write_sessions

from cbtcompare.cli import main as cli_main
from training.config import TrainConfig
from training.jobs import job_status, resume_job, start_job, wait_for
from training.train_lora import gguf_as_transformers_folder, read_log


@pytest.fixture
def workspace(tmp_path, monkeypatch, default_gguf) -> dict[str, Path]:
    """A private data folder holding the runs (so `train list` sees them), an adapters folder, a tiny dataset."""
    gguf_as_transformers_folder(default_gguf)
    monkeypatch.setenv("CBTCOMPARE_DATA_DIR", str(tmp_path / "data"))
    return {
        "runs": tmp_path / "data" / "runs",
        "adapters": tmp_path / "adapters",
        "dataset": write_sessions(tmp_path / "tiny.jsonl"),
    }


def job_settings(workspace: dict[str, Path], **changes: object) -> dict[str, object]:
    values: dict[str, object] = dict(
        name="kill-cbt", dataset=str(workspace["dataset"]), max_steps=3, max_seq_len=128, save_steps=1,
        learning_rate=1e-3, runs_dir=str(workspace["runs"]), adapters_dir=str(workspace["adapters"]),
    )
    values.update(changes)
    return values


def pgid_of(run_dir: Path) -> int:
    return int(json.loads((run_dir / "job.json").read_text())["pgid"])


def freeze_when(run_dir: Path, appeared: Callable[[], Path | None], timeout_s: float = 1500) -> Path:
    """Poll (every millisecond) until `appeared` names a path, then SIGSTOP the job; returns that path."""
    deadline = time.monotonic() + timeout_s
    last_status = 0.0
    while time.monotonic() < deadline:
        found = appeared()
        if found is not None:
            os.killpg(pgid_of(run_dir), signal.SIGSTOP)
            return found
        if time.monotonic() - last_status > 1.0:
            last_status = time.monotonic()
            status = job_status(run_dir)
            assert not status.finished, f"the job ended before the moment to kill it: {status.summary()}"
        time.sleep(0.001)
    raise AssertionError(f"timed out; last status: {job_status(run_dir).summary()}")


def kill(run_dir: Path) -> None:
    pgid = pgid_of(run_dir)
    os.killpg(pgid, signal.SIGKILL)
    os.killpg(pgid, signal.SIGCONT)
    deadline = time.monotonic() + 30
    while job_status(run_dir).state != "dead" and time.monotonic() < deadline:
        time.sleep(0.1)
    assert job_status(run_dir).state == "dead"


def tree_digest(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def steps_after_last_resume(run_dir: Path) -> list[int]:
    records = read_log(run_dir / "train_log.jsonl")
    resumed = max(i for i, r in enumerate(records) if r["event"] == "resume")
    return [r["step"] for r in records[resumed:] if r["event"] == "step"]


@pytest.mark.slow
def test_a_job_killed_while_saving_a_checkpoint_resumes_from_the_last_complete_one(workspace):
    status = start_job(TrainConfig(**job_settings(workspace, max_steps=4)))
    run_dir = status.run_dir
    checkpoints = run_dir / "checkpoints"

    # Freeze the job the moment checkpoint-2 (or, if that one is missed, checkpoint-3) is being written.
    caught: Path | None = None
    for step in (2, 3):
        folder = freeze_when(run_dir, lambda s=step: checkpoints / f"checkpoint-{s}"
                             if (checkpoints / f"checkpoint-{s}").is_dir() else None)
        if not (folder / "trainer_state.json").exists():
            caught = folder
            break
        os.killpg(pgid_of(run_dir), signal.SIGCONT)  # it had finished saving: wait for the next one
    assert caught is not None, "could not catch the job while it was saving a checkpoint"
    kill(run_dir)
    step = int(caught.name.split("-")[1])
    half_written = tree_digest(caught)

    dead = job_status(run_dir)
    assert f"resume it from its last checkpoint (step {step - 1})" in dead.error, dead.error

    resume_job(run_dir)
    done = wait_for(run_dir, timeout_s=1500)
    assert done.state == "completed", done.summary()
    records = read_log(run_dir / "train_log.jsonl")
    set_aside = [r for r in records if r["event"] == "checkpoint_set_aside"]
    assert len(set_aside) == 1 and set_aside[0]["path"] == str(caught)
    moved = Path(set_aside[0]["moved_to"])
    assert moved.parent == run_dir / "incomplete-checkpoints" and "not deleted" in set_aside[0]["note"]
    assert tree_digest(moved) == half_written  # the user's files, untouched
    resumed = next(r for r in reversed(records) if r["event"] == "resume")
    assert resumed["checkpoint"] == str(checkpoints / f"checkpoint-{step - 1}")
    assert steps_after_last_resume(run_dir) == list(range(step, 5))
    assert (workspace["adapters"] / "kill-cbt" / "adapter.gguf").is_file()


@pytest.mark.slow
def test_a_job_killed_while_publishing_is_cleaned_up_and_resumes_to_exactly_max_steps(workspace, capsys):
    # Started as a user would, with the learning rate written as YAML reads it: "2e-4" is text to PyYAML.
    settings = job_settings(workspace, learning_rate="2e-4", save_steps=100)
    argv = ["train", "start", "--config", "smollm2-135m-cpu"]
    for key, value in settings.items():
        argv += ["--set", f"{key}={value}"]
    assert cli_main(argv) == 0, capsys.readouterr().err
    (run_dir,) = [p for p in workspace["runs"].iterdir() if p.is_dir()]
    assert TrainConfig.from_yaml(run_dir / "config.yaml").learning_rate == pytest.approx(2e-4)

    adapters = workspace["adapters"]

    def staging() -> Path | None:
        found = [p for p in adapters.glob(".partial-*") if (p / "adapter_model.safetensors").is_file()]
        return found[0] if found else None

    partial = freeze_when(run_dir, staging)
    kill(run_dir)
    assert partial.is_dir() and not (adapters / "kill-cbt").exists()
    size_mb = sum(p.stat().st_size for p in partial.rglob("*") if p.is_file()) / 1e6

    capsys.readouterr()
    assert cli_main(["train", "list"]) == 0
    err = capsys.readouterr().err
    assert f"removed {partial}" in err and "killed" in err, err
    assert not partial.exists() and list(adapters.iterdir()) == [], (size_mb, list(adapters.iterdir()))

    # The checkpoint at step 3 is the run's last: the resume publishes it without training a step more.
    assert cli_main(["train", "resume", run_dir.name, "--wait"]) == 0, capsys.readouterr().err
    assert steps_after_last_resume(run_dir) == []
    records = read_log(run_dir / "train_log.jsonl")
    end = records[-1]
    assert end["event"] == "end" and end["status"] == "completed" and end["step"] == 3
    manifest = json.loads((adapters / "kill-cbt" / "manifest.json").read_text())
    assert manifest["steps"] == 3 and manifest["config"]["learning_rate"] == pytest.approx(2e-4)
    assert max(point["step"] for point in manifest["loss_curve"]) == 3
    assert sorted(p.name for p in adapters.iterdir()) == ["kill-cbt"]


def test_leftovers_of_dead_processes_are_removed_or_restored_and_live_ones_kept(tmp_path):
    from training.staging import clean_partial_outputs

    finished = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                              text=True, check=True)
    dead_pid = int(finished.stdout)
    alive = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        adapters = tmp_path / "adapters"
        for name in (f".partial-{dead_pid}-0123abcd-mine", f".partial-{alive.pid}-0123abcd-theirs",
                     f".replaced-{dead_pid}-4567cdef-shipped", ".partial-legacy-89abcdef", "keep-me"):
            (adapters / name).mkdir(parents=True)
            (adapters / name / "adapter.gguf").write_bytes(b"GGUF" + name.encode())
        actions = clean_partial_outputs(adapters)
        assert sorted(p.name for p in adapters.iterdir()) == [
            f".partial-{alive.pid}-0123abcd-theirs", "keep-me", "shipped"]
        restored = (adapters / "shipped" / "adapter.gguf").read_bytes()
        assert restored == f"GGUF.replaced-{dead_pid}-4567cdef-shipped".encode()
        assert len(actions) == 3 and any(a.startswith(f"restored {adapters / 'shipped'}") for a in actions)
    finally:
        alive.kill()
        alive.wait()
