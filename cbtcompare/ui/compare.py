"""Compare tab: wires widgets to cbtcompare.compare.CompareSession (one per browser session, in gr.State).

The tab's per-visitor state is a `CompareTabState` in gr.State: a mutable holder, so a Stop handler sees
the Send it stops from the moment Send was clicked (a state value yielded by a generator reaches other
handlers only after its first yield, which comes after the models load). Stop never cancels the Send
event: cancelling left its worker threads generating with nobody listening; it asks the session to end
the replies and the Send finishes normally. A person's recent comparisons are kept in their browser
(gr.BrowserState) and reopened from a list; a settings change starts a new conversation and keeps the
old one listed. Reasons for refusals are shown in a status line beside the input, not as error toasts
(which left blank red badges behind).
"""

from __future__ import annotations

import json
import os
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path

import gradio as gr
from gradio.data_classes import GradioModel, GradioRootModel

from cbtcompare.compare import (
    MAX_MESSAGE_CHARS,
    MAX_PANES,
    CompareSession,
    CompareSettings,
    ComparisonHistory,
    Pane,
    default_session_prompt,
    history_from_browser,
    validate_message,
)
from cbtcompare.models.base import ModelError
from cbtcompare.redact import redact
from cbtcompare.safety import CrisisResult, crisis_panel_markdown
from cbtcompare.ui import AppContext, generation_concurrency, ui_copy
from cbtcompare.ui.pickers import model_dropdown
from cbtcompare.ui.render import pane_header, pane_messages, pane_stats

TITLE = "Compare"
NONE = "(none)"
UPDATE_INTERVAL_S = 0.1  # each update costs Gradio ~5-15 ms of CPU the models would use; 10 a second read as smooth
HISTORY_KEY = "cbtcompare-compare-history"
COUNTER_JS = f"(text) => `${{(text || '').trim().length.toLocaleString('en-US')}} / {MAX_MESSAGE_CHARS:,} characters`"


class CompareTabState:
    """One visitor's Compare tab: the open session, their recent comparisons, and the Stop request."""

    def __init__(self) -> None:
        self.session: CompareSession | None = None
        self.running: CompareSession | None = None  # the session generating now, for Stop
        self.stop_requested = threading.Event()
        self.history = ComparisonHistory()
        self.crisis_shown: CrisisResult | None = None  # shown until dismissed, across later messages
        self.turn_lock = threading.Lock()  # a Send (or Enter) while replies stream waits for them to finish

    def __deepcopy__(self, memo: dict) -> CompareTabState:
        return CompareTabState()  # gr.State copies its default per visitor: each gets a fresh holder

    def remember(self) -> None:
        if self.session is not None:
            self.history = self.history.remember(self.session.snapshot())

    def stop(self) -> None:
        self.stop_requested.set()
        running = self.running
        if running is not None:
            running.stop()


def default_models(context: AppContext) -> list[str]:
    wanted = ["smollm2-instruct", "smollm2-cbt-prompted", "smollm2-cbt"]
    names = context.registry.names()
    available = [n for n in wanted if n in names and context.registry.availability(n).available]
    return available or names[:2]


# The sliders' ranges: the widgets show them, and settings_from holds API callers to them.
TEMPERATURE_RANGE = (0.0, 1.5)
TOP_P_RANGE = (0.05, 1.0)
MAX_TOKENS_RANGE = (16, 1024)


def settings_from(values: tuple[object, ...]) -> CompareSettings:
    """The settings the widgets send (raw, as the browser or an API caller sent them), or ValueError saying
    what to change."""
    models = [str(m) for m in values[:MAX_PANES] if m and m != NONE]
    prompt, temp, nucleus, budget, seed_value = values[MAX_PANES:]
    if len(models) < 2:
        raise ValueError("pick at least two models to compare")
    sampling = {
        "temperature": _number("temperature", temp, TEMPERATURE_RANGE),
        "top_p": _number("top_p", nucleus, TOP_P_RANGE),
        "max_tokens": round(_number("max tokens", budget, MAX_TOKENS_RANGE)),
    }
    seed = round(_number("seed", seed_value or 0, (-(2**63), 2**63 - 1)))
    return CompareSettings(
        models=tuple(models), session_prompt="" if prompt is None else str(prompt), sampling=sampling, seed=seed
    )


