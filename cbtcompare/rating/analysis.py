"""Admin side of a study: progress, export, the unblinding report, inter-rater reliability, judge agreement.

Everything here undoes the blinding (it names the therapist models), so it is for the study admin only:
the Rate tab calls it only after the admin secret is checked, and the CLI is an admin's tool.
Reliability: Krippendorff's alpha (ordinal) per item through the `krippendorff` package, with units =
one transcript within one pair and coders = raters; ICC(2,1) (two-way random effects, absolute
agreement, single rater; Shrout & Fleiss 1979) on item totals, computed here on the units every
included rater rated. This module never imports gradio.
"""

from __future__ import annotations

import csv
import json
import math
from dataclasses import dataclass
from datetime import datetime
from typing import IO, Literal

import krippendorff
import numpy as np
import pandas as pd

from cbtcompare.rating.export_format import RatingsFileError, checked_score, dumps, restore_cell, write_csv
from cbtcompare.rating.study import CONFIDENCE_LEVELS, Study, get_study
from cbtcompare.store import Store

ExportFormat = Literal["csv", "jsonl"]
BASE_COLUMNS: dict[str, str] = {
    "rating_id": "int",
    "study_id": "text",
    "rater_id": "text",
    "rater_label": "text",
    "pair_id": "text",
    "pair_position": "int",
    "assignment_position": "int",
    "a_transcript_id": "text",
    "b_transcript_id": "text",
    "a_therapist": "text",
    "b_therapist": "text",
    "preference": "text?",
    "preferred_transcript_id": "text?",
    "preferred_therapist": "text?",
    "confidence": "int?",
    "comment": "text",
    "read_both": "int",
    "shown_at": "text?",
    "submitted_at": "text",
    "seconds_to_rate": "float?",
    "rubric_id": "text?",
    "rubric_version": "text?",
}


# Export -------------------------------------------------------------------------------------------------


def export_columns(study: Study) -> dict[str, str]:
    """The export's columns and their types: BASE_COLUMNS, then A_<item> and B_<item> per rubric item."""
    items = {f"{side}_{item}": "int" for side in ("A", "B") for item in study.item_ids}
    return {**BASE_COLUMNS, **items}


def export_records(store: Store, study_id: str) -> list[dict]:
    """One flat record per stored rating, oldest first; sides as shown (A/B) plus who each side was."""
    study = get_study(store, study_id)
    rows = [r.model_dump() for r in store.rating.exported_ratings(study_id)]
    names = store.rating.therapist_names(r[k] for r in rows for k in ("a_transcript_id", "b_transcript_id"))
    rubric = study.rubric or {}
    records = []
    for row in rows:
        record = {
            "rating_id": row["id"],
            "study_id": row["study_id"],
            "rater_id": row["rater_id"],
            "rater_label": row["rater_label"],
            "pair_id": row["pair_id"],
            "pair_position": row["pair_position"],
            "assignment_position": row["assignment_position"],
            "a_transcript_id": row["a_transcript_id"],
            "b_transcript_id": row["b_transcript_id"],
            "a_therapist": names[row["a_transcript_id"]],
            "b_therapist": names[row["b_transcript_id"]],
            "preference": row["preference"],
            "preferred_transcript_id": row["preferred_transcript_id"],
            "preferred_therapist": names.get(row["preferred_transcript_id"] or ""),
            "confidence": row["confidence"],
            "comment": row["comment"],
            "read_both": row["read_both"],
            "shown_at": row["shown_at"],
            "submitted_at": row["submitted_at"],
            "seconds_to_rate": _seconds(row["shown_at"], row["submitted_at"]),
            "rubric_id": rubric.get("id"),
            "rubric_version": rubric.get("version"),
        }
        for side in ("A", "B"):
            for item in study.item_ids:
                record[f"{side}_{item}"] = row["scores"][side][item]
        records.append(record)
    return records


def _seconds(start: str | None, end: str | None) -> float | None:
    if not start or not end:
        return None
    return round((datetime.fromisoformat(end) - datetime.fromisoformat(start)).total_seconds(), 3)


