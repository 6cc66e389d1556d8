"""Compare tab: wires widgets to cbtcompare.compare.CompareSession (one per browser session, in gr.State)."""

from __future__ import annotations

import json
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import gradio as gr

from cbtcompare.compare import MAX_PANES, CompareSession, Pane, default_session_prompt
from cbtcompare.models.base import Sampling
from cbtcompare.safety import crisis_panel_markdown
from cbtcompare.ui import AppContext, generation_concurrency, ui_copy
from cbtcompare.ui.render import pane_header, pane_messages, pane_stats

TITLE = "Compare"
NONE = "(none)"
UPDATE_INTERVAL_S = 0.05


def default_models(context: AppContext) -> list[str]:
    wanted = ["smollm2-instruct", "smollm2-cbt-prompted", "smollm2-cbt"]
    names = context.registry.names()
    available = [n for n in wanted if n in names and context.registry.availability(n).available]
    return available or names[:2]


def render(context: AppContext) -> None:
    names = context.registry.names()
    defaults = default_models(context)
    session_state = gr.State(None)
    gr.Markdown(ui_copy("compare_intro"))
    with gr.Row():
        pickers = [
            gr.Dropdown(
                choices=names if i < 2 else [NONE, *names],
                value=defaults[i] if i < len(defaults) else (NONE if i >= 2 else names[0]),
                label=f"Model {chr(65 + i)}",
                elem_id=f"compare-model-{i}",
            )
            for i in range(MAX_PANES)
        ]
    with gr.Accordion("Parity card: the same for every pane", open=False):
        gr.Markdown(ui_copy("parity"))
        system_prompt = gr.Textbox(default_session_prompt(), label="Therapist system prompt", lines=5)
        with gr.Row():
            temperature = gr.Slider(0.0, 1.5, value=0.7, step=0.05, label="temperature")
            top_p = gr.Slider(0.05, 1.0, value=0.95, step=0.05, label="top_p")
            max_tokens = gr.Slider(16, 1024, value=200, step=8, label="max tokens")
            seed = gr.Number(0, precision=0, label="seed")
    crisis_panel = gr.Markdown(visible=False, elem_id="crisis-panel")
    with gr.Row(equal_height=True):
        headers, chatbots, stats = [], [], []
        for i in range(MAX_PANES):
            with gr.Column(visible=i < len(defaults) or i < 2) as column:
                headers.append(gr.Markdown(elem_id=f"pane-header-{i}"))
                chatbots.append(gr.Chatbot(label=f"Model {chr(65 + i)}", height=460, elem_id=f"pane-{i}"))
                stats.append(gr.Markdown(elem_classes=["pane-stats"], elem_id=f"pane-stats-{i}"))
            if i == 2:
                third_column = column
    message = gr.Textbox(
        label="Your message (sent to every pane)", placeholder="Type a message and press Enter", elem_id="message"
    )
    with gr.Row():
        send = gr.Button("Send", variant="primary", elem_id="send")
        stop = gr.Button("Stop", elem_id="stop")
        regenerate = gr.Button("Regenerate last reply", elem_id="regenerate")
        clear = gr.Button("Clear", elem_id="clear")
        save = gr.Button("Save to store", elem_id="save")
        download = gr.DownloadButton("Download JSON", elem_id="download")

    settings = [*pickers, system_prompt, temperature, top_p, max_tokens, seed]
    pane_outputs = [*headers, *chatbots, *stats]

    def session_for(state: CompareSession | None, *values: object) -> CompareSession:
        models = [m for m in values[:MAX_PANES] if m and m != NONE]
        prompt, temp, nucleus, budget, seed_value = values[MAX_PANES:]
        if len(models) < 2:
            raise gr.Error("Pick at least two models to compare.")
        sampling = Sampling(temperature=float(temp), top_p=float(nucleus), max_tokens=int(budget))
        wanted = (models, prompt, sampling, int(seed_value or 0))
        if state is not None and (state.model_names, state.session_prompt, state.sampling, state.seed) == wanted:
            return state
        return CompareSession(
            context.registry, models, session_prompt=prompt, sampling=sampling, seed=int(seed_value or 0)
        )

    def views(session: CompareSession) -> list[object]:
        panes: list[Pane | None] = [*session.panes, *[None] * (MAX_PANES - len(session.panes))]
        return (
            [pane_header(p) if p else "" for p in panes]
            + [pane_messages(p) if p else [] for p in panes]
            + [pane_stats(p) if p else "" for p in panes]
        )

    def crisis_update(session: CompareSession) -> dict:
        if session.crisis:
            return gr.update(value=crisis_panel_markdown(session.crisis), visible=True)
        return gr.update(value="", visible=False)

    def stream_updates(session: CompareSession, updates: Iterator[list[Pane]]) -> Iterator[list[object]]:
        last = 0.0
        yield [session, "", crisis_update(session), *views(session)]
        for _ in updates:
            now = time.perf_counter()
            if now - last >= UPDATE_INTERVAL_S:
                last = now
                yield [session, gr.update(), crisis_update(session), *views(session)]
        yield [session, gr.update(), crisis_update(session), *views(session)]

    def on_send(text: str, state: CompareSession | None, *values: object) -> Iterator[list[object]]:
        session = session_for(state, *values)
        try:
            updates = session.send(text)
            first = next(updates)
        except ValueError as exc:
            raise gr.Error(str(exc)) from exc
        yield from stream_updates(session, _prepend(first, updates))

    def on_regenerate(state: CompareSession | None) -> Iterator[list[object]]:
        if state is None:
            raise gr.Error("Nothing to regenerate yet; send a message first.")
        try:
            updates = state.regenerate()
            first = next(updates)
        except ValueError as exc:
            raise gr.Error(str(exc)) from exc
        yield from stream_updates(state, _prepend(first, updates))

    def on_stop(state: CompareSession | None) -> None:
        if state is not None:
            state.stop()

    def on_clear(state: CompareSession | None, *values: object) -> list[object]:
        session = session_for(None, *values)
        return [session, "", gr.update(value="", visible=False), *views(session)]

    def on_save(state: CompareSession | None) -> str:
        if state is None or not any(p.transcript.turns for p in state.panes):
            raise gr.Error("Nothing to save yet; send a message first.")
        try:
            ids = [context.store.save_transcript(t) for t in state.transcripts()]
        except ValueError as exc:  # a stored transcript is never changed (TranscriptConflict), or the store is down
            raise gr.Error(str(exc)) from exc
        gr.Info(f"Saved {len(ids)} transcripts (comparison {state.group_id[:8]}).")
        return state.group_id

    def on_download(state: CompareSession | None) -> str:
        if state is None or not any(p.transcript.turns for p in state.panes):
            raise gr.Error("Nothing to download yet; send a message first.")
        folder = Path(tempfile.mkdtemp(prefix="cbtcompare-"))
        path = folder / f"comparison-{state.group_id[:8]}.json"
        path.write_text(json.dumps([t.model_dump(mode="json") for t in state.transcripts()], indent=2))
        return str(path)

    def on_third_model_changed(choice: str) -> dict:
        return gr.update(visible=choice != NONE)

    outputs = [session_state, message, crisis_panel, *pane_outputs]
    limit = {"concurrency_limit": generation_concurrency(), "concurrency_id": "generation"}
    send_event = send.click(on_send, [message, session_state, *settings], outputs, api_name="send", **limit)
    submit_event = message.submit(on_send, [message, session_state, *settings], outputs, api_name=False, **limit)
    regen_event = regenerate.click(on_regenerate, [session_state], outputs, api_name="regenerate", **limit)
    stop.click(on_stop, [session_state], None, cancels=[send_event, submit_event, regen_event], api_name="stop")
    clear.click(on_clear, [session_state, *settings], outputs, api_name="clear")
    save_output = gr.Textbox(visible=False)
    save.click(on_save, [session_state], [save_output], api_name="save")
    download.click(on_download, [session_state], [download], api_name="download")
    pickers[2].change(on_third_model_changed, [pickers[2]], [third_column], api_name=False)


def _prepend(first: list[Pane], rest: Iterator[list[Pane]]) -> Iterator[list[Pane]]:
    yield first
    yield from rest
