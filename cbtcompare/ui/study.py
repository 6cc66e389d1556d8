"""Study tab: pick or upload a study file, see its plan, run or resume it as a background job, follow the
log, and open the report. A thin layer over cbtcompare.study (plan_study, start_study_job,
study_job_status); uploading and running check the admin secret on the server first. The run is a
subprocess whose files live in the study's output folder, so it goes on when the browser closes, and
any browser that picks the same study again re-attaches to it.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import gradio as gr

from cbtcompare.paths import REPO_ROOT, data_dir
from cbtcompare.study import StudyFileInvalid, load_study
from cbtcompare.study.jobs import StudyJobError, StudyJobStatus, start_study_job, study_job_status
from cbtcompare.study.plan import StudyNotReady, plan_lines, plan_study
from cbtcompare.ui import check_upload_size, require_admin
from cbtcompare.ui.pickers import live_dropdown

TITLE = "Study"
POLL_S = 2.0
SHIPPED = REPO_ROOT / "studies"
INTRO = (
    "Run a whole study from one file: simulated sessions, the quality gate, CTRS and pairwise judging, and the "
    "report. The run is a background job: it goes on if you close this page, and picking the same study again "
    "shows it. Running again resumes it, or says there is nothing left to do."
)


def uploads_dir() -> Path:
    folder = data_dir() / "studies" / "uploads"
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def study_choices() -> list[str]:
    files = sorted(SHIPPED.glob("*.yaml")) + sorted(uploads_dir().glob("*.yaml"))
    return [str(path) for path in files]


def store_upload(path: str) -> str:
    """Validate an uploaded study file and keep it under the data folder as <study name>.yaml."""
    study = load_study(path)
    target = uploads_dir() / f"{study.spec.name}.yaml"
    shutil.copyfile(path, target)
    return str(target)


def status_markdown(status: StudyJobStatus) -> str:
    lines = [f"**{status.state}**" + (f" (pid {status.pid}, started {status.started_at})" if status.pid else "")]
    summary = status.summary
    if summary:
        lines.append(
            f"{summary.get('message', '')}: {summary.get('sessions')} sessions, {summary.get('judged')} judged, "
            f"{summary.get('quarantined')} quarantined, {summary.get('unscored_items')} unscored items"
        )
        for error in summary.get("errors") or []:
            lines.append(f"- failed: {error}")
    lines.append(f"Output folder: `{status.out}`")
    return "\n\n".join(lines)


def render(context: object) -> None:
    choices = study_choices()
    gr.Markdown(INTRO)
    secret = gr.Textbox(label="Admin secret (CBTCOMPARE_ADMIN_SECRET): needed to upload or run a study",
                        type="password", elem_id="study-admin-secret")  # fmt: skip
    with gr.Row():
        # The list follows the shipped and uploaded study files (another browser's upload shows at once).
        picked = live_dropdown(study_choices, value=choices[0] if choices else None, label="Study file",
                               allow_custom_value=True, elem_id="study-file")  # fmt: skip
        upload = gr.File(label="…or upload a study file", file_types=[".yaml", ".yml"], type="filepath")
    with gr.Row():
        plan_button = gr.Button("Plan", elem_id="study-plan")
        run_button = gr.Button("Run / resume", variant="primary", elem_id="study-run")
    plan_text = gr.Code(label="Plan", language=None, interactive=False, elem_id="study-plan-text")
    status_text = gr.Markdown(elem_id="study-status")
    log = gr.Textbox(label="Log (tail)", lines=12, max_lines=30, interactive=False, elem_id="study-log")
    report = gr.File(label="Report (index.html)", interactive=False)
    timer = gr.Timer(POLL_S)

    def views(path: str | None) -> list[object]:
        if not path:
            return ["Pick a study file.", "", None]
        try:
            status = study_job_status(path)
        except (StudyFileInvalid, FileNotFoundError) as exc:
            return [f"**{exc}**", "", None]
        return [status_markdown(status), status.log_tail, str(status.report) if status.report else None]

    def on_plan(path: str | None) -> str:
        if not path:
            raise gr.Error("Pick or upload a study file first.")
        try:
            return "\n".join(plan_lines(plan_study(load_study(path))))
        except (StudyFileInvalid, FileNotFoundError, ValueError, KeyError) as exc:
            raise gr.Error(str(exc)) from exc

    def on_run(secret_text: str, path: str | None, request: gr.Request) -> list[object]:
        require_admin(secret_text, request)
        if not path:
            raise gr.Error("Pick or upload a study file first.")
        try:
            start_study_job(path)
        except (StudyJobError, StudyNotReady, StudyFileInvalid, FileNotFoundError) as exc:
            raise gr.Error(str(exc)) from exc
        return views(path)

    def on_upload(secret_text: str, path: str | None, request: gr.Request) -> object:
        require_admin(secret_text, request)
        if not path:
            return gr.update()
        check_upload_size(path, "the study file")
        try:
            stored = store_upload(path)
        except (StudyFileInvalid, FileNotFoundError) as exc:
            raise gr.Error(str(exc)) from exc
        return gr.update(choices=study_choices(), value=stored)

    outputs = [status_text, log, report]
    upload.upload(on_upload, [secret, upload], [picked], api_name="study_upload")
    plan_button.click(on_plan, [picked], [plan_text], api_name="study_plan")
    run_button.click(on_run, [secret, picked], outputs, api_name="study_run")
    picked.change(views, [picked], outputs, api_name="study_status")
    timer.tick(views, [picked], outputs, api_name="study_poll")
