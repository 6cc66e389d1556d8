"""The results report: every table of cbtcompare.stats as a CSV, and one self-contained HTML page.

`build_results` computes the tables and figures once (the Results tab and the CLI share it); an analysis
that cannot run on the data (too few pairs, one judge, an ambiguous pairing) is skipped with its reason in
`notes`, and fit warnings are shown, never dropped. The tuned-vs-base section leads with the primary,
patient-level analysis; the page states its conventions (CONVENTIONS). Numbers are rounded for people in
the page; the CSVs keep full precision. `write_report` writes index.html, which embeds plotly.js
once and loads nothing from the network, plus one CSV per table. This module never imports gradio and
never reads the store; it is given a scores table.
"""

from __future__ import annotations

import contextlib
import html
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import pandas as pd
import plotly.graph_objects as go
import plotly.io as pio
from plotly.offline import get_plotlyjs
from pydantic import BaseModel, Field, ValidationInfo, field_validator

from cbtcompare import arena, plots, power, stats
from cbtcompare.ctrs import bias as judge_bias
from cbtcompare.ctrs.pairwise import PairwiseResult
from cbtcompare.stats import CTRS_ITEMS, TOTAL, AnalysisError, MixedModelResult, patient_level, reliability

Filters = Mapping[str, str | Sequence[str]]
LossHistory = Sequence[Mapping[str, float]]

