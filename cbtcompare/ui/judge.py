"""Judge tab: score stored or uploaded transcripts on a CTRS rubric with one or more judges.

Wires widgets to cbtcompare.ctrs (check_request then run_request, aggregate_results, scores_frame): a
request is checked in full before anything is stored. The stored-transcript list follows the store
(cbtcompare.ui.pickers); progress is counted per judge call with an ETA while the request runs in a
worker thread; in the page a refused request is said in the status line where the user looks (the
`/judge` API still raises, so callers get an exception). The evidence view and the radar come from
small formatting helpers here.
"""

from __future__ import annotations

import html
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field, replace

import gradio as gr
import pandas as pd

from cbtcompare import plots
from cbtcompare.ctrs import (
    JudgeResult,
    TranscriptAggregate,
    aggregate_results,
    load_rubric,
    rubric_names,
    scores_frame,
)
from cbtcompare.ctrs.request import MAX_REPEATS, CheckedRequest, check_request, run_request
from cbtcompare.models.base import ChatModel
from cbtcompare.provenance import VARIANTS
from cbtcompare.redact import redact
from cbtcompare.transcript import Transcript
from cbtcompare.ui import AppContext, ui_copy
from cbtcompare.ui.pickers import live_dropdown, model_dropdown

TITLE = "Judge"
# The paper's modified CTRS (11 items x 1-10) is what this app reproduces, so it is the default.
DEFAULT_RUBRIC = "paper"
PROGRESS_EVERY_S = 1.0
TABLE_COLUMNS = ["transcript", "therapist", "item", "score", "status", "spread", "justification"]


@dataclass
class JudgeRun:
    """One user's latest judging run: the transcripts judged and the aggregate per transcript."""

    transcripts: dict[str, Transcript] = field(default_factory=dict)
    aggregates: list[TranscriptAggregate] = field(default_factory=list)
    results: list[JudgeResult] = field(default_factory=list)


def transcript_choices(context: AppContext) -> list[tuple[str, str]]:
    return [
        (f"{s.therapist_name} · {s.kind} · {s.turn_count} turns · {s.created_at[:16]} · {s.id[:8]}", s.id)
        for s in context.store.list_transcripts(limit=300)
    ]


def result_table(run: JudgeRun) -> pd.DataFrame:
    rows = []
    for aggregate in run.aggregates:
        transcript = run.transcripts[aggregate.transcript_id]
        for item_id, item in aggregate.items.items():
            spread = f"{item.min}-{item.max} (n={item.n_scored})" if item.n_scored else ""
            why = item.justification or "; ".join(dict.fromkeys(item.reasons))
            rows.append(
                [aggregate.transcript_id[:8], transcript.therapist_name, item_id, item.score, item.status, spread, why]
            )
        rows.append(
            [
                aggregate.transcript_id[:8],
                transcript.therapist_name,
                "TOTAL",
                aggregate.total,
                "partial" if aggregate.partial else "complete",
                f"{aggregate.scored_items} items scored",
                "",
            ]
        )
    return pd.DataFrame(rows, columns=TABLE_COLUMNS)


def evidence_html(transcript: Transcript, aggregate: TranscriptAggregate, item_id: str) -> str:
    """The transcript with the item's cited turns marked and the quoted words highlighted."""
    item = aggregate.items.get(item_id)
    cited: dict[int, list[str]] = {}
    for evidence in item.evidence if item else []:
        cited.setdefault(evidence.turn, []).append(evidence.quote)
    parts = [
        f"<h4>Evidence for <code>{html.escape(item_id)}</code> in {html.escape(transcript.therapist_name)}'s "
        "transcript</h4>"
    ]
    if not cited:
        parts.append("<p><em>No evidence quoted for this item.</em></p>")
    for index, turn in enumerate(transcript.turns):
        text = html.escape(turn.text)
        for quote in cited.get(index, []):
            text = _highlight(text, html.escape(quote))
        style = "border-left:4px solid #d97706;padding-left:8px;" if index in cited else "padding-left:12px;"
        parts.append(f"<p style='{style}'><b>[{index}] {turn.role}:</b> {text}</p>")
    return "\n".join(parts)


def _highlight(text: str, quote: str) -> str:
    position = text.lower().find(quote.lower())
    if position < 0:
        return text  # validated quotes match after whitespace/case normalisation; the turn is still marked
    return f"{text[:position]}<mark>{text[position : position + len(quote)]}</mark>{text[position + len(quote) :]}"


def rubric_choices() -> list[tuple[str, str]]:
    """One (label, name) per shipped rubric, the default first; the other names of a rubric (file stems)
    still load (stored scores name the rubric by its id, not by the name picked here)."""
    by_id: dict[str, tuple[str, str]] = {}
    for name in rubric_names():
        rubric = load_rubric(name)
        by_id.setdefault(rubric.id, (rubric.name, name))
    choices = list(by_id.values())
    return sorted(choices, key=lambda choice: choice[1] != DEFAULT_RUBRIC)


