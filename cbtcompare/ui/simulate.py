"""Simulate tab: a simulated patient talks to 2-3 therapist models (one matched group), or a whole batch.

Wires widgets to cbtcompare.simulate (stream_group, run_batch) and cbtcompare.patients; the panes fill turn
by turn from a worker thread. One Stop button stops whichever run this browser started last (a matched
session or a batch): both hand their stop event to the browser's state before they start working.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator

import gradio as gr

from cbtcompare.compare import MAX_PANES
from cbtcompare.patients import PatientProfile, list_profiles, load_profile, sample_profile
from cbtcompare.simulate import BatchConfig, BatchProgress, BatchResult, SessionSettings, run_batch, stream_group
from cbtcompare.transcript import Transcript, Turn
from cbtcompare.ui import AppContext, generation_concurrency, ui_copy
from cbtcompare.ui.pickers import model_dropdown
from cbtcompare.ui.render import technique_label

TITLE = "Simulate"
SAMPLED = "sample a new profile from the seed"


def profile_for(choice: str, seed: int) -> PatientProfile:
    return sample_profile(int(seed)) if choice == SAMPLED else load_profile(choice)


def turn_messages(turns: list[Turn]) -> list[dict[str, str]]:
    """A simulated session as chat messages: the patient on the right, the therapist with its technique tags."""
    messages = []
    for turn in turns:
        if turn.role == "patient":
            note = " <small>(crisis language flagged)</small>" if turn.flags.get("crisis") else ""
            messages.append({"role": "user", "content": turn.text + note})
        else:
            tags = ", ".join(technique_label(t) for t in turn.flags.get("techniques", [])) or "none detected"
            messages.append({"role": "assistant", "content": f"{turn.text}\n\n<small>techniques: {tags}</small>"})
    return messages


def render(context: AppContext) -> None:
    names = context.registry.names()
    profiles = list_profiles()
    last_run = gr.State(None)
    run_control = gr.State(None)  # this browser session's stop switch (a threading.Event)
    gr.Markdown(ui_copy("simulate_intro"))
    with gr.Row():
        with gr.Column(scale=2):
            profile_choice = gr.Dropdown(
                [(f"{p.name} ({p.id})", p.id) for p in profiles] + [(SAMPLED, SAMPLED)],
                value=profiles[0].id if profiles else SAMPLED,
                label="Patient profile",
            )
            seed = gr.Number(0, precision=0, label="Seed (sessions and sampled profiles)")
            card = gr.Markdown(profiles[0].card() if profiles else "")
        with gr.Column(scale=2):
            patient = model_dropdown(
                context,
                label="Patient model",
                value="smollm2-instruct" if "smollm2-instruct" in names else names[0],
            )
            therapists = model_dropdown(
                context,
                value=[n for n in ("smollm2-instruct", "smollm2-cbt-prompted") if n in names],
                multiselect=True,
                max_choices=MAX_PANES,
                label="Therapist models (2-3)",
            )
            turns = gr.Slider(1, 20, value=4, step=1, label="Therapist turns per session", elem_id="sim-turns")
            max_tokens = gr.Slider(16, 512, value=120, step=8, label="Max tokens per turn", elem_id="sim-max-tokens")
    with gr.Row():
        run = gr.Button("Run matched session", variant="primary")
        stop = gr.Button("Stop", elem_id="sim-stop")
        save = gr.Button("Save to store")
    status = gr.Markdown()
    with gr.Row():
        panes = [
            gr.Chatbot(label=f"Therapist {chr(65 + i)}", height=420, elem_id=f"sim-pane-{i}") for i in range(MAX_PANES)
        ]
    with gr.Accordion("Batch: profiles x therapists x replicates, stored and resumable", open=False):
        with gr.Row():
            batch_name = gr.Textbox(
                "ui-batch", label="Batch name (rerunning the same settings resumes it)", elem_id="sim-batch-name"
            )
            batch_profiles = gr.Dropdown([p.id for p in profiles], multiselect=True, label="Profiles")
            replicates = gr.Number(1, precision=0, minimum=1, label="Replicates", elem_id="sim-replicates")
        run_batch_button = gr.Button("Run batch", elem_id="sim-batch-run")
        batch_status = gr.Markdown(elem_id="sim-batch-status")

    def stop_run(event: threading.Event | None) -> None:
        if event is not None:
            event.set()

    def on_profile(choice: str, seed_value: float) -> str:
        try:
            return profile_for(choice, int(seed_value or 0)).card()
        except (ValueError, FileNotFoundError) as exc:
            return f"**Profile problem:** {exc}"

    def on_run(
        choice: str,
        seed_value: float,
        patient_name: str,
        therapist_names: list[str] | None,
        turn_count: float,
        budget: float,
    ) -> Iterator[list[object]]:
        chosen = list(therapist_names or [])
        if not 2 <= len(chosen) <= MAX_PANES:
            raise gr.Error("Pick two or three therapist models.")
        try:
            profile = profile_for(choice, int(seed_value or 0))
            patient_model = context.registry.load(patient_name)
            models = [context.registry.load(name) for name in chosen]
        except Exception as exc:
            raise gr.Error(str(exc)) from exc
        settings = SessionSettings(
            max_turns=int(turn_count), seed=int(seed_value or 0), therapist_sampling={"max_tokens": int(budget)}
        )
        stop_event = threading.Event()
        updates = stream_group(models, patient_model, profile, settings, stop_event)
        try:
            for progress in updates:
                if progress.transcripts is not None:
                    break
                count = len(progress.turns[progress.latest])
                yield [None, stop_event, f"Running: {progress.latest}, turn {count}", *views(chosen, progress.turns)]
        except Exception as exc:  # shown in the status line
            raise gr.Error(f"{type(exc).__name__}: {exc}") from exc
        transcripts = progress.transcripts
        reasons = ", ".join(f"{t.therapist_name}: {t.meta.get('stop_reason')}" for t in transcripts)
        yield [transcripts, None, f"Done ({reasons}). Save to keep these transcripts.", *views(chosen, progress.turns)]

    def views(chosen: list[str], shown: dict[str, list[Turn]]) -> list[object]:
        values = [gr.update(value=turn_messages(shown.get(n, [])), label=n) for n in chosen]
        return values + [gr.update(value=[], label="(unused)")] * (MAX_PANES - len(chosen))

    def batch_message(result: BatchResult) -> str:
        summary = result.summary()
        counts = (
            f"{summary['done']} done, {summary['skipped']} already stored, {summary['failed']} failed, "
            f"{summary['ended']} ended early"
        )
        if result.stopped:
            return (
                f"Batch `{summary['batch_id']}` stopped: {counts}, of {summary['total']} sessions. The finished "
                "sessions are stored; run the same settings again to resume."
            )
        return f"Batch `{summary['batch_id']}`: {counts}; {summary['sessions_per_minute']} sessions/minute."

    def on_save(transcripts: list[Transcript] | None) -> str:
        if not transcripts:
            raise gr.Error("Nothing to save yet; run a session first.")
        try:
            for transcript in transcripts:
                context.store.save_transcript(transcript)
        except ValueError as exc:  # a stored transcript is never changed (TranscriptConflict), or the store is down
            raise gr.Error(str(exc)) from exc
        return f"Saved {len(transcripts)} transcripts (group {transcripts[0].group_id})."

    def on_batch(
        name: str,
        profile_ids: list[str] | None,
        patient_name: str,
        therapist_names: list[str] | None,
        turn_count: float,
        replicate_count: float,
        seed_value: float,
        budget: float,
        progress=gr.Progress(),
    ) -> Iterator[list[object]]:
        stop_event = threading.Event()
        try:
            config = BatchConfig(
                name=name,
                profiles=list(profile_ids or []) or "all",
                therapists=list(therapist_names or []),
                patient=patient_name,
                replicates=int(replicate_count or 1),
                turns=int(turn_count),
                seed=int(seed_value or 0),
                therapist_sampling={"max_tokens": int(budget)},
            )
        except Exception as exc:
            raise gr.Error(str(exc)) from exc

        def report(update: BatchProgress) -> None:
            progress(
                update.completed / max(update.total, 1), desc=f"{update.last.spec.therapist}: {update.last.status}"
            )

        # The Stop button reads this browser's run_control: hand it the event before the batch starts.
        yield [stop_event, f"Batch `{config.batch_id}` running; Stop ends it within a turn."]
        try:
            result = run_batch(config, context.registry, context.store, progress=report, stop_event=stop_event)
        except (ValueError, KeyError) as exc:
            raise gr.Error(str(exc)) from exc
        yield [None, batch_message(result)]

    profile_choice.change(on_profile, [profile_choice, seed], [card], api_name=False)
    seed.change(on_profile, [profile_choice, seed], [card], api_name=False)
    limit = {"concurrency_limit": generation_concurrency(), "concurrency_id": "generation"}
    run.click(
        on_run,
        [profile_choice, seed, patient, therapists, turns, max_tokens],
        [last_run, run_control, status, *panes],
        api_name="simulate",
        **limit,
    )
    stop.click(stop_run, [run_control], None, api_name="simulate_stop")
    save.click(on_save, [last_run], [status], api_name="simulate_save")
    run_batch_button.click(
        on_batch,
        [batch_name, batch_profiles, patient, therapists, turns, replicates, seed, max_tokens],
        [run_control, batch_status],
        api_name="simulate_batch",
        **limit,
    )
