"""Analyses of CTRS scores: the paper's tables, paired tuned-vs-base tests, its mixed model, judge checks.

Every analysis takes the long-format scores table (one row per transcript x judge x repeat x item, see
SCORES_SCHEMA), validates it, and returns DataFrames or dataclasses; nothing here prints, plots or reads
the store. Item scores are aggregated over judges and repeats by the median. A transcript's primary
`total` is prorated to the rubric's length (the mean of its scored items x the number of items) when at
least PRORATE_MIN_FRACTION of the items are scored, else missing; `total_complete` (complete cases only)
is the sensitivity total and `sum_scored` the plain sum of what was scored. A missing item score is never
replaced by a number. Warnings from model fits are captured and returned.
Tuned-vs-base pairs are matched on an explicit (base therapist, tuned therapist) pairing (resolve_pairing);
the patient-level analyses live in cbtcompare.stats.patient_level.
This module never imports gradio, a model backend or the store.
"""

from __future__ import annotations

import math
import re
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import krippendorff
import numpy as np
import pandas as pd
import statsmodels.formula.api as smf
from scipy import stats as sps
from scipy.optimize import brentq

from cbtcompare.ctrs.rubric import Rubric, load_rubric, rubric_names
from cbtcompare.provenance import VARIANTS as PROVENANCE_VARIANTS
from cbtcompare.provenance import known_family

# The item ids come from the shipped rubric files (the paper's and the classic CTRS share them): one source.
CTRS_ITEMS: tuple[str, ...] = tuple(load_rubric("paper").item_ids)
# base, tuned, prompted and unassigned (an import whose producer is unknown: scored and shown, but left out
# of every tuned-vs-base analysis and counted there; see unassigned_transcripts).
VARIANTS: tuple[str, ...] = tuple(PROVENANCE_VARIANTS)
UNASSIGNED = "unassigned"
STATUSES: tuple[str, ...] = ("scored", "unscored", "n/a")
SCORE_RANGE: tuple[float, float] = (0.0, 10.0)  # covers the paper's 1-10 items and the classic 0-6 items
TOTAL = "total"
TOTAL_COMPLETE = "total_complete"
SUM_SCORED = "sum_scored"
TOTAL_MEASURES: tuple[str, ...] = (TOTAL, TOTAL_COMPLETE)
# A total is prorated only when this share of the rubric's items is scored (9 of 11): below it the
# prorated number would lean on too few items and is left missing instead.
PRORATE_MIN_FRACTION = 0.8
ALL_JUDGES = "all judges (median)"


@dataclass(frozen=True)
class ScoreColumn:
    name: str
    kind: str  # "text", "int" or "float"
    required: bool
    description: str


SCORES_SCHEMA: tuple[ScoreColumn, ...] = (
    ScoreColumn("transcript_id", "text", True, "the scored transcript; one therapist/patient/session per id"),
    ScoreColumn("therapist", "text", True, "therapist model name as shown to people"),
    ScoreColumn("family", "text", True, "model family shared by base and tuned, e.g. llama3.1-8b"),
    ScoreColumn("variant", "text", True, "base, tuned, prompted or unassigned (producer unknown)"),
    ScoreColumn("patient_id", "text", True, "simulated patient (profile) id; the matching key with family+session"),
    ScoreColumn("session", "int", True, "session number within the patient's course"),
    ScoreColumn("judge", "text", True, "judge model name"),
    ScoreColumn("repeat", "int", True, "repeat index of this judge's sample for this transcript"),
    ScoreColumn("item", "text", True, "CTRS item id, one of CTRS_ITEMS"),
    ScoreColumn("score", "float", True, "the item score; empty (NaN) unless status is scored"),
    ScoreColumn("status", "text", True, "scored, unscored (judge output failed validation) or n/a"),
    ScoreColumn("transcript_tokens", "float", False, "transcript length in tokens, for the length-bias check"),
    ScoreColumn("rubric_id", "text", False, "the rubric the scores come from; one table holds one rubric"),
)
REQUIRED_COLUMNS: tuple[str, ...] = tuple(c.name for c in SCORES_SCHEMA if c.required)
TRANSCRIPT_COLUMNS: tuple[str, ...] = ("therapist", "family", "variant", "patient_id", "session")
RATINGS_COLUMNS: tuple[str, ...] = ("transcript_id", "item", "score")


class ScoresSchemaError(ValueError):
    """A scores (or ratings) table does not follow the schema; the message names the column, row and value."""


class AnalysisError(ValueError):
    """An analysis cannot be computed on the given data (too few rows, levels or pairs); the message says why."""


# ---------------------------------------------------------------------------------------------------------
# Schema


RowName = Callable[[int], str]


def _row_namer(index: pd.Index, line_offset: int | None) -> RowName:
    """Rows are named by position ("row 3"), or, for a file, by line: the frame's original integer index
    (kept through filtering) plus `line_offset` ("line 5")."""
    if line_offset is None or not pd.api.types.is_integer_dtype(index):
        return lambda position: f"row {position}"
    labels = np.asarray(index)
    return lambda position: f"line {int(labels[position]) + line_offset}"


def _text_column(df: pd.DataFrame, name: str, where: str, row_name: RowName) -> pd.Series:
    raw = df[name]
    text = raw.astype(str).str.strip()
    bad = raw.isna().to_numpy() | (text == "").to_numpy()
    if bad.any():
        position = int(np.flatnonzero(bad)[0])
        raise ScoresSchemaError(f"{where}column '{name}' is empty at {row_name(position)}")
    return text.astype(object)


def _numeric_column(df: pd.DataFrame, name: str, where: str, row_name: RowName) -> pd.Series:
    raw = df[name]
    values = pd.to_numeric(raw, errors="coerce").astype(float)
    text = raw.astype(str).str.strip().str.lower()
    blank = raw.isna().to_numpy() | text.isin(["", "nan", "none", "null"]).to_numpy()
    not_number = values.isna().to_numpy() & ~blank
    if not_number.any():
        position = int(np.flatnonzero(not_number)[0])
        raise ScoresSchemaError(
            f"{where}column '{name}' has {raw.iloc[position]!r} at {row_name(position)}: not a number"
        )
    return values


def _integer_column(df: pd.DataFrame, name: str, where: str, row_name: RowName) -> pd.Series:
    values = _numeric_column(df, name, where, row_name)
    bad = values.isna().to_numpy() | (values.fillna(0) % 1 != 0).to_numpy()
    if bad.any():
        position = int(np.flatnonzero(bad)[0])
        raise ScoresSchemaError(
            f"{where}column '{name}' needs a whole number, got {df[name].iloc[position]!r} at {row_name(position)}"
        )
    return values.astype(np.int64)