def write_export(store: Store, study_id: str, out: IO[str], fmt: ExportFormat) -> int:
    """Write a study's ratings as CSV (header + one row each; formula-like text neutralised) or JSONL (one
    strict-JSON object each); returns the count."""
    columns = list(export_columns(get_study(store, study_id)))
    records = export_records(store, study_id)
    if fmt == "jsonl":
        for record in records:
            out.write(dumps(record) + "\n")
    elif fmt == "csv":
        write_csv(out, columns, records)
    else:
        raise ValueError(f"unknown export format {fmt!r}; use csv or jsonl")
    return len(records)


def read_export(source: IO[str], fmt: ExportFormat) -> list[dict]:
    """Read an export back into the records export_records gives (types restored and checked for CSV:
    scores inside the rubric's range, confidence 1-5; a bad cell is a RatingsFileError naming its line and
    column)."""
    if fmt == "jsonl":
        records = []
        for line, text in enumerate(source, start=1):
            if text.strip():
                try:
                    records.append(json.loads(text, parse_constant=_refuse_constant))
                except (ValueError, RecursionError) as exc:
                    raise RatingsFileError(f"line {line}: not a JSON object ({exc})") from exc
        return records
    if fmt != "csv":
        raise ValueError(f"unknown export format {fmt!r}; use csv or jsonl")
    records = []
    try:
        for line, row in enumerate(csv.DictReader(source), start=2):
            if None in row:
                raise RatingsFileError(f"line {line}: more cells than columns in the header")
            records.append({name: _typed(value or "", name, line, row) for name, value in row.items()})
    except csv.Error as exc:
        raise RatingsFileError(f"not a readable CSV: {exc}") from exc
    return records


def _refuse_constant(token: str) -> object:
    raise ValueError(f"{token} is not JSON; a missing number is null")


def _column_type(name: str) -> str:
    if name in BASE_COLUMNS:
        return BASE_COLUMNS[name]
    if name[:2] in ("A_", "B_"):
        return "score"
    return "text"


def _typed(value: str, name: str, line: int, row: dict[str, str]) -> object:
    kind = _column_type(name)
    if value == "" and kind.endswith("?"):
        return None
    kind = kind.rstrip("?")
    if kind == "score":
        return checked_score(value, line=line, column=name, rubric_id=row.get("rubric_id") or None)
    if kind == "text":
        return restore_cell(value)
    try:
        number = float(value)
    except ValueError:
        number = math.nan
    if not math.isfinite(number) or (kind == "int" and number != int(number)):
        wanted = "an integer" if kind == "int" else "a number"
        raise RatingsFileError(f"line {line}, column {name}: {value!r} is not {wanted}")
    if name == "confidence" and number not in CONFIDENCE_LEVELS:
        raise RatingsFileError(
            f"line {line}, column {name}: confidence {value} is outside {CONFIDENCE_LEVELS[0]}-{CONFIDENCE_LEVELS[-1]}"
        )
    return int(number) if kind == "int" else number


# Progress ---------------------------------------------------------------------------------------------


