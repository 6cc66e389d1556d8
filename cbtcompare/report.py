"""The results report: every table of cbtcompare.stats as a CSV, and one self-contained HTML page.

`build_results` computes the tables and figures once (the Results tab and the CLI share it); an analysis
that cannot run on the data (too few pairs, one judge) is skipped with its reason in `notes`, and the mixed
model's fit warnings are shown, never dropped. `write_report` writes index.html, which embeds plotly.js
once and loads nothing from the network, plus one CSV per table. This module never imports gradio and
never reads the store; it is given a scores table.
"""

from __future__ import annotations

import html
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import pandas as pd
import plotly.graph_objects as go
import plotly.io as pio
from plotly.offline import get_plotlyjs

from cbtcompare import plots, stats
from cbtcompare.stats import CTRS_ITEMS, TOTAL, AnalysisError, MixedModelResult

Filters = Mapping[str, str | Sequence[str]]
LossHistory = Sequence[Mapping[str, float]]

TABLE_TITLES: dict[str, str] = {
    "paper_table": "Mean ± SD per model (the paper's table)",
    "descriptive": "Descriptive statistics per model (numeric)",
    "paired": "Paired comparison, tuned vs base (matched on family, patient and session)",
    "paired_by_family": "Paired comparison per family",
    "mixed_model": "Linear mixed model: fixed effects",
    "mixed_model_fit": "Linear mixed model: fit",
    "friedman": "Friedman tests between therapist models",
    "friedman_ranks": "Friedman mean ranks",
    "judge_alpha": "Inter-judge agreement per item (Krippendorff's alpha, ordinal)",
    "length_bias": "Length bias: Spearman correlation of total with transcript tokens",
    "self_preference": "Self-preference: a judge's totals vs the other judges' on the same transcripts",
    "human_agreement": "Human vs judge agreement per item",
    "transcript_totals": "Per-transcript totals",
}
FIGURE_TITLES: dict[str, str] = {
    "item_bars": "Item means with 95% CIs",
    "radar": "Item profile",
    "paired_slopes": "Base -> tuned per patient",
    "totals_distribution": "Distribution of totals",
    "loss_curve": "Training loss",
}
# Where each table and figure appears in the page, in order; transcript_totals is a CSV only.
PAGE_SECTIONS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("Scores per model", ("paper_table", "item_bars", "radar", "totals_distribution")),
    ("Tuned vs base", ("paired", "paired_slopes", "paired_by_family")),
    ("Mixed model", ("mixed_model", "mixed_model_fit")),
    ("Between therapist models", ("friedman", "friedman_ranks")),
    ("Judges", ("judge_alpha", "length_bias", "self_preference", "human_agreement")),
    ("Training", ("loss_curve",)),
)
PAGE_CSS = """
body{font-family:system-ui,sans-serif;margin:2rem auto;max-width:1200px;padding:0 1rem;color:#222}
table{border-collapse:collapse;font-size:.85rem;margin:.5rem 0 1.5rem}
th,td{border:1px solid #ccc;padding:.25rem .5rem;text-align:right}th{background:#f3f3f3}
td:first-child,th:first-child{text-align:left}.note{background:#fff4d6;border-left:4px solid #e0a800;padding:.5rem}
.muted{color:#666;font-size:.85rem}
"""


@dataclass
class ResultsBundle:
    """Everything the report shows: tables (name -> frame; the name is the CSV's stem), figures, the mixed
    model, and notes (analyses skipped and why, fit warnings) that must be shown beside the numbers."""

    tables: dict[str, pd.DataFrame] = field(default_factory=dict)
    figures: dict[str, go.Figure] = field(default_factory=dict)
    mixed_model: MixedModelResult | None = None
    notes: list[str] = field(default_factory=list)