def _check_allowed(values: pd.Series, allowed: Sequence[str], name: str, where: str, row_name: RowName) -> None:
    bad = ~values.isin(list(allowed)).to_numpy()
    if bad.any():
        position = int(np.flatnonzero(bad)[0])
        raise ScoresSchemaError(
            f"{where}column '{name}' has {values.iloc[position]!r} at {row_name(position)}; "
            f"allowed: {', '.join(allowed)}"
        )


def validate_scores(df: pd.DataFrame, *, source: str | None = None, line_offset: int | None = None) -> pd.DataFrame:
    """Check a long-format scores table against SCORES_SCHEMA and return a normalised copy.

    Errors (ScoresSchemaError) name the missing column, or the column, row and bad value. With
    `line_offset` (2 for a CSV read by read_scores_csv) rows are named by file line, taken from the frame's
    index so that a filtered frame still points at the right line; `source` prefixes messages. A table
    holds one rubric: a rubric_id column with several values is refused.
    Text columns are stripped, variant/status/item lower-cased, session/repeat made integers and score a
    float that is NaN exactly when status is not "scored". Extra columns are kept unchanged.
    """
    if not isinstance(df, pd.DataFrame):
        raise TypeError(f"expected a pandas DataFrame of scores, got {type(df).__name__}")
    where = f"{source}: " if source else ""
    missing = [name for name in REQUIRED_COLUMNS if name not in df.columns]
    if missing:
        raise ScoresSchemaError(
            f"{where}missing column(s) {', '.join(missing)}; a scores table needs {', '.join(REQUIRED_COLUMNS)}"
        )
    if df.empty:
        raise ScoresSchemaError(f"{where}the scores table has no rows")
    row_name = _row_namer(df.index, line_offset)
    df = df.reset_index(drop=True)
    out = df.copy()
    for column in SCORES_SCHEMA:
        if column.kind == "text" and column.required:
            out[column.name] = _text_column(df, column.name, where, row_name)
    for name in ("variant", "status", "item"):
        out[name] = out[name].str.lower()
    _check_allowed(out["variant"], VARIANTS, "variant", where, row_name)
    _check_allowed(out["status"], STATUSES, "status", where, row_name)
    _check_allowed(out["item"], CTRS_ITEMS, "item", where, row_name)
    out["session"] = _integer_column(df, "session", where, row_name)
    out["repeat"] = _integer_column(df, "repeat", where, row_name)
    score = _numeric_column(df, "score", where, row_name)
    scored = (out["status"] == "scored").to_numpy()
    problems = [
        (scored & score.isna().to_numpy(), "status is 'scored' but the score is empty"),
        (~scored & score.notna().to_numpy(), "an item that is not scored must not carry a score"),
        (np.isinf(score.to_numpy()), "the score is not finite"),
        (
            (score.notna() & ((score < SCORE_RANGE[0]) | (score > SCORE_RANGE[1]))).to_numpy(),
            f"the score is outside {SCORE_RANGE[0]:g}-{SCORE_RANGE[1]:g}",
        ),
    ]
    for mask, message in problems:
        if mask.any():
            position = int(np.flatnonzero(mask)[0])
            raise ScoresSchemaError(
                f"{where}{row_name(position)} (item {out['item'].iloc[position]}, status "
                f"{out['status'].iloc[position]}, score {df['score'].iloc[position]!r}): {message}"
            )
    out["score"] = score
    if "transcript_tokens" in df.columns:
        tokens = _numeric_column(df, "transcript_tokens", where, row_name)
        if (tokens < 0).any():
            position = int(np.flatnonzero((tokens < 0).to_numpy())[0])
            raise ScoresSchemaError(f"{where}negative transcript_tokens at {row_name(position)}")
        out["transcript_tokens"] = tokens
    if "rubric_id" in df.columns:
        rubrics = sorted({str(r).strip() for r in df["rubric_id"].dropna()} - {""})
        if len(rubrics) > 1:
            raise ScoresSchemaError(
                f"{where}the scores mix rubrics ({', '.join(rubrics)}); their scales differ, so analyse one at a "
                f"time (for example filter rubric_id={rubrics[0]})"
            )
    key = ["transcript_id", "judge", "repeat", "item"]
    duplicated = out.duplicated(key).to_numpy()
    if duplicated.any():
        position = int(np.flatnonzero(duplicated)[0])
        row = out.iloc[position]
        raise ScoresSchemaError(
            f"{where}duplicate score at {row_name(position)}: transcript {row['transcript_id']}, "
            f"judge {row['judge']}, repeat {row['repeat']}, item {row['item']} appears more than once"
        )
    for name in TRANSCRIPT_COLUMNS:
        counts = out.groupby("transcript_id", sort=False)[name].nunique()
        if (counts > 1).any():
            transcript_id = counts.index[counts.to_numpy() > 1][0]
            values = sorted(map(str, out.loc[out["transcript_id"] == transcript_id, name].unique()))
            raise ScoresSchemaError(
                f"{where}transcript {transcript_id} has several values of '{name}' ({', '.join(values)}); "
                "each transcript belongs to one therapist, family, variant, patient and session"
            )
    return out


