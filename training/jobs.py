"""Training jobs: each a subprocess (`python -m training.train_lora`) with its own run folder and log.

`start_job` writes the run folder (config.yaml, job.json) and launches the trainer in its own session, so
it outlives the browser and the web server. Status, progress and loss are read back from the run's
train_log.jsonl; a job whose process is gone without an `end` line (SIGKILL, out of memory) is reported
as dead, with the checkpoint it can resume from. `abort_job` sends SIGTERM to the job's process group:
the trainer finishes the step in flight, saves a checkpoint and the adapter, and logs `aborted`.
`resume_job` continues a run from its last checkpoint. One job at a time per device: the launcher takes
an exclusive flock on runs/.lock-<device> and hands it to the child, so the kernel frees it when the job
ends, however it ends. A finished adapter appears in adapters/<name>/ only through an atomic rename; the
unfinished copy a publish killed midway leaves behind is removed on the next start, resume, publish or
`train list`, and logged. A resume sets an incomplete checkpoint (killed while saving) aside, untouched.

Nothing here trains, imports gradio or runs training inside the caller's process or threads.
"""

from __future__ import annotations

import contextlib
import fcntl
import functools
import json
import os
import shlex
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from cbtcompare.content_hash import content_digest
from cbtcompare.models.base import ModelSpec, Sampling
from cbtcompare.models.registry import backend_capabilities
from cbtcompare.paths import REPO_ROOT
from training.config import ConfigError, TrainConfig
from training.staging import clean_partial_outputs, process_alive, process_start_ticks
from training.train_lora import (
    CONFIG_NAME,
    LOG_NAME,
    MANIFEST_NAME,
    RunLog,
    TrainingError,
    check_publish_target,
    last_checkpoint,
    new_run_id,
    read_log,
    resolve_base_model,
)

JOB_NAME = "job.json"
STDOUT_NAME = "stdout.log"
ABORT_MARKER = "abort_requested"

State = Literal["starting", "running", "stopping", "completed", "aborted", "failed", "dead"]
FINAL_STATES = ("completed", "aborted", "failed", "dead")


class JobError(RuntimeError):
    """A job that cannot be started, found, aborted or resumed; the message says why and what to do."""


class JobBusy(JobError):
    """Another job holds this device."""


# --- processes -----------------------------------------------------------------------------------------------


_CHILDREN: dict[int, subprocess.Popen] = {}  # jobs this process launched, reaped when polled


def _reap() -> None:
    for pid, process in list(_CHILDREN.items()):
        if process.poll() is not None:
            del _CHILDREN[pid]


def device_name() -> str:
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def _lock_path(device: str) -> Path:
    """One lock per device for the whole data folder, whichever runs folder a job writes to."""
    from cbtcompare.paths import data_dir

    return data_dir() / f".train-lock-{device}"


def _take_lock(device: str) -> int:
    path = _lock_path(device)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = path.read_text(encoding="utf-8").strip() if path.is_file() else ""
        os.close(fd)
        raise JobBusy(
            f"a training job is already running on the {device} ({holder or 'unknown run'}); abort it or wait for "
            "it to finish: one job at a time per device"
        ) from None
    return fd


def device_busy(device: str) -> str | None:
    """The run holding the device, or None when it is free."""
    try:
        fd = _take_lock(device)
    except JobBusy:
        return _lock_path(device).read_text(encoding="utf-8").strip() or "unknown run"
    os.close(fd)
    return None


# --- status --------------------------------------------------------------------------------------------------


