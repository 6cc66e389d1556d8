"""Train tab: wires widgets to training.jobs (start, poll, abort, resume) and training.validate.

The job is a subprocess (training/jobs.py), never a thread of this server; the selected run lives in
gr.State, so each browser follows its own run, and any run can be picked again after the browser closed.
A browser that loads the page while a job runs follows that job at once (re-attach). Beside the loss plot:
a progress bar with an ETA and the job's log. A published adapter is registered in the app's registry
when the poll first sees it, so every tab's model picker (cbtcompare.ui.pickers) offers it within seconds.
Starting, aborting and resuming a job and uploading a dataset change what every visitor shares (a job can
replace a published adapter): each of those events checks the admin secret on the server first.
"""

from __future__ import annotations

import functools
import html
from collections.abc import Callable
from pathlib import Path

import gradio as gr

from cbtcompare.redact import redact
from cbtcompare.ui import AppContext, check_upload_size, require_admin, ui_copy
from cbtcompare.ui.pickers import live_dropdown, model_dropdown, on_page_load
from training.config import ConfigError, TrainConfig, preset_names
from training.jobs import (
    JobError,
    JobStatus,
    abort_job,
    active_job,
    dataset_choices,
    dataset_report,
    ensure_registered,
    find_run,
    job_status,
    log_tail,
    loss_figure,
    preview_command,
    resume_job,
    run_ids,
    start_job,
    store_uploaded_dataset,
)

TITLE = "Train"
POLL_S = 2.0
DEFAULT_PRESET = "smollm2-135m-cpu"
SETTINGS = ("name", "learning_rate", "max_steps", "num_train_epochs", "max_seq_len", "lora_r", "lora_alpha")


def progress_html(status: JobStatus | None) -> str:
    """A progress bar with the step count and the time left, or one line saying where the job is."""
    if status is None:
        return "<p id='train-progress-text'>No run selected.</p>"
    fraction = status.progress
    if fraction is None:
        what = status.phase if status.phase and not status.finished else status.state
        return f"<p id='train-progress-text'>{html.escape(str(what))}</p>"
    words = [f"step {status.step}/{status.max_steps}", f"{fraction:.0%}"]
    if status.eta_s is not None:
        words.append(f"about {_duration(status.eta_s)} left")
    elif not status.finished:
        words.append("time left shown after two steps")
    else:
        words.append(status.state)
    return (f"<progress id='train-progress' value='{status.step}' max='{status.max_steps}' style='width:100%'>"
            f"</progress><p id='train-progress-text'>{html.escape(' · '.join(words))}</p>")


def _duration(seconds: float) -> str:
    seconds = int(round(seconds))
    if seconds >= 3600:
        return f"{seconds // 3600} h {seconds % 3600 // 60:02d} min"
    return f"{seconds // 60} min {seconds % 60:02d} s" if seconds >= 60 else f"{seconds} s"