def progress_tables(store: Store, study_id: str) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Per rater (label, code, assigned, rated, remaining, last_rated_at) and per pair (position, the two
    therapists, assigned, rated, remaining)."""
    get_study(store, study_id)
    repository = store.rating
    raters = repository.raters(study_id)
    assigned = [(a.rater_id, a.pair_id) for a in repository.assignments(study_id)]
    rated = [(r.rater_id, r.pair_id, r.submitted_at) for r in repository.ratings(study_id)]
    pairs = [p.model_dump(exclude={"display"}) for p in repository.pairs(study_id)]
    names = repository.therapist_names(p[k] for p in pairs for k in ("transcript_1", "transcript_2"))
    per_rater = []
    for rater in sorted(raters, key=lambda r: int(r.label.split()[-1])):
        mine = [r for r in rated if r[0] == rater.id]
        n_assigned = sum(1 for a in assigned if a[0] == rater.id)
        per_rater.append(
            {
                "rater": rater.label,
                "code": rater.code,
                "assigned": n_assigned,
                "rated": len(mine),
                "remaining": n_assigned - len(mine),
                "last_rated_at": max((r[2] for r in mine), default=""),
            }
        )
    per_pair = []
    for pair in pairs:
        n_assigned = sum(1 for a in assigned if a[1] == pair["id"])
        n_rated = sum(1 for r in rated if r[1] == pair["id"])
        per_pair.append(
            {
                "pair": pair["position"],
                "therapist_1": names[pair["transcript_1"]],
                "therapist_2": names[pair["transcript_2"]],
                "assigned": n_assigned,
                "rated": n_rated,
                "remaining": n_assigned - n_rated,
            }
        )
    return pd.DataFrame(per_rater), pd.DataFrame(per_pair)


# Unblinding ---------------------------------------------------------------------------------------------


def human_scores(store: Store, study_id: str) -> pd.DataFrame:
    """The long table of human item scores with the sides undone: rating_id, rater_id, pair_id,
    transcript_id, therapist, shown_as (A or B), item, score, rubric_id. The `transcript_id, item, score` columns are
    what cbtcompare.stats reads as human ratings."""
    study = get_study(store, study_id)
    columns = [
        "rating_id",
        "rater_id",
        "pair_id",
        "transcript_id",
        "therapist",
        "shown_as",
        "item",
        "score",
        "rubric_id",
    ]
    rows = []
    for record in export_records(store, study_id):
        for side in ("A", "B"):
            prefix = side.lower()
            for item in study.item_ids:
                rows.append(
                    {
                        "rating_id": record["rating_id"],
                        "rater_id": record["rater_id"],
                        "pair_id": record["pair_id"],
                        "transcript_id": record[f"{prefix}_transcript_id"],
                        "therapist": record[f"{prefix}_therapist"],
                        "shown_as": side,
                        "item": item,
                        "score": float(record[f"{side}_{item}"]),
                        "rubric_id": record["rubric_id"],
                    }
                )
    return pd.DataFrame(rows, columns=columns)


@dataclass(frozen=True)
class UnblindingReport:
    """preference: per therapist (n, wins, losses, ties, both_bad (the ties a rater called both bad, also
    counted in ties), win_rate with ties as half, mean confidence of its wins); head_to_head: per pair of
    therapists; items: per therapist and item (n, mean, sd), with "total";
    shown_a_rate: share of non-tie preferences that went to side A (0.5 = no position bias)."""

    preference: pd.DataFrame
    head_to_head: pd.DataFrame
    items: pd.DataFrame
    ratings: int
    shown_a_rate: float


def unblinding_report(store: Store, study_id: str) -> UnblindingReport:
    study = get_study(store, study_id)
    records = export_records(store, study_id)
    tally: dict[str, dict[str, float]] = {}
    duels: dict[tuple[str, str], dict[str, int]] = {}
    shown_a = decided = 0
    for r in records:
        if r["preference"] is None:
            continue
        pair = (r["a_therapist"], r["b_therapist"])
        for name in pair:
            tally.setdefault(name, {"n": 0, "wins": 0, "losses": 0, "ties": 0, "both_bad": 0, "win_confidence": 0.0})
            tally[name]["n"] += 1
        key = tuple(sorted(pair))
        duel = duels.setdefault(key, {"wins_1": 0, "wins_2": 0, "ties": 0})
        if r["preference"] in ("tie", "both_bad"):
            for name in pair:
                tally[name]["ties"] += 1
                tally[name]["both_bad"] += r["preference"] == "both_bad"
            duel["ties"] += 1
            continue
        decided += 1
        shown_a += r["preference"] == "A"
        winner = r["preferred_therapist"]
        loser = pair[1] if winner == pair[0] else pair[0]
        tally[winner]["wins"] += 1
        tally[winner]["win_confidence"] += r["confidence"] or 0
        tally[loser]["losses"] += 1
        duel["wins_1" if winner == key[0] else "wins_2"] += 1
    preference = pd.DataFrame(
        [
            {
                "therapist": name,
                "n": int(t["n"]),
                "wins": int(t["wins"]),
                "losses": int(t["losses"]),
                "ties": int(t["ties"]),
                "both_bad": int(t["both_bad"]),
                "win_rate": (t["wins"] + 0.5 * t["ties"]) / t["n"],
                "mean_confidence_of_wins": t["win_confidence"] / t["wins"]
                if t["wins"] and study.choices.confidence
                else math.nan,
            }
            for name, t in sorted(tally.items())
        ],
        columns=["therapist", "n", "wins", "losses", "ties", "both_bad", "win_rate", "mean_confidence_of_wins"],
    )
    head_to_head = pd.DataFrame(
        [{"therapist_1": k[0], "therapist_2": k[1], **v} for k, v in sorted(duels.items())],
        columns=["therapist_1", "therapist_2", "wins_1", "wins_2", "ties"],
    )
    scores = human_scores(store, study_id)
    items = _item_means(scores)
    return UnblindingReport(
        preference=preference,
        head_to_head=head_to_head,
        items=items,
        ratings=len(records),
        shown_a_rate=shown_a / decided if decided else math.nan,
    )


def _item_means(scores: pd.DataFrame) -> pd.DataFrame:
    columns = ["therapist", "item", "n", "mean", "sd"]
    if scores.empty:
        return pd.DataFrame(columns=columns)
    totals = scores.groupby(["rating_id", "transcript_id", "therapist"], as_index=False)["score"].sum()
    totals["item"] = "total"
    both = pd.concat([scores[["therapist", "item", "score"]], totals[["therapist", "item", "score"]]])
    order = {item: i for i, item in enumerate(dict.fromkeys([*scores["item"], "total"]))}
    table = both.groupby(["therapist", "item"], as_index=False)["score"].agg(n="count", mean="mean", sd="std")
    table["order"] = table["item"].map(order)
    return table.sort_values(["therapist", "order"]).drop(columns="order").reset_index(drop=True)[columns]


# Reliability --------------------------------------------------------------------------------------------


def krippendorff_alpha(reliability: np.ndarray, level: str = "ordinal") -> float:
    """Alpha of a coders x units matrix (NaN = missing) via the krippendorff package; NaN when undefined
    (no unit rated twice, or a single value throughout)."""
    if reliability.size == 0:
        return math.nan
    pairable = int((np.sum(~np.isnan(reliability), axis=0) >= 2).sum())
    if pairable < 1 or np.unique(reliability[~np.isnan(reliability)]).size < 2:
        return math.nan
    return float(krippendorff.alpha(reliability_data=reliability, level_of_measurement=level))


def icc_2_1(matrix: np.ndarray) -> float:
    """ICC(2,1) of a complete units x raters matrix: two-way random effects, absolute agreement, single
    rater (Shrout & Fleiss 1979, McGraw & Wong's ICC(A,1)). NaN with fewer than 2 units or raters, or no
    variance at all."""
    data = np.asarray(matrix, dtype=float)
    if data.ndim != 2 or data.shape[0] < 2 or data.shape[1] < 2:
        return math.nan
    if np.isnan(data).any():
        raise ValueError("icc_2_1 needs a complete matrix; drop units with a missing rating first")
    n, k = data.shape
    grand = data.mean()
    rows = data.mean(axis=1)
    cols = data.mean(axis=0)
    ms_rows = k * np.sum((rows - grand) ** 2) / (n - 1)
    ms_cols = n * np.sum((cols - grand) ** 2) / (k - 1)
    residual = data - rows[:, None] - cols[None, :] + grand
    ms_error = np.sum(residual**2) / ((n - 1) * (k - 1))
    denominator = ms_rows + (k - 1) * ms_error + k * (ms_cols - ms_error) / n
    if denominator == 0:
        return math.nan
    return float((ms_rows - ms_error) / denominator)


@dataclass(frozen=True)
class ReliabilityReport:
    """items: per item (n_units, n_raters, alpha ordinal); icc_total: ICC(2,1) on totals over the units
    rated by every included rater (`icc_units` x `icc_raters`); preference_alpha: nominal alpha of the
    preferences (units = pairs; values: first transcript, second, tie)."""

    items: pd.DataFrame
    icc_total: float
    icc_units: int
    icc_raters: int
    preference_alpha: float


def reliability(store: Store, study_id: str) -> ReliabilityReport:
    study = get_study(store, study_id)
    scores = human_scores(store, study_id)
    scores["unit"] = scores["pair_id"] + "/" + scores["transcript_id"]
    rows = []
    for item in study.item_ids:
        subset = scores[scores["item"] == item]
        matrix = subset.pivot_table(index="rater_id", columns="unit", values="score", aggfunc="first")
        data = matrix.to_numpy(dtype=float)
        rows.append(
            {
                "item": item,
                "n_units": int((np.sum(~np.isnan(data), axis=0) >= 2).sum()) if data.size else 0,
                "n_raters": int(matrix.shape[0]),
                "alpha": krippendorff_alpha(data, "ordinal"),
            }
        )
    items = pd.DataFrame(rows, columns=["item", "n_units", "n_raters", "alpha"])
    icc, icc_units, icc_raters = math.nan, 0, 0
    if not scores.empty:
        totals = scores.groupby(["unit", "rater_id"])["score"].sum().unstack("rater_id")
        complete = _largest_complete_block(totals)
        icc_units, icc_raters = complete.shape
        icc = icc_2_1(complete.to_numpy(dtype=float))
    return ReliabilityReport(
        items=items,
        icc_total=icc,
        icc_units=icc_units,
        icc_raters=icc_raters,
        preference_alpha=_preference_alpha(store, study_id),
    )


def _largest_complete_block(totals: pd.DataFrame) -> pd.DataFrame:
    """Units x raters with no gaps: keep the raters who rated the most units, then the units they all rated,
    dropping raters one at a time (least overlap first) while that grows the number of cells."""
    best = totals.dropna()
    raters = list(totals.notna().sum().sort_values(ascending=False).index)
    while len(raters) > 2:
        candidate = totals[raters[:-1]].dropna()
        if candidate.size <= best.size:
            break
        raters = raters[:-1]
        best = candidate
    return best


def _preference_alpha(store: Store, study_id: str) -> float:
    records = export_records(store, study_id)
    firsts = {p.id: p.transcript_1 for p in store.rating.pairs(study_id)}
    values = []
    for r in records:
        if r["preference"] is None:
            continue
        first_won = r["preferred_transcript_id"] == firsts[r["pair_id"]]
        code = {"tie": 3.0, "both_bad": 4.0}.get(r["preference"], 1.0 if first_won else 2.0)
        values.append({"rater_id": r["rater_id"], "pair_id": r["pair_id"], "value": code})
    if not values:
        return math.nan
    matrix = pd.DataFrame(values).pivot_table(index="rater_id", columns="pair_id", values="value", aggfunc="first")
    return krippendorff_alpha(matrix.to_numpy(dtype=float), "nominal")


# Judge agreement ----------------------------------------------------------------------------------------


AGREEMENT_COLUMNS = ["judge", "item", "n", "spearman_rho", "p_value", "alpha"]


def judge_agreement(store: Store, study_id: str) -> pd.DataFrame:
    """Agreement of the study's human item scores with each stored LLM judge on the same rubric, per item
    (Spearman and ordinal alpha; cbtcompare.stats.human_judge_agreement). Empty when no judge scored
    these transcripts on this rubric."""
    # Imported here: statsmodels (under cbtcompare.stats) takes seconds to import, and only this needs it.
    from cbtcompare.ctrs.results import scores_frame
    from cbtcompare.stats import human_judge_agreement

    study = get_study(store, study_id)
    human = human_scores(store, study_id)
    if human.empty or not study.rubric:
        return pd.DataFrame(columns=AGREEMENT_COLUMNS)
    judged = scores_frame(store, transcript_ids=sorted(human["transcript_id"].unique()), rubric=study.rubric["id"])
    if judged.empty:
        return pd.DataFrame(columns=AGREEMENT_COLUMNS)
    return human_judge_agreement(judged, human[["transcript_id", "item", "score", "rater_id"]])[AGREEMENT_COLUMNS]
