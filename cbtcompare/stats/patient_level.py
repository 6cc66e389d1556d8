"""Tuned-vs-base inference with the patient as the unit: the primary analysis, and a random-slope model.

Session cells of one patient share that patient's response to tuning, so a test over session cells counts
one patient's effect several times and its false-positive rate grows with the between-patient spread of
the effect. The primary analysis therefore averages each patient's paired differences (over sessions and
therapist pairs) and tests the patient means (paired t, Wilcoxon beside it); the session-level test
(cbtcompare.stats.paired_comparison) is reported as secondary. The random-slope mixed model (a tuning
slope per patient) is a second patient-level view: Wald tests use the REML fit, the likelihood-ratio test
refits both models by ML, and when the fit does not converge or a variance component is degenerate (on
the boundary, a correlation of +-1, or a Hessian that is not positive definite) its estimate is withheld
(NaN) with the reason beside it.
Nothing here reads the store or plots.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
import statsmodels.formula.api as smf
from scipy import stats as sps

from cbtcompare.stats import (
    CTRS_ITEMS,
    TOTAL,
    TOTAL_COMPLETE,
    TOTAL_MEASURES,
    AnalysisError,
    _paired_row,
    holm_adjust,
    matched_pairs,
)

PRIMARY = "primary: patient means"
SENSITIVITY = "sensitivity: patient means, complete cases"
SLOPE_MODEL = "patient level: random-slope mixed model"
SECONDARY = "secondary: session cells"
# A variance component below this share of the residual variance counts as zero (a boundary fit).
DEGENERATE_VARIANCE_SHARE = 1e-6
DEGENERATE_CORRELATION = 0.999


def patient_means(
    scores: pd.DataFrame,
    *,
    treatment: str = "tuned",
    control: str = "base",
    pairs: Sequence[tuple[str, str]] | None = None,
    by: str | None = None,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(control, treatment): per patient (and per `by` group: "family" or "pair"), the mean over that
    patient's matched session cells of every item and total; a measure missing in a cell on either side
    leaves that cell out of that measure's means, so both sides average the same cells."""
    control_cells, treatment_cells = matched_pairs(scores, treatment=treatment, control=control, pairs=pairs)
    keys = ["patient_id"] if by is None else [by, "patient_id"]
    measures = [*CTRS_ITEMS, *TOTAL_MEASURES]
    both = control_cells[measures].notna() & treatment_cells[measures].notna()
    sides = []
    for cells in (control_cells, treatment_cells):
        values = cells[measures].where(both)
        grouped = values.groupby(level=keys, sort=True)
        means = grouped.mean()
        means["n_cells"] = both[TOTAL].groupby(level=keys, sort=True).sum().astype(int)
        means["partial"] = cells["partial"].groupby(level=keys, sort=True).any()
        sides.append(means)
    return sides[0], sides[1]


def patient_level_comparison(
    scores: pd.DataFrame,
    *,
    treatment: str = "tuned",
    control: str = "base",
    pairs: Sequence[tuple[str, str]] | None = None,
    by: str | None = None,
    confidence: float = 0.95,
) -> pd.DataFrame:
    """The primary tuned-vs-base analysis: paired tests on patient means, per item, total and
    total_complete. Columns as cbtcompare.stats.paired_comparison, with n_pairs counting patients and
    n_cells the session cells behind them; Holm over the 11 items. `by` ("family"/"pair") repeats it per
    group (a patient seen in several groups counts once in each)."""
    control_means, treatment_means = patient_means(scores, treatment=treatment, control=control, pairs=pairs, by=by)
    if by is None:
        groups = [(None, control_means.index)]
    else:
        labels = control_means.index.get_level_values(by)
        groups = [(label, control_means.index[labels == label]) for label in sorted(set(labels))]
    frames = []
    for label, index in groups:
        c, t = control_means.loc[index], treatment_means.loc[index]
        frame = pd.DataFrame([_paired_row(m, c[m], t[m], confidence) for m in (*CTRS_ITEMS, *TOTAL_MEASURES)])
        is_item = ~frame["measure"].isin(TOTAL_MEASURES)
        for column in ("p_t", "p_wilcoxon"):
            frame[f"{column}_holm"] = np.nan
            frame.loc[is_item, f"{column}_holm"] = holm_adjust(frame.loc[is_item, column])
        frame["n_cells"] = int(c["n_cells"].sum())
        frame.insert(0, "unit", "patient")
        frame.insert(0, "contrast", f"{treatment} - {control}")
        if label is not None:
            frame.insert(0, by, label)
        frames.append(frame)
    return pd.concat(frames, ignore_index=True)