def parse_filter_args(items: Sequence[str] | None) -> dict[str, list[str]]:
    """`["family=llama3.1-8b", "judge=a", "judge=b"]` -> {"family": [...], "judge": ["a", "b"]} (a repeated
    key means any of its values)."""
    parsed: dict[str, list[str]] = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep or not key.strip() or not value.strip():
            raise ValueError(f"filter {item!r} is not key=value (for example family=llama3.1-8b)")
        parsed.setdefault(key.strip(), []).append(value.strip())
    return parsed


def apply_filters(
    scores: pd.DataFrame, filters: Filters | None, *, source: str | None = None, line_offset: int | None = None
) -> pd.DataFrame:
    """Keep the rows whose column equals (as text) one of the filter's values (every filter must hold), then
    validate what is left (source/line_offset as in stats.validate_scores). Filtering comes first so that
    `rubric_id=...` can pick one rubric out of a mixed table."""
    for key, wanted in (filters or {}).items():
        if key not in scores.columns:
            raise ValueError(f"unknown filter {key!r}; filter on one of: {', '.join(map(str, scores.columns))}")
        values = [wanted] if isinstance(wanted, str) else list(wanted)
        scores = scores[scores[key].astype(str).str.strip().isin([str(v).strip() for v in values])]
    if filters and scores.empty:
        raise ValueError(f"no scores match the filters ({_describe_filters(filters)})")
    return stats.validate_scores(scores, source=source, line_offset=line_offset)


def _describe_filters(filters: Filters) -> str:
    return ", ".join(
        f"{key}={value if isinstance(value, str) else '|'.join(map(str, value))}" for key, value in filters.items()
    )


def format_paper_table(descriptive: pd.DataFrame) -> pd.DataFrame:
    """The paper's layout: a row per measure (total, then the items) and a column per model, 'mean ± SD'."""
    columns = {}
    for _, row in descriptive.iterrows():
        label = f"{row['therapist']} ({row['variant']})"
        cells = {"n transcripts": str(row["n"]), "partial totals": str(row["partial"])}
        cells["unscored items"] = str(row["unscored_items"])
        for measure in (TOTAL, *CTRS_ITEMS):
            mean, sd = row[f"{measure}_mean"], row[f"{measure}_sd"]
            cells[plots.ITEM_LABELS.get(measure, "Total")] = (
                "" if _missing(mean) else f"{mean:.2f}" + ("" if _missing(sd) else f" ± {sd:.2f}")
            )
        columns[label] = cells
    table = pd.DataFrame(columns)
    table.index.name = "measure"
    return table.reset_index()


def _missing(value: object) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def _try(bundle: ResultsBundle, what: str, compute):  # type: ignore[no-untyped-def]
    try:
        return compute()
    except (AnalysisError, ValueError) as exc:
        bundle.notes.append(f"{what} not computed: {exc}")
        return None