class CallMeter:
    """Judge calls done and expected, and the pace, for a progress line with an ETA."""

    def __init__(self, expected: int):
        self.expected = max(1, expected)
        self.done = 0
        self.started = time.monotonic()
        self._lock = threading.Lock()

    def call_done(self) -> None:
        with self._lock:
            self.done += 1
            self.expected = max(self.expected, self.done)  # a retry is one call more than planned

    @property
    def fraction(self) -> float:
        return min(1.0, self.done / self.expected)

    def line(self) -> str:
        elapsed = time.monotonic() - self.started
        running = min(self.done + 1, self.expected)
        text = f"Judging: call {running} of {self.expected} running, {_duration(elapsed)} so far"
        if self.done:
            left = elapsed / self.done * (self.expected - self.done)
            text += f"; about {_duration(left)} left"
        return text + " (a retry adds a call)."


def _duration(seconds: float) -> str:
    seconds = int(round(seconds))
    return f"{seconds // 60} min {seconds % 60:02d} s" if seconds >= 60 else f"{seconds} s"


class _CountedJudge:
    """A judge model that tells a CallMeter when each call returns; everything else is the model's own."""

    def __init__(self, model: ChatModel, meter: CallMeter):
        self._model = model
        self._meter = meter

    def __getattr__(self, name: str) -> object:
        return getattr(self._model, name)

    def complete_json(self, *args: object, **kwargs: object) -> str:
        try:
            return self._model.complete_json(*args, **kwargs)  # type: ignore[arg-type]
        finally:
            self._meter.call_done()


def expected_calls(request: CheckedRequest) -> int:
    transcripts = len(request.stored) + len(request.uploaded)
    per_result = len(request.rubric.item_ids) if request.config.mode == "per-item" else 1
    return transcripts * len(request.judges) * request.repeats * per_result


def judge_updates(
    context: AppContext,
    ids: list[str] | None,
    file: str | None,
    rubric_name: str,
    judge_names: list[str] | None,
    repeat_count: float,
    mode_name: str,
    upload_labels: tuple[str | None, str | None, str | None] = (None, None, None),
) -> Iterator[tuple[float, str, list[object] | None]]:
    """(fraction, status line, outputs or None) while a request runs; the last has the outputs.

    `upload_labels` (therapist, variant, family) go to the importer for uploads that record none (blank: not
    given). Raises ValueError (or a typed model or import error) for a refused request, before anything is
    stored."""
    therapist, variant, family = (label.strip() if label else None for label in upload_labels)
    request = check_request(
        context.registry, context.store, stored_ids=ids or [], upload=file, rubric_name=rubric_name,
        judge_names=judge_names or [], repeats=repeat_count, mode=mode_name,
        upload_therapist=therapist or None, upload_variant=variant or None, upload_family=family or None,
    )  # fmt: skip
    meter = CallMeter(expected_calls(request))
    counted = replace(request, judges=[_CountedJudge(j, meter) for j in request.judges])  # type: ignore[list-item]
    outcome: dict[str, object] = {}

    def work() -> None:
        try:
            outcome["value"] = run_request(context.store, counted)
        except BaseException as exc:  # re-raised in the caller's thread
            outcome["error"] = exc

    worker = threading.Thread(target=work, name="judge-request", daemon=True)
    worker.start()
    while worker.is_alive():
        yield meter.fraction, meter.line(), None
        worker.join(PROGRESS_EVERY_S)
    if "error" in outcome:
        raise outcome["error"]  # type: ignore[misc]
    transcripts, results = outcome["value"]  # type: ignore[misc]
    judged = JudgeRun(transcripts={t.id: t for t in transcripts}, results=results)
    for transcript in transcripts:
        judged.aggregates.append(aggregate_results([r for r in results if r.transcript_id == transcript.id]))
    frame = scores_frame(context.store, transcript_ids=list(judged.transcripts), rubric=request.rubric.id)
    figure = plots.radar(frame) if len(frame) else None
    unscored = sum(r.unscored_items for r in results)
    summary = (
        f"Judged {len(transcripts)} transcript(s) with {len(request.judges)} judge(s) x {request.repeats} "
        f"repeat(s) in {meter.done} call(s), {_duration(time.monotonic() - meter.started)}; {unscored} item "
        "answers ended unscored (never filled in). Click an item row to see its evidence."
    )
    yield 1.0, summary, [judged, summary, result_table(judged), "", figure]


def error_text(exc: BaseException) -> str:
    return f"**Not judged:** {redact(str(exc))}"