def read_scores_csv(path: str | Path) -> pd.DataFrame:
    """Read a scores CSV as text, unvalidated (row i is file line i + 2); see load_scores_csv."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"scores file not found: {path}")
    try:
        return pd.read_csv(path, dtype=str, keep_default_na=False)
    except pd.errors.EmptyDataError as exc:
        raise ScoresSchemaError(f"{path}: the file is empty; a scores CSV needs a header row") from exc
    except (pd.errors.ParserError, UnicodeDecodeError) as exc:
        raise ScoresSchemaError(f"{path}: not a readable CSV ({exc})") from exc


def load_scores_csv(path: str | Path) -> pd.DataFrame:
    """Read and validate a scores CSV (header row + SCORES_SCHEMA columns); errors name the file line."""
    return validate_scores(read_scores_csv(path), source=str(path), line_offset=2)


def validate_ratings(ratings: pd.DataFrame) -> pd.DataFrame:
    """Check a human ratings frame (transcript_id, item, score; any rater column is kept); rows without a
    score are dropped (an unrated item is missing, not zero)."""
    missing = [name for name in RATINGS_COLUMNS if name not in ratings.columns]
    if missing:
        raise ScoresSchemaError(
            f"ratings: missing column(s) {', '.join(missing)}; ratings need {', '.join(RATINGS_COLUMNS)}"
        )
    ratings = ratings.reset_index(drop=True)
    namer = _row_namer(ratings.index, None)
    out = ratings.copy()
    out["transcript_id"] = _text_column(ratings, "transcript_id", "ratings: ", namer)
    out["item"] = _text_column(ratings, "item", "ratings: ", namer).str.lower()
    _check_allowed(out["item"], CTRS_ITEMS, "item", "ratings: ", namer)
    out["score"] = _numeric_column(ratings, "score", "ratings: ", namer)
    return out[out["score"].notna()].reset_index(drop=True)


# ---------------------------------------------------------------------------------------------------------
# Aggregation


def _totals_of(items: pd.DataFrame) -> pd.DataFrame:
    """total (prorated), total_complete, sum_scored and scored_items of a frame with one column per item."""
    n_items = items.shape[1]
    scored = items.notna().sum(axis=1).astype(int)
    enough = scored >= math.ceil(PRORATE_MIN_FRACTION * n_items)
    out = pd.DataFrame(index=items.index)
    total = items.sum(axis=1)
    # a complete row keeps its exact sum (no rounding from mean x n), so equal totals stay equal
    out[TOTAL] = total.where(scored == n_items, total * n_items / scored.clip(lower=1)).where(enough)
    out[TOTAL_COMPLETE] = items.sum(axis=1).where(scored == n_items)
    out[SUM_SCORED] = items.sum(axis=1, min_count=1)
    out["scored_items"] = scored
    return out


def transcript_totals(scores: pd.DataFrame) -> pd.DataFrame:
    """One row per transcript: its metadata, the median score of each item over judges and repeats (NaN
    when no judge scored it), `total` (prorated to the rubric length; NaN below PRORATE_MIN_FRACTION of
    items scored), `total_complete` (NaN unless every item is scored), `sum_scored`, `scored_items`,
    `partial` (fewer than 11 items scored) and `transcript_tokens` (NaN when not given)."""
    scores = validate_scores(scores)
    meta = scores.groupby("transcript_id", sort=True)[list(TRANSCRIPT_COLUMNS)].first()
    scored = scores[scores["status"] == "scored"]
    items = scored.groupby(["transcript_id", "item"])["score"].median().unstack("item")
    items = items.reindex(index=meta.index, columns=list(CTRS_ITEMS)).astype(float)
    items.columns.name = None
    out = meta.join(items).join(_totals_of(items))
    out["partial"] = out["scored_items"] < len(CTRS_ITEMS)
    if "transcript_tokens" in scores.columns:
        out["transcript_tokens"] = scores.groupby("transcript_id")["transcript_tokens"].median()
    else:
        out["transcript_tokens"] = np.nan
    return out.reset_index()


def rubric_for_scores(scores: pd.DataFrame) -> Rubric | None:
    """The shipped rubric whose id the scores' rubric_id names (None when absent or not shipped)."""
    if "rubric_id" not in scores.columns:
        return None
    ids = {str(r).strip() for r in scores["rubric_id"].dropna()} - {""}
    if len(ids) != 1:
        return None
    (wanted,) = ids
    for name in rubric_names():
        rubric = load_rubric(name)
        if rubric.id == wanted:
            return rubric
    return None


def part_subtotals(scores: pd.DataFrame, rubric: Rubric) -> pd.DataFrame:
    """Per transcript: for each part of the rubric (e.g. the classic CTRS's Part I, items 1-6, and Part II,
    items 7-11), `part_<key>` prorated over the part's scored items (the PRORATE_MIN_FRACTION rule of
    the total, applied within the part) and `part_<key>_complete` (NaN unless every item of it is scored);
    empty when the rubric has no parts."""
    totals = transcript_totals(scores)
    out = totals[["transcript_id", *TRANSCRIPT_COLUMNS]].copy()
    for key in rubric.parts:
        items = [item.id for item in rubric.items if item.part == key]
        part = _totals_of(totals[items])
        out[f"part_{key}"] = part[TOTAL].to_numpy()
        out[f"part_{key}_complete"] = part[TOTAL_COMPLETE].to_numpy()
    return out if rubric.parts else out.iloc[0:0]


def judge_item_scores(scores: pd.DataFrame) -> pd.DataFrame:
    """Long frame of transcript_id, judge, item, score: each judge's median over its repeats (NaN when that
    judge never scored the item)."""
    scores = validate_scores(scores)
    grid = scores[["transcript_id", "judge", "item"]].drop_duplicates()
    scored = scores[scores["status"] == "scored"]
    medians = scored.groupby(["transcript_id", "judge", "item"], as_index=False)["score"].median()
    return grid.merge(medians, how="left", on=["transcript_id", "judge", "item"]).reset_index(drop=True)


def _judge_totals(scores: pd.DataFrame) -> pd.DataFrame:
    """transcript_id x judge: total (prorated, as in transcript_totals) and scored_items."""
    per_item = judge_item_scores(scores)
    wide = per_item.pivot_table(index=["transcript_id", "judge"], columns="item", values="score", aggfunc="first")
    wide = wide.reindex(columns=list(CTRS_ITEMS))
    out = _totals_of(wide)[[TOTAL, "scored_items"]]
    # transcripts a judge saw but scored nothing on still count (total NaN)
    seen = per_item[["transcript_id", "judge"]].drop_duplicates().set_index(["transcript_id", "judge"]).index
    out = out.reindex(seen)
    out["scored_items"] = out["scored_items"].fillna(0).astype(int)
    return out.reset_index()


def mean_ci(values: Sequence[float] | pd.Series, confidence: float = 0.95) -> tuple[float, float, float, float, int]:
    """(mean, sd, ci_low, ci_high, n) of the non-missing values; t-based CI, NaN where n < 2."""
    array = np.asarray(pd.Series(values, dtype=float).dropna(), dtype=float)
    n = int(array.size)
    if n == 0:
        return (math.nan, math.nan, math.nan, math.nan, 0)
    mean = float(array.mean())
    if n < 2:
        return (mean, math.nan, math.nan, math.nan, n)
    sd = float(array.std(ddof=1))
    half = float(sps.t.ppf(0.5 + confidence / 2, n - 1)) * sd / math.sqrt(n)
    return (mean, sd, mean - half, mean + half, n)


# ---------------------------------------------------------------------------------------------------------
# The paper's table