@dataclass(frozen=True)
class RandomSlopeResult:
    """`measure ~ treated + session_centred [+ C(pair)]`, random intercept and tuning slope per patient.

    estimate/std_error/z/p_wald/ci_* come from the REML fit, p_lrt from ML refits with and without
    `treated`; all are NaN when `withheld` says why (no convergence, or a degenerate variance component).
    """

    formula: str
    measure: str
    estimate: float
    std_error: float
    z: float
    p_wald: float
    ci_low: float
    ci_high: float
    p_lrt: float
    intercept_variance: float
    slope_variance: float
    slope_correlation: float
    residual_variance: float
    n_observations: int
    n_patients: int
    converged: bool
    withheld: str
    warnings: tuple[str, ...]

    def as_row(self) -> dict[str, object]:
        return {k: (" | ".join(v) if isinstance(v, tuple) else v) for k, v in self.__dict__.items()}


def _fit(formula: str, data: pd.DataFrame, reml: bool) -> tuple[object, list[str]]:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            model = smf.mixedlm(formula, data, groups=data["patient_id"], re_formula="~treated")
            fit = model.fit(reml=reml, method=["lbfgs", "powell"])
        except (np.linalg.LinAlgError, ValueError) as exc:
            raise AnalysisError(f"the random-slope model could not be fitted: {exc}") from exc
    return fit, [f"{w.category.__name__}: {w.message}" for w in caught]


def random_slope_model(
    scores: pd.DataFrame,
    *,
    measure: str = TOTAL,
    treatment: str = "tuned",
    control: str = "base",
    pairs: Sequence[tuple[str, str]] | None = None,
    confidence: float = 0.95,
) -> RandomSlopeResult:
    """Fit the random-slope mixed model on the matched session cells (see RandomSlopeResult)."""
    if measure not in TOTAL_MEASURES:
        raise ValueError(f"measure must be one of {', '.join(TOTAL_MEASURES)}")
    control_cells, treatment_cells = matched_pairs(scores, treatment=treatment, control=control, pairs=pairs)
    frames = []
    for cells, treated in ((control_cells, 0.0), (treatment_cells, 1.0)):
        frame = cells[[measure]].rename(columns={measure: "y"}).reset_index()
        frame["treated"] = treated
        frames.append(frame)
    data = pd.concat(frames, ignore_index=True).dropna(subset=["y"])
    data["patient_id"] = data["patient_id"].astype(str)
    n_patients = int(data["patient_id"].nunique())
    if n_patients < 3:
        raise AnalysisError(f"the random-slope model needs at least 3 patients; found {n_patients}")
    data["session_centred"] = data["session"] - data["session"].mean()
    terms = ["treated"]
    if data["session"].nunique() > 1:
        terms.append("session_centred")
    if data["pair"].nunique() > 1:
        terms.append("C(pair)")
    formula = "y ~ " + " + ".join(terms)
    reml_fit, messages = _fit(formula, data, reml=True)
    cov = np.asarray(reml_fit.cov_re, dtype=float)
    scale = float(reml_fit.scale)
    variances = np.diag(cov)
    correlation = float(cov[0, 1] / math.sqrt(variances[0] * variances[1])) if np.all(variances > 0) else math.nan
    withheld = ""
    if not reml_fit.converged:
        withheld = "the REML fit did not converge"
    elif np.any(variances <= DEGENERATE_VARIANCE_SHARE * scale):
        withheld = (
            "a variance component is on its boundary (intercept variance "
            f"{variances[0]:.3g}, slope variance {variances[1]:.3g}): the model is degenerate"
        )
    elif not math.isfinite(correlation) or abs(correlation) >= DEGENERATE_CORRELATION:
        withheld = f"the intercept-slope correlation is {correlation:.3f}: the model is degenerate"
    elif any("not positive definite" in message for message in messages):
        # seen when every patient gains the same: the optimum is not a proper maximum, its variance
        # components are not identified and the standard error is made up
        withheld = "the REML fit's Hessian is not positive definite: its variance components are not identified"
    estimate = std_error = z = p_wald = low = high = p_lrt = math.nan
    if not withheld:
        estimate = float(reml_fit.fe_params["treated"])
        std_error = float(reml_fit.bse_fe["treated"])
        z = estimate / std_error
        p_wald = float(2 * sps.norm.sf(abs(z)))
        half = float(sps.norm.ppf(0.5 + confidence / 2)) * std_error
        low, high = estimate - half, estimate + half
        full_ml, full_messages = _fit(formula, data, reml=False)
        reduced_formula = formula.replace("treated + ", "").replace("y ~ treated", "y ~ 1")
        reduced_ml, reduced_messages = _fit(reduced_formula, data, reml=False)
        messages += [f"ML refit: {m}" for m in full_messages + reduced_messages]
        if full_ml.converged and reduced_ml.converged:
            statistic = max(0.0, 2 * (float(full_ml.llf) - float(reduced_ml.llf)))
            p_lrt = float(sps.chi2.sf(statistic, 1))
        else:
            messages.append("an ML refit did not converge: no likelihood-ratio test")
    return RandomSlopeResult(
        formula=formula + " (random intercept + treated slope per patient)",
        measure=measure,
        estimate=estimate,
        std_error=std_error,
        z=z,
        p_wald=p_wald,
        ci_low=low,
        ci_high=high,
        p_lrt=p_lrt,
        intercept_variance=float(variances[0]),
        slope_variance=float(variances[1]),
        slope_correlation=correlation,
        residual_variance=scale,
        n_observations=len(data),
        n_patients=n_patients,
        converged=bool(reml_fit.converged),
        withheld=withheld,
        warnings=tuple(dict.fromkeys(messages)),
    )