TABLE_TITLES: dict[str, str] = {
    "paper_table": "Mean ± SD per model (the paper's table)",
    "descriptive": "Descriptive statistics per model (numeric)",
    "unscored_by_arm": "Unscored items per therapist (the primary total is prorated; see conventions)",
    "tuned_vs_base": "Tuned vs base on the total: primary (patient level) first, then sensitivity and secondary",
    "pairing": "Therapist pairs compared, and transcripts left unmatched",
    "patient_level": "Primary: tuned vs base on patient means, per item (Holm across items)",
    "random_slope": "Random-slope mixed model (tuning slope per patient)",
    "paired": "Secondary: tuned vs base on session cells (matched on therapist pair, patient and session)",
    "paired_by_family": "Secondary: session-cell comparison per family",
    "interaction": "Family x variant: patient-level contrast per family (Holm across families)",
    "power": "Power of the primary analysis: power for a stated difference, minimal detectable difference and "
    "patients needed, as one test and at Holm's strictest step over pairs x items",
    "mixed_model": "The paper's linear mixed model (random intercept only): fixed effects",
    "mixed_model_fit": "The paper's linear mixed model: fit",
    "friedman": "Friedman tests between therapist models (Kendall's W with a bootstrap CI)",
    "friedman_ranks": "Friedman mean ranks",
    "judge_alpha": "Inter-judge agreement per item (Krippendorff's alpha, ordinal)",
    "length_bias": "Length bias: Spearman correlation of total with transcript tokens",
    "self_preference": "Self-preference: a judge's totals vs the other judges' on the same transcripts",
    "judge_icc": "Inter-judge ICCs on totals (Shrout & Fleiss), with 95% CIs",
    "repeat_consistency": "Repeat-to-repeat consistency per judge: ICC(2,1) of totals across repeats",
    "human_agreement": "Human vs judge agreement per item",
    "human_judge_totals": "Human vs judge on totals and on the tuned - base contrast",
    "arena": "Arena leaderboard: Bradley-Terry ratings from blind preferences (95% bootstrap CIs)",
    "arena_raters": "Arena raters: vote shares, agreement with the others' leaderboard, anomaly flags",
    "arena_judges": "Arena from pairwise-judge verdicts: Bradley-Terry ratings per therapist (95% bootstrap CIs)",
    "arena_judge_raters": "Arena from pairwise-judge verdicts: per judge vote shares, agreement, anomaly flags",
    "part_subtotals": "Part subtotals per therapist (the rubric's parts, prorated within each part)",
    "rubric_parts": "The rubric's parts and their items",
    "pairwise_win_rates": "Pairwise win rates per judge (both orders asked; a win counts when both agree), with "
    "the order-flip rate",
    "position_bias": "Position bias by order swap: flip rate and first-position rate per judge (Wilson 95% CIs)",
    "relative_self_preference": "Self-preference relative to the judge's scores of other families (net of "
    "leniency and quality; 95% CIs)",
    "length_bias_padding": "Length bias by padding: padded minus original total per judge (95% CIs)",
    "quality_gate": "Simulation quality gate: sessions flagged and quarantined from judging",
    "transcript_totals": "Per-transcript totals",
}
FIGURE_TITLES: dict[str, str] = {
    "item_bars": "Item means with 95% CIs",
    "radar": "Item profile",
    "paired_slopes": "Base -> tuned per patient",
    "totals_distribution": "Distribution of totals",
    "loss_curve": "Training loss",
    "arena_ratings": "Arena ratings with CIs",
    "arena_judge_ratings": "Arena ratings from pairwise-judge verdicts, with CIs",
}
# Where each table and figure appears in the page, in order; transcript_totals is a CSV only.
PAGE_SECTIONS: tuple[tuple[str, tuple[str, ...]], ...] = (
    (
        "Scores per model",
        (
            "paper_table",
            "part_subtotals",
            "rubric_parts",
            "unscored_by_arm",
            "item_bars",
            "radar",
            "totals_distribution",
        ),
    ),
    (
        "Tuned vs base",
        (
            "tuned_vs_base",
            "pairing",
            "patient_level",
            "paired_slopes",
            "random_slope",
            "interaction",
            "paired",
            "paired_by_family",
        ),
    ),
    ("Power", ("power",)),
    ("Mixed model", ("mixed_model", "mixed_model_fit")),
    ("Between therapist models", ("friedman", "friedman_ranks")),
    ("Pairwise judging", ("pairwise_win_rates",)),
    (
        "Arena",
        ("arena", "arena_ratings", "arena_raters", "arena_judges", "arena_judge_ratings", "arena_judge_raters"),
    ),
    (
        "Judges",
        (
            "judge_alpha",
            "judge_icc",
            "repeat_consistency",
            "human_agreement",
            "human_judge_totals",
        ),
    ),
    (
        "Judge bias, measured by manipulation",
        ("position_bias", "relative_self_preference", "length_bias_padding", "length_bias", "self_preference"),
    ),
    ("Simulation quality", ("quality_gate",)),
    ("Training", ("loss_curve",)),
)
CONVENTIONS: tuple[str, ...] = (
    "Primary analysis: the patient is the unit. Each patient's tuned - base differences are averaged over "
    "its matched sessions and therapist pairs, and the patient means are tested (paired t; Wilcoxon beside "
    "it). The session-cell test counts one patient several times and is shown as secondary.",
    f"Totals: the primary total is prorated to the rubric length (mean of the scored items x "
    f"{len(CTRS_ITEMS)}) when at least {stats.PRORATE_MIN_FRACTION:.0%} of the items are scored, else missing; "
    "in a tuned-vs-base pair both sides are prorated over the items scored on both sides. total_complete "
    "(complete cases only) is the sensitivity row. No missing score is ever filled in.",
    "Pairing: transcripts are paired on an explicit (base therapist, tuned therapist) pair plus patient and "
    "session; a family with two base or two tuned therapists is refused unless the pairs are named.",
    "Wilcoxon signed-rank: zero differences are dropped (Wilcoxon's convention, scipy's default), exact p for "
    "small samples without ties, normal approximation otherwise.",
    "Mixed models: Wald tests and CIs come from REML fits; likelihood-ratio tests refit both models by ML. A "
    "fit that does not converge, or whose variance components are degenerate (on the boundary, or an "
    "intercept-slope correlation of +-1), is shown with the reason and its estimate withheld.",
    "Multiplicity: Holm across the 11 items and across families; Bonferroni over the paper model's terms.",
    "Power: exact noncentral t; with several tests the per-test alpha is alpha / m (Bonferroni, and the "
    "strictest step of Holm).",
    "Arena: Bradley-Terry by maximum likelihood on the Elo scale (1000 + 400 log10 strength), a tie counting "
    "as half a win for each side as in FastChat; CIs are bootstrap percentiles over resampled votes. Human "
    "votes and pairwise-judge verdicts (the side that won more items, both orders agreeing) are fitted apart.",
    "Judge bias is measured by manipulation, each per judge with a 95% CI: position by asking every pairwise "
    "item in both orders (flip rate; first-position rate against 0.5, binomial test); self-preference as one "
    "least-squares fit total ~ transcript + judge + own-family indicator per judge, so quality and leniency "
    "are absorbed; length by re-judging the same transcripts with neutral filler added (`judge "
    "--padding-bias`). The raw length and self-preference correlations are shown last, for comparison only.",
    "Unassigned transcripts (imports whose producer is unknown) are shown per therapist and left out of every "
    "tuned-vs-base analysis and the mixed model; their number is in the notes.",
    "Rounding: the page rounds for reading; every CSV keeps full precision.",
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
            raise ValueError(f"filter {item!r} is not column=value (for example family=llama3.1-8b)")
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
    scores: pd.DataFrame,
    *,
    ratings: pd.DataFrame | None = None,
    loss_history: LossHistory | None = None,
    pairs: Sequence[tuple[str, str]] | None = None,
    preferences: pd.DataFrame | None = None,
    power_difference: float = 5.0,
    alpha: float = 0.05,
    pairwise_results: Sequence[PairwiseResult] | None = None,
    padding_bias: pd.DataFrame | None = None,
) -> ResultsBundle:
    """Compute every table and figure for a (validated or raw) scores table. `pairs` names the
    (base therapist, tuned therapist) pairs (default: one of each per family, refused when ambiguous);
    `preferences` (arena votes) adds the leaderboard; `power_difference` is the difference, in total
    points, whose power the primary analysis is reported for; `pairwise_results` (judged in both orders)
    add the position-bias table and `padding_bias` (the per-judge frame of
    cbtcompare.ctrs.bias.length_bias_by_padding) the length-by-padding one."""
    scores = stats.validate_scores(scores)
    bundle = ResultsBundle()
    tables, figures = bundle.tables, bundle.figures
    descriptive = stats.descriptive_table(scores)
    tables["paper_table"] = format_paper_table(descriptive)
    tables["descriptive"] = descriptive
    tables["unscored_by_arm"] = descriptive[
        ["therapist", "family", "variant", "n", "partial", "unscored_items", "unscored_rate", "total_complete_n"]
    ]
    totals = stats.transcript_totals(scores)
    rubric = stats.rubric_for_scores(scores)
    if rubric is not None and rubric.parts:
        parts = stats.part_subtotals(scores, rubric)
        columns = [c for c in parts.columns if c.startswith("part_")]
        summary = parts.groupby(["therapist", "variant"], sort=True)[columns].agg(["mean", "std"])
        summary.columns = [f"{column}_{stat}" for column, stat in summary.columns]
        tables["part_subtotals"] = summary.reset_index()
        tables["rubric_parts"] = pd.DataFrame(
            [
                {"part": key, "title": title, "items": ", ".join(i.id for i in rubric.items if i.part == key)}
                for key, title in rubric.parts.items()
            ]
        )
    partial = int(totals["partial"].sum())
    if partial:
        bundle.notes.append(
            f"{partial} of {len(totals)} transcripts have a partial total (some items unscored); the primary "
            "total prorates them to the rubric length, and total_complete leaves them out (sensitivity)"
        )
    unassigned = stats.unassigned_transcripts(totals)
    if unassigned:
        bundle.notes.append(
            f"{unassigned} of {len(totals)} transcripts are unassigned (imported, producer unknown): they are "
            "scored and shown per therapist, and left out of every tuned-vs-base analysis and the mixed model"
        )
    pairing = _try(bundle, "Tuned vs base", lambda: stats.resolve_pairing(totals, pairs))
    pair_args = [(p.control, p.treatment) for p in pairing] if pairing else None
    if pairing is not None:
        _tuned_vs_base(bundle, scores, pair_args, power_difference, alpha)
        slopes = _try(bundle, "The paired slope plot", lambda: plots.paired_slopes(scores, pairs=pair_args))
        if slopes is not None:
            figures["paired_slopes"] = slopes
    model_scores = scores
    if pairs and pairing:
        named = {name for p in pairing for name in (p.control, p.treatment)}
        model_scores = scores[scores["therapist"].isin(named) | ~scores["variant"].isin(["base", "tuned"])]
    model = _try(bundle, "The mixed model", lambda: stats.mixed_model(model_scores))
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
    _friedman(bundle, scores)
    _judges(bundle, scores, ratings, pair_args)
    _judge_bias(bundle, scores, pairwise_results, padding_bias)
    if preferences is not None:
        _arena(bundle, preferences, "arena", "arena_raters", "arena_ratings")
    if pairwise_results:
        votes = _try(bundle, TABLE_TITLES["arena_judges"], lambda: _pairwise_votes(pairwise_results, totals))
        if votes is not None:
            _arena(bundle, votes, "arena_judges", "arena_judge_raters", "arena_judge_ratings")
    tables["transcript_totals"] = totals
    figures["item_bars"] = plots.item_bars(scores)
    figures["radar"] = plots.radar(scores)
    figures["totals_distribution"] = plots.totals_distribution(scores)
    if loss_history:
        figures["loss_curve"] = plots.loss_curve(loss_history)
    return bundle