def descriptive_table(scores: pd.DataFrame) -> pd.DataFrame:
    """Per therapist and variant: n transcripts, partial totals, unscored item count and `unscored_rate`
    (unscored item cells / all item cells), mean and SD (ddof=1) of the total and of every item (columns
    total_mean, total_sd, agenda_mean, agenda_sd, ...), and of total_complete (the sensitivity total).

    The total is prorated (see transcript_totals), so a partial transcript is not pulled down by its
    unscored items; item means use the transcripts where that item was scored.
    """
    totals = transcript_totals(scores)
    rows = []
    for (therapist, family, variant), group in totals.groupby(["therapist", "family", "variant"], sort=True):
        row: dict[str, object] = {
            "therapist": therapist,
            "family": family,
            "variant": variant,
            "n": len(group),
            "partial": int(group["partial"].sum()),
            "unscored_items": int(group[list(CTRS_ITEMS)].isna().sum().sum()),
            "unscored_rate": float(group[list(CTRS_ITEMS)].isna().to_numpy().mean()),
            "total_mean": group[TOTAL].mean(),
            "total_sd": group[TOTAL].std(ddof=1),
            "total_complete_n": int(group[TOTAL_COMPLETE].notna().sum()),
            "total_complete_mean": group[TOTAL_COMPLETE].mean(),
            "total_complete_sd": group[TOTAL_COMPLETE].std(ddof=1),
        }
        for item in CTRS_ITEMS:
            row[f"{item}_mean"] = group[item].mean()
            row[f"{item}_sd"] = group[item].std(ddof=1)
        rows.append(row)
    return pd.DataFrame(rows)


def item_means(scores: pd.DataFrame, confidence: float = 0.95) -> pd.DataFrame:
    """Long frame per therapist, variant and measure (the 11 items, then total): n, mean, sd and a t-based CI."""
    totals = transcript_totals(scores)
    rows = []
    for (therapist, family, variant), group in totals.groupby(["therapist", "family", "variant"], sort=True):
        for measure in (*CTRS_ITEMS, TOTAL):
            mean, sd, low, high, n = mean_ci(group[measure], confidence)
            rows.append(
                {
                    "therapist": therapist,
                    "family": family,
                    "variant": variant,
                    "measure": measure,
                    "n": n,
                    "mean": mean,
                    "sd": sd,
                    "ci_low": low,
                    "ci_high": high,
                }
            )
    return pd.DataFrame(rows)


# ---------------------------------------------------------------------------------------------------------
# Paired tuned vs base


@dataclass(frozen=True)
class TherapistPair:
    """One (control therapist, treatment therapist) pairing; `family` is the control's family."""

    control: str
    treatment: str
    family: str

    @property
    def label(self) -> str:
        return f"{self.treatment} vs {self.control}"


def parse_pair_args(items: Sequence[str] | None) -> list[tuple[str, str]]:
    """`["m-base=m-tuned"]` -> [("m-base", "m-tuned")]: each item names a base (control) therapist and the
    tuned (treatment) therapist whose transcripts are compared with it."""
    pairs = []
    for item in items or []:
        control, sep, treatment = item.partition("=")
        if not sep or not control.strip() or not treatment.strip():
            raise ValueError(f"pair {item!r} is not BASE_THERAPIST=TUNED_THERAPIST (for example m-base=m-tuned)")
        pairs.append((control.strip(), treatment.strip()))
    return pairs


def resolve_pairing(
    scores: pd.DataFrame,
    pairs: Sequence[tuple[str, str]] | None = None,
    *,
    treatment: str = "tuned",
    control: str = "base",
    rest_by_family: bool = False,
) -> tuple[TherapistPair, ...]:
    """The therapist pairs to compare: the given (control, treatment) therapist names, each checked against
    the data (it exists, and has the right variant); or, when none are given, the one control and one
    treatment therapist of each family. A family with two control (or two treatment) therapists is
    ambiguous and refused with an AnalysisError naming them: averaging two base models into one would
    compare the tuned model with neither. With `rest_by_family`, treatment therapists the given pairs do
    not name are paired by family as well (the registry pairs adapters with their base; a merged
    fine-tune has only its family)."""
    if UNASSIGNED in (treatment, control):
        raise AnalysisError("unassigned transcripts have no known producer and cannot be one side of a pair")
    totals = scores if "scored_items" in scores.columns else transcript_totals(scores)
    variant_of = totals.groupby("therapist")["variant"].first()
    family_of = totals.groupby("therapist")["family"].first()
    if pairs:
        resolved = []
        for control_name, treatment_name in pairs:
            for name, wanted in ((control_name, control), (treatment_name, treatment)):
                if name not in variant_of.index:
                    raise AnalysisError(
                        f"pair {control_name}={treatment_name}: no transcripts from therapist {name!r}; "
                        f"therapists present: {', '.join(sorted(variant_of.index))}"
                    )
                if variant_of[name] != wanted:
                    raise AnalysisError(
                        f"pair {control_name}={treatment_name}: {name} is a {variant_of[name]} therapist, "
                        f"expected {wanted} (the pair is {control}={treatment})"
                    )
            resolved.append(TherapistPair(control_name, treatment_name, str(family_of[control_name])))
        if not rest_by_family:
            return tuple(dict.fromkeys(resolved))
    else:
        resolved = []
    named = {p.treatment for p in resolved}
    for family, group in totals.groupby("family", sort=True):
        controls = sorted(group.loc[group["variant"] == control, "therapist"].unique())
        treatments = sorted(set(group.loc[group["variant"] == treatment, "therapist"].unique()) - named)
        if not controls or not treatments:
            continue
        if len(controls) > 1 or len(treatments) > 1:
            example = f"{controls[0]}={treatments[0]}"
            raise AnalysisError(
                f"family {family} has {len(controls)} {control} therapist(s) ({', '.join(controls)}) and "
                f"{len(treatments)} {treatment} therapist(s) ({', '.join(treatments)}): which to compare is "
                f"ambiguous; name each pair as {control}=tuned therapist (CLI: --pair {example})"
            )
        resolved.append(TherapistPair(controls[0], treatments[0], str(family)))
    if not resolved:
        raise AnalysisError(f"no family has both a {control} and a {treatment} therapist to pair")
    return tuple(dict.fromkeys(resolved))


PAIR_KEY = ["family", "pair", "patient_id", "session"]


