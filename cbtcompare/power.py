"""Power and sample size for the tuned-vs-base contrast: pairs or patients needed, and achieved power.

Exact two-sided t-test power from the noncentral t distribution: paired (one-sample on differences,
ncp = dz * sqrt(n), df = n - 1) and independent arms (ncp = d * sqrt(n / 2), df = 2n - 2). The SD of a
paired difference is sd * sqrt(2 (1 - correlation)), so correlated arms need fewer pairs. Several tests
(families x items) are planned at alpha / m: that is Bonferroni, and also the strictest step of Holm's
procedure, so the power stated is for the one test that has to pass it (Holm's later steps are easier).
With patients as the unit (the primary analysis), a patient's mean difference over k sessions has
variance slope_sd^2 + sd_diff^2 / k, where slope_sd is the between-patient SD of the tuning effect.
This module never reads the store; it takes numbers, or the differences of the data at hand.
"""

from __future__ import annotations

import math
from typing import Literal

from pydantic import BaseModel, Field, field_validator
from scipy import stats as sps
from scipy.optimize import brentq

Design = Literal["paired", "independent"]
Correction = Literal["none", "bonferroni", "holm"]
MAX_N = 1_000_000


class PowerPlanRequest(BaseModel):
    """What a power calculation is asked: the difference to detect and the spread it has to beat."""

    difference: float = Field(description="the true tuned - base difference to detect, in total points")
    sd: float = Field(gt=0, description="SD of a total within one arm (per session)")
    correlation: float = Field(0.5, ge=-1, lt=1, description="correlation of base and tuned totals of a pair")
    alpha: float = Field(0.05, gt=0, lt=1, description="two-sided family-wise alpha")
    power: float = Field(0.8, gt=0, lt=1, description="the power wanted")
    tests: int = Field(1, ge=1, description="number of tests sharing the alpha (families x items)")
    correction: Correction = Field("holm", description="none, bonferroni or holm")
    sessions: int = Field(1, ge=1, description="sessions per patient (patient-level planning)")
    slope_sd: float = Field(0.0, ge=0, description="between-patient SD of the tuning effect")

    @field_validator("difference")
    @classmethod
    def _nonzero(cls, value: float) -> float:
        if value == 0 or not math.isfinite(value):
            raise ValueError("the difference to detect must be a finite, non-zero number of points")
        return value


class PowerPlan(BaseModel):
    """The answer: the per-test alpha used, the SD of a unit's difference, and the units needed."""

    request: PowerPlanRequest
    alpha_per_test: float
    sd_of_pair_difference: float
    pairs_needed: int = Field(description="paired session cells needed (one session per patient)")
    patients_needed: int = Field(description="patients needed with `sessions` each, patient means tested")
    per_arm_needed_if_independent: int = Field(description="transcripts per arm if the arms were not paired")
    sd_of_patient_difference: float


def alpha_per_test(alpha: float, tests: int, correction: Correction) -> float:
    """The alpha one test is planned at: alpha / tests for Bonferroni and for Holm (its strictest step)."""
    return alpha if correction == "none" or tests == 1 else alpha / tests


def paired_difference_sd(sd: float, correlation: float) -> float:
    """SD of (tuned - base) when both arms have SD `sd` and correlate at `correlation`."""
    return sd * math.sqrt(2 * (1 - correlation))


def t_test_power(effect_size: float, n: float, alpha: float, design: Design = "paired") -> float:
    """Two-sided power of a t test: `effect_size` is dz (paired; n pairs) or d (independent; n per arm)."""
    if design == "paired":
        df, ncp = n - 1, effect_size * math.sqrt(n)
    else:
        df, ncp = 2 * n - 2, effect_size * math.sqrt(n / 2)
    if df <= 0:
        return math.nan
    critical = float(sps.t.isf(alpha / 2, df))
    power = float(sps.nct.sf(critical, df, ncp) + sps.nct.cdf(-critical, df, ncp))
    if not math.isfinite(power):  # scipy's nct gives up far in the tail, where power is 0 or 1 anyway
        power = float(sps.norm.sf(critical - ncp) + sps.norm.cdf(-critical - ncp))
    return power


def n_needed(effect_size: float, alpha: float, power: float, design: Design = "paired") -> int:
    """The smallest whole n (pairs, or per arm) whose power reaches `power`."""
    effect_size = abs(effect_size)
    if t_test_power(effect_size, MAX_N, alpha, design) < power:
        raise ValueError(f"an effect size of {effect_size:.3g} needs more than {MAX_N} units at this power")
    low, high = 2, 4
    while t_test_power(effect_size, high, alpha, design) < power:
        low, high = high, high * 2
    while low < high:
        n = (low + high) // 2
        if t_test_power(effect_size, n, alpha, design) >= power:
            high = n
        else:
            low = n + 1
    return max(2, low)


def plan(request: PowerPlanRequest) -> PowerPlan:
    """Units needed for `request` (see the module docstring for the designs)."""
    alpha = alpha_per_test(request.alpha, request.tests, request.correction)
    sd_pair = paired_difference_sd(request.sd, request.correlation)
    sd_patient = math.sqrt(request.slope_sd**2 + sd_pair**2 / request.sessions)
    return PowerPlan(
        request=request,
        alpha_per_test=alpha,
        sd_of_pair_difference=sd_pair,
        pairs_needed=n_needed(request.difference / sd_pair, alpha, request.power),
        patients_needed=n_needed(request.difference / sd_patient, alpha, request.power),
        per_arm_needed_if_independent=n_needed(request.difference / request.sd, alpha, request.power, "independent"),
        sd_of_patient_difference=sd_patient,
    )


class AchievedPower(BaseModel):
    """The power the data at hand had: n units, the SD of their differences, power for a difference, and
    the smallest difference detectable at `power`."""

    n_units: int
    sd_of_differences: float
    difference: float
    alpha_per_test: float
    power: float
    minimal_detectable_difference: float
    target_power: float


def achieved_power(
    n_units: int,
    sd_of_differences: float,
    difference: float,
    *,
    alpha: float = 0.05,
    tests: int = 1,
    correction: Correction = "none",
    target_power: float = 0.8,
) -> AchievedPower:
    """Power of a paired test on `n_units` differences with SD `sd_of_differences` to detect `difference`,
    and the minimal detectable difference at `target_power` (NaN when n < 2 or the SD is not positive)."""
    alpha_test = alpha_per_test(alpha, tests, correction)
    power = mdd = math.nan
    if n_units >= 2 and sd_of_differences > 0 and math.isfinite(sd_of_differences):
        power = t_test_power(difference / sd_of_differences, n_units, alpha_test)

        def gap(dz: float) -> float:
            return t_test_power(dz, n_units, alpha_test) - target_power

        upper = 1.0
        while gap(upper) < 0:
            upper *= 2
        mdd = float(brentq(gap, 1e-9, upper)) * sd_of_differences
    return AchievedPower(
        n_units=n_units,
        sd_of_differences=sd_of_differences,
        difference=difference,
        alpha_per_test=alpha_test,
        power=power,
        minimal_detectable_difference=mdd,
        target_power=target_power,
    )
