"""The Study tab through the official gradio_client against the real app: the plan, a study's status
(what a returning browser sees), and an uploaded study file that is refused with the field named."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from gradio_client import Client, handle_file

REPO = Path(__file__).resolve().parent.parent
SMOKE = REPO / "studies" / "smoke.yaml"


def test_the_study_tab_plans_and_reports_status(app_url: str):
    client = Client(app_url, verbose=False)
    plan = client.predict(str(SMOKE), api_name="/study_plan")
    assert "study smoke" in plan and "sessions  6 due of 6" in plan and "ok      smollm2-cbt" in plan
    status, log, report = client.predict(str(SMOKE), api_name="/study_status")
    assert status.startswith("**never run**") and log == "" and report is None


def test_an_uploaded_study_file_is_checked_before_it_is_kept(app_url: str, tmp_path: Path):
    client = Client(app_url, verbose=False)
    data = yaml.safe_load(SMOKE.read_text(encoding="utf-8"))
    data["turns"] = "many"
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump(data), encoding="utf-8")
    with pytest.raises(Exception, match="turns"):
        client.predict(handle_file(str(bad)), api_name="/study_upload")
    data["turns"], data["name"] = 1, "uploaded-smoke"
    good = tmp_path / "good.yaml"
    good.write_text(yaml.safe_dump(data), encoding="utf-8")
    picked = client.predict(handle_file(str(good)), api_name="/study_upload")
    assert picked.endswith("uploaded-smoke.yaml")
    assert "study uploaded-smoke" in client.predict(picked, api_name="/study_plan")