def matched_pairs(
    scores: pd.DataFrame,
    *,
    treatment: str = "tuned",
    control: str = "base",
    pairs: Sequence[tuple[str, str]] | None = None,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(control, treatment): two frames indexed alike by (family, pair, patient_id, session), holding the
    items, the totals and `partial` (any partial transcript in the cell), for each therapist pair of
    resolve_pairing. A cell's `total` is prorated over the items scored on both sides of that cell.
    Several transcripts of one therapist in one cell are averaged; only cells present on both sides are
    kept (pairing_summary counts the rest)."""
    totals = transcript_totals(scores)
    for variant in (control, treatment):
        if not (totals["variant"] == variant).any():
            raise AnalysisError(f"no transcripts with variant '{variant}' to pair")
    measures = [*CTRS_ITEMS, *TOTAL_MEASURES]
    controls, treatments = [], []
    for pair in resolve_pairing(totals, pairs, treatment=treatment, control=control):
        sides = []
        for name in (pair.control, pair.treatment):
            side = totals[totals["therapist"] == name]
            grouped = side.groupby(["patient_id", "session"], sort=True)
            cell = grouped[measures].mean()
            cell["partial"] = grouped["partial"].any()
            sides.append(cell)
        common = sides[0].index.intersection(sides[1].index)
        # Within a pair both sides are prorated over the items scored on both, so an item unscored on
        # one side cannot move the difference by its own level (homework scores lower than agenda).
        shared = sides[0].loc[common, list(CTRS_ITEMS)].notna() & sides[1].loc[common, list(CTRS_ITEMS)].notna()
        for cells in sides:
            cells.loc[common, TOTAL] = _totals_of(cells.loc[common, list(CTRS_ITEMS)].where(shared))[TOTAL]
        for cells, out in zip(sides, (controls, treatments), strict=True):
            chosen = cells.loc[common].copy()
            chosen.index = pd.MultiIndex.from_tuples(
                [(pair.family, pair.label, *key) for key in chosen.index], names=PAIR_KEY
            )
            out.append(chosen)
    control_cells, treatment_cells = pd.concat(controls), pd.concat(treatments)
    if control_cells.empty:
        raise AnalysisError(f"no {treatment} and {control} transcripts of a pair share patient_id and session")
    return control_cells, treatment_cells


def unassigned_transcripts(scores: pd.DataFrame) -> int:
    """How many transcripts are `unassigned` (an import whose producer is unknown): they are scored and
    shown per therapist, but no tuned-vs-base analysis can place them, so each leaves them out."""
    totals = scores if "scored_items" in scores.columns else transcript_totals(scores)
    return int((totals["variant"] == UNASSIGNED).sum())


def pairing_summary(
    scores: pd.DataFrame,
    *,
    treatment: str = "tuned",
    control: str = "base",
    pairs: Sequence[tuple[str, str]] | None = None,
) -> pd.DataFrame:
    """One row per therapist pair (pair, control, treatment, family, matched_cells, unmatched_control,
    unmatched_treatment: transcripts whose patient and session the other side lacks), then one row per
    control/treatment therapist in no pair (pair empty, its transcripts all unmatched)."""
    totals = transcript_totals(scores)
    resolved = resolve_pairing(totals, pairs, treatment=treatment, control=control)
    rows = []
    for pair in resolved:
        keys = [
            set(map(tuple, totals.loc[totals["therapist"] == name, ["patient_id", "session"]].to_numpy()))
            for name in (pair.control, pair.treatment)
        ]
        counts = [
            int(
                totals.loc[totals["therapist"] == name, ["patient_id", "session"]]
                .apply(tuple, axis=1)
                .isin(keys[1 - side])
                .pipe(lambda matched: (~matched).sum())
            )
            for side, name in enumerate((pair.control, pair.treatment))
        ]
        rows.append(
            {
                "pair": pair.label,
                "control": pair.control,
                "treatment": pair.treatment,
                "family": pair.family,
                "matched_cells": len(keys[0] & keys[1]),
                "unmatched_control": counts[0],
                "unmatched_treatment": counts[1],
            }
        )
    paired = {p.control for p in resolved} | {p.treatment for p in resolved}
    arms = totals[totals["variant"].isin([control, treatment]) & ~totals["therapist"].isin(paired)]
    for name, group in arms.groupby("therapist", sort=True):
        variant = group["variant"].iloc[0]
        rows.append(
            {
                "pair": "",
                "control": name if variant == control else "",
                "treatment": name if variant == treatment else "",
                "family": group["family"].iloc[0],
                "matched_cells": 0,
                "unmatched_control": len(group) if variant == control else 0,
                "unmatched_treatment": len(group) if variant == treatment else 0,
            }
        )
    return pd.DataFrame(rows)


def _paired_row(measure: str, control: pd.Series, treatment: pd.Series, confidence: float) -> dict[str, object]:
    both = control.notna() & treatment.notna()
    c = control[both].to_numpy(dtype=float)
    t = treatment[both].to_numpy(dtype=float)
    diff = t - c
    n = int(diff.size)
    row: dict[str, object] = {
        "measure": measure,
        "n_pairs": n,
        "dropped_pairs": int((~both).sum()),
        "mean_control": float(c.mean()) if n else math.nan,
        "mean_treatment": float(t.mean()) if n else math.nan,
        "mean_diff": float(diff.mean()) if n else math.nan,
        "sd_diff": float(diff.std(ddof=1)) if n > 1 else math.nan,
        "ci_low": math.nan,
        "ci_high": math.nan,
        "t": math.nan,
        "p_t": math.nan,
        "wilcoxon_w": math.nan,
        "p_wilcoxon": math.nan,
        "cohens_dz": math.nan,
        "dz_ci_low": math.nan,
        "dz_ci_high": math.nan,
    }
    if n < 2 or not np.any(diff != diff[0]):
        return row  # too few pairs, or identical differences: no variance to test against
    # Rounded before ranking: means computed in two orders differ in the last bits, and the Wilcoxon
    # ranks must see equal differences as ties.
    ranked_diff = np.round(diff, 9)
    result = sps.ttest_rel(t, c)
    interval = result.confidence_interval(confidence)
    row.update(
        ci_low=float(interval.low),
        ci_high=float(interval.high),
        t=float(result.statistic),
        p_t=float(result.pvalue),
        cohens_dz=float(diff.mean() / diff.std(ddof=1)),
    )
    row["dz_ci_low"], row["dz_ci_high"] = cohens_dz_interval(float(row["cohens_dz"]), n, confidence)
    if np.any(ranked_diff != 0):
        statistic, p_value = wilcoxon_signed_rank(ranked_diff)
        row.update(wilcoxon_w=statistic, p_wilcoxon=p_value)
    return row


def wilcoxon_signed_rank(diff: np.ndarray) -> tuple[float, float]:
    """(W, two-sided p) exactly as scipy.stats.wilcoxon(diff) with its defaults (zeros dropped, W the
    smaller rank sum). For 13 or fewer differences with ties or zeros scipy enumerates all 2^n sign flips
    through its generic permutation_test, which takes about a second per call; that same enumeration is
    done here directly, vectorised, giving the same p-value."""
    diff = np.asarray(diff, dtype=float)
    nonzero = diff[diff != 0]
    magnitudes = np.abs(nonzero)
    tied = np.unique(magnitudes).size < magnitudes.size or nonzero.size < diff.size
    if diff.size > 13 or not tied or nonzero.size == 0:
        result = sps.wilcoxon(diff)
        return float(result.statistic), float(result.pvalue)
    ranks = sps.rankdata(magnitudes)
    r_plus = float(ranks[nonzero > 0].sum())
    r_minus = float(ranks[nonzero < 0].sum())
    flips = (np.arange(2**nonzero.size)[:, None] >> np.arange(nonzero.size)) & 1
    null = flips @ ranks  # the positive-rank sum under every assignment of signs
    tolerance = 1e-12 * max(1.0, abs(r_plus))
    less, greater = np.mean(null <= r_plus + tolerance), np.mean(null >= r_plus - tolerance)
    return min(r_plus, r_minus), float(min(1.0, 2 * min(less, greater)))


def holm_adjust(p_values: Sequence[float]) -> np.ndarray:
    """Holm step-down adjusted p-values (as statsmodels' multipletests(method="holm"), which is avoided here
    because it runs a full garbage collection on every call); NaN inputs stay NaN and are not counted."""
    p = np.asarray(p_values, dtype=float)
    adjusted = np.full(p.shape, np.nan)
    present = np.flatnonzero(~np.isnan(p))
    if present.size:
        order = present[np.argsort(p[present], kind="stable")]
        steps = (present.size - np.arange(present.size)) * p[order]
        adjusted[order] = np.minimum(1.0, np.maximum.accumulate(steps))
    return adjusted


def bonferroni_adjust(p_values: Sequence[float]) -> np.ndarray:
    """Bonferroni adjusted p-values: p x (number of non-missing p), capped at 1; NaN stays NaN."""
    p = np.asarray(p_values, dtype=float)
    return np.minimum(1.0, p * int((~np.isnan(p)).sum()))


def paired_comparison(
    scores: pd.DataFrame,
    *,
    treatment: str = "tuned",
    control: str = "base",
    by: str | None = None,
    confidence: float = 0.95,
    pairs: Sequence[tuple[str, str]] | None = None,
) -> pd.DataFrame:
    """Treatment vs control at the session level: transcripts matched by therapist pair (resolve_pairing)
    + patient_id + session, per item, the primary total and the complete-case total. Session cells of one
    patient are not independent, so this is the secondary analysis; the primary one is
    cbtcompare.stats.patient_level.patient_level_comparison.

    Columns: measure, n_pairs, dropped_pairs (a side missing that measure), mean_control, mean_treatment,
    mean_diff (treatment - control) with its t-based CI, paired t (t, p_t), Wilcoxon signed-rank
    (wilcoxon_w, p_wilcoxon; zero differences dropped, as scipy's default), cohens_dz (mean diff / SD of
    diffs) with dz_ci_low/dz_ci_high (noncentral t), p_t_holm and p_wilcoxon_holm (Holm across the 11
    items; NaN on the total rows, each its own test), and partial_pairs (pairs with a partial transcript on
    either side; on the total rows only). `by="family"` or `by="pair"` repeats the analysis per group.
    """
    if by not in (None, "family", "pair"):
        raise ValueError("by must be None, 'family' or 'pair'")
    control_cells, treatment_cells = matched_pairs(scores, treatment=treatment, control=control, pairs=pairs)
    if by is None:
        groups = [(None, control_cells.index)]
    else:
        labels = control_cells.index.get_level_values(by)
        groups = [(label, control_cells.index[labels == label]) for label in sorted(set(labels))]
    frames = []
    for label, index in groups:
        c, t = control_cells.loc[index], treatment_cells.loc[index]
        rows = [_paired_row(m, c[m], t[m], confidence) for m in (*CTRS_ITEMS, *TOTAL_MEASURES)]
        frame = pd.DataFrame(rows)
        is_item = ~frame["measure"].isin(TOTAL_MEASURES)
        for column in ("p_t", "p_wilcoxon"):
            frame[f"{column}_holm"] = np.nan
            frame.loc[is_item, f"{column}_holm"] = holm_adjust(frame.loc[is_item, column])
        frame["partial_pairs"] = np.nan
        frame.loc[~is_item, "partial_pairs"] = int((c["partial"] | t["partial"]).sum())
        frame.insert(0, "contrast", f"{treatment} - {control}")
        if label is not None:
            frame.insert(0, by, label)
        frames.append(frame)
    return pd.concat(frames, ignore_index=True)


def cohens_dz_interval(dz: float, n: int, confidence: float = 0.95) -> tuple[float, float]:
    """Exact CI for a paired standardised mean difference (Cohen's dz) from n differences, by inverting
    the noncentral t distribution of dz*sqrt(n) (normal differences assumed); NaN when undefined."""
    if n < 2 or not math.isfinite(dz):
        return (math.nan, math.nan)
    t_observed, df = dz * math.sqrt(n), n - 1
    tail = (1 - confidence) / 2

    def solve(target: float) -> float:
        # the noncentrality whose distribution puts `target` of its mass above t_observed
        def gap(ncp: float) -> float:
            return float(sps.nct.sf(t_observed, df, ncp)) - target

        width = 10 + abs(t_observed) * 2
        return float(brentq(gap, t_observed - width, t_observed + width))

    return (solve(tail) / math.sqrt(n), solve(1 - tail) / math.sqrt(n))


# ---------------------------------------------------------------------------------------------------------
# The paper's mixed model


@dataclass(frozen=True)
class MixedModelResult:
    """A fitted `total ~ C(family) + C(variant) + session_centred`, random intercept per patient_id.

    fixed_effects columns: term (statsmodels' name), label, estimate, std_error, z, p_value, ci_low,
    ci_high, p_bonferroni (over the non-intercept terms; NaN for the intercept). `warnings` holds every
    warning the fit raised (ConvergenceWarning, boundary, singular covariance) and notes about dropped
    terms; read them before trusting the numbers.
    """

    formula: str
    fixed_effects: pd.DataFrame
    group_variance: float
    residual_variance: float
    log_likelihood: float
    n_observations: int
    n_patients: int
    converged: bool
    reference_levels: dict[str, str]
    warnings: tuple[str, ...]


def _term_label(term: str, reference: dict[str, str]) -> str:
    match = re.fullmatch(r"C\((\w+)\)\[T\.(.+)\]", term)
    if match:
        factor, level = match.groups()
        return f"{factor}: {level} vs {reference.get(factor, '?')}"
    if term == "session_centred":
        return "session (centred), per session"
    return term


def mixed_model(scores: pd.DataFrame, *, reml: bool = True, confidence: float = 0.95) -> MixedModelResult:
    """Fit the paper's linear mixed model on transcript totals (partial totals included, as in the tables);
    unassigned transcripts (producer unknown) are left out, with a note in `warnings`.

    Reference levels: variant 'base' (else the first present), family the first in sorted order. A factor
    with one level is left out of the formula, with a note in `warnings`.
    """
    totals = transcript_totals(scores).dropna(subset=[TOTAL])
    notes: list[str] = []
    unassigned = int((totals["variant"] == UNASSIGNED).sum())
    if unassigned:
        notes.append(f"{unassigned} unassigned transcript(s) (producer unknown) left out of the model")
    totals = totals[totals["variant"] != UNASSIGNED].copy()
    if totals[TOTAL].size < 3:
        raise AnalysisError("the mixed model needs at least 3 transcripts with a total")
    if totals["patient_id"].nunique() < 2:
        raise AnalysisError("the mixed model needs at least 2 patients (its random intercept is per patient)")
    totals["session_centred"] = totals["session"] - totals["session"].mean()
    reference: dict[str, str] = {}
    terms = []
    for factor in ("family", "variant"):
        present = sorted(totals[factor].unique())
        if factor == "variant":
            present = [v for v in VARIANTS if v in present]
        if len(present) < 2:
            notes.append(f"C({factor}) left out of the model: only one level ({present[0]})")
            continue
        totals[factor] = pd.Categorical(totals[factor], categories=present)
        reference[factor] = present[0]
        terms.append(f"C({factor})")
    if totals["session"].nunique() > 1:
        terms.append("session_centred")
    else:
        notes.append("session_centred left out of the model: only one session")
    formula = f"{TOTAL} ~ " + (" + ".join(terms) if terms else "1")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            model = smf.mixedlm(formula, totals, groups=totals["patient_id"].astype(str))
            fit = model.fit(reml=reml)
        except (np.linalg.LinAlgError, ValueError) as exc:
            raise AnalysisError(f"the mixed model could not be fitted: {exc}") from exc
    messages = notes + [f"{w.category.__name__}: {w.message}" for w in caught]
    if not fit.converged:
        messages.append("the optimiser reports that the fit did not converge")
    names = list(fit.fe_params.index)
    interval = fit.conf_int(alpha=1 - confidence).loc[names]
    effects = pd.DataFrame(
        {
            "term": names,
            "label": [_term_label(name, reference) for name in names],
            "estimate": fit.fe_params.to_numpy(dtype=float),
            "std_error": fit.bse_fe.loc[names].to_numpy(dtype=float),
            "z": fit.tvalues.loc[names].to_numpy(dtype=float),
            "p_value": fit.pvalues.loc[names].to_numpy(dtype=float),
            "ci_low": interval.iloc[:, 0].to_numpy(dtype=float),
            "ci_high": interval.iloc[:, 1].to_numpy(dtype=float),
        }
    )
    effects["p_bonferroni"] = np.nan
    tested = effects["term"] != "Intercept"
    effects.loc[tested, "p_bonferroni"] = bonferroni_adjust(effects.loc[tested, "p_value"])
    return MixedModelResult(
        formula=formula,
        fixed_effects=effects,
        group_variance=float(np.asarray(fit.cov_re)[0, 0]),
        residual_variance=float(fit.scale),
        log_likelihood=float(fit.llf),
        n_observations=int(fit.nobs),
        n_patients=int(totals["patient_id"].nunique()),
        converged=bool(fit.converged),
        reference_levels=reference,
        warnings=tuple(dict.fromkeys(messages)),
    )


# ---------------------------------------------------------------------------------------------------------
# Between therapist models


@dataclass(frozen=True)
class FriedmanResult:
    """Friedman test of `measure` across therapists, blocks = (patient_id, session) rated for every therapist.

    mean_ranks columns: therapist, mean_rank (1 = lowest), mean. Statistic and p are NaN (with `note`) when
    fewer than 3 therapists or 2 complete blocks exist.
    """

    measure: str
    therapists: tuple[str, ...]
    n_blocks: int
    dropped_blocks: int
    statistic: float
    p_value: float
    kendalls_w: float
    kendalls_w_ci: tuple[float, float]  # percentile bootstrap over blocks (stats.reliability)
    mean_ranks: pd.DataFrame
    note: str


def friedman_test(scores: pd.DataFrame, *, measure: str = TOTAL, variant: str | None = None) -> FriedmanResult:
    """Friedman test between therapist models on matched data (the same patient and session for each).

    `variant` restricts to one variant (e.g. compare the three tuned models); several transcripts in a
    block are averaged; blocks missing a therapist or the measure are dropped and counted.
    """
    if measure not in (*CTRS_ITEMS, TOTAL):
        raise ValueError(f"unknown measure {measure!r}; use 'total' or one of {', '.join(CTRS_ITEMS)}")
    totals = transcript_totals(scores)
    if variant is not None:
        totals = totals[totals["variant"] == variant]
        if totals.empty:
            raise AnalysisError(f"no transcripts with variant '{variant}'")
    table = totals.pivot_table(index=["patient_id", "session"], columns="therapist", values=measure, aggfunc="mean")
    all_blocks = totals[["patient_id", "session"]].drop_duplicates().shape[0]
    table = table.dropna()
    therapists = tuple(str(t) for t in table.columns)
    ranks = table.rank(axis=1)
    mean_ranks = pd.DataFrame(
        {"therapist": list(therapists), "mean_rank": ranks.mean().to_numpy(), "mean": table.mean().to_numpy()}
    )
    statistic = p_value = kendalls_w = w_low = w_high = math.nan
    note = ""
    if len(therapists) < 3:
        note = f"the Friedman test needs at least 3 therapists; found {len(therapists)}"
    elif len(table) < 2:
        note = f"the Friedman test needs at least 2 complete blocks; found {len(table)}"
    else:
        result = sps.friedmanchisquare(*(table[column].to_numpy() for column in table.columns))
        statistic, p_value = float(result.statistic), float(result.pvalue)
        kendalls_w = statistic / (len(table) * (len(therapists) - 1))
        from cbtcompare.stats.reliability import kendalls_w_interval

        w_low, w_high = kendalls_w_interval(table.to_numpy(dtype=float))
    return FriedmanResult(
        measure=measure,
        therapists=therapists,
        n_blocks=len(table),
        dropped_blocks=all_blocks - len(table),
        statistic=statistic,
        p_value=p_value,
        kendalls_w=kendalls_w,
        kendalls_w_ci=(w_low, w_high),
        mean_ranks=mean_ranks,
        note=note,
    )


# ---------------------------------------------------------------------------------------------------------
# Judge reliability


def _alpha(reliability: np.ndarray, level: str) -> float:
    """Krippendorff's alpha of a coders x units matrix (NaN = missing); NaN when it is undefined."""
    pairable = (np.sum(~np.isnan(reliability), axis=0) >= 2).sum()
    values = np.unique(reliability[~np.isnan(reliability)])
    if pairable < 1 or values.size < 2:
        return math.nan
    return float(krippendorff.alpha(reliability_data=reliability, level_of_measurement=level))


def inter_judge_alpha(scores: pd.DataFrame) -> pd.DataFrame:
    """Krippendorff's alpha (ordinal) between judges per item: judges are coders, transcripts are units,
    each judge's value its median over repeats. Columns: item, n_judges, n_units (transcripts scored by at
    least two judges), alpha (NaN when fewer than two judges or no variation)."""
    per_item = judge_item_scores(scores)
    judges = sorted(per_item["judge"].unique())
    rows = []
    for item in CTRS_ITEMS:
        matrix = per_item[per_item["item"] == item].pivot_table(
            index="judge", columns="transcript_id", values="score", aggfunc="first", dropna=False
        )
        matrix = matrix.reindex(index=judges)
        data = matrix.to_numpy(dtype=float)
        n_units = int((np.sum(~np.isnan(data), axis=0) >= 2).sum()) if data.size else 0
        rows.append(
            {
                "item": item,
                "n_judges": len(judges),
                "n_units": n_units,
                "alpha": _alpha(data, "ordinal") if len(judges) > 1 else math.nan,
            }
        )
    return pd.DataFrame(rows)


def length_bias(scores: pd.DataFrame) -> pd.DataFrame:
    """Spearman correlation of total with transcript_tokens: for the median over judges, then per judge.
    Columns: judge, n, spearman_rho, p_value. Empty when transcript_tokens is absent or all missing."""
    columns = ["judge", "n", "spearman_rho", "p_value"]
    scores = validate_scores(scores)
    if "transcript_tokens" not in scores.columns or scores["transcript_tokens"].isna().all():
        return pd.DataFrame(columns=columns)
    tokens = scores.groupby("transcript_id")["transcript_tokens"].median()
    totals = transcript_totals(scores).set_index("transcript_id")
    sets = [(ALL_JUDGES, totals[TOTAL])]
    per_judge = _judge_totals(scores)
    for judge, group in per_judge.groupby("judge", sort=True):
        sets.append((judge, group.set_index("transcript_id")[TOTAL]))
    rows = []
    for judge, total in sets:
        joined = pd.DataFrame({"total": total, "tokens": tokens.reindex(total.index)}).dropna()
        rho = p = math.nan
        if len(joined) >= 3 and joined["total"].nunique() > 1 and joined["tokens"].nunique() > 1:
            result = sps.spearmanr(joined["total"], joined["tokens"])
            rho, p = float(result.statistic), float(result.pvalue)
        rows.append({"judge": judge, "n": len(joined), "spearman_rho": rho, "p_value": p})
    return pd.DataFrame(rows, columns=columns)


def same_family(judge: str, family: str) -> bool:
    """True when the judge and the therapist family are one known family (cbtcompare.provenance decides
    both, so a judge and a therapist are classified the same way): a judge that may prefer its own
    family's output. A judge of no known family shares a family with nobody."""
    judge_family = known_family(judge)
    return judge_family is not None and judge_family == (known_family(family) or family.strip().lower())


def self_preference(scores: pd.DataFrame) -> pd.DataFrame:
    """Per judge and therapist family: same_family flag, the judge's mean total on that family, the other
    judges' mean total on the same transcripts, and the difference (a positive difference on a same-family
    row suggests self-preference). Columns: judge, family, same_family, n_transcripts, judge_mean_total,
    n_shared, other_judges_mean_total, difference."""
    scores = validate_scores(scores)
    per_judge = _judge_totals(scores)
    family = scores.groupby("transcript_id")["family"].first()
    per_judge["family"] = per_judge["transcript_id"].map(family)
    rows = []
    for (judge, fam), group in per_judge.groupby(["judge", "family"], sort=True):
        others = per_judge[(per_judge["judge"] != judge) & per_judge["transcript_id"].isin(group["transcript_id"])]
        other_mean = others.groupby("transcript_id")[TOTAL].mean()
        shared = group.set_index("transcript_id")[TOTAL].reindex(other_mean.index)
        both = shared.notna() & other_mean.notna()
        own_shared = float(shared[both].mean()) if both.any() else math.nan
        other_shared = float(other_mean[both].mean()) if both.any() else math.nan
        rows.append(
            {
                "judge": judge,
                "family": fam,
                "same_family": same_family(judge, fam),
                "n_transcripts": int(group[TOTAL].notna().sum()),
                "judge_mean_total": float(group[TOTAL].mean()),
                "n_shared": int(both.sum()),
                "other_judges_mean_total": other_shared,
                "difference": own_shared - other_shared,
            }
        )
    return pd.DataFrame(rows)


# ---------------------------------------------------------------------------------------------------------
# Human vs judge


def human_judge_agreement(scores: pd.DataFrame, ratings: pd.DataFrame) -> pd.DataFrame:
    """Agreement of human ratings (median over raters per transcript and item) with each judge (median over
    repeats) and with the median over judges, per item. Columns: judge, item, n, spearman_rho, p_value,
    alpha (Krippendorff, ordinal, human and judge as the two coders)."""
    human = validate_ratings(ratings).groupby(["transcript_id", "item"])["score"].median().rename("human")
    per_judge = judge_item_scores(scores)
    pooled = per_judge.groupby(["transcript_id", "item"], as_index=False)["score"].median()
    pooled["judge"] = ALL_JUDGES
    rows = []
    for judge, group in [(ALL_JUDGES, pooled), *per_judge.groupby("judge", sort=True)]:
        joined = group.set_index(["transcript_id", "item"])["score"].rename("judge").to_frame().join(human, how="inner")
        for item in CTRS_ITEMS:
            pair = joined[joined.index.get_level_values("item") == item].dropna()
            rho = p = math.nan
            if len(pair) >= 3 and pair["human"].nunique() > 1 and pair["judge"].nunique() > 1:
                result = sps.spearmanr(pair["human"], pair["judge"])
                rho, p = float(result.statistic), float(result.pvalue)
            alpha = _alpha(pair[["human", "judge"]].to_numpy(dtype=float).T, "ordinal") if len(pair) else math.nan
            rows.append(
                {"judge": judge, "item": item, "n": len(pair), "spearman_rho": rho, "p_value": p, "alpha": alpha}
            )
    return pd.DataFrame(rows)