def _tuned_vs_base(
    bundle: ResultsBundle,
    scores: pd.DataFrame,
    pairs: Sequence[tuple[str, str]] | None,
    power_difference: float,
    alpha: float,
) -> None:
    tables = bundle.tables
    computations = (
        ("pairing", lambda: stats.pairing_summary(scores, pairs=pairs)),
        ("tuned_vs_base", lambda: patient_level.tuned_vs_base_summary(scores, pairs=pairs)),
        ("patient_level", lambda: patient_level.patient_level_comparison(scores, pairs=pairs)),
        ("paired", lambda: stats.paired_comparison(scores, pairs=pairs)),
        ("paired_by_family", lambda: stats.paired_comparison(scores, by="family", pairs=pairs)),
    )
    for name, compute in computations:
        result = _try(bundle, TABLE_TITLES[name], compute)
        if result is not None:
            tables[name] = result
    if "pairing" in tables:
        unmatched = tables["pairing"][["unmatched_control", "unmatched_treatment"]].to_numpy().sum()
        if unmatched:
            bundle.notes.append(
                f"{int(unmatched)} base/tuned transcripts have no partner (no matching therapist pair, patient "
                "and session) and are left out of the tuned-vs-base analyses; see the pairing table"
            )
    slope = _try(bundle, "The random-slope model", lambda: patient_level.random_slope_model(scores, pairs=pairs))
    if slope is not None:
        tables["random_slope"] = pd.DataFrame([slope.as_row()])
        if slope.withheld:
            bundle.notes.append(f"Random-slope model: estimate withheld, {slope.withheld}")
    interaction = _try(
        bundle, "The family x variant interaction", lambda: patient_level.family_interaction(scores, pairs=pairs)
    )
    if interaction is not None and len(interaction.follow_ups) > 1:
        tables["interaction"] = interaction.follow_ups.assign(
            interaction_lr=interaction.lr_statistic,
            interaction_df=interaction.df,
            p_interaction=interaction.p_interaction,
            interaction_note=interaction.note,
        )
    if "patient_level" in tables:
        families = int(tables["pairing"]["pair"].astype(bool).sum()) if "pairing" in tables else 1
        tables["power"] = _power_table(tables["patient_level"], power_difference, alpha, max(families, 1))


