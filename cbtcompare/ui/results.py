"""Results tab: the paper's table, paired tests, the mixed model and the figures, over stored or uploaded scores.

Wires widgets to cbtcompare.report (build_results, write_report_archive) and cbtcompare.ctrs.scores_frame.
"""

from __future__ import annotations

import gradio as gr
import pandas as pd

from cbtcompare import report, stats
from cbtcompare.ui import AppContext, ui_copy

TITLE = "Results"
SHOWN_TABLES = [
    ("paper_table", "The paper's table: mean ± SD per therapist and variant"),
    ("paired", "Tuned vs base on matched sessions (Holm across items)"),
    ("mixed_model", "Mixed model: total ~ family + variant + centred session, random intercept per patient"),
    ("friedman", "Between therapist models (Friedman, matched data)"),
    ("judge_alpha", "Inter-judge reliability (Krippendorff's alpha, ordinal)"),
    ("length_bias", "Length bias (Spearman of total vs transcript tokens)"),
    ("self_preference", "Self-preference flags"),
]
SHOWN_FIGURES = ["item_bars", "radar", "paired_slopes", "totals_distribution"]


def load_scores(
    context: AppContext, source: str, upload: str | None, filters_text: str
) -> tuple[pd.DataFrame, report.Filters]:
    """The scores to analyse, filtered, and the filters; ValueError with what to fix."""
    filters = report.parse_filter_args([line for line in (filters_text or "").splitlines() if line.strip()])
    if source == "Upload a CSV":
        if not upload:
            raise ValueError("upload a scores CSV first (columns: " + ", ".join(stats.REQUIRED_COLUMNS) + ")")
        scores = stats.read_scores_csv(upload)
    else:
        from cbtcompare.ctrs import scores_frame

        scores = scores_frame(context.store)
        if scores is None or len(scores) == 0:
            raise ValueError("the store holds no scores yet: judge some transcripts in the Judge tab first")
    return report.apply_filters(scores, filters), filters


def render(context: AppContext) -> None:
    gr.Markdown(ui_copy("results_intro"))
    with gr.Row():
        source = gr.Radio(["The store", "Upload a CSV"], value="The store", label="Scores from")
        upload = gr.File(label="Scores CSV", file_types=[".csv"], type="filepath")
        filters = gr.Textbox(label="Filters (one key=value per line)", lines=3, placeholder="rubric_id=ctrs-paper-1-10")
    compute = gr.Button("Compute", variant="primary")
    notes = gr.Markdown()
    tables = {}
    for name, title in SHOWN_TABLES:
        with gr.Accordion(title, open=name in {"paper_table", "paired", "mixed_model"}):
            tables[name] = gr.Dataframe(interactive=False, wrap=True)
    figures = {name: gr.Plot(label=name.replace("_", " ")) for name in SHOWN_FIGURES}
    download = gr.File(label="Report (HTML + CSVs, zipped)")

    def on_compute(chosen: str, file: str | None, filters_text: str) -> list[object]:
        try:
            scores, chosen_filters = load_scores(context, chosen, file, filters_text)
            bundle = report.build_results(scores)
        except (ValueError, FileNotFoundError) as exc:
            raise gr.Error(str(exc)) from exc
        archive = report.write_report_archive(bundle, scores, chosen_filters)
        note_lines = "\n".join(f"- {note}" for note in bundle.notes) or "- no warnings"
        summary = (
            f"**{scores['transcript_id'].nunique()} transcripts, {scores['therapist'].nunique()} therapist models, "
            f"{scores['judge'].nunique()} judge(s).** Notes:\n{note_lines}"
        )
        table_values = [bundle.tables.get(name, pd.DataFrame()) for name, _ in SHOWN_TABLES]
        figure_values = [bundle.figures.get(name) for name in SHOWN_FIGURES]
        return [summary, *table_values, *figure_values, str(archive)]

    compute.click(
        on_compute,
        [source, upload, filters],
        [notes, *tables.values(), *figures.values(), download],
        api_name="results",
    )