@dataclass
class JobStatus:
    """What a run folder says about its job; every field comes from the folder, none from memory."""

    run_id: str
    run_dir: Path
    name: str
    state: State
    pid: int | None = None
    step: int = 0
    max_steps: int | None = None
    loss: float | None = None
    lr: float | None = None
    tokens_per_s: float | None = None
    epoch: float | None = None
    started: float | None = None
    updated: float | None = None
    error: str | None = None
    published: str | None = None
    final_loss: float | None = None
    checkpoint: str | None = None
    phase: str | None = None
    seconds_per_step: float | None = None
    losses: list[tuple[int, float]] = field(default_factory=list)

    @property
    def progress(self) -> float | None:
        if not self.max_steps:
            return None
        return min(1.0, self.step / self.max_steps)

    @property
    def eta_s(self) -> float | None:
        """Seconds left at the pace of the steps logged since the last start or resume (None before two steps)."""
        if self.finished or not self.max_steps or self.seconds_per_step is None:
            return None
        return max(0.0, (self.max_steps - self.step) * self.seconds_per_step)

    @property
    def finished(self) -> bool:
        return self.state in FINAL_STATES

    def summary(self) -> str:
        """One readable line for the CLI and the UI."""
        parts = [f"{self.run_id}: {self.state}"]
        if self.max_steps:
            parts.append(f"step {self.step}/{self.max_steps}")
        elif self.phase and not self.finished:
            parts.append(self.phase)
        if self.loss is not None:
            parts.append(f"loss {self.loss:.4f}")
        if self.tokens_per_s:
            parts.append(f"{self.tokens_per_s:.0f} tokens/s")
        if self.published:
            parts.append(f"published to {self.published}")
        text = ", ".join(parts)
        if self.error:
            text += f"\n{self.error}"
        return text

    def as_dict(self) -> dict[str, Any]:
        data = {k: v for k, v in self.__dict__.items() if k != "losses"}
        data["run_dir"] = str(self.run_dir)
        data["progress"] = self.progress
        data["eta_s"] = self.eta_s
        data["losses"] = [list(p) for p in self.losses]
        return data


def _read_job(run_dir: Path) -> dict[str, Any]:
    path = run_dir / JOB_NAME
    if not path.is_file():
        return {}
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError:
        return {}


def job_status(run_dir: Path) -> JobStatus:
    """Read one run folder: the log's last segment (since the last start or resume) decides the state."""
    _reap()
    if not (run_dir / CONFIG_NAME).is_file():
        raise JobError(f"{run_dir} is not a run folder (no {CONFIG_NAME})")
    records = read_log(run_dir / LOG_NAME)
    job = _read_job(run_dir)
    name = job.get("name") or run_dir.name
    status = JobStatus(run_id=run_dir.name, run_dir=run_dir, name=name, state="starting", pid=job.get("pid"),
                       started=job.get("started"))
    last_start = max((i for i, r in enumerate(records) if r.get("event") == "start"), default=-1)
    launched = float(job.get("started") or 0) - 1.0  # an `end` from before the last launch (a resume) is history
    by_step: dict[int, float] = {}
    paced: list[tuple[float, int]] = []  # (time, step) of this segment's steps, for the pace
    for index, record in enumerate(records):
        event = record.get("event")
        status.updated = record.get("time", status.updated)
        if event == "step" and record.get("loss") is not None:
            by_step[int(record["step"])] = float(record["loss"])
            status.step = int(record["step"])
            status.max_steps = record.get("max_steps") or status.max_steps
            status.loss, status.lr = record.get("loss"), record.get("lr")
            status.tokens_per_s, status.epoch = record.get("tokens_per_s"), record.get("epoch")
            if index > last_start and record.get("time") is not None:
                paced.append((float(record["time"]), status.step))
        elif event == "train_begin":
            status.max_steps = record.get("max_steps") or status.max_steps
            status.step = int(record.get("step") or status.step)
        elif event == "phase":
            status.phase = record.get("phase")
        elif event == "checkpoint":
            status.checkpoint = record.get("path")
        elif event == "published":
            status.published = record.get("path")
        elif event == "end" and index > last_start and record.get("time", 0) >= launched:
            status.state = record.get("status", "failed")
            status.error = record.get("error")
            status.final_loss = record.get("final_loss")
    status.losses = sorted(by_step.items())
    if len(paced) >= 2 and paced[-1][1] > paced[0][1]:
        status.seconds_per_step = (paced[-1][0] - paced[0][0]) / (paced[-1][1] - paced[0][1])
    if status.state in FINAL_STATES:
        return status
    pid = job.get("pid")
    alive = bool(pid) and process_alive(int(pid), job.get("start_ticks"))
    if alive:
        status.state = "stopping" if (run_dir / ABORT_MARKER).exists() else ("running" if records else "starting")
        return status
    checkpoint = last_checkpoint(run_dir)
    status.state = "dead"
    resume_hint = (
        f"; resume it from its last checkpoint (step {checkpoint.name.rsplit('-', 1)[-1]})"
        if checkpoint else "; no checkpoint was written, so start it again"
    )
    status.error = (
        f"the training process (pid {pid}) is gone without a final status: it was killed (SIGKILL, out of memory) "
        f"or crashed{resume_hint}. Nothing was published from this run."
        + _stdout_tail(run_dir)
    )
    return status