def _power_table(patient_level_table: pd.DataFrame, difference: float, alpha: float, pairs: int) -> pd.DataFrame:
    """The primary total's achieved power, minimal detectable difference and patients needed for
    `difference`: as one test, and planned at Holm's strictest step over the therapist pairs x items."""
    row = patient_level_table.set_index("measure").loc[TOTAL]
    n, sd = int(row["n_pairs"]), float(row["sd_diff"])
    rows = []
    plans = (("one test", 1), (f"Holm over {pairs} pair(s) x {len(CTRS_ITEMS)} items", pairs * len(CTRS_ITEMS)))
    for scope, tests in plans:
        achieved = power.achieved_power(n, sd, difference, alpha=alpha, tests=tests, correction="holm")
        needed = math.nan
        if math.isfinite(sd) and sd > 0:
            with contextlib.suppress(ValueError):  # more than power.MAX_N patients: left blank
                needed = power.n_needed(difference / sd, achieved.alpha_per_test, achieved.target_power)
        rows.append(
            {
                "analysis": patient_level.PRIMARY,
                "planned_as": scope,
                "tests": tests,
                "n_patients": achieved.n_units,
                "sd_of_patient_differences": achieved.sd_of_differences,
                "alpha": achieved.alpha_per_test,
                "difference": achieved.difference,
                "power_for_difference": achieved.power,
                "target_power": achieved.target_power,
                "minimal_detectable_difference": achieved.minimal_detectable_difference,
                "patients_needed": needed,
            }
        )
    return pd.DataFrame(rows)


