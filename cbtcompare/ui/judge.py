"""Judge tab: score stored or uploaded transcripts on a CTRS rubric with one or more judges.

Wires widgets to cbtcompare.ctrs (check_request then run_request, aggregate_results, scores_frame): a
request is checked in full before anything is stored. The evidence view and the radar come from small
formatting helpers here.
"""

from __future__ import annotations

import html
from dataclasses import dataclass, field

import gradio as gr
import pandas as pd

from cbtcompare import plots
from cbtcompare.ctrs import (
    JudgeResult,
    TranscriptAggregate,
    aggregate_results,
    rubric_names,
    scores_frame,
)
from cbtcompare.ctrs.request import MAX_REPEATS, check_request, run_request
from cbtcompare.transcript import Transcript
from cbtcompare.ui import AppContext, ui_copy

TITLE = "Judge"
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


def render(context: AppContext) -> None:
    run_state = gr.State(None)
    gr.Markdown(ui_copy("judge_intro"))
    with gr.Row():
        with gr.Column():
            stored = gr.Dropdown(
                transcript_choices(context), multiselect=True, allow_custom_value=True, label="Stored transcripts"
            )
            refresh = gr.Button("Refresh the list", size="sm")
            upload = gr.File(label="...or upload transcripts (plain text, JSON or JSONL)", type="filepath")
        with gr.Column():
            rubric = gr.Dropdown(rubric_names(), value=rubric_names()[0], label="Rubric")
            judges = gr.Dropdown(
                context.registry.names(), value=context.registry.names()[:1], multiselect=True, label="Judges"
            )
            with gr.Row():
                repeats = gr.Number(1, precision=0, minimum=1, maximum=MAX_REPEATS, label="Repeats per judge")
                mode = gr.Radio(["all", "per-item"], value="all", label="One call for all items, or one per item")
    run = gr.Button("Judge", variant="primary")
    status = gr.Markdown()
    table = gr.Dataframe(headers=TABLE_COLUMNS, interactive=False, wrap=True)
    evidence = gr.HTML()
    radar = gr.Plot(label="Item means per therapist")

    def on_judge(
        ids: list[str] | None,
        file: str | None,
        rubric_name: str,
        judge_names: list[str] | None,
        repeat_count: float,
        mode_name: str,
        progress=gr.Progress(),
    ) -> list[object]:
        try:
            request = check_request(
                context.registry,
                context.store,
                stored_ids=ids or [],
                upload=file,
                rubric_name=rubric_name,
                judge_names=judge_names or [],
                repeats=repeat_count,
                mode=mode_name,
            )
            transcripts, results = run_request(
                context.store,
                request,
                progress=lambda done, total, what: progress(done / max(total, 1), desc=what),
            )
        except Exception as exc:  # shown to the user; a refused request stored nothing
            raise gr.Error(str(exc)) from exc
        judged = JudgeRun(transcripts={t.id: t for t in transcripts}, results=results)
        for transcript in transcripts:
            own = [r for r in results if r.transcript_id == transcript.id]
            judged.aggregates.append(aggregate_results(own))
        frame = scores_frame(context.store, transcript_ids=list(judged.transcripts), rubric=request.rubric.id)
        figure = plots.radar(frame) if len(frame) else None
        unscored = sum(r.unscored_items for r in results)
        summary = (
            f"Judged {len(transcripts)} transcript(s) with {len(request.judges)} judge(s) x {request.repeats} "
            f"repeat(s); {unscored} item answers ended unscored (never filled in). Click an item row to see "
            "its evidence."
        )
        return [judged, summary, result_table(judged), "", figure]

    def on_select(judged: JudgeRun | None, event: gr.SelectData) -> str:
        if judged is None or event.index is None:
            return ""
        frame = result_table(judged)
        row = frame.iloc[event.index[0]]
        aggregate = next(a for a in judged.aggregates if a.transcript_id.startswith(row["transcript"]))
        if row["item"] == "TOTAL":
            return ""
        return evidence_html(judged.transcripts[aggregate.transcript_id], aggregate, row["item"])

    run.click(
        on_judge,
        [stored, upload, rubric, judges, repeats, mode],
        [run_state, status, table, evidence, radar],
        api_name="judge",
        concurrency_limit=1,
        concurrency_id="generation",
    )
    table.select(on_select, [run_state], [evidence], api_name=False)
    refresh.click(lambda: gr.update(choices=transcript_choices(context)), None, [stored], api_name=False)