def build_results(
    scores: pd.DataFrame, *, ratings: pd.DataFrame | None = None, loss_history: LossHistory | None = None
) -> ResultsBundle:
    """Compute every table and figure for a (validated or raw) scores table."""
    scores = stats.validate_scores(scores)
    bundle = ResultsBundle()
    tables, figures = bundle.tables, bundle.figures
    descriptive = stats.descriptive_table(scores)
    tables["paper_table"] = format_paper_table(descriptive)
    tables["descriptive"] = descriptive
    totals = stats.transcript_totals(scores)
    partial = int(totals["partial"].sum())
    if partial:
        bundle.notes.append(
            f"{partial} of {len(totals)} transcripts have a partial total (some items unscored); their totals "
            "are the sum of the scored items and are included in the means"
        )
    for name, compute in (
        ("paired", lambda: stats.paired_comparison(scores)),
        ("paired_by_family", lambda: stats.paired_comparison(scores, by="family")),
    ):
        result = _try(bundle, TABLE_TITLES[name], compute)
        if result is not None:
            tables[name] = result
    model = _try(bundle, "The mixed model", lambda: stats.mixed_model(scores))
    if model is not None:
        bundle.mixed_model = model
        tables["mixed_model"] = model.fixed_effects
        tables["mixed_model_fit"] = pd.DataFrame(
            [
                {
                    "formula": model.formula,
                    "n_observations": model.n_observations,
                    "n_patients": model.n_patients,
                    "group_variance": model.group_variance,
                    "residual_variance": model.residual_variance,
                    "log_likelihood": model.log_likelihood,
                    "converged": model.converged,
                    "reference_levels": "; ".join(f"{k}={v}" for k, v in model.reference_levels.items()),
                    "warnings": " | ".join(model.warnings),
                }
            ]
        )
        bundle.notes.extend(f"Mixed model warning: {warning}" for warning in model.warnings)
    friedman_rows, rank_frames = [], []
    for variant in (None, *sorted(scores["variant"].unique())):
        result = _try(bundle, "The Friedman test", lambda v=variant: stats.friedman_test(scores, variant=v))
        if result is None or (variant is not None and len(result.therapists) < 3):
            continue
        scope = "all models" if variant is None else f"{variant} models"
        friedman_rows.append(
            {
                "scope": scope,
                "measure": result.measure,
                "k_therapists": len(result.therapists),
                "n_blocks": result.n_blocks,
                "dropped_blocks": result.dropped_blocks,
                "chi2": result.statistic,
                "p_value": result.p_value,
                "kendalls_w": result.kendalls_w,
                "note": result.note,
            }
        )
        rank_frames.append(result.mean_ranks.assign(scope=scope)[["scope", "therapist", "mean_rank", "mean"]])
    if friedman_rows:
        tables["friedman"] = pd.DataFrame(friedman_rows)
        tables["friedman_ranks"] = pd.concat(rank_frames, ignore_index=True)
    if scores["judge"].nunique() > 1:
        tables["judge_alpha"] = stats.inter_judge_alpha(scores)
    else:
        bundle.notes.append("Inter-judge agreement not computed: the scores come from one judge")
    bias = stats.length_bias(scores)
    if bias.empty:
        bundle.notes.append("Length bias not computed: the scores carry no transcript_tokens")
    else:
        tables["length_bias"] = bias
    tables["self_preference"] = stats.self_preference(scores)
    if ratings is not None:
        agreement = _try(bundle, "Human vs judge agreement", lambda: stats.human_judge_agreement(scores, ratings))
        if agreement is not None:
            tables["human_agreement"] = agreement
    tables["transcript_totals"] = totals
    figures["item_bars"] = plots.item_bars(scores)
    figures["radar"] = plots.radar(scores)
    figures["totals_distribution"] = plots.totals_distribution(scores)
    slopes = _try(bundle, "The paired slope plot", lambda: plots.paired_slopes(scores))
    if slopes is not None:
        figures["paired_slopes"] = slopes
    if loss_history:
        figures["loss_curve"] = plots.loss_curve(loss_history)
    return bundle


def _display_frame(frame: pd.DataFrame) -> pd.DataFrame:
    shown = frame.copy()
    for column in shown.columns:
        if pd.api.types.is_float_dtype(shown[column]):
            pattern = "{:.2g}" if str(column).startswith("p_") else "{:.3f}"
            shown[column] = [("" if math.isnan(v) else pattern.format(v)) for v in shown[column].astype(float)]
    return shown


def _table_html(frame: pd.DataFrame) -> str:
    return _display_frame(frame).to_html(index=False, escape=True, border=0, na_rep="")


def _figure_html(figure: go.Figure) -> str:
    return pio.to_html(figure, full_html=False, include_plotlyjs=False, config={"displaylogo": False})