def _friedman(bundle: ResultsBundle, scores: pd.DataFrame) -> None:
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
                "kendalls_w_ci_low": result.kendalls_w_ci[0],
                "kendalls_w_ci_high": result.kendalls_w_ci[1],
                "note": result.note,
            }
        )
        rank_frames.append(result.mean_ranks.assign(scope=scope)[["scope", "therapist", "mean_rank", "mean"]])
    if friedman_rows:
        bundle.tables["friedman"] = pd.DataFrame(friedman_rows)
        bundle.tables["friedman_ranks"] = pd.concat(rank_frames, ignore_index=True)


def _judges(
    bundle: ResultsBundle,
    scores: pd.DataFrame,
    ratings: pd.DataFrame | None,
    pairs: Sequence[tuple[str, str]] | None,
) -> None:
    tables = bundle.tables
    if scores["judge"].nunique() > 1:
        tables["judge_alpha"] = stats.inter_judge_alpha(scores)
        tables["judge_icc"] = reliability.judge_icc(scores)
    else:
        bundle.notes.append("Inter-judge agreement not computed: the scores come from one judge")
    consistency = reliability.repeat_consistency(scores)
    if not consistency.empty:
        tables["repeat_consistency"] = consistency
    bias = stats.length_bias(scores)
    if bias.empty:
        bundle.notes.append("Length bias not computed: the scores carry no transcript_tokens")
    else:
        tables["length_bias"] = bias
        bundle.notes.append(
            "The length-bias table is a correlation: it cannot tell a judge's bias from longer sessions being "
            "better. Measure it by padding (`judge --padding-bias`, cbtcompare.ctrs.bias.length_bias_by_padding)"
        )
    tables["self_preference"] = stats.self_preference(scores)
    if ratings is not None:
        agreement = _try(bundle, "Human vs judge agreement", lambda: stats.human_judge_agreement(scores, ratings))
        if agreement is not None:
            tables["human_agreement"] = agreement
        on_totals = _try(
            bundle, "Human vs judge on totals", lambda: reliability.human_judge_totals(scores, ratings, pairs=pairs)
        )
        if on_totals is not None:
            tables["human_judge_totals"] = on_totals


def _judge_bias(
    bundle: ResultsBundle,
    scores: pd.DataFrame,
    pairwise_results: Sequence[PairwiseResult] | None,
    padding_bias: pd.DataFrame | None,
) -> None:
    """The biases measured by manipulation (cbtcompare.ctrs.bias), per judge with CIs."""
    if pairwise_results:
        position = judge_bias.position_bias(pairwise_results)
        if not position.empty:
            bundle.tables["position_bias"] = position
    relative = _try(bundle, "Relative self-preference", lambda: judge_bias.relative_self_preference(scores))
    if relative is not None and not relative.empty:
        bundle.tables["relative_self_preference"] = relative
    elif relative is not None:
        bundle.notes.append(
            "Relative self-preference not computed: it needs two or more judges, one of them of a therapist's "
            "family and also scoring other families"
        )
    if padding_bias is not None and not padding_bias.empty:
        bundle.tables["length_bias_padding"] = padding_bias


def _arena(bundle: ResultsBundle, preferences: pd.DataFrame, table: str, raters_table: str, figure: str) -> None:
    board = _try(bundle, TABLE_TITLES[table], lambda: arena.bradley_terry(preferences))
    if board is None:
        return
    bundle.tables[table] = board.frame()
    bundle.figures[figure] = plots.arena_ratings(board.frame())
    raters = arena.rater_flags(preferences)
    bundle.tables[raters_table] = raters
    flagged = raters[raters["flags"].str.len() > 0]
    for _, row in flagged.iterrows():
        bundle.notes.append(f"{TABLE_TITLES[table].split(':')[0]}: rater {row['rater']} flagged: {row['flags']}")


def _pairwise_votes(results: Sequence[PairwiseResult], totals: pd.DataFrame) -> pd.DataFrame:
    """Arena votes from pairwise-judge verdicts (arena.preferences_from_pairwise), each side named by the
    therapist of its transcript; pairs of one therapist's transcripts, or transcripts not among the scores,
    give no vote."""
    therapist = totals.set_index("transcript_id")["therapist"].astype(str).to_dict()
    outcomes = [
        (therapist[r.transcript_a], therapist[r.transcript_b], r.judge, {k: i.outcome for k, i in r.items.items()})
        for r in results
        if r.transcript_a in therapist
        and r.transcript_b in therapist
        and therapist[r.transcript_a] != therapist[r.transcript_b]
    ]
    if not outcomes:
        raise ValueError("no pairwise verdict compares transcripts of two different scored therapists")
    return arena.preferences_from_pairwise(outcomes)