def render(context: AppContext) -> None:
    run_state = gr.State(None)
    gr.Markdown(ui_copy("judge_intro"))
    with gr.Row():
        with gr.Column():
            stored = live_dropdown(
                lambda: transcript_choices(context), multiselect=True, allow_custom_value=True,
                label="Stored transcripts (the list follows the store)", elem_id="judge-stored",
            )  # fmt: skip
            upload = gr.File(
                label="...or upload transcripts (plain text, JSON or JSONL)", type="filepath", elem_id="judge-upload"
            )
            with gr.Row():
                upload_therapist = gr.Textbox(
                    label="Uploaded: therapist name",
                    max_length=120,
                    placeholder="e.g. gpt-4o or a clinician's pseudonym",
                    elem_id="judge-upload-therapist",
                )
                upload_variant = gr.Dropdown(
                    list(VARIANTS),
                    value="unassigned",
                    label="Uploaded: variant",
                    info="unassigned: left out of tuned-vs-base analyses",
                    elem_id="judge-upload-variant",
                )
                upload_family = gr.Textbox(
                    label="Uploaded: model family",
                    max_length=80,
                    placeholder="e.g. smollm2, llama-3",
                    elem_id="judge-upload-family",
                )
        with gr.Column():
            rubric = gr.Dropdown(rubric_choices(), value=DEFAULT_RUBRIC, label="Rubric", elem_id="judge-rubric")
            judges = model_dropdown(
                context, label="Judges", multiselect=True, value=context.registry.names()[:1], elem_id="judge-models"
            )
            with gr.Row():
                repeats = gr.Number(1, precision=0, minimum=1, maximum=MAX_REPEATS, label="Repeats per judge")
                mode = gr.Radio(["all", "per-item"], value="all", label="One call for all items, or one per item")
    run = gr.Button("Judge", variant="primary", elem_id="judge-run")
    api_run = gr.Button("Judge (API)", visible=False)
    status = gr.Markdown(elem_id="judge-status")
    table = gr.Dataframe(headers=TABLE_COLUMNS, interactive=False, wrap=True, elem_id="judge-table")
    evidence = gr.HTML()
    radar = gr.Plot(label="Item means per therapist")
    inputs = [stored, upload, rubric, judges, repeats, mode, upload_therapist, upload_variant, upload_family]
    outputs = [run_state, status, table, evidence, radar]
    keep = [gr.skip()] * len(outputs)

    def in_page(
        ids: list[str] | None,
        file: str | None,
        rubric_name: str,
        judge_names: list[str] | None,
        repeat_count: float,
        mode_name: str,
        therapist: str | None,
        variant: str | None,
        family: str | None,
        progress: gr.Progress = gr.Progress(),
    ) -> Iterator[list[object]]:
        """The button: progress in the status line; a refusal or failure said there, nothing else touched."""
        yield [gr.skip(), "Checking the request…", *keep[2:]]
        try:
            for fraction, line, final in judge_updates(
                context,
                ids,
                file,
                rubric_name,
                judge_names,
                repeat_count,
                mode_name,
                (therapist, variant, family),
            ):
                progress(fraction, desc=line)
                yield final if final is not None else [gr.skip(), line, *keep[2:]]
        except Exception as exc:  # said where the user looks; a refused request stored nothing
            yield [gr.skip(), error_text(exc), *keep[2:]]

    def for_api(
        ids: list[str] | None,
        file: str | None,
        rubric_name: str,
        judge_names: list[str] | None,
        repeat_count: float,
        mode_name: str,
        therapist: str | None = None,
        variant: str | None = None,
        family: str | None = None,
    ) -> list[object]:
        """`/judge` for gradio_client: the final outputs, or gr.Error saying what to fix."""
        try:
            *_, (_fraction, _line, final) = judge_updates(
                context, ids, file, rubric_name, judge_names, repeat_count, mode_name,
                (therapist, variant, family),
            )  # fmt: skip
        except Exception as exc:  # shown to the caller; a refused request stored nothing
            raise gr.Error(str(exc)) from exc
        return final  # type: ignore[return-value]

    def on_select(judged: JudgeRun | None, event: gr.SelectData) -> str:
        if judged is None or event.index is None:
            return ""
        frame = result_table(judged)
        row = frame.iloc[event.index[0]]
        aggregate = next(a for a in judged.aggregates if a.transcript_id.startswith(row["transcript"]))
        if row["item"] == "TOTAL":
            return ""
        return evidence_html(judged.transcripts[aggregate.transcript_id], aggregate, row["item"])

    generation = {"concurrency_limit": 1, "concurrency_id": "generation"}
    run.click(in_page, inputs, outputs, api_name=False, show_progress="minimal", **generation)
    api_run.click(for_api, inputs, outputs, api_name="judge", **generation)
    table.select(on_select, [run_state], [evidence], api_name=False)