def render_html(bundle: ResultsBundle, *, title: str, summary: Sequence[str], csv_names: Sequence[str]) -> str:
    """The whole page as one string: plotly.js inlined once in the head, every figure and table below."""
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>{html.escape(title)}</title><style>{PAGE_CSS}</style>",
        f'<script type="text/javascript">{get_plotlyjs()}</script>',
        "</head><body>",
        f"<h1>{html.escape(title)}</h1>",
        '<p class="muted">CBTCompare is a research tool, not therapy. All scores are from automated judges '
        "unless stated; read the notes before the numbers.</p>",
        "<ul>" + "".join(f"<li>{html.escape(line)}</li>" for line in summary) + "</ul>",
    ]
    if bundle.notes:
        parts.append('<div class="note"><strong>Notes</strong><ul>')
        parts.extend(f"<li>{html.escape(note)}</li>" for note in bundle.notes)
        parts.append("</ul></div>")
    for heading, names in PAGE_SECTIONS:
        present = [name for name in names if name in bundle.tables or name in bundle.figures]
        if not present:
            continue
        parts.append(f"<h2>{html.escape(heading)}</h2>")
        if heading == "Mixed model" and bundle.mixed_model is not None:
            formula = html.escape(bundle.mixed_model.formula)
            parts.append(f"<p><code>{formula}</code>, random intercept per patient_id; p_bonferroni adjusts over")
            parts.append("the non-intercept terms.</p>")
        for name in present:
            if name in bundle.figures:
                parts.append(f"<h3>{html.escape(FIGURE_TITLES[name])}</h3>{_figure_html(bundle.figures[name])}")
            else:
                parts.append(f"<h3>{html.escape(TABLE_TITLES[name])}</h3>")
                parts.append(f'<p class="muted">CSV: <a href="{name}.csv">{name}.csv</a></p>')
                parts.append(_table_html(bundle.tables[name]))
    parts.append("<h2>Files</h2><ul>")
    parts.extend(f'<li><a href="{html.escape(n)}">{html.escape(n)}</a></li>' for n in csv_names)
    parts.append("</ul></body></html>")
    return "\n".join(parts)


def write_report(
    scores_df: pd.DataFrame,
    out_dir: str | Path,
    filters: Filters | None = None,
    *,
    ratings: pd.DataFrame | None = None,
    loss_history: LossHistory | None = None,
    title: str = "CBTCompare results",
) -> Path:
    """Write index.html (self-contained, works offline) and one CSV per table into out_dir; return the
    path of index.html. `filters` keep only matching score rows (see apply_filters) before any analysis."""
    scores = apply_filters(scores_df, filters)
    bundle = build_results(scores, ratings=ratings, loss_history=loss_history)
    return write_results(bundle, scores, out_dir, filters, title=title)


def write_results(
    bundle: ResultsBundle,
    scores: pd.DataFrame,
    out_dir: str | Path,
    filters: Filters | None = None,
    *,
    title: str = "CBTCompare results",
) -> Path:
    """Write an already built bundle (from the filtered `scores`) as index.html + CSVs; return index.html."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    csv_names = []
    for name, table in bundle.tables.items():
        table.to_csv(out / f"{name}.csv", index=False)
        csv_names.append(f"{name}.csv")
    summary = [
        f"Generated {datetime.now(UTC).strftime('%Y-%m-%d %H:%M UTC')}",
        f"{scores['transcript_id'].nunique()} transcripts, {scores['therapist'].nunique()} therapist models, "
        f"{scores['judge'].nunique()} judge(s), {len(scores)} score rows",
        "Filters: " + (_describe_filters(filters) if filters else "none (all scores)"),
        "Item scores are medians over judges and repeats; totals sum the scored items (partial when some are "
        "unscored).",
    ]
    index = out / "index.html"
    index.write_text(render_html(bundle, title=title, summary=summary, csv_names=csv_names), encoding="utf-8")
    return index


def write_report_archive(
    bundle: ResultsBundle, scores: pd.DataFrame, filters: Filters | None = None, *, title: str = "CBTCompare results"
) -> Path:
    """The report (index.html + CSVs) as one zip file in a fresh temporary folder, for downloads."""
    import shutil
    import tempfile

    folder = Path(tempfile.mkdtemp(prefix="cbtcompare-report-"))
    write_results(bundle, scores, folder / "report", filters, title=title)
    return Path(shutil.make_archive(str(folder / "cbtcompare-report"), "zip", folder / "report"))