P_FLOOR = 0.001
_P_IN_TEXT = re.compile(r"\bp\s*=\s*([0-9]*\.?[0-9]+(?:[eE][-+]?[0-9]+)?)")


def is_p_column(name: object) -> bool:
    """A column holding p-values: p, p_*, *_p or pvalue."""
    text = str(name).lower()
    return text == "p" or text.startswith("p_") or text.endswith("_p") or text == "pvalue"


def format_p(value: object) -> str:
    """A p-value as people read it: '< 0.001' below that, else three decimals; blank when undefined."""
    try:
        number = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return "" if value is None else str(value)
    if not math.isfinite(number):
        return ""
    return f"< {P_FLOOR:g}" if number < P_FLOOR else f"{number:.3f}"


def readable_text(text: str) -> str:
    """Text with every 'p = 5.08e-09' written as people read it ('p < 0.001', 'p = 0.043')."""

    def shown(match: re.Match[str]) -> str:
        value = format_p(match.group(1))
        return f"p {value}" if value.startswith("<") else f"p = {value}"

    return _P_IN_TEXT.sub(shown, text)


def display_frame(frame: pd.DataFrame) -> pd.DataFrame:
    """The frame as people read it, the one formatting the page and the Results tab share: p-values as
    '< 0.001' or three decimals (never scientific notation), other floats to 2 decimals, p-values written
    inside text the same way, blank where undefined. A copy: the CSVs keep full precision."""
    shown = frame.copy()
    for position, column in enumerate(frame.columns):
        values = frame.iloc[:, position]
        numeric = pd.api.types.is_numeric_dtype(values) and not pd.api.types.is_bool_dtype(values)
        if is_p_column(column) and numeric:
            cells: list[object] = [format_p(v) for v in values]
        elif pd.api.types.is_float_dtype(values):
            cells = ["" if math.isnan(v) else f"{v:.2f}" for v in values.astype(float)]
        elif numeric:
            continue
        else:
            cells = [readable_text(v) if isinstance(v, str) else v for v in values]
        shown.isetitem(position, cells)
    return shown


def _table_html(frame: pd.DataFrame) -> str:
    return display_frame(frame).to_html(index=False, escape=True, border=0, na_rep="")


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
        parts.extend(f"<li>{html.escape(readable_text(note))}</li>" for note in bundle.notes)
        parts.append("</ul></div>")
    parts.append("<h2>Conventions</h2><ul>")
    parts.extend(f"<li>{html.escape(line)}</li>" for line in CONVENTIONS)
    parts.append("</ul>")
    for heading, names in PAGE_SECTIONS:
        present = [name for name in names if name in bundle.tables or name in bundle.figures]
        if not present:
            continue
        parts.append(f"<h2>{html.escape(heading)}</h2>")
        if heading == "Mixed model" and bundle.mixed_model is not None:
            formula = html.escape(bundle.mixed_model.formula)
            parts.append(f"<p><code>{formula}</code>, random intercept per patient_id; p_bonferroni adjusts over")
            parts.append("the non-intercept terms. Secondary: the primary analysis is in Tuned vs base.</p>")
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
    pairs: Sequence[tuple[str, str]] | None = None,
    preferences: pd.DataFrame | None = None,
    pairwise_results: Sequence[PairwiseResult] | None = None,
    padding_bias: pd.DataFrame | None = None,
) -> Path:
    """Write index.html (self-contained, works offline) and one CSV per table into out_dir; return the
    path of index.html. `filters` keep only matching score rows (see apply_filters) before any analysis."""
    scores = apply_filters(scores_df, filters)
    bundle = build_results(
        scores,
        ratings=ratings,
        loss_history=loss_history,
        pairs=pairs,
        preferences=preferences,
        pairwise_results=pairwise_results,
        padding_bias=padding_bias,
    )
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
        table.to_csv(out / csv_file_name(name), index=False)
        csv_names.append(csv_file_name(name))
    summary = [
        f"Generated {datetime.now(UTC).strftime('%Y-%m-%d %H:%M UTC')}",
        f"{scores['transcript_id'].nunique()} transcripts, {scores['therapist'].nunique()} therapist models, "
        f"{scores['judge'].nunique()} judge(s), {len(scores)} score rows",
        "Filters: " + (_describe_filters(filters) if filters else "none (all scores)"),
        "Item scores are medians over judges and repeats; the primary total is prorated to the rubric length "
        "(see Conventions).",
    ]
    index = out / "index.html"
    index.write_text(render_html(bundle, title=title, summary=summary, csv_names=csv_names), encoding="utf-8")
    return index


