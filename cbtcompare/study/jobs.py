"""Study runs as background jobs: `python -m cbtcompare study run FILE --json` in a subprocess with a log.

The job's files live in the study's output folder (job.json, job.log, job.out), so whoever asks about a
study later (another browser, the CLI) finds the same run: this is how the Study tab re-attaches. The
job is a separate process, so it goes on when the browser closes, and since `study run` resumes, a run
that died (kill, reboot) is simply started again. This module never imports gradio.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from cbtcompare.paths import REPO_ROOT
from cbtcompare.study.manifest import write_json_atomically
from cbtcompare.study.plan import build_registry, output_folder, require_ready
from cbtcompare.study.spec import load_study
from cbtcompare.transcript import utc_now

JOB_FILE, LOG_FILE, OUT_FILE = "job.json", "job.log", "job.out"
JobState = Literal["never run", "running", "finished", "failed"]
_CHILDREN: dict[int, subprocess.Popen] = {}  # jobs this process started, reaped when polled


class StudyJobError(ValueError):
    """A job that cannot be started (one is already running for this study)."""


@dataclass(frozen=True)
class StudyJobStatus:
    state: JobState
    out: Path
    pid: int | None
    started_at: str | None
    log_tail: str
    summary: dict | None

    @property
    def report(self) -> Path | None:
        path = Path(str(self.summary["report"])) if self.summary and self.summary.get("report") else None
        return path if path is not None and path.is_file() else None


def _alive(pid: int) -> bool:
    child = _CHILDREN.get(pid)
    if child is not None:
        if child.poll() is None:
            return True
        _CHILDREN.pop(pid, None)
        return False
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return False
    return b"study" in cmdline and b"run" in cmdline  # the pid was not reused by something else


def _tail(path: Path, lines: int = 30) -> str:
    if not path.is_file():
        return ""
    with path.open("rb") as handle:
        handle.seek(0, os.SEEK_END)
        handle.seek(max(handle.tell() - 20000, 0))
        text = handle.read().decode("utf-8", errors="replace")
    # tqdm redraws its bar with carriage returns: keep each line's last state.
    shown = [line.rsplit("\r", 1)[-1] for line in text.replace("\r\n", "\n").split("\n")]
    return "\n".join([line for line in shown if line.strip()][-lines:])


def study_job_status(study_path: Path | str, out: Path | str | None = None) -> StudyJobStatus:
    study = load_study(study_path)
    folder = output_folder(study, out)
    job_file = folder / JOB_FILE
    if not job_file.is_file():
        return StudyJobStatus("never run", folder, None, None, "", None)
    job = json.loads(job_file.read_text(encoding="utf-8"))
    pid = int(job["pid"])
    summary = None
    out_file = folder / OUT_FILE
    if out_file.is_file():
        for line in reversed(out_file.read_text(encoding="utf-8").splitlines()):
            try:
                summary = json.loads(line)
                break
            except json.JSONDecodeError:
                continue
    if _alive(pid):
        state: JobState = "running"
    else:
        state = "finished" if summary is not None and not summary.get("errors") else "failed"
    return StudyJobStatus(state, folder, pid, job.get("started_at"), _tail(folder / LOG_FILE), summary)


def start_study_job(study_path: Path | str, out: Path | str | None = None) -> StudyJobStatus:
    """Start (or resume) the study in a subprocess; refused while a run of the same study is going."""
    study = load_study(study_path)
    folder = output_folder(study, out)
    require_ready(study, build_registry(study))  # say what is missing here, not in a log nobody reads
    current = study_job_status(study.path, out)
    if current.state == "running":
        raise StudyJobError(f"study {study.spec.name} is already running (pid {current.pid}); wait or follow its log")
    folder.mkdir(parents=True, exist_ok=True)
    command = [sys.executable, "-m", "cbtcompare", "study", "run", str(study.path), "--out", str(folder), "--json"]
    with (folder / LOG_FILE).open("ab") as log, (folder / OUT_FILE).open("wb") as stdout:
        process = subprocess.Popen(
            command, cwd=REPO_ROOT, stdout=stdout, stderr=log, stdin=subprocess.DEVNULL, start_new_session=True
        )
    _CHILDREN[process.pid] = process
    write_json_atomically(folder / JOB_FILE, {"pid": process.pid, "started_at": utc_now(), "command": command})
    return study_job_status(study.path, out)
