"""cbtcompare.power and `python -m cbtcompare power`: sample sizes checked against statsmodels' power
classes and a simulation of the test itself, never against typed numbers. All data here is synthetic."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats as sps
from statsmodels.stats.power import TTestIndPower, TTestPower

from cbtcompare import cli, power


def statsmodels_n(effect: float, alpha: float, wanted: float, design: str = "paired") -> int:
    solver = TTestPower() if design == "paired" else TTestIndPower()
    return math.ceil(solver.solve_power(effect_size=effect, alpha=alpha, power=wanted))


@pytest.mark.parametrize("correlation", [0.5, 0.0, 0.8])
def test_pairs_needed_agree_with_statsmodels(correlation):
    request = power.PowerPlanRequest(difference=5, sd=9, correlation=correlation)
    plan = power.plan(request)
    dz = 5 / (9 * math.sqrt(2 * (1 - correlation)))
    assert plan.pairs_needed == statsmodels_n(dz, 0.05, 0.8)
    assert plan.per_arm_needed_if_independent == statsmodels_n(5 / 9, 0.05, 0.8, "independent")
    assert plan.sd_of_pair_difference == pytest.approx(9 * math.sqrt(2 * (1 - correlation)))


def test_holm_and_bonferroni_plan_at_alpha_over_m():
    request = power.PowerPlanRequest(difference=5, sd=9, correlation=0.5, tests=33, correction="holm")
    plan = power.plan(request)
    assert plan.alpha_per_test == pytest.approx(0.05 / 33)
    assert plan.pairs_needed == statsmodels_n(5 / 9, 0.05 / 33, 0.8)
    unadjusted = power.plan(request.model_copy(update={"correction": "none"}))
    assert unadjusted.pairs_needed < plan.pairs_needed


def test_patient_level_planning_adds_the_between_patient_spread_of_the_effect():
    request = power.PowerPlanRequest(difference=5, sd=9, correlation=0.5, sessions=4, slope_sd=4)
    plan = power.plan(request)
    sd_patient = math.sqrt(4**2 + 9**2 / 4)
    assert plan.patients_needed == statsmodels_n(5 / sd_patient, 0.05, 0.8)


def test_the_planned_n_reaches_the_power_in_a_simulation_of_the_paired_test():
    plan = power.plan(power.PowerPlanRequest(difference=5, sd=9, correlation=0.5))
    rng = np.random.default_rng(11)
    covariance = 81 * np.array([[1, 0.5], [0.5, 1]])
    rejections = 0
    rounds = 2000
    for _ in range(rounds):
        arms = rng.multivariate_normal([0, 5], covariance, size=plan.pairs_needed)
        rejections += sps.ttest_rel(arms[:, 1], arms[:, 0]).pvalue < 0.05
    assert rejections / rounds == pytest.approx(power.t_test_power(5 / 9, plan.pairs_needed, 0.05), abs=0.03)
    assert rejections / rounds >= 0.77


def test_achieved_power_and_minimal_detectable_difference_agree_with_statsmodels():
    achieved = power.achieved_power(20, 6.0, 4.0, alpha=0.05)
    assert achieved.power == pytest.approx(TTestPower().power(effect_size=4 / 6, nobs=20, alpha=0.05), rel=1e-6)
    dz = TTestPower().solve_power(nobs=20, alpha=0.05, power=0.8)
    assert achieved.minimal_detectable_difference == pytest.approx(dz * 6.0, rel=1e-4)
    assert math.isnan(power.achieved_power(1, 6.0, 4.0).power)


def test_power_cli_prints_json_and_refuses_bad_numbers(capsys):
    assert cli.main(["power", "--difference", "5", "--sd", "9", "--correlation", "0", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)["plan"]
    assert out["pairs_needed"] == statsmodels_n(5 / (9 * math.sqrt(2)), 0.05, 0.8)
    assert cli.main(["power", "--difference", "5", "--sd", "-1"]) == 2
    assert "--sd" in capsys.readouterr().err
    assert cli.main(["power", "--difference", "0", "--sd", "9"]) == 2
    assert "non-zero" in capsys.readouterr().err


@given(
    difference=st.floats(allow_nan=True, allow_infinity=True, width=32),
    sd=st.floats(allow_nan=True, allow_infinity=True, width=32),
    correlation=st.floats(allow_nan=True, allow_infinity=True, width=32),
)
@settings(deadline=None, max_examples=60)
def test_any_numbers_give_a_plan_or_a_typed_error(difference, sd, correlation):
    try:
        plan = power.plan(power.PowerPlanRequest(difference=difference, sd=sd, correlation=correlation))
    except ValueError as exc:  # pydantic's ValidationError is a ValueError; so is "needs more than"
        assert str(exc)
    else:
        assert plan.pairs_needed >= 2 and plan.patients_needed >= 2
