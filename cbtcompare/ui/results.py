"""Results tab: the primary patient-level contrast, the paper's table, the models and figures, over stored or
uploaded scores (stored scores bring the store's pairwise verdicts: position bias and the judges' arena);
and the arena leaderboard from a preferences CSV.

Wires widgets to cbtcompare.report (build_results, write_report_archive, display_frame), cbtcompare.arena
and cbtcompare.ctrs.scores_frame. Tables are shown as the HTML report shows them (report.display_frame:
p-values as "< 0.001" or three decimals, other numbers rounded), an empty table says why in words, and
library warnings in the notes are summarised in plain words; the downloaded CSVs keep full precision. A
"pair=BASE=TUNED" line in the filters box names a therapist pair instead of filtering.
"""

from __future__ import annotations

import gradio as gr
import pandas as pd

from cbtcompare import arena, plots, report, stats
from cbtcompare.ctrs.pairwise import PairwiseResult
from cbtcompare.report import format_p as format_p  # re-exported: the formatting lives in report
from cbtcompare.report import readable_text
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
    # appended, so that the API's outputs keep their positions
    ("interaction", "Family x variant: patient-level contrast per family (Holm across families)"),
    ("repeat_consistency", "Repeat-to-repeat consistency per judge (ICC(2,1) with CI)"),
    ("relative_self_preference", "Self-preference relative to the judge's scores of other families (with CI)"),
    ("position_bias", "Position bias by order swap: flip rate per judge (stored pairwise verdicts, with CIs)"),
    ("arena_judges", "Arena from the stored pairwise-judge verdicts (Bradley-Terry, 95% bootstrap CIs)"),
    ("part_subtotals", "Part subtotals per therapist (the classic CTRS's Part I and Part II)"),
]
SHOWN_FIGURES = ["item_bars", "radar", "paired_slopes", "totals_distribution"]
PAIR_PREFIX = "pair="
# Why a table can be empty, in words (the notes say more where an analysis was skipped).
EMPTY_REASONS = {
    "paper_table": "No scored transcripts match the filters.",
    "tuned_vs_base": "Needs a tuned and a base model of the same family, judged with the same patients.",
    "pairing": "No therapist pair could be formed: name one with pair=BASE=TUNED, or judge both variants.",
    "unscored_by_arm": "Every item was scored: nothing to prorate.",
    "power": "Needs a tuned-vs-base contrast (see above).",
    "paired": "Needs tuned and base sessions with the same patients and session numbers.",
    "mixed_model": "Needs at least two patients per variant (see the notes for why it was skipped).",
    "friedman": "Needs three or more therapist models with matched data.",
    "judge_alpha": "Needs scores from two or more judges on the same transcripts.",
    "judge_icc": "Needs scores from two or more judges on the same transcripts.",
    "length_bias": "The scores carry no transcript lengths (transcript_tokens).",
    "self_preference": "No judge scored transcripts of its own model.",
    "interaction": "Needs tuned-vs-base pairs in two or more families.",
    "repeat_consistency": "Needs a judge that scored the same transcripts in two or more repeats.",
    "relative_self_preference": "Needs two or more judges, one of a therapist's family that also scores other "
    "families.",
    "position_bias": "Needs pairwise verdicts in the store (Judge tab, pairwise mode).",
    "arena_judges": "Needs pairwise verdicts in the store between two different therapists.",
    "part_subtotals": "The rubric of these scores has no parts (the classic CTRS has Part I and Part II).",
}
# Library warnings as people read them: (words to look for, what they mean here). First match wins.
PLAIN_WARNINGS = [
    (("converge",), "the model's fit did not fully settle, so treat its estimate as rough (more patients or "
     "sessions usually help)"),
    (("boundary", "singular"), "the patients hardly differ from each other here, so the random intercept is "
     "near zero and the mixed model is close to a plain regression"),
    (("hessian", "positive definite"), "its standard errors could not be computed reliably, so its "
     "confidence intervals and p-values are unreliable"),
    (("divide by zero", "invalid value", "degrees of freedom"), "some statistics are undefined for these data "
     "(for example no spread within a group) and are left blank"),
    (("ties", "zero differences", "zero_method"), "many pairs have identical scores, so the test uses an "
     "approximation"),
    (("sample size", "too small", "too few"), "there are too few data for this test to be reliable"),
]  # fmt: skip


