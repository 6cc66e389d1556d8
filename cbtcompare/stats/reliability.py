"""Reliability and agreement beyond alpha: the ICC family with CIs, judge repeat consistency, human vs judge
on totals and on the tuned-vs-base contrast, and a bootstrap CI for Kendall's W.

ICCs follow Shrout & Fleiss (1979) / McGraw & Wong (1996) on a complete targets x raters matrix:
ICC(2,1) and ICC(2,k) (two-way random, absolute agreement) with the Shrout-Fleiss approximate F
interval (ICC(2,k)'s bounds are the Spearman-Brown step-up of ICC(2,1)'s, as pingouin does), ICC(3,1)
and ICC(3,k) (two-way mixed, consistency) with exact F intervals. Targets with a missing rating are
dropped (counted). Nothing here reads the store.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import pandas as pd
from scipy import stats as sps

from cbtcompare.stats import (
    CTRS_ITEMS,
    TOTAL,
    AnalysisError,
    _totals_of,
    judge_item_scores,
    resolve_pairing,
    transcript_totals,
    validate_ratings,
    validate_scores,
)

ICC_COLUMNS = ["icc", "description", "value", "ci_low", "ci_high", "n_targets", "k_raters", "dropped_targets"]


def icc_table(matrix: np.ndarray | pd.DataFrame, confidence: float = 0.95) -> pd.DataFrame:
    """ICC(2,1), ICC(2,k), ICC(3,1), ICC(3,k) with CIs of a targets x raters matrix (NaN rows dropped)."""
    data = np.asarray(matrix, dtype=float)
    complete = data[~np.isnan(data).any(axis=1)]
    n, k = complete.shape if complete.ndim == 2 else (0, 0)
    dropped = int(data.shape[0] - n) if data.ndim == 2 else 0
    names = [
        ("ICC(2,1)", "two-way random, absolute agreement, single rater"),
        ("ICC(2,k)", "two-way random, absolute agreement, mean of k raters"),
        ("ICC(3,1)", "two-way mixed, consistency, single rater"),
        ("ICC(3,k)", "two-way mixed, consistency, mean of k raters"),
    ]
    values = {name: (math.nan, math.nan, math.nan) for name, _ in names}
    if n >= 2 and k >= 2:
        grand = complete.mean()
        ss_rows = k * float(((complete.mean(axis=1) - grand) ** 2).sum())
        ss_cols = n * float(((complete.mean(axis=0) - grand) ** 2).sum())
        ss_total = float(((complete - grand) ** 2).sum())
        ss_error = ss_total - ss_rows - ss_cols
        msr, msc = ss_rows / (n - 1), ss_cols / (k - 1)
        mse = ss_error / ((n - 1) * (k - 1))
        if mse > 0 and msr > 0:
            values = _iccs(msr, msc, mse, n, k, confidence)
    rows = [
        {
            "icc": name,
            "description": description,
            "value": values[name][0],
            "ci_low": values[name][1],
            "ci_high": values[name][2],
            "n_targets": n,
            "k_raters": k,
            "dropped_targets": dropped,
        }
        for name, description in names
    ]
    return pd.DataFrame(rows, columns=ICC_COLUMNS)


def _iccs(
    msr: float, msc: float, mse: float, n: int, k: int, confidence: float
) -> dict[str, tuple[float, float, float]]:
    alpha = 1 - confidence
    df_rows, df_error = n - 1, (n - 1) * (k - 1)
    icc21 = (msr - mse) / (msr + (k - 1) * mse + k * (msc - mse) / n)
    icc2k = (msr - mse) / (msr + (msc - mse) / n)
    icc31 = (msr - mse) / (msr + (k - 1) * mse)
    icc3k = (msr - mse) / msr
    f_obs = msr / mse
    f_low = f_obs / sps.f.ppf(1 - alpha / 2, df_rows, df_error)
    f_high = f_obs * sps.f.ppf(1 - alpha / 2, df_error, df_rows)
    ci31 = ((f_low - 1) / (f_low + k - 1), (f_high - 1) / (f_high + k - 1))
    ci3k = (1 - 1 / f_low, 1 - 1 / f_high)
    # Shrout & Fleiss (1979) eq. 8: Satterthwaite df for the ICC(2,1) interval
    a = k * icc21 / (n * (1 - icc21))
    b = 1 + k * icc21 * (n - 1) / (n * (1 - icc21))
    v = (a * msc + b * mse) ** 2 / ((a * msc) ** 2 / (k - 1) + (b * mse) ** 2 / df_error)
    f_star = sps.f.ppf(1 - alpha / 2, df_rows, v)
    f_star_rev = sps.f.ppf(1 - alpha / 2, v, df_rows)
    low21 = n * (msr - f_star * mse) / (f_star * (k * msc + (k * n - k - n) * mse) + n * msr)
    high21 = n * (f_star_rev * msr - mse) / (k * msc + (k * n - k - n) * mse + n * f_star_rev * msr)
    step_up = lambda r: k * r / (1 + (k - 1) * r)  # noqa: E731 - Spearman-Brown
    return {
        "ICC(2,1)": (float(icc21), float(low21), float(high21)),
        "ICC(2,k)": (float(icc2k), float(step_up(low21)), float(step_up(high21))),
        "ICC(3,1)": (float(icc31), float(ci31[0]), float(ci31[1])),
        "ICC(3,k)": (float(icc3k), float(ci3k[0]), float(ci3k[1])),
    }


def judge_icc(scores: pd.DataFrame, confidence: float = 0.95) -> pd.DataFrame:
    """The ICC family on transcript totals between judges (each judge's median over its repeats)."""
    per_item = judge_item_scores(scores)
    wide = per_item.pivot_table(index=["transcript_id", "judge"], columns="item", values="score", aggfunc="first")
    totals = _totals_of(wide.reindex(columns=list(CTRS_ITEMS)))[TOTAL].unstack("judge")
    return icc_table(totals.to_numpy(dtype=float), confidence).assign(measure=TOTAL, raters="judges")


def repeat_consistency(scores: pd.DataFrame, confidence: float = 0.95) -> pd.DataFrame:
    """Per judge with at least two repeats: ICC(2,1) (and the rest of the family) of its totals across
    repeats, and the mean absolute repeat-to-repeat difference of a total. Columns: judge, icc, value,
    ci_low, ci_high, n_targets, k_raters, dropped_targets, mean_abs_difference."""
    scores = validate_scores(scores)
    scored = scores[scores["status"] == "scored"]
    rows = []
    for judge, group in scores.groupby("judge", sort=True):
        if group["repeat"].nunique() < 2:
            continue
        items = (
            scored[scored["judge"] == judge]
            .pivot_table(index=["transcript_id", "repeat"], columns="item", values="score", aggfunc="first")
            .reindex(columns=list(CTRS_ITEMS))
        )
        totals = _totals_of(items)[TOTAL].unstack("repeat")
        table = icc_table(totals.to_numpy(dtype=float), confidence)
        complete = totals.dropna()
        spread = complete.max(axis=1) - complete.min(axis=1)
        table.insert(0, "judge", judge)
        table["mean_abs_difference"] = float(spread.mean()) if len(complete) else math.nan
        rows.append(table[table["icc"] == "ICC(2,1)"])
    columns = ["judge", *ICC_COLUMNS, "mean_abs_difference"]
    return pd.concat(rows, ignore_index=True)[columns] if rows else pd.DataFrame(columns=columns)


def _human_totals(ratings: pd.DataFrame) -> pd.Series:
    human = validate_ratings(ratings).groupby(["transcript_id", "item"])["score"].median().unstack("item")
    return _totals_of(human.reindex(columns=list(CTRS_ITEMS)).astype(float))[TOTAL]


def human_judge_totals(
    scores: pd.DataFrame,
    ratings: pd.DataFrame,
    *,
    treatment: str = "tuned",
    control: str = "base",
    pairs: Sequence[tuple[str, str]] | None = None,
    confidence: float = 0.95,
) -> pd.DataFrame:
    """Human (median over raters) vs judge (median over judges) on prorated totals, and on the
    tuned-vs-base difference of matched cells. Rows: comparison ("totals" / "tuned - base"), n, human
    mean, judge mean, mean_difference (judge - human), spearman_rho, p_value, icc21 (absolute agreement)
    with its CI, and for the contrast sign_agreement (share of cells where both see the same direction)."""
    human = _human_totals(ratings).rename("human")
    judge = transcript_totals(scores).set_index("transcript_id")[TOTAL].rename("judge")
    joined = pd.concat([human, judge], axis=1, join="inner").dropna()
    rows = [_agreement_row("totals", joined, confidence)]
    totals = transcript_totals(scores)
    totals["human"] = totals["transcript_id"].map(human)
    try:
        resolved = resolve_pairing(totals, pairs, treatment=treatment, control=control)
    except AnalysisError:
        return pd.DataFrame(rows)
    cells = []
    for pair in resolved:
        sides = [
            totals[totals["therapist"] == name].groupby(["patient_id", "session"])[[TOTAL, "human"]].mean()
            for name in (pair.control, pair.treatment)
        ]
        common = sides[0].index.intersection(sides[1].index)
        cells.append((sides[1].loc[common] - sides[0].loc[common]).rename(columns={TOTAL: "judge"}))
    contrast = pd.concat(cells)[["human", "judge"]].dropna()
    row = _agreement_row(f"{treatment} - {control}", contrast, confidence)
    row["sign_agreement"] = (
        float((np.sign(contrast["human"]) == np.sign(contrast["judge"])).mean()) if len(contrast) else math.nan
    )
    rows.append(row)
    return pd.DataFrame(rows)


def _agreement_row(comparison: str, joined: pd.DataFrame, confidence: float) -> dict[str, object]:
    n = len(joined)
    rho = p = math.nan
    if n >= 3 and joined["human"].nunique() > 1 and joined["judge"].nunique() > 1:
        result = sps.spearmanr(joined["human"], joined["judge"])
        rho, p = float(result.statistic), float(result.pvalue)
    icc = icc_table(joined[["human", "judge"]].to_numpy(dtype=float), confidence).set_index("icc").loc["ICC(2,1)"]
    return {
        "comparison": comparison,
        "n": n,
        "human_mean": float(joined["human"].mean()) if n else math.nan,
        "judge_mean": float(joined["judge"].mean()) if n else math.nan,
        "mean_difference": float((joined["judge"] - joined["human"]).mean()) if n else math.nan,
        "spearman_rho": rho,
        "p_value": p,
        "icc21": icc["value"],
        "icc21_ci_low": icc["ci_low"],
        "icc21_ci_high": icc["ci_high"],
        "sign_agreement": math.nan,
    }


def kendalls_w_interval(
    table: np.ndarray, *, rounds: int = 1000, seed: int = 0, confidence: float = 0.95
) -> tuple[float, float]:
    """Percentile bootstrap CI (blocks resampled) for Kendall's W of a blocks x raters-or-items table,
    W = Friedman chi2 (tie-corrected, as scipy) / (n (k - 1))."""
    data = np.asarray(table, dtype=float)
    n, k = data.shape
    if n < 2 or k < 2:
        return (math.nan, math.nan)
    ranks = np.apply_along_axis(sps.rankdata, 1, data)
    ties = np.array([sum(c**3 - c for c in np.unique(row, return_counts=True)[1]) for row in data], dtype=float)
    rng = np.random.default_rng(seed)
    picks = rng.integers(0, n, size=(rounds, n))
    rank_sums = ranks[picks].sum(axis=1)  # rounds x k
    tie_sums = ties[picks].sum(axis=1)
    chi2 = 12.0 / (n * k * (k + 1)) * (rank_sums**2).sum(axis=1) - 3.0 * n * (k + 1)
    correction = 1 - tie_sums / (n * k * (k * k - 1))
    with np.errstate(invalid="ignore", divide="ignore"):
        w = np.where(correction > 0, chi2 / correction, np.nan) / (n * (k - 1))
    w = w[np.isfinite(w)]
    if w.size == 0:
        return (math.nan, math.nan)
    tail = (1 - confidence) / 2 * 100
    low, high = np.percentile(w, [tail, 100 - tail])
    return (float(low), float(high))
