"""Study runs as background jobs (what the Study tab drives): a job is found again by a process that did not
start it, a second start is refused while it runs, a job that died is shown as failed and can be started
again, and a study whose models are missing is refused before anything starts."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pytest
import yaml

from cbtcompare.study import StudyNotReady, jobs
from cbtcompare.study.jobs import StudyJobError, start_study_job, study_job_status

REPO = Path(__file__).resolve().parent.parent


def tiny(tmp_path: Path, **changes: object) -> Path:
    data = yaml.safe_load((REPO / "studies" / "smoke.yaml").read_text(encoding="utf-8"))
    data.update({"name": "job-test", "out": str(tmp_path / "out"), **changes})
    path = tmp_path / "study.yaml"
    path.write_text(yaml.safe_dump(data), encoding="utf-8")
    return path


def test_a_study_with_missing_models_is_refused_before_a_job_starts(tmp_path: Path):
    path = tiny(tmp_path, patient={"model": "no-such-model"})
    with pytest.raises(StudyNotReady, match="no-such-model"):
        start_study_job(path)
    assert study_job_status(path).state == "never run"


@pytest.mark.slow
def test_a_running_job_is_found_again_refused_twice_and_shown_failed_when_it_dies(tmp_path: Path):
    path = tiny(tmp_path)
    started = start_study_job(path)
    try:
        assert started.state == "running" and started.pid
        jobs._CHILDREN.clear()  # as a server that did not start it (another browser, a restarted app) sees it
        again = study_job_status(path)
        assert again.state == "running" and again.pid == started.pid and again.out == tmp_path / "out"
        with pytest.raises(StudyJobError, match="already running"):
            start_study_job(path)
        deadline = time.monotonic() + 600
        while "sessions" not in study_job_status(path).log_tail:  # the tqdm bar reaches the log
            assert time.monotonic() < deadline, "no progress in the job's log within 600 s"
            time.sleep(0.5)
    finally:
        os.killpg(started.pid, signal.SIGKILL)
    deadline = time.monotonic() + 30
    while study_job_status(path).state == "running":
        assert time.monotonic() < deadline
        time.sleep(0.2)
    dead = study_job_status(path)
    assert dead.state == "failed" and dead.summary is None