def _number(name: str, value: object, bounds: tuple[float, float]) -> float:
    try:
        number = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a number, not {str(value)[:40]!r}") from None
    low, high = bounds
    if not low <= number <= high:  # also NaN
        raise ValueError(f"{name} must be between {low:g} and {high:g}, not {number:g}")
    return number


def settings_values(settings: CompareSettings) -> list[object]:
    """The widget values that show `settings` (pickers, prompt, sliders, seed), in the widgets' order."""
    models = [*settings.models, *[NONE] * (MAX_PANES - len(settings.models))]
    sampling = settings.sampling
    return [
        *models,
        settings.session_prompt or default_session_prompt(),
        sampling.get("temperature", gr.update()),
        sampling.get("top_p", gr.update()),
        sampling.get("max_tokens", gr.update()),
        settings.seed,
    ]


def download_file(session: CompareSession | None) -> str | None:
    """The conversation as a JSON file ready for the one-click download button (None before any turn)."""
    if session is None or not session.has_turns:
        return None
    folder = Path(tempfile.mkdtemp(prefix="cbtcompare-"))
    path = folder / f"comparison-{session.group_id[:8]}.json"
    path.write_text(json.dumps([t.model_dump(mode="json") for t in session.transcripts()], indent=2))
    return str(path)


def wire(component: gr.components.Component, value: object) -> object:
    """What Gradio's own postprocess sends for `value` (an update's value included). The streaming events do
    it here, in the handler's thread, and skip Gradio's, which runs each output in a thread hop of its own:
    ten a yield, each waiting for a core the models hold, on the way to the first token."""
    if isinstance(value, dict) and value.get("__type__") == "update":
        return {**value, "value": wire(component, value["value"])} if "value" in value else value
    processed = component.postprocess(value)
    return processed.model_dump() if isinstance(processed, GradioModel | GradioRootModel) else processed