SUMMARY_COLUMNS = [
    "analysis",
    "measure",
    "unit",
    "n_units",
    "mean_diff",
    "ci_low",
    "ci_high",
    "p_value",
    "test",
    "cohens_dz",
    "dz_ci_low",
    "dz_ci_high",
    "note",
]


def tuned_vs_base_summary(
    scores: pd.DataFrame,
    *,
    treatment: str = "tuned",
    control: str = "base",
    pairs: Sequence[tuple[str, str]] | None = None,
    confidence: float = 0.95,
    with_slope_model: bool = True,
) -> pd.DataFrame:
    """The tuned-vs-base contrast on the total, every way it is reported, primary first: patient means
    (prorated total), patient means on complete cases (sensitivity), the random-slope model (when asked),
    then session cells (secondary, both totals)."""
    from cbtcompare.stats import paired_comparison

    rows = []
    patient = patient_level_comparison(
        scores, treatment=treatment, control=control, pairs=pairs, confidence=confidence
    ).set_index("measure")
    session = paired_comparison(
        scores, treatment=treatment, control=control, pairs=pairs, confidence=confidence
    ).set_index("measure")
    for analysis, measure, table, unit in (
        (PRIMARY, TOTAL, patient, "patient"),
        (SENSITIVITY, TOTAL_COMPLETE, patient, "patient"),
    ):
        rows.append(_summary_row(analysis, measure, table.loc[measure], unit))
    if with_slope_model:
        try:
            fit = random_slope_model(scores, treatment=treatment, control=control, pairs=pairs, confidence=confidence)
            rows.append(
                {
                    "analysis": SLOPE_MODEL,
                    "measure": TOTAL,
                    "unit": "patient (random slope)",
                    "n_units": fit.n_patients,
                    "mean_diff": fit.estimate,
                    "ci_low": fit.ci_low,
                    "ci_high": fit.ci_high,
                    "p_value": fit.p_wald,
                    "test": "Wald z (REML); likelihood-ratio (ML refits) "
                    + ("n/a" if math.isnan(fit.p_lrt) else f"p = {fit.p_lrt:.3g}"),
                    "cohens_dz": math.nan,
                    "dz_ci_low": math.nan,
                    "dz_ci_high": math.nan,
                    "note": ("estimate withheld: " + fit.withheld) if fit.withheld else "",
                }
            )
        except AnalysisError as exc:
            rows.append({"analysis": SLOPE_MODEL, "measure": TOTAL, "note": f"not fitted: {exc}"})
    for measure in TOTAL_MEASURES:
        rows.append(_summary_row(SECONDARY, measure, session.loc[measure], "session cell"))
    return pd.DataFrame(rows, columns=SUMMARY_COLUMNS)