def render(context: AppContext) -> None:
    presets = preset_names()
    preset_default = DEFAULT_PRESET if DEFAULT_PRESET in presets else presets[0]
    start_values = TrainConfig.from_yaml(preset_default)
    run_state = gr.State(None)  # the run folder this browser follows

    gr.Markdown(ui_copy("train_intro"))
    secret = gr.Textbox(label="Admin secret (CBTCOMPARE_ADMIN_SECRET): needed to upload, start, abort or resume",
                        type="password", elem_id="train-admin-secret")
    with gr.Row():
        with gr.Column():
            dataset = gr.Dropdown(dataset_choices(), value=start_values.dataset, label="Dataset",
                                  allow_custom_value=True, elem_id="train-dataset")
            upload = gr.File(label="…or upload a messages-JSONL file", file_types=[".jsonl"], type="filepath")
            validate = gr.Button("Validate dataset", elem_id="train-validate")
            report = gr.Textbox(label="Validator report", lines=8, max_lines=20, interactive=False)
        with gr.Column():
            preset = gr.Dropdown(presets, value=preset_default, label="Preset", elem_id="train-preset")
            base = model_dropdown(context, kind="base", value=start_values.base_model, label="Base model",
                                  allow_custom_value=True, elem_id="train-base")
            name = gr.Textbox(start_values.name, label="Adapter name (adapters/<name>/, registry name)")
            with gr.Row():
                learning_rate = gr.Number(start_values.learning_rate, label="learning rate")
                max_steps = gr.Number(start_values.max_steps, precision=0, label="max steps (-1: use epochs)")
                epochs = gr.Number(start_values.num_train_epochs, label="epochs")
            with gr.Row():
                max_seq_len = gr.Number(start_values.max_seq_len, precision=0, label="max sequence length")
                lora_r = gr.Number(start_values.lora_r, precision=0, label="LoRA r")
                lora_alpha = gr.Number(start_values.lora_alpha, label="LoRA alpha")
            overwrite = gr.Checkbox(False, label="replace an adapter already published under this name")
            command = gr.Code(preview_command(start_values), label="Command the job runs", language="shell",
                              interactive=False)
    with gr.Row():
        start = gr.Button("Start training", variant="primary", elem_id="train-start")
        abort = gr.Button("Abort (saves a checkpoint)", elem_id="train-abort")
        resume = gr.Button("Resume from checkpoint", elem_id="train-resume")
    with gr.Row():
        runs = live_dropdown(_run_choices, value=None, label="Runs (newest first; the list follows the runs folder)",
                             elem_id="train-runs")
        refresh = gr.Button("Refresh runs")
    status_text = gr.Markdown(elem_id="train-status")
    progress = gr.HTML(progress_html(None), elem_id="train-progress-box")
    with gr.Row():
        plot = gr.Plot(loss_figure(None), label="Training loss", scale=3)
        log = gr.Textbox(label="Job log (last 40 lines)", lines=16, max_lines=16, autoscroll=True,
                         interactive=False, scale=2, elem_id="train-log")
    timer = gr.Timer(POLL_S)

    form = [preset, dataset, base, name, learning_rate, max_steps, epochs, max_seq_len, lora_r, lora_alpha, overwrite]

    def config_from(preset_name: str, dataset_path: str, base_model: str, adapter_name: str, rate: float,
                    steps: float, n_epochs: float, seq_len: float, rank: float, alpha: float,
                    replace: bool) -> TrainConfig:
        overrides = {
            "dataset": dataset_path, "base_model": base_model, "name": adapter_name, "learning_rate": float(rate),
            "max_steps": int(steps), "num_train_epochs": float(n_epochs), "max_seq_len": int(seq_len),
            "lora_r": int(rank), "lora_alpha": float(alpha), "overwrite": bool(replace),
        }
        return TrainConfig.from_yaml(preset_name, overrides)

    def on_preview(*values: object) -> str:
        try:
            return preview_command(config_from(*values))  # type: ignore[arg-type]
        except (ConfigError, ValueError, TypeError) as exc:
            return f"# cannot build the command: {exc}"

    def on_preset(preset_name: str) -> list[object]:
        values = TrainConfig.from_yaml(preset_name)
        return [values.dataset, values.base_model, *(getattr(values, f) for f in SETTINGS)]

    def on_upload(secret_text: str, path: str | None, request: gr.Request) -> list[object]:
        require_admin(secret_text, request)
        if not path:
            return [gr.update(), gr.update()]
        check_upload_size(path, "the uploaded dataset")
        try:
            stored = store_uploaded_dataset(path)
        except JobError as exc:
            raise gr.Error(str(exc)) from exc
        return [gr.update(choices=dataset_choices(), value=str(stored)), dataset_report(str(stored))]

    def on_start(secret_text: str, preset_name: str, dataset_path: str, base_model: str, adapter_name: str,
                 rate: float, steps: float, n_epochs: float, seq_len: float, rank: float, alpha: float,
                 replace: bool, request: gr.Request) -> list[object]:
        require_admin(secret_text, request)
        try:
            status = start_job(config_from(preset_name, dataset_path, base_model, adapter_name, rate, steps,
                                           n_epochs, seq_len, rank, alpha, replace))
        except (JobError, ConfigError, ValueError) as exc:
            raise gr.Error(str(exc)) from exc
        return [str(status.run_dir), *views(status), gr.update(choices=_run_choices(), value=status.run_id)]

    def on_poll(run_dir: str | None) -> list[object]:
        if not run_dir:
            return [gr.skip()] * len(status_outputs)
        status = job_status(Path(run_dir))
        return views(status)

    def views(status: JobStatus) -> list[object]:
        text = f"**{status.summary().splitlines()[0]}**"
        if status.error:
            text += "\n\n```\n" + redact(status.error) + "\n```"  # a job's log tail may name a URL with a key
        registered = ensure_registered(context.registry, status)
        if registered:
            text += (f"\n\nRegistered as **{registered}** in this app's registry: every tab's model picker "
                     "offers it now (no restart).")
        return [text, progress_html(status), loss_figure(status), redact(log_tail(status.run_dir))]

    def on_load(run_dir: str | None) -> list[object]:
        """A returning browser follows the job that is running, if there is one."""
        if run_dir:
            return [gr.skip()] * 6
        status = active_job()
        if status is None:
            return [gr.skip()] * 6
        return [str(status.run_dir), gr.update(choices=_run_choices(), value=status.run_id), *views(status)]

    def on_abort(secret_text: str, run_dir: str | None, request: gr.Request) -> list[object]:
        require_admin(secret_text, request)
        if not run_dir:
            raise gr.Error("No run selected: start one or pick one under Runs.")
        try:
            status = abort_job(Path(run_dir))
        except JobError as exc:
            raise gr.Error(str(exc)) from exc
        return views(status)

    def on_resume(secret_text: str, run_dir: str | None, request: gr.Request) -> list[object]:
        require_admin(secret_text, request)
        if not run_dir:
            raise gr.Error("No run selected: pick an aborted or dead run under Runs.")
        try:
            status = resume_job(Path(run_dir))
        except JobError as exc:
            raise gr.Error(str(exc)) from exc
        return views(status)

    def on_pick_run(run_id: str | None) -> list[object]:
        if not run_id:
            return [None, "", progress_html(None), loss_figure(None), ""]
        try:
            run_dir = find_run(run_id)
        except JobError as exc:
            raise gr.Error(str(exc)) from exc
        return [str(run_dir), *views(job_status(run_dir))]

    status_outputs = [status_text, progress, plot, log]

    Handler = Callable[..., list[object]]

    def in_page(fn: Handler, verb: str, outputs: int, status_at: int) -> Handler:
        """The visible button's handler: a refusal is said in the status line (no toast, no red badges over
        the plot and log), and the next action replaces it. The API endpoints keep raising for clients."""

        @functools.wraps(fn)  # keeps the signature, so Gradio still hands over the request
        def handler(*args: object) -> list[object]:
            try:
                return fn(*args)
            except gr.Error as exc:
                said: list[object] = [gr.skip()] * outputs
                said[status_at] = f"**Not {verb}:** {redact(str(exc.message))}"
                return said

        return handler

    validate.click(dataset_report, [dataset], [report], api_name="train_validate")
    upload.upload(on_upload, [secret, upload], [dataset, report], api_name="train_upload")
    preset.change(on_preset, [preset], [dataset, base, name, learning_rate, max_steps, epochs, max_seq_len, lora_r,
                                        lora_alpha], api_name=False)
    for widget in form:
        widget.change(on_preview, form, [command], api_name=False)
    start_outputs = [run_state, *status_outputs, runs]
    start.click(in_page(on_start, "started", len(start_outputs), 1), [secret, *form], start_outputs, api_name=False)
    abort.click(in_page(on_abort, "aborted", len(status_outputs), 0), [secret, run_state], status_outputs,
                api_name=False)
    resume.click(in_page(on_resume, "resumed", len(status_outputs), 0), [secret, run_state], status_outputs,
                 api_name=False)
    with gr.Row(visible=False):  # the same actions for gradio_client, refusing with an error as before
        start_api, abort_api, resume_api = gr.Button("start"), gr.Button("abort"), gr.Button("resume")
    start_api.click(on_start, [secret, *form], start_outputs, api_name="train_start")
    abort_api.click(on_abort, [secret, run_state], status_outputs, api_name="train_abort")
    resume_api.click(on_resume, [secret, run_state], status_outputs, api_name="train_resume")
    runs.change(on_pick_run, [runs], [run_state, *status_outputs], api_name="train_pick_run")
    refresh.click(lambda: gr.update(choices=_run_choices()), None, [runs], api_name="train_runs")
    timer.tick(on_poll, [run_state], status_outputs, api_name="train_poll", queue=False, show_progress="hidden")
    on_page_load(on_load, [run_state], [run_state, runs, *status_outputs])


def _run_choices() -> list[str]:
    try:
        return run_ids()
    except OSError:
        return []