def split_pairs(filters_text: str) -> tuple[list[str], list[tuple[str, str]]]:
    """The filters box's lines: `pair=BASE=TUNED` lines as therapist pairs, the rest as key=value filters."""
    lines = [line.strip() for line in (filters_text or "").splitlines() if line.strip()]
    pairs = stats.parse_pair_args([line[len(PAIR_PREFIX) :] for line in lines if line.startswith(PAIR_PREFIX)])
    return [line for line in lines if not line.startswith(PAIR_PREFIX)], pairs


def readable_frame(frame: pd.DataFrame, name: str = "") -> pd.DataFrame:
    """A table for the screen, formatted as the HTML report formats it (report.display_frame); an empty table
    becomes one line saying why. The CSVs in the download keep full precision."""
    if frame is None or not len(frame):
        return pd.DataFrame({"": [EMPTY_REASONS.get(name, "Nothing to show for these scores.")]})
    return report.display_frame(frame)


def plain_note(note: str) -> str:
    """A note with a library's warning (statsmodels, scipy) summarised in plain words, the original kept short."""
    lowered = note.lower()
    for words, meaning in PLAIN_WARNINGS:
        if any(word in lowered for word in words):
            subject = note.split(":", 1)[0] if ":" in note[:60] else "A statistic"
            detail = note if len(note) <= 160 else note[:157] + "..."
            return f"{subject}: {meaning}. (Library message: {detail})"
    return note


def stored_pairwise(context: AppContext, source: str) -> list[PairwiseResult] | None:
    """The store's pairwise verdicts (position bias, the judges' arena) when the scores come from the store."""
    if source == "Upload a CSV":
        return None
    from cbtcompare.ctrs.results import load_pairwise

    return load_pairwise(context.store) or None


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
        source = gr.Radio(
            ["The store", "Upload a CSV"], value="The store", label="Scores from", elem_id="results-source"
        )
        upload = gr.File(label="Scores CSV", file_types=[".csv"], type="filepath", elem_id="results-upload")
        filters = gr.Textbox(
            label="Filters (one column=value per line; pair=BASE=TUNED names a therapist pair)",
            lines=3,
            placeholder="rubric_id=ctrs-paper-1-10",
        )
    compute = gr.Button("Compute", variant="primary", elem_id="results-compute")
    notes = gr.Markdown(elem_id="results-notes")
    tables = {}
    for name, title in SHOWN_TABLES:
        with gr.Accordion(title, open=name in {"paper_table", "tuned_vs_base", "pairing"}):
            tables[name] = gr.Dataframe(interactive=False, wrap=True, elem_id=f"results-{name}")
    figures = {name: gr.Plot(label=name.replace("_", " ")) for name in SHOWN_FIGURES}
    download = gr.File(label="Report (HTML + CSVs, zipped)")

    def on_compute(chosen: str, file: str | None, filters_text: str) -> list[object]:
        try:
            scores, chosen_filters = load_scores(context, chosen, file, filters_text)
            _, pairs = split_pairs(filters_text)
            pairwise = stored_pairwise(context, chosen)
            bundle = report.build_results(scores, pairs=pairs or None, pairwise_results=pairwise)
        except (ValueError, FileNotFoundError) as exc:
            raise gr.Error(str(exc)) from exc
        archive = report.write_report_archive(bundle, scores, chosen_filters)
        note_lines = "\n".join(f"- {readable_text(plain_note(note))}" for note in bundle.notes) or "- no warnings"
        summary = (
            f"**{scores['transcript_id'].nunique()} transcripts, {scores['therapist'].nunique()} therapist models, "
            f"{scores['judge'].nunique()} judge(s).** Notes:\n{note_lines}"
        )
        table_values = [readable_frame(bundle.tables.get(name, pd.DataFrame()), name) for name, _ in SHOWN_TABLES]
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
        return [readable_frame(frame), readable_frame(flags), plots.arena_ratings(frame)]

    fit.click(on_fit, [preferences], [leaderboard, raters, leaderboard_plot], api_name="arena")