def _summary_row(analysis: str, measure: str, row: pd.Series, unit: str) -> dict[str, object]:
    return {
        "analysis": analysis,
        "measure": measure,
        "unit": unit,
        "n_units": int(row["n_pairs"]),
        "mean_diff": row["mean_diff"],
        "ci_low": row["ci_low"],
        "ci_high": row["ci_high"],
        "p_value": row["p_t"],
        "test": "paired t" + ("" if math.isnan(row["p_wilcoxon"]) else f"; Wilcoxon p = {row['p_wilcoxon']:.3g}"),
        "cohens_dz": row["cohens_dz"],
        "dz_ci_low": row["dz_ci_low"],
        "dz_ci_high": row["dz_ci_high"],
        "note": "" if row["n_pairs"] >= 2 else "fewer than 2 units",
    }


@dataclass(frozen=True)
class InteractionResult:
    """Does the tuning effect differ by family? `follow_ups`: the primary patient-level contrast per family
    (total row) with p_t_holm/p_wilcoxon_holm across families; `p_interaction`: ML likelihood-ratio test of
    `y ~ C(family) * treated` against `y ~ C(family) + treated` on the matched cells (random intercept per
    patient), NaN with `note` when it cannot be fitted."""

    follow_ups: pd.DataFrame
    lr_statistic: float
    df: int
    p_interaction: float
    note: str


def family_interaction(
    scores: pd.DataFrame,
    *,
    treatment: str = "tuned",
    control: str = "base",
    pairs: Sequence[tuple[str, str]] | None = None,
    confidence: float = 0.95,
) -> InteractionResult:
    """Family x variant: the omnibus interaction test and Holm-corrected per-family follow-ups."""
    per_family = patient_level_comparison(
        scores, treatment=treatment, control=control, pairs=pairs, by="family", confidence=confidence
    )
    follow_ups = per_family[per_family["measure"] == TOTAL].reset_index(drop=True)
    for column in ("p_t", "p_wilcoxon"):
        follow_ups[f"{column}_holm"] = holm_adjust(follow_ups[column])
    families = follow_ups["family"].nunique()
    if families < 2:
        return InteractionResult(follow_ups, math.nan, 0, math.nan, "one family: no interaction to test")
    control_cells, treatment_cells = matched_pairs(scores, treatment=treatment, control=control, pairs=pairs)
    frames = []
    for cells, treated in ((control_cells, 0.0), (treatment_cells, 1.0)):
        frame = cells[[TOTAL]].rename(columns={TOTAL: "y"}).reset_index()
        frame["treated"] = treated
        frames.append(frame)
    data = pd.concat(frames, ignore_index=True).dropna(subset=["y"])
    fits = []
    note = ""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for formula in ("y ~ C(family) * treated", "y ~ C(family) + treated"):
            try:
                fit = smf.mixedlm(formula, data, groups=data["patient_id"].astype(str)).fit(reml=False)
            except (np.linalg.LinAlgError, ValueError) as exc:
                return InteractionResult(follow_ups, math.nan, families - 1, math.nan, f"not fitted: {exc}")
            fits.append(fit)
    if not all(f.converged for f in fits):
        note = "an ML fit did not converge: the interaction test is withheld"
        return InteractionResult(follow_ups, math.nan, families - 1, math.nan, note)
    if caught:
        note = "; ".join(dict.fromkeys(f"{w.category.__name__}: {w.message}" for w in caught))
    statistic = max(0.0, 2 * (float(fits[0].llf) - float(fits[1].llf)))
    return InteractionResult(follow_ups, statistic, families - 1, float(sps.chi2.sf(statistic, families - 1)), note)