def log_tail(run_dir: Path, lines: int = 40, max_bytes: int = 64_000) -> str:
    """The last non-blank lines of the job's output (stdout.log), read from its end only."""
    path = run_dir / STDOUT_NAME
    try:
        with path.open("rb") as handle:
            handle.seek(max(0, path.stat().st_size - max_bytes))
            text = handle.read().decode("utf-8", errors="replace")
    except OSError:
        return ""
    return "\n".join([line for line in text.replace("\r", "\n").splitlines() if line.strip()][-lines:])


def _stdout_tail(run_dir: Path, lines: int = 6) -> str:
    tail = log_tail(run_dir, lines)
    return ("\nLast output:\n" + tail) if tail else ""


def list_jobs(runs_dir: Path | None = None) -> list[JobStatus]:
    """Every run folder under `runs_dir`, newest first."""
    runs_dir = runs_dir or TrainConfig().runs_path()
    if not runs_dir.is_dir():
        return []
    statuses = []
    for folder in sorted(runs_dir.iterdir(), reverse=True):
        if folder.is_dir() and not folder.name.startswith(".") and (folder / CONFIG_NAME).is_file():
            statuses.append(job_status(folder))
    return statuses


def active_job(runs_dir: Path | None = None) -> JobStatus | None:
    """The newest run whose job is still starting, running or stopping (a returning browser re-attaches)."""
    runs_dir = runs_dir or TrainConfig().runs_path()
    if not runs_dir.is_dir():
        return None
    for folder in sorted(runs_dir.iterdir(), reverse=True):
        if folder.is_dir() and not folder.name.startswith(".") and (folder / JOB_NAME).is_file():
            try:
                status = job_status(folder)
            except JobError:
                continue
            if not status.finished:
                return status
    return None


def run_ids(runs_dir: Path | None = None) -> list[str]:
    """Run ids, newest first, from the folder names alone (cheap enough to poll)."""
    runs_dir = runs_dir or TrainConfig().runs_path()
    if not runs_dir.is_dir():
        return []
    return [p.name for p in sorted(runs_dir.iterdir(), reverse=True)
            if p.is_dir() and not p.name.startswith(".") and (p / CONFIG_NAME).is_file()]


@functools.lru_cache(maxsize=512)
def _adapters_path_of(config_file: str, _mtime_ns: int) -> Path | None:
    try:
        return TrainConfig.from_yaml(Path(config_file)).adapters_path()
    except ConfigError:
        return None


def adapter_folders(runs_dir: Path | None = None) -> list[Path]:
    """Every folder jobs publish adapters into: the default adapters/ and each run's configured one."""
    folders = {TrainConfig().adapters_path()}
    runs_dir = runs_dir or TrainConfig().runs_path()
    if runs_dir.is_dir():
        for config_file in runs_dir.glob(f"*/{CONFIG_NAME}"):
            with contextlib.suppress(OSError):
                folder = _adapters_path_of(str(config_file), config_file.stat().st_mtime_ns)
                if folder is not None:
                    folders.add(folder)
    return sorted(folders)


def clean_stale_outputs(runs_dir: Path | None = None) -> list[str]:
    """Remove the unfinished copies killed publishes left in adapters/ (the default folder and each run's).

    Returns one line per action; a copy whose publishing process is still alive is left alone.
    """
    return [action for folder in adapter_folders(runs_dir) for action in clean_partial_outputs(folder)]


def find_run(run: str | Path, runs_dir: Path | None = None) -> Path:
    """A run folder from its path, its id, or a unique prefix of its id."""
    path = Path(run)
    if (path / CONFIG_NAME).is_file():
        return path
    runs_dir = runs_dir or TrainConfig().runs_path()
    matches = [p for p in runs_dir.glob(f"{run}*") if (p / CONFIG_NAME).is_file()] if runs_dir.is_dir() else []
    if len(matches) == 1:
        return matches[0]
    if not matches:
        raise JobError(f"no run {run!r} in {runs_dir}; `python -m cbtcompare train list` shows the runs")
    raise JobError(f"{run!r} matches {len(matches)} runs; give more of the id")


