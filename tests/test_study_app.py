"""The Study tab through the official gradio_client against the real app: the plan, a study's status
(what a returning browser sees), and the admin gate on uploading and running."""

from __future__ import annotations

from pathlib import Path

import pytest
from gradio_client import Client, handle_file

REPO = Path(__file__).resolve().parent.parent
SMOKE = REPO / "studies" / "smoke.yaml"


def test_the_study_tab_plans_and_reports_status(app_url: str):
    client = Client(app_url, verbose=False)
    plan = client.predict(str(SMOKE), api_name="/study_plan")
    assert "study smoke" in plan and "sessions  6 due of 6" in plan and "ok      smollm2-cbt" in plan
    status, log, report = client.predict(str(SMOKE), api_name="/study_status")
    assert status.startswith("**never run**") and log == "" and report is None


def test_uploading_or_running_a_study_needs_the_admin_secret(app_url: str):
    client = Client(app_url, verbose=False)  # the shared app has no admin secret set: admin events are refused
    with pytest.raises(Exception, match="[Aa]dmin"):
        client.predict("", handle_file(str(SMOKE)), api_name="/study_upload")
    with pytest.raises(Exception, match="[Aa]dmin"):
        client.predict("guess", str(SMOKE), api_name="/study_run")
    status, _, _ = client.predict(str(SMOKE), api_name="/study_status")
    assert status.startswith("**never run**")  # nothing was started
