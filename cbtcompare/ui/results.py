"""Results tab: the primary patient-level contrast, the paper's table, the models and figures, over stored or
uploaded scores; and the arena leaderboard from a preferences CSV.

Wires widgets to cbtcompare.report (build_results, write_report_archive, display_frame), cbtcompare.arena
and cbtcompare.ctrs.scores_frame. Tables are shown rounded for people; the downloaded CSVs keep full
precision. A "pair=BASE=TUNED" line in the filters box names a therapist pair instead of filtering.
"""

from __future__ import annotations

import gradio as gr
import pandas as pd

from cbtcompare import arena, plots, report, stats
from cbtcompare.ui import AppContext, check_upload_size, ui_copy

TITLE = "Results"
SHOWN_TABLES = [
    ("paper_table", "The paper's table: mean ± SD per therapist and variant"),
    ("tuned_vs_base", "Tuned vs base on the total: primary (patient means) first, then sensitivity and secondary"),
    ("pairing", "Therapist pairs compared, and transcripts left unmatched"),
    ("unscored_by_arm", "Unscored items per therapist (the primary total is prorated)"),
    ("power", "Power of the primary analysis (minimal detectable difference)"),
    ("paired", "Secondary: tuned vs base on session cells (Holm across items)"),
    ("mixed_model", "The paper's mixed model: total ~ family + variant + centred session, random intercept"),
    ("friedman", "Between therapist models (Friedman, matched data; Kendall's W with CI)"),
    ("judge_alpha", "Inter-judge reliability (Krippendorff's alpha, ordinal)"),
    ("judge_icc", "Inter-judge ICCs on totals with CIs"),
    ("length_bias", "Length (Spearman of total vs transcript tokens: a correlation, not a bias measurement)"),
    ("self_preference", "Self-preference flags"),
]
SHOWN_FIGURES = ["item_bars", "radar", "paired_slopes", "totals_distribution"]
PAIR_PREFIX = "pair="


def split_pairs(filters_text: str) -> tuple[list[str], list[tuple[str, str]]]:
    """The filters box's lines: `pair=BASE=TUNED` lines as therapist pairs, the rest as key=value filters."""
    lines = [line.strip() for line in (filters_text or "").splitlines() if line.strip()]
    pairs = stats.parse_pair_args([line[len(PAIR_PREFIX) :] for line in lines if line.startswith(PAIR_PREFIX)])
    return [line for line in lines if not line.startswith(PAIR_PREFIX)], pairs


def load_scores(
    context: AppContext, source: str, upload: str | None, filters_text: str
) -> tuple[pd.DataFrame, report.Filters]:
    """The scores to analyse, filtered, and the filters; ValueError with what to fix."""
    filter_lines, _ = split_pairs(filters_text)
    filters = report.parse_filter_args(filter_lines)
    if source == "Upload a CSV":
        if not upload:
            raise ValueError("upload a scores CSV first (columns: " + ", ".join(stats.REQUIRED_COLUMNS) + ")")
        check_upload_size(upload, "the scores CSV")
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
        filters = gr.Textbox(
            label="Filters (one column=value per line; pair=BASE=TUNED names a therapist pair)",
            lines=3,
            placeholder="rubric_id=ctrs-paper-1-10",
        )
    compute = gr.Button("Compute", variant="primary")
    notes = gr.Markdown()
    tables = {}
    for name, title in SHOWN_TABLES:
        with gr.Accordion(title, open=name in {"paper_table", "tuned_vs_base", "pairing"}):
            tables[name] = gr.Dataframe(interactive=False, wrap=True)
    figures = {name: gr.Plot(label=name.replace("_", " ")) for name in SHOWN_FIGURES}
    download = gr.File(label="Report (HTML + CSVs, zipped)")

    def on_compute(chosen: str, file: str | None, filters_text: str) -> list[object]:
        try:
            scores, chosen_filters = load_scores(context, chosen, file, filters_text)
            _, pairs = split_pairs(filters_text)
            bundle = report.build_results(scores, pairs=pairs or None)
        except (ValueError, FileNotFoundError) as exc:
            raise gr.Error(str(exc)) from exc
        archive = report.write_report_archive(bundle, scores, chosen_filters)
        note_lines = "\n".join(f"- {note}" for note in bundle.notes) or "- no warnings"
        summary = (
            f"**{scores['transcript_id'].nunique()} transcripts, {scores['therapist'].nunique()} therapist models, "
            f"{scores['judge'].nunique()} judge(s).** Notes:\n{note_lines}"
        )
        table_values = [report.display_frame(bundle.tables.get(name, pd.DataFrame())) for name, _ in SHOWN_TABLES]
        figure_values = [bundle.figures.get(name) for name in SHOWN_FIGURES]
        return [summary, *table_values, *figure_values, str(archive)]

    compute.click(
        on_compute,
        [source, upload, filters],
        [notes, *tables.values(), *figures.values(), download],
        api_name="results",
    )

    gr.Markdown("### Arena leaderboard\nBlind preferences (columns model_a, model_b, winner a|b|tie, rater).")
    with gr.Row():
        preferences = gr.File(label="Preferences CSV", file_types=[".csv"], type="filepath")
        fit = gr.Button("Fit the leaderboard")
    leaderboard = gr.Dataframe(interactive=False, wrap=True, label="Ratings (Elo scale, 95% bootstrap CI)")
    raters = gr.Dataframe(interactive=False, wrap=True, label="Raters and anomaly flags")
    leaderboard_plot = gr.Plot(label="arena ratings")

    def on_fit(file: str | None) -> list[object]:
        if not file:
            raise gr.Error("upload a preferences CSV first (columns: model_a, model_b, winner, rater)")
        check_upload_size(file, "the preferences CSV")
        try:
            votes = arena.read_preferences_csv(file)
            board = arena.bradley_terry(votes)
        except (ValueError, FileNotFoundError) as exc:
            raise gr.Error(str(exc)) from exc
        frame = board.frame()
        flags = arena.rater_flags(votes)
        return [report.display_frame(frame), report.display_frame(flags), plots.arena_ratings(frame)]

    fit.click(on_fit, [preferences], [leaderboard, raters, leaderboard_plot], api_name="arena")