def render(context: AppContext) -> None:
    names = context.registry.names()
    defaults = default_models(context)
    tab_state = gr.State(CompareTabState())
    browser_history = gr.BrowserState(
        None, storage_key=HISTORY_KEY, secret=os.environ.get("CBTCOMPARE_BROWSER_SECRET") or None
    )
    gr.Markdown(ui_copy("compare_intro"))
    with gr.Row():
        pickers = [
            model_dropdown(
                context,
                leading=(NONE,) if i >= 2 else (),
                value=defaults[i] if i < len(defaults) else (NONE if i >= 2 else names[0]),
                label=f"Model {chr(65 + i)}",
                elem_id=f"compare-model-{i}",
            )
            for i in range(MAX_PANES)
        ]
    recent = gr.Dropdown(
        choices=[], value=None, label="Recent comparisons (kept in this browser)", elem_id="recent-comparisons"
    )
    with gr.Accordion("Parity card: the same for every pane", open=False):
        gr.Markdown(ui_copy("parity"))
        system_prompt = gr.Textbox(default_session_prompt(), label="Therapist system prompt", lines=5)
        with gr.Row():
            temperature = gr.Slider(
                *TEMPERATURE_RANGE, value=0.7, step=0.05, label="temperature", elem_id="temperature"
            )
            top_p = gr.Slider(*TOP_P_RANGE, value=0.95, step=0.05, label="top_p", elem_id="top-p")
            max_tokens = gr.Slider(*MAX_TOKENS_RANGE, value=200, step=8, label="max tokens", elem_id="max-tokens")
            seed = gr.Number(0, precision=0, label="seed", elem_id="seed")
    crisis_panel = gr.Markdown(visible=False, elem_id="crisis-panel")
    crisis_dismiss = gr.Button(
        "I have read this: hide the resources", visible=False, size="sm", elem_id="crisis-dismiss"
    )
    with gr.Row(equal_height=True):
        columns, headers, chatbots, stats = [], [], [], []
        for i in range(MAX_PANES):
            with gr.Column(visible=i < max(2, len(defaults))) as column:
                headers.append(gr.Markdown(elem_id=f"pane-header-{i}"))
                chatbots.append(gr.Chatbot(label=f"Model {chr(65 + i)}", height=460, elem_id=f"pane-{i}"))
                stats.append(gr.Markdown(elem_classes=["pane-stats"], elem_id=f"pane-stats-{i}"))
            columns.append(column)
    message = gr.Textbox(
        label=f"Your message (sent to every pane; up to {MAX_MESSAGE_CHARS:,} characters)",
        placeholder=f"Type a message (up to {MAX_MESSAGE_CHARS:,} characters) and press Enter",
        elem_id="message",
    )
    counter = gr.Markdown(
        f"0 / {MAX_MESSAGE_CHARS:,} characters", elem_classes=["pane-stats"], elem_id="message-counter"
    )
    status = gr.Markdown("", elem_id="compare-status")
    with gr.Row():
        send = gr.Button("Send", variant="primary", elem_id="send")
        stop = gr.Button("Stop", elem_id="stop")
        regenerate = gr.Button("Regenerate last reply", elem_id="regenerate")
        clear = gr.Button("New conversation", elem_id="clear")
        save = gr.Button("Save to store", elem_id="save")
        download = gr.DownloadButton("Download JSON", value=None, interactive=False, elem_id="download")

    settings = [*pickers, system_prompt, temperature, top_p, max_tokens, seed]
    # What a turn streams (the first eleven are the order gradio_client callers of /send unpack), and what is
    # decided once it is over, sent by a step chained after it: every streamed update costs Gradio a rebuild of
    # each output it names, and those of the download button, the columns and the lists cost the most.
    stream_outputs = [message, crisis_panel, *headers, *chatbots, *stats, status, crisis_dismiss]
    final_outputs = [download, *columns, recent, browser_history]
    screen_outputs = [*stream_outputs, *final_outputs]

    def pane_views(session: CompareSession | None) -> list[object]:
        panes: list[Pane | None] = [*(session.panes if session else []), *[None] * MAX_PANES]
        panes = panes[:MAX_PANES]
        return (
            [pane_header(p) if p else "" for p in panes]
            + [pane_messages(p) if p else [] for p in panes]
            + [pane_stats(p) if p else "" for p in panes]
        )

    def stream_screen(
        tab: CompareTabState, note: str | object = "", *, message_value: object = None
    ) -> list[object]:
        """The streamed outputs of a tab action: the message box, crisis panel, panes and the status line."""
        session = tab.session
        if session is not None and session.crisis:
            tab.crisis_shown = session.crisis
        crisis = tab.crisis_shown
        panel_text = crisis_panel_markdown(crisis) if crisis else ""
        status_value = redact(note) if isinstance(note, str) else note
        return [
            gr.update() if message_value is None else message_value,
            gr.update(value=panel_text, visible=bool(panel_text)),
            *pane_views(session),
            status_value,
            gr.update(visible=bool(panel_text)),
        ]

    def final_screen(tab: CompareTabState) -> list[object]:
        """What a finished turn decides: the download, which columns show, the recent list, the browser's copy."""
        session = tab.session
        shown = len(session.panes) if session else max(2, len(defaults))
        return [
            gr.update(value=download_file(session), interactive=bool(session and session.has_turns)),
            *[gr.update(visible=i < shown) for i in range(MAX_PANES)],
            recent_update(tab),
            tab.history.model_dump(mode="json"),  # kept in the browser as soon as it is final
        ]

    def screen(tab: CompareTabState, note: str | object = "", *, message_value: object = None) -> list[object]:
        """Every output of a tab action that is not streamed."""
        return [*stream_screen(tab, note, message_value=message_value), *final_screen(tab)]

    def streaming_screen(tab: CompareTabState, shown: dict[object, object]) -> list[object]:
        """An update while replies stream. Gradio 6 rebuilds the component (and its API schema) for every
        gr.update(), even an empty one, which cost more than sending a pane's whole chat again; so the panes,
        headers, stats and the panel's text go as plain values (the same text where nothing changed), and
        updates only where a value would say something else: the message box (the person may be typing), the
        status line (Save may have written to it), the panel's visibility, the rest that the end decides."""
        session = tab.session
        if session is not None and session.crisis:
            tab.crisis_shown = session.crisis
        panel_text = crisis_panel_markdown(tab.crisis_shown) if tab.crisis_shown else ""
        keep = gr.update()
        if panel_text == shown[crisis_panel]:
            panel, dismiss = panel_text, keep
        else:
            shown[crisis_panel] = panel_text
            panel = gr.update(value=panel_text, visible=bool(panel_text))
            dismiss = gr.update(visible=bool(panel_text))
        return [keep, panel, *pane_views(session), keep, dismiss]

    def recent_update(tab: CompareTabState) -> dict:
        choices = tab.history.choices()
        current = tab.session.group_id if tab.session else None
        return gr.update(choices=choices, value=current if any(v == current for _, v in choices) else None)

    def _refusal(reason: str, outputs: list[object] = stream_outputs) -> list[object]:
        updates: list[object] = [gr.update()] * len(outputs)
        updates[outputs.index(status)] = "⚠ " + redact(reason)
        return updates

    def stream(
        tab: CompareTabState, session: CompareSession, updates: Iterator[list[Pane]], note: str
    ) -> Iterator[list[object]]:
        """The screen as the workers have just started (the person's message in every pane), then the chats
        as the session yields them (it throttles to UPDATE_INTERVAL_S; a pane's first token comes at once)."""
        tab.running = session
        if tab.stop_requested.is_set():  # a Stop between the click and the workers' start
            session.stop()
        try:
            first = stream_screen(tab, note, message_value="")
            shown = {crisis_panel: first[stream_outputs.index(crisis_panel)]["value"]}
            yield first
            for _ in updates:
                yield streaming_screen(tab, shown)
        finally:
            tab.running = None
            tab.remember()
        stopped = any(p.transcript.turns and p.transcript.turns[-1].flags.get("stopped") for p in session.panes)
        yield stream_screen(tab, note or ("Stopped: each reply ends where it was." if stopped else ""))

    def wired(updates: Iterator[list[object]]) -> Iterator[list[object]]:
        for values in updates:
            yield [wire(component, value) for component, value in zip(stream_outputs, values, strict=True)]

    def on_send(text: str, tab: CompareTabState, *values: object) -> Iterator[list[object]]:
        with tab.turn_lock:
            yield from wired(send_turn(text, tab, *values))

    def send_turn(text: str, tab: CompareTabState, *values: object) -> Iterator[list[object]]:
        tab.stop_requested.clear()
        try:
            wanted = settings_from(values)
            validate_message(text)
        except ValueError as exc:
            yield _refusal(str(exc).capitalize() + ".")
            return
        note = ""
        session = tab.session
        if session is None or session.settings != wanted:
            if session is not None and session.has_turns:
                turns = session.snapshot().person_turns
                note = (
                    f"Settings changed, so this is a new conversation. The previous one ({turns} message"
                    f"{'s' if turns != 1 else ''}) is kept under Recent comparisons."
                )
            try:
                session = CompareSession.from_settings(context.registry, wanted, update_every_s=UPDATE_INTERVAL_S)
            except (ModelError, ValueError) as exc:
                yield _refusal(str(exc))
                return
            tab.session = session
            tab.crisis_shown = None
        if tab.stop_requested.is_set():
            yield _refusal("Stopped before any reply; your message was not sent (it is still in the box).")
            return
        try:
            updates = session.send(text)
            next(updates)  # the message is valid and the workers have started
        except ValueError as exc:
            yield _refusal(str(exc))
            return
        yield from stream(tab, session, updates, note)

    def on_regenerate(tab: CompareTabState) -> Iterator[list[object]]:
        with tab.turn_lock:
            yield from wired(regenerate_turn(tab))

    def regenerate_turn(tab: CompareTabState) -> Iterator[list[object]]:
        tab.stop_requested.clear()
        if tab.session is None:
            yield _refusal("Nothing to regenerate yet; send a message first.")
            return
        try:
            updates = tab.session.regenerate()
            next(updates)  # there is a reply to replace and the workers have started
        except ValueError as exc:
            yield _refusal(str(exc).capitalize() + ".")
            return
        yield from stream(tab, tab.session, updates, "")

    def on_stop(tab: CompareTabState) -> None:
        tab.stop()

    def on_clear(tab: CompareTabState, *values: object) -> list[object]:
        try:
            wanted = settings_from(values)
            session = CompareSession.from_settings(context.registry, wanted, update_every_s=UPDATE_INTERVAL_S)
        except (ModelError, ValueError) as exc:
            return _refusal(str(exc), screen_outputs)
        had_turns = tab.session is not None and tab.session.has_turns
        tab.remember()
        tab.session, tab.crisis_shown = session, None
        note = "A new conversation; the previous one is kept under Recent comparisons." if had_turns else ""
        return screen(tab, note, message_value="")

    def open_saved(tab: CompareTabState, group_id: str | None, note: str = "") -> list[object]:
        saved = tab.history.find(group_id)
        if saved is None:
            return [*[gr.update()] * len(settings), *screen(tab, note)]
        try:
            session = CompareSession.resume(context.registry, saved, update_every_s=UPDATE_INTERVAL_S)
        except (ModelError, ValueError) as exc:
            return [
                *[gr.update()] * len(settings),
                *_refusal(f"This comparison cannot be reopened: {exc}", screen_outputs),
            ]
        tab.remember()
        tab.session, tab.crisis_shown = session, None
        tab.history = tab.history.remember(session.snapshot())
        return [*settings_values(session.settings), *screen(tab, note)]

    def on_open(group_id: str | None, tab: CompareTabState) -> list[object]:
        if tab.session is not None and group_id == tab.session.group_id:
            # the list shows the open conversation after every reply; Gradio reports that as input too
            return [gr.update()] * (len(settings) + len(screen_outputs))
        return open_saved(tab, group_id)

    def on_load(raw: object, tab: CompareTabState) -> list[object]:
        tab.history, problem = history_from_browser(raw)
        return open_saved(tab, tab.history.current, problem or "")

    def on_dismiss_crisis(tab: CompareTabState) -> list[object]:
        tab.crisis_shown = None
        return [gr.update(value="", visible=False), gr.update(visible=False)]

    def on_pick(*values: object) -> list[object]:
        shown = sum(1 for m in values if m and m != NONE)
        return [gr.update(visible=i < shown) for i in range(MAX_PANES)]

    def on_save(tab: CompareTabState) -> tuple[str, str]:
        session = tab.session
        if session is None or not session.has_turns:
            return gr.update(), "⚠ Nothing to save yet; send a message first."
        try:
            ids = [context.store.save_transcript(t) for t in session.transcripts()]
        except ValueError as exc:  # a stored transcript is never changed (TranscriptConflict), or the store is down
            return gr.update(), "⚠ " + redact(exc)
        return session.group_id, f"Saved {len(ids)} transcripts (comparison {session.group_id[:8]})."

    def on_download(tab: CompareTabState) -> str:
        path = download_file(tab.session)
        if path is None:
            raise gr.Error("Nothing to download yet; send a message first.")
        return path

    # The turns do their own pre- and postprocessing (settings_from, wire): Gradio's hops a thread per value.
    limit = {
        "concurrency_limit": generation_concurrency(),
        "concurrency_id": "generation",
        "preprocess": False,
        "postprocess": False,
    }
    def on_turn_end(tab: CompareTabState) -> list[object]:
        return final_screen(tab)

    end = {"fn": on_turn_end, "inputs": [tab_state], "outputs": final_outputs, "api_name": False}
    end["concurrency_limit"] = None  # it only reads the finished session
    send.click(on_send, [message, tab_state, *settings], stream_outputs, api_name="send", **limit).then(**end)
    message.submit(on_send, [message, tab_state, *settings], stream_outputs, api_name=False, **limit).then(**end)
    regenerate.click(on_regenerate, [tab_state], stream_outputs, api_name="regenerate", **limit).then(**end)
    stop.click(on_stop, [tab_state], None, api_name="stop", concurrency_limit=None)
    clear.click(on_clear, [tab_state, *settings], screen_outputs, api_name="clear")
    recent.input(on_open, [recent, tab_state], [*settings, *screen_outputs], api_name=False)
    crisis_dismiss.click(on_dismiss_crisis, [tab_state], [crisis_panel, crisis_dismiss], api_name="dismiss_crisis")
    save_output = gr.Textbox(visible=False)
    save.click(on_save, [tab_state], [save_output, status], api_name="save")
    # The button downloads the file prepared after each reply in one click; this keeps /download for API callers.
    download_api = gr.Button(visible=False)
    download_api.click(on_download, [tab_state], [download], api_name="download")
    for picker in pickers:
        picker.input(on_pick, pickers, columns, api_name=False)
    message.change(None, [message], [counter], js=COUNTER_JS, api_name=False)
    root = gr.context.Context.root_block
    if root is not None:
        root.load(on_load, [browser_history, tab_state], [*settings, *screen_outputs], api_name=False)