def csv_file_name(table: str) -> str:
    """The file a table is written to (its name is the CSV's stem)."""
    return f"{table}.csv"


def _undefined_as_none(value: object) -> object:
    """NaN (an undefined cell of a frame) as None: JSON has no NaN."""
    return None if isinstance(value, float) and math.isnan(value) else value


class ContrastRow(BaseModel):
    """One row of the tuned-vs-base table (tuned_vs_base.csv), the same numbers at full precision."""

    analysis: str = Field(description="primary, sensitivity, the random-slope model, or secondary")
    measure: str
    unit: str | None = None
    n_units: int | None = None
    mean_diff: float | None = Field(None, description="tuned minus base on the measure; None when undefined")
    ci_low: float | None = None
    ci_high: float | None = None
    p_value: float | None = None
    test: str | None = None
    cohens_dz: float | None = None
    dz_ci_low: float | None = None
    dz_ci_high: float | None = None
    note: str = ""

    @field_validator("*", mode="before")
    @classmethod
    def _nan_is_none(cls, value: object, info: ValidationInfo) -> object:
        value = _undefined_as_none(value)
        return "" if value is None and info.field_name == "note" else value


class PowerRow(BaseModel):
    """One row of the power table (power.csv): the primary analysis' power, as one test and as planned."""

    analysis: str
    planned_as: str
    tests: int
    n_patients: int
    sd_of_patient_differences: float | None = None
    alpha: float
    difference: float
    power_for_difference: float | None = None
    target_power: float
    minimal_detectable_difference: float | None = None
    patients_needed: float | None = Field(None, description="None when undefined or beyond power.MAX_N")

    @field_validator("*", mode="before")
    @classmethod
    def _nan_is_none(cls, value: object) -> object:
        return _undefined_as_none(value)


class ReportSummary(BaseModel):
    """What `report --json` prints: the page's headline numbers and the files written."""

    index: str = Field(description="the page, index.html")
    files: list[str] = Field(description="every file written: index.html and one CSV per table")
    primary: ContrastRow | None = Field(description="the primary analysis (patient means, prorated total)")
    sensitivity: list[ContrastRow] = Field(description="the sensitivity rows (complete cases)")
    tuned_vs_base: list[ContrastRow] = Field(description="every row of the tuned-vs-base table, page order")
    power: list[PowerRow] = Field(default_factory=list, description="the primary analysis' power")
    notes: list[str] = Field(default_factory=list, description="analyses skipped and why, fit warnings")


def report_summary(bundle: ResultsBundle, index: Path) -> ReportSummary:
    """The summary of a report `write_results` wrote to `index` from `bundle`."""
    rows = []
    if "tuned_vs_base" in bundle.tables:
        rows = [ContrastRow.model_validate(r) for r in bundle.tables["tuned_vs_base"].to_dict(orient="records")]
    power_rows = []
    if "power" in bundle.tables:
        power_rows = [PowerRow.model_validate(r) for r in bundle.tables["power"].to_dict(orient="records")]
    primary = next((r for r in rows if r.analysis == patient_level.PRIMARY), None)
    return ReportSummary(
        index=str(index),
        files=[str(index), *(str(index.parent / csv_file_name(name)) for name in bundle.tables)],
        primary=primary,
        sensitivity=[r for r in rows if r.analysis == patient_level.SENSITIVITY],
        tuned_vs_base=rows,
        power=power_rows,
        notes=list(bundle.notes),
    )


def write_report_archive(
    bundle: ResultsBundle, scores: pd.DataFrame, filters: Filters | None = None, *, title: str = "CBTCompare results"
) -> Path:
    """The report (index.html + CSVs) as one zip file in a fresh temporary folder, for downloads."""
    import shutil
    import tempfile

    folder = Path(tempfile.mkdtemp(prefix="cbtcompare-report-"))
    write_results(bundle, scores, folder / "report", filters, title=title)
    return Path(shutil.make_archive(str(folder / "cbtcompare-report"), "zip", folder / "report"))