# --- start, abort, resume ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Launcher:
    """How the trainer is started: plain Python, or `accelerate launch` over several GPUs."""

    kind: Literal["python", "accelerate"] = "python"
    num_processes: int = 1

    def command(self, run_dir: Path, resume: bool = False) -> list[str]:
        tail = ["--run-dir", str(run_dir)] + (["--resume"] if resume else ["--config", str(run_dir / CONFIG_NAME)])
        if self.kind == "accelerate":
            return [sys.executable, "-m", "accelerate.commands.launch", "--num_processes", str(self.num_processes),
                    "-m", "training.train_lora", *tail]
        return [sys.executable, "-m", "training.train_lora", *tail]


def preview_command(config: TrainConfig, launcher: Launcher | None = None) -> str:
    """The shell command a job runs (with its settings as --set overrides of the preset), for display."""
    launcher = launcher or Launcher()
    defaults = TrainConfig().to_dict()
    overrides = [
        f"--set {key}={shlex.quote(json.dumps(value) if isinstance(value, list) else str(value))}"
        for key, value in config.to_dict().items()
        if value != defaults.get(key)
    ]
    prefix = (
        f"accelerate launch --num_processes {launcher.num_processes} -m training.train_lora"
        if launcher.kind == "accelerate"
        else "python -m training.train_lora"
    )
    return " \\\n    ".join([prefix + " --config <run>/config.yaml", *overrides])


def preflight(config: TrainConfig) -> None:
    """Cheap checks before a process is started: the settings, the dataset path, the base model, the name."""
    config.check()
    dataset = config.dataset_path()
    if not dataset.is_file():
        raise JobError(f"dataset {dataset} does not exist; upload one or point dataset at a messages-JSONL file")
    try:
        resolve_base_model(config.base_model)
    except Exception as exc:
        raise JobError(str(exc)) from exc
    try:
        check_publish_target(config)
    except TrainingError as exc:
        raise JobError(str(exc)) from exc


def start_job(config: TrainConfig, launcher: Launcher | None = None, *, device: str | None = None) -> JobStatus:
    """Check the settings, create the run folder and launch the trainer as a subprocess; returns at once."""
    preflight(config)
    runs_dir = config.runs_path()
    device = device or ("cuda" if config.qlora else device_name())
    fd = _take_lock(device)
    try:
        run_dir = runs_dir / new_run_id(config.name)
        run_dir.mkdir(parents=True)
        (run_dir / CONFIG_NAME).write_text(config.to_yaml(), encoding="utf-8")
        _log_cleanup(run_dir, config)
        return _launch(run_dir, config, launcher or Launcher(), fd, device, resume=False)
    finally:
        os.close(fd)


def resume_job(run: str | Path, launcher: Launcher | None = None, *, runs_dir: Path | None = None) -> JobStatus:
    """Continue an aborted, failed or dead run from its last checkpoint, in the same run folder."""
    run_dir = find_run(run, runs_dir)
    status = job_status(run_dir)
    if not status.finished:
        raise JobError(f"{status.run_id} is still {status.state}; abort it before resuming")
    if status.state == "completed":
        raise JobError(f"{status.run_id} already completed; start a new run to train further")
    config = TrainConfig.from_yaml(run_dir / CONFIG_NAME)
    device = _read_job(run_dir).get("device") or ("cuda" if config.qlora else device_name())
    _wait_exit(run_dir, 30.0)  # an aborted job logs its end a moment before its process exits
    fd = _take_lock(device)
    try:
        (run_dir / ABORT_MARKER).unlink(missing_ok=True)
        _log_cleanup(run_dir, config)
        return _launch(run_dir, config, launcher or Launcher(), fd, device, resume=True)
    finally:
        os.close(fd)


def _log_cleanup(run_dir: Path, config: TrainConfig) -> None:
    """Clear what killed publishes left in this run's adapters folder, and say so in the run's log."""
    log = RunLog(run_dir / LOG_NAME)
    for action in clean_partial_outputs(config.adapters_path()):
        log.write("cleanup", note=action)


def _launch(run_dir: Path, config: TrainConfig, launcher: Launcher, lock_fd: int, device: str,
            resume: bool) -> JobStatus:
    command = launcher.command(run_dir, resume=resume)
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(REPO_ROOT), *filter(None, [env.get("PYTHONPATH")])])
    env.setdefault("TOKENIZERS_PARALLELISM", "false")
    env["PYTHONUNBUFFERED"] = "1"
    os.ftruncate(lock_fd, 0)
    os.pwrite(lock_fd, f"run {run_dir.name} in {run_dir.parent}".encode(), 0)
    with (run_dir / STDOUT_NAME).open("ab") as output:
        process = subprocess.Popen(
            command, cwd=REPO_ROOT, env=env, stdout=output, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            start_new_session=True, pass_fds=(lock_fd,),
        )
    _CHILDREN[process.pid] = process
    job = {
        "pid": process.pid,
        "pgid": process.pid,
        "start_ticks": process_start_ticks(process.pid),
        "command": command,
        "name": config.name,
        "device": device,
        "started": time.time(),
        "resumed": resume,
    }
    (run_dir / JOB_NAME).write_text(json.dumps(job, indent=2), encoding="utf-8")
    return job_status(run_dir)


def abort_job(run: str | Path, *, runs_dir: Path | None = None) -> JobStatus:
    """SIGTERM the job's process group: it saves a checkpoint and the adapter after the step in flight."""
    run_dir = find_run(run, runs_dir)
    status = job_status(run_dir)
    if status.finished:
        raise JobError(f"{status.run_id} is not running (it is {status.state}); nothing to abort")
    job = _read_job(run_dir)
    (run_dir / ABORT_MARKER).write_text(str(time.time()), encoding="utf-8")
    with contextlib.suppress(ProcessLookupError):
        os.killpg(int(job["pgid"]), signal.SIGTERM)
    return job_status(run_dir)


def wait_for(run_dir: Path, states: Sequence[str] = FINAL_STATES, timeout_s: float = 600,
             poll_s: float = 0.5) -> JobStatus:
    """Poll until the job reaches one of `states`; a finished job is also waited out until its process exits."""
    deadline = time.monotonic() + timeout_s
    while True:
        status = job_status(run_dir)
        if status.state in states or status.finished or time.monotonic() > deadline:
            if status.finished:
                _wait_exit(run_dir, max(1.0, min(30.0, deadline - time.monotonic())))
            return status
        time.sleep(poll_s)


def _wait_exit(run_dir: Path, timeout_s: float) -> bool:
    """Wait until the run's process has exited (it logs `end`, then shuts down); True when it is gone."""
    job = _read_job(run_dir)
    pid = job.get("pid")
    deadline = time.monotonic() + timeout_s
    while pid and process_alive(int(pid), job.get("start_ticks")):
        _reap()
        if time.monotonic() > deadline:
            return False
        time.sleep(0.1)
    return True


# --- published adapters in the registry ----------------------------------------------------------------------


def adapter_spec(folder: Path, registry: Any | None = None) -> ModelSpec:
    """The registry spec of a published adapter: llama.cpp over the base GGUF, else transformers + PEFT."""
    manifest = json.loads((folder / MANIFEST_NAME).read_text(encoding="utf-8"))
    base = manifest["base_model"]
    config = manifest.get("config", {})
    sampling = _base_sampling(registry, base.get("weights")) if registry is not None else Sampling()
    description = (
        f"LoRA adapter {manifest['name']} (run {manifest.get('run_id')}, {manifest.get('steps')} steps, final loss "
        f"{manifest.get('final_loss')}) over {base.get('reference')}"
    )
    gguf = folder / "adapter.gguf"
    if gguf.is_file() and (base.get("kind") == "gguf" or base.get("gguf")):
        weights = base["weights"] if base.get("kind") == "gguf" else base["gguf"]
        return ModelSpec(name=manifest["name"], backend="llamacpp", weights=weights, adapter=str(gguf),
                         system_prompt=config.get("system_prompt"), sampling=sampling, description=description)
    return ModelSpec(name=manifest["name"], backend="hf", weights=base["weights"], adapter=str(folder),
                     system_prompt=config.get("system_prompt"), sampling=sampling, description=description)


def _base_sampling(registry: Any, weights: str | None) -> Sampling:
    for name in registry.names():
        spec = registry.spec(name)
        if spec.weights == weights and not spec.adapter:
            return spec.sampling
    return Sampling()


def register_adapter(registry: Any, folder: Path) -> str:
    """Add a published adapter to the registry (replacing a spec of the same name); returns its name."""
    spec = adapter_spec(folder, registry)
    registry.add(spec)
    return spec.name


def register_published_adapters(registry: Any, adapters_dir: Path | None = None, *,
                                seen: dict[str, int] | None = None) -> list[str]:
    """Register every published adapter not already served by a spec (e.g. the shipped smollm2-cbt).

    Without `adapters_dir`, every folder jobs publish into (adapter_folders). `seen` (folder -> manifest
    mtime) remembers what this registry took in: an adapter republished under the same name (a job with
    overwrite) is registered again, so its old weights are dropped. Returns the names added or replaced.
    """
    parents = [adapters_dir] if adapters_dir else adapter_folders()
    in_use = {str(Path(registry.spec(n).adapter).resolve()) for n in registry.names() if registry.spec(n).adapter}
    added = []
    for parent in parents:
        if not parent.is_dir():
            continue
        for folder in sorted(parent.iterdir()):
            manifest = folder / MANIFEST_NAME
            if folder.name.startswith(".") or not manifest.is_file():
                continue
            try:
                stamp = manifest.stat().st_mtime_ns
            except OSError:
                continue  # replaced while we looked; the next scan sees the new one
            key = str(folder.resolve())
            if seen is not None and key in seen:
                if seen[key] == stamp:
                    continue
            else:
                paths = {str((folder / "adapter.gguf").resolve()), key}
                if paths & in_use or folder.name in registry.names():
                    continue
            try:
                added.append(register_adapter(registry, folder))
            except (OSError, KeyError, ValueError, json.JSONDecodeError):
                continue  # a folder that is not one of ours; the Models tab shows what loaded
            if seen is not None:
                seen[key] = stamp
    return added


def ensure_registered(registry: Any, status: JobStatus) -> str | None:
    """Register a completed job's published adapter once; returns its registry name (None if not published)."""
    if status.state != "completed" or not status.published:
        return None
    folder = Path(status.published)
    spec = adapter_spec(folder, registry)
    if spec.name in registry.names() and registry.spec(spec.name).adapter == spec.adapter:
        return spec.name
    registry.add(spec)
    return spec.name


# --- helpers for the Train tab and the CLI -------------------------------------------------------------------


def dataset_choices() -> list[str]:
    """Shipped datasets (training/data/**/*.jsonl) and uploaded ones, as paths the config accepts."""
    from cbtcompare.paths import data_dir

    shipped = sorted(str(p.relative_to(REPO_ROOT)) for p in (REPO_ROOT / "training" / "data").rglob("*.jsonl"))
    uploads = data_dir() / "uploads" / "datasets"
    uploaded = sorted(str(p) for p in uploads.glob("*.jsonl")) if uploads.is_dir() else []
    return shipped + uploaded


def dataset_report(dataset_path: str | None) -> str:
    """The validator's report for a dataset (token lengths against the default model's serving context)."""
    from training.config import repo_path
    from training.validate import validate_file

    if not dataset_path:
        return "Pick or upload a dataset first."
    return validate_file(repo_path(dataset_path)).format(limit=40)


def store_uploaded_dataset(path: str | Path) -> Path:
    """Keep an uploaded dataset under <data dir>/uploads/datasets/ (named by content), so a job can read it later."""
    import re
    import shutil

    from cbtcompare.paths import data_dir

    source = Path(path)
    if not source.is_file():
        raise JobError(f"the uploaded file {source} is gone; upload it again")
    digest = content_digest(source.read_bytes())
    stem = re.sub(r"[^A-Za-z0-9._-]+", "-", source.stem)[:40] or "dataset"
    target = data_dir() / "uploads" / "datasets" / f"{stem}-{digest}.jsonl"
    target.parent.mkdir(parents=True, exist_ok=True)
    if not target.exists():
        partial = target.with_suffix(".partial")
        shutil.copyfile(source, partial)
        os.replace(partial, target)
    return target


def base_model_choices(registry: Any) -> list[str]:
    """Registry models with local weights (GGUF or transformers) that can serve as a base."""
    names = [
        n
        for n in registry.names()
        if backend_capabilities(registry.spec(n).backend).trainable and not registry.spec(n).adapter
    ]
    return ["embedded:smollm2", *names]


def loss_figure(status: JobStatus | None) -> Any:
    """A plotly line of loss per step (empty until the first step is logged)."""
    import plotly.graph_objects as go

    figure = go.Figure()
    if status is not None and status.losses:
        steps, losses = zip(*status.losses, strict=True)
        figure.add_trace(go.Scatter(x=list(steps), y=list(losses), mode="lines+markers", name="training loss"))
    title = f"{status.run_id}: {status.state}" if status else "no run selected"
    figure.update_layout(title=title, xaxis_title="step", yaxis_title="loss (therapist tokens)", height=340,
                         margin={"l": 50, "r": 20, "t": 50, "b": 40})
    return figure
