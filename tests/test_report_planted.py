"""Issue 17 end to end: planted data with a known answer, stored in SQLite (transcripts, judge results,
pairwise verdicts), read back by `python -m cbtcompare report` (its CSVs and its HTML page), and the
`power` and `arena` commands. One test per item of the issue. Each answer is known from how the data
were made: the tolerances come from the generator's own variance budget (NOISE_BUDGET below) or from a
simulation in the test, never from the code under test. All data here is synthetic.
"""

from __future__ import annotations

import json
import math
import os
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy import stats as sps
from scipy.optimize import brentq
from statsmodels.stats.multitest import multipletests
from statsmodels.stats.power import TTestPower
from test_stats import JUDGES, direct_totals, knock_out_homework, make_planted_scores, two_base_models

from cbtcompare.ctrs import ItemScore, JudgeResult, save_pairwise, save_results
from cbtcompare.ctrs.pairwise import PairwiseAnswer, PairwiseItem, PairwiseResult
from cbtcompare.paths import REPO_ROOT
from cbtcompare.stats import CTRS_ITEMS
from cbtcompare.store import Store
from cbtcompare.transcript import Transcript, Turn

pytestmark = pytest.mark.slow  # each module fixture runs the real CLI once on a few thousand score rows

# make_planted_scores' noise on one transcript's total, one judge, one repeat: the session noise
# (noise_sd^2) plus, on each of the 11 items, N(0, 0.8) + a judge's N(0, 0.5) + a repeat's N(0, 0.3) and
# rounding to a whole point (variance 1/12).
ITEM_NOISE = 0.8**2 + 0.5**2 + 0.3**2 + 1 / 12
FAMILIES = 3


def noise_budget(noise_sd: float) -> float:
    return noise_sd**2 + len(CTRS_ITEMS) * ITEM_NOISE


def patient_se(n_patients: int, cells: int, noise_sd: float = 6.0, slope_sd: float = 0.0) -> tuple[float, float]:
    """(SD of one patient's mean tuned - base difference over `cells` matched cells, its standard error)."""
    sd = math.sqrt(slope_sd**2 + 2 * noise_budget(noise_sd) / cells)
    return sd, sd / math.sqrt(n_patients)


# --- the store and the CLI -------------------------------------------------------------------------------


def store_scores(data: Path, scores: pd.DataFrame, pairwise: list[PairwiseResult] | None = None) -> Store:
    """Put planted scores into a fresh SQLite store under `data` as the judge would: one transcript per
    transcript_id (its provenance in meta), one JudgeResult per transcript x judge x repeat."""
    store = Store(f"sqlite:///{data / 'cbtcompare.sqlite'}")
    rubric = str(scores["rubric_id"].iloc[0]) if "rubric_id" in scores.columns else "ctrs-paper-1-10"
    transcripts = []
    for transcript_id, row in scores.groupby("transcript_id").first().iterrows():
        tokens = int(row.get("transcript_tokens", 800))
        transcripts.append(
            Transcript(
                id=transcript_id,
                kind="simulation",
                therapist={"name": row["therapist"]},
                meta={
                    "family": row["family"],
                    "variant": row["variant"],
                    "patient_id": row["patient_id"],
                    "session": int(row["session"]),
                },
                turns=[
                    Turn(role="patient", text="I have been feeling low.", tokens=tokens // 2),
                    Turn(role="therapist", text="What would you like to work on today?", tokens=tokens - tokens // 2),
                ],
            )
        )
    store.save_transcripts(transcripts)
    results = []
    for (transcript_id, judge, repeat), rows in scores.groupby(["transcript_id", "judge", "repeat"]):
        items = {
            r.item: ItemScore(item=r.item, status=r.status, score=int(r.score) if r.status == "scored" else None)
            for r in rows.itertuples()
        }
        results.append(
            JudgeResult(transcript_id=transcript_id, judge=judge, repeat=int(repeat), rubric_id=rubric,
                        rubric_version="planted", mode="all", items=items)
        )  # fmt: skip
    save_results(store, results)
    for result in pairwise or []:
        save_pairwise(store, result)
    return store


@dataclass
class Report:
    out: Path
    stderr: str
    page: str

    def table(self, name: str) -> pd.DataFrame:
        return pd.read_csv(self.out / f"{name}.csv", keep_default_na=False, na_values=[""])


def cli(data: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "CBTCOMPARE_DATA_DIR": str(data)}
    env.pop("CBTCOMPARE_DB_URL", None)
    return subprocess.run(
        [sys.executable, "-m", "cbtcompare", *args], cwd=REPO_ROOT, env=env, capture_output=True, text=True,
        timeout=1200,
    )  # fmt: skip


def run_report(data: Path, out: Path, *args: str) -> Report:
    done = cli(data, "report", "--out", str(out), *args)
    assert done.returncode == 0, done.stderr
    return Report(out, done.stderr, (out / "index.html").read_text(encoding="utf-8"))


def stored_report(factory: pytest.TempPathFactory, name: str, scores: pd.DataFrame, *args: str, **kw) -> Report:
    folder = factory.mktemp(name)
    store_scores(folder / "data", scores, **kw)
    return run_report(folder / "data", folder / "report", *args)


def row(table: pd.DataFrame, column: str, prefix: str) -> pd.Series:
    chosen = table[table[column].astype(str).str.startswith(prefix)]
    assert len(chosen) == 1, f"expected one {column} row starting {prefix!r}: {table[column].tolist()}"
    return chosen.iloc[0]


# --- 1. patient-level primary analysis -------------------------------------------------------------------

SLOPE_SD = 4.0
N_PATIENTS, N_SESSIONS = 20, 4
CELLS = FAMILIES * N_SESSIONS  # matched session cells behind one patient's mean


@pytest.fixture(scope="module")
def null_report(tmp_path_factory) -> Report:
    scores = make_planted_scores(seed=101, effect=0.0, slope_sd=SLOPE_SD, judges=(JUDGES[0],))
    return stored_report(tmp_path_factory, "null", scores)


@pytest.fixture(scope="module")
def effect_report(tmp_path_factory) -> Report:
    scores = make_planted_scores(seed=102, effect=4.0, slope_sd=SLOPE_SD, judges=(JUDGES[0],))
    return stored_report(tmp_path_factory, "effect", scores)


def test_the_primary_analysis_is_patient_level_under_a_null_with_patient_varying_effects(null_report):
    sd, se = patient_se(N_PATIENTS, CELLS, slope_sd=SLOPE_SD)
    summary = null_report.table("tuned_vs_base")
    primary, secondary = row(summary, "analysis", "primary"), row(summary[summary["measure"] == "total"],
                                                                  "analysis", "secondary")  # fmt: skip
    assert primary["unit"] == "patient" and primary["n_units"] == N_PATIENTS
    assert primary["p_value"] > 0.05 and primary["ci_low"] < 0 < primary["ci_high"]
    assert abs(primary["mean_diff"]) < 3 * se
    # the interval is as wide as the patient-to-patient spread of the effect makes it ...
    half = (primary["ci_high"] - primary["ci_low"]) / 2
    assert 0.7 < half / (sps.t.ppf(0.975, N_PATIENTS - 1) * se) < 1.4
    # ... while the session-cell test, 240 "independent" pairs, claims far more precision than it has
    assert secondary["n_units"] == N_PATIENTS * CELLS
    assert (secondary["ci_high"] - secondary["ci_low"]) / 2 < 0.75 * half
    slope = row(summary, "analysis", "patient level")
    assert slope["ci_low"] < 0 < slope["ci_high"] or not pd.isna(slope["note"])


def test_a_planted_plus_four_is_found_by_the_patient_level_analyses(effect_report):
    _, se = patient_se(N_PATIENTS, CELLS, slope_sd=SLOPE_SD)
    summary = effect_report.table("tuned_vs_base")
    primary = row(summary, "analysis", "primary")
    assert abs(primary["mean_diff"] - 4.0) < 3 * se and primary["ci_low"] > 0 and primary["p_value"] < 0.05
    assert primary["ci_low"] < 4.0 < primary["ci_high"]
    slope = row(summary, "analysis", "patient level")
    assert pd.isna(slope["note"]) and abs(slope["mean_diff"] - 4.0) < 3 * se
    fit = effect_report.table("random_slope").iloc[0]
    assert fit["n_patients"] == N_PATIENTS and fit["slope_variance"] > 0
    page = effect_report.page
    assert page.index("primary (patient level) first") < page.index("Secondary: tuned vs base on session cells")


# --- 2. partial totals ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def partial_report(tmp_path_factory) -> Report:
    null = make_planted_scores(seed=17, effect=0.0, judges=(JUDGES[0],), noise_sd=2.0)
    return stored_report(tmp_path_factory, "partial", knock_out_homework(null, 0.3, "base"))


def test_unscored_homework_in_30_percent_of_base_does_not_bias_the_primary_total(partial_report):
    _, se = patient_se(N_PATIENTS, CELLS, noise_sd=2.0)
    summary = partial_report.table("tuned_vs_base")
    primary = row(summary, "analysis", "primary")
    assert primary["p_value"] > 0.05 and abs(primary["mean_diff"]) < 3 * se
    sensitivity = row(summary, "analysis", "sensitivity")
    assert sensitivity["measure"] == "total_complete" and sensitivity["p_value"] > 0.05
    # the bias that was there to remove: the plain sum of what was scored favours tuned by 30% of the
    # homework score, and significantly so
    totals = partial_report.table("transcript_totals")
    bias = 0.3 * totals.loc[totals["variant"] == "tuned", "homework"].mean()
    cells = totals.pivot_table(index=["family", "patient_id", "session"], columns="variant", values="sum_scored")
    per_patient = (cells["tuned"] - cells["base"]).groupby(level="patient_id").mean()
    assert abs(per_patient.mean() - bias) < 3 * se and sps.ttest_1samp(per_patient, 0).pvalue < 0.05
    arms = partial_report.table("unscored_by_arm").groupby("variant")["unscored_rate"].mean()
    assert arms["base"] == pytest.approx(0.3 / len(CTRS_ITEMS)) and arms["tuned"] == 0
    assert "have a partial total" in partial_report.page and "prorated to the rubric length" in partial_report.page


# --- 3. pairing -------------------------------------------------------------------------------------------


def test_two_base_therapists_in_a_family_are_refused_by_name_and_unmatched_transcripts_counted(tmp_path):
    scores = two_base_models(effect=4.0)  # m-base, m-base-q4 (2 points lower per item), m-tuned = m-base + 4
    missing = scores["transcript_id"].isin([f"m-tuned-p{p:02d}-s4" for p in range(3)])
    scores = scores[~missing]
    store_scores(tmp_path / "data", scores)
    refused = run_report(tmp_path / "data", tmp_path / "refused")
    assert not (refused.out / "tuned_vs_base.csv").exists() and not (refused.out / "paired.csv").exists()
    assert "m-base, m-base-q4" in refused.stderr and "--pair m-base=m-tuned" in refused.stderr
    means = refused.table("descriptive").set_index("therapist")["total_mean"]
    assert means["m-tuned"] - (means["m-base"] + means["m-base-q4"]) / 2 > 12  # what averaging the bases says

    paired = run_report(tmp_path / "data", tmp_path / "paired", "--pair", "m-base=m-tuned")
    _, se = patient_se(16, 4, noise_sd=3.0)
    primary = row(paired.table("tuned_vs_base"), "analysis", "primary")
    assert abs(primary["mean_diff"] - 4.0) < 3 * se and primary["ci_low"] < 4.0 < primary["ci_high"]
    pairing = paired.table("pairing").set_index("control")
    assert pairing.loc["m-base", ["matched_cells", "unmatched_control", "unmatched_treatment"]].tolist() == [61, 3, 0]
    assert pairing.loc["m-base-q4", "unmatched_control"] == 64 and pd.isna(pairing.loc["m-base-q4", "pair"])
    assert "67 base/tuned transcripts have no partner" in paired.stderr


# --- 4. power ---------------------------------------------------------------------------------------------


def test_power_command_agrees_with_statsmodels_for_5_points_and_sd_9(tmp_path):
    needed = {}
    for correlation in ("0.5", "0"):
        done = cli(tmp_path, "power", "--difference", "5", "--sd", "9", "--correlation", correlation, "--json")
        assert done.returncode == 0, done.stderr
        needed[correlation] = json.loads(done.stdout)["plan"]["pairs_needed"]
    assert needed == {"0.5": 28, "0": 53}  # the figures
    assert needed["0.5"] == math.ceil(TTestPower().solve_power(effect_size=5 / 9, alpha=0.05, power=0.8))
    assert needed["0"] == math.ceil(TTestPower().solve_power(effect_size=5 / (9 * math.sqrt(2)), alpha=0.05, power=0.8))


def test_the_reports_power_section_agrees_with_statsmodels_and_a_simulation(effect_report):
    table = effect_report.table("power")
    single, corrected = row(table, "planned_as", "one test"), row(table, "planned_as", "Holm")
    n, sd = int(single["n_patients"]), single["sd_of_patient_differences"]
    assert n == N_PATIENTS and sd == pytest.approx(patient_se(N_PATIENTS, CELLS, slope_sd=SLOPE_SD)[0], rel=0.35)
    solver = TTestPower()
    assert single["power_for_difference"] == pytest.approx(solver.power(effect_size=5 / sd, nobs=n, alpha=0.05))
    assert single["patients_needed"] == math.ceil(solver.solve_power(effect_size=5 / sd, alpha=0.05, power=0.8))
    assert single["minimal_detectable_difference"] == pytest.approx(
        solver.solve_power(nobs=n, alpha=0.05, power=0.8) * sd, rel=1e-3
    )
    tests = FAMILIES * len(CTRS_ITEMS)
    assert corrected["tests"] == tests and corrected["alpha"] == pytest.approx(0.05 / tests)
    assert corrected["patients_needed"] == math.ceil(
        solver.solve_power(effect_size=5 / sd, alpha=0.05 / tests, power=0.8)
    )
    # a simulation of the test itself: n patient differences of SD sd around a true 5
    rng = np.random.default_rng(5)
    draws = rng.normal(5.0, sd, size=(4000, n))
    rate = float((sps.ttest_1samp(draws, 0.0, axis=1).pvalue < 0.05).mean())
    assert rate == pytest.approx(single["power_for_difference"], abs=0.025)


# --- 5. CIs for Cohen's dz and Kendall's W ----------------------------------------------------------------


def test_cohens_dz_and_kendalls_w_come_with_intervals_that_hold_the_truth(effect_report):
    sd, _ = patient_se(N_PATIENTS, CELLS, slope_sd=SLOPE_SD)
    primary = row(effect_report.table("tuned_vs_base"), "analysis", "primary")
    true_dz = 4.0 / sd
    assert primary["dz_ci_low"] < true_dz < primary["dz_ci_high"]
    large_sample_half = 1.96 * math.sqrt(1 / N_PATIENTS + primary["cohens_dz"] ** 2 / (2 * N_PATIENTS))
    assert 0.8 < (primary["dz_ci_high"] - primary["dz_ci_low"]) / 2 / large_sample_half < 1.25
    # Kendall's W over the 6 therapists: its sampling distribution from datasets made the same way
    simulated = []
    for seed in range(200, 212):
        totals = direct_totals(make_planted_scores(seed=seed, effect=4.0, slope_sd=SLOPE_SD, judges=(JUDGES[0],)))
        blocks = totals.pivot_table(index=["patient_id", "session"], columns="therapist", values="total")
        chi2 = sps.friedmanchisquare(*(blocks[c] for c in blocks.columns)).statistic
        simulated.append(chi2 / (len(blocks) * (blocks.shape[1] - 1)))
    friedman = row(effect_report.table("friedman"), "scope", "all models")
    assert friedman["kendalls_w_ci_low"] < float(np.mean(simulated)) < friedman["kendalls_w_ci_high"]
    width, spread = friedman["kendalls_w_ci_high"] - friedman["kendalls_w_ci_low"], 4 * float(np.std(simulated))
    assert 0.4 < width / spread < 2.5


# --- 6-8. ICCs, human vs judge, repeat consistency -------------------------------------------------------

STEADY, LENIENT = "steady-judge", "lenient-noisy-judge"


def two_judges(seed: int, n_patients: int) -> pd.DataFrame:
    """Two judges, 3 repeats each, no tuning effect: the lenient one gives +1 on every item and its repeats
    scatter by up to 2 points per item. No patient effect, so the transcripts are independent targets."""
    scores = make_planted_scores(seed=seed, effect=0.0, n_patients=n_patients, n_sessions=2, patient_sd=0.0,
                                 judges=(STEADY, LENIENT), repeats=3)  # fmt: skip
    lenient = scores["judge"] == LENIENT
    rng = np.random.default_rng(seed)
    scatter = rng.integers(-2, 3, int(lenient.sum()))
    scores.loc[lenient, "score"] = np.clip(scores.loc[lenient, "score"] + 1 + scatter, 1, 10)
    return scores


def human_ratings(scores: pd.DataFrame) -> pd.DataFrame:
    """A human who agrees with the judges' median item by item but sees +1 on 4 items of every tuned session."""
    ratings = scores.groupby(["transcript_id", "item"])["score"].median().reset_index()
    tuned = ratings["transcript_id"].str.contains("-tuned-") & ratings["item"].isin(CTRS_ITEMS[:4])
    ratings.loc[tuned, "score"] = ratings.loc[tuned, "score"] + 1
    return ratings.assign(rater="human-1")


@pytest.fixture(scope="module")
def judges_report(tmp_path_factory) -> Report:
    folder = tmp_path_factory.mktemp("judges")
    scores = two_judges(seed=31, n_patients=10)
    store_scores(folder / "data", scores)
    human_ratings(scores).to_csv(folder / "ratings.csv", index=False)
    return run_report(folder / "data", folder / "report", "--ratings", str(folder / "ratings.csv"))


def per_judge_totals(scores: pd.DataFrame, judge: str, repeat: int | None = None) -> pd.Series:
    chosen = scores[(scores["judge"] == judge) & ((scores["repeat"] == repeat) if repeat is not None else True)]
    return direct_totals(chosen)["total"]


def test_inter_judge_iccs_hold_the_agreement_of_a_large_sample_made_the_same_way(judges_report):
    big = two_judges(seed=32, n_patients=80)
    a, b = per_judge_totals(big, STEADY), per_judge_totals(big, LENIENT)
    covariance = float(np.cov(a, b)[0, 1])
    truth = {
        "ICC(3,1)": float(np.corrcoef(a, b)[0, 1]),  # consistency: the offset does not count
        "ICC(2,1)": 2 * covariance / (a.var() + b.var() + (a.mean() - b.mean()) ** 2),  # absolute agreement
    }
    truth["ICC(2,k)"] = 2 * truth["ICC(2,1)"] / (1 + truth["ICC(2,1)"])
    table = judges_report.table("judge_icc").set_index("icc")
    assert table.loc["ICC(2,1)", "n_targets"] == 10 * 2 * FAMILIES * 2 and table.loc["ICC(2,1)", "k_raters"] == 2
    for name, value in truth.items():
        assert table.loc[name, "ci_low"] < value < table.loc[name, "ci_high"], name
    assert table.loc["ICC(3,1)", "value"] - table.loc["ICC(2,1)", "value"] > 0.1  # the +11 offset costs agreement


def test_repeat_consistency_is_reported_per_judge(judges_report):
    big = two_judges(seed=33, n_patients=60)
    table = judges_report.table("repeat_consistency").set_index("judge")
    for judge in (STEADY, LENIENT):
        repeats = pd.concat([per_judge_totals(big, judge, r) for r in range(3)], axis=1)
        truth = float(np.mean([repeats.corr().iloc[i, j] for i, j in ((0, 1), (0, 2), (1, 2))]))
        standard_error = (table.loc[judge, "ci_high"] - table.loc[judge, "ci_low"]) / (2 * 1.96)
        assert abs(table.loc[judge, "value"] - truth) < 3 * standard_error, judge
        assert table.loc[judge, "icc"] == "ICC(2,1)" and table.loc[judge, "k_raters"] == 3
    assert table.loc[STEADY, "value"] > table.loc[LENIENT, "value"] + 0.1
    assert table.loc[LENIENT, "mean_abs_difference"] > table.loc[STEADY, "mean_abs_difference"] + 3


def test_human_vs_judge_agreement_on_totals_and_on_the_tuned_vs_base_contrast(judges_report):
    table = judges_report.table("human_judge_totals").set_index("comparison")
    totals, contrast = table.loc["totals"], table.loc["tuned - base"]
    assert totals["n"] == 120 and totals["spearman_rho"] > 0.8
    assert totals["mean_difference"] == pytest.approx(-2.0)  # judge - human: -4 on the tuned half
    # the human sees +4 on every tuned session; the judges see none: the contrast is where they part
    assert contrast["n"] == 60 and contrast["human_mean"] - contrast["judge_mean"] == pytest.approx(4.0)
    assert contrast["mean_difference"] == pytest.approx(-4.0) and contrast["sign_agreement"] < 0.9
    per_item = judges_report.table("human_agreement")
    assert set(per_item["item"]) == set(CTRS_ITEMS)


# --- 9. family x variant interaction ----------------------------------------------------------------------


def test_a_family_specific_effect_shows_as_interaction_with_holm_corrected_follow_ups(tmp_path_factory):
    scores = make_planted_scores(seed=3, effect=5.0, judges=(JUDGES[0],), n_patients=12, n_sessions=2)
    boosted = (scores["family"] == "qwen2.5-7b") & (scores["variant"] == "tuned")
    scores.loc[boosted, "score"] = (scores.loc[boosted, "score"] + 1).clip(upper=10)  # +11 on qwen's total only
    report = stored_report(tmp_path_factory, "interaction", scores)
    table = report.table("interaction").set_index("family")
    _, se = patient_se(12, 2)
    assert table["p_interaction"].iloc[0] < 0.01 and table["interaction_df"].iloc[0] == FAMILIES - 1
    assert abs(table.loc["qwen2.5-7b", "mean_diff"] - 16.0) < 3 * se
    for family in ("llama3.1-8b", "mistral-7b"):
        assert abs(table.loc[family, "mean_diff"] - 5.0) < 3 * se
    assert np.allclose(table["p_t_holm"], multipletests(table["p_t"], method="holm")[1])


# --- 10. judge bias by manipulation -----------------------------------------------------------------------


def pairwise(judge: str, pairs: list[tuple[str, str]], ab: str, ba: str) -> list[PairwiseResult]:
    """Verdicts of one judge on (A, B) transcript pairs: side `ab` when asked A first, `ba` when B first."""
    outcome = ab if ab == ba else "inconsistent"
    answers = [PairwiseAnswer(order="AB", side=ab), PairwiseAnswer(order="BA", side=ba)]
    items = {item: PairwiseItem(item=item, outcome=outcome, answers=answers) for item in CTRS_ITEMS}
    return [
        PairwiseResult(transcript_a=a, transcript_b=b, judge=judge, rubric_id="ctrs-paper-1-10",
                       rubric_version="planted", mode="all", items=items)
        for a, b in pairs
    ]  # fmt: skip


def test_judge_bias_is_measured_by_manipulation_per_judge_with_cis(tmp_path):
    from test_bias import CONFIG, ScriptedCTRSJudge, session

    from cbtcompare.ctrs import load_rubric
    from cbtcompare.ctrs.bias import filler_exchanges, length_bias_by_padding

    # self-preference: the llama judge is lenient (+1 on every item, everyone) and adds +1 more per item to
    # llama therapists: relative to its own scores of other families that is +11, not the raw +22
    scores = make_planted_scores(seed=41, n_patients=6, n_sessions=2, self_bias=1.0)
    llama_judge = scores["judge"] == JUDGES[1]
    scores.loc[llama_judge, "score"] = np.clip(scores.loc[llama_judge, "score"] + 1, 1, 10)
    # position: one judge picks whichever transcript is shown first, the other always the tuned one (B)
    # (half the pairs show the tuned transcript as A)
    ids = sorted(t for t in scores["transcript_id"].unique() if "-base-" in t)
    pairs = [(t, t.replace("-base-", "-tuned-"))[:: 1 if k % 2 else -1] for k, t in enumerate(ids)]
    verdicts = pairwise("first-position-judge", pairs, "A", "B")
    for a, b in pairs:
        tuned_side = "A" if "-tuned-" in a else "B"
        verdicts += pairwise("steady-pair-judge", [(a, b)], tuned_side, tuned_side)
    # length: a scripted judge that gives +2 per item when it sees the neutral filler, and one that does not
    filler = filler_exchanges()[0][0]
    biased = ScriptedCTRSJudge("padding-lover", score_of=lambda prompt: 7 if filler in prompt else 5)
    fair = ScriptedCTRSJudge("padding-blind", score_of=lambda prompt: 5)
    sessions = [session(f"s{k}") for k in range(6)]
    _, padding = length_bias_by_padding([biased, fair], sessions, load_rubric("paper"), CONFIG)
    padding.to_csv(tmp_path / "padding.csv", index=False)

    store_scores(tmp_path / "data", scores, pairwise=verdicts)
    report = run_report(tmp_path / "data", tmp_path / "report", "--padding-bias", str(tmp_path / "padding.csv"))

    relative = report.table("relative_self_preference").set_index("judge").loc[JUDGES[1]]
    assert relative["own_family"] == "llama3.1-8b" and relative["ci_low"] < 11.0 < relative["ci_high"]
    assert relative["ci_high"] < 16.5 and relative["leniency"] == pytest.approx(5.5, abs=1.5)
    raw = report.table("self_preference").set_index(["judge", "family"]).loc[(JUDGES[1], "llama3.1-8b")]
    assert raw["difference"] > 18  # the raw comparison adds leniency to self-preference

    position = report.table("position_bias").set_index("judge")
    assert position.loc["first-position-judge", ["flip_rate", "first_rate"]].tolist() == [1.0, 1.0]
    assert position.loc["first-position-judge", "p_first"] < 1e-6
    steady = position.loc["steady-pair-judge"]
    assert steady["flip_rate"] == 0.0 and steady["first_rate"] == 0.5
    assert steady["flip_ci_high"] < 0.05  # 36 pairs x 11 items, no flip

    length = report.table("length_bias_padding").set_index("judge")
    assert length.loc["padding-lover", "mean"] == 22.0 and length.loc["padding-blind", "mean"] == 0.0

    # the pairwise verdicts also give an arena leaderboard: the steady judge always preferred tuned
    board = report.table("arena_judges").set_index("model")["rating"]
    for family in ("llama3.1-8b", "qwen2.5-7b", "mistral-7b"):
        assert board[f"{family}-tuned"] > board[f"{family}-base"]
    flags = report.table("arena_judge_raters").set_index("rater")["flags"]
    assert "mostly_ties" in flags["first-position-judge"] and pd.isna(flags["steady-pair-judge"])
    section = report.page.split("<h2>Judge bias, measured by manipulation</h2>")[1].split("<h2>")[0]
    for name in ("position_bias", "relative_self_preference", "length_bias_padding"):
        assert f'href="{name}.csv"' in section


# --- 11. the arena ------------------------------------------------------------------------------------------

TRUE_RATINGS = {"alpha": 1100.0, "beta": 1000.0, "gamma": 900.0}
TIE_SHARE = 0.4


def planted_votes(rng: np.random.Generator, rater: str, n: int) -> list[dict[str, str]]:
    """Bradley-Terry votes at TRUE_RATINGS; a share TIE_SHARE of votes, at random, is a tie."""
    models = list(TRUE_RATINGS)
    votes = []
    for _ in range(n):
        a, b = rng.choice(models, 2, replace=False)
        p_a = 1 / (1 + 10 ** ((TRUE_RATINGS[b] - TRUE_RATINGS[a]) / 400))
        winner = "tie" if rng.random() < TIE_SHARE else ("a" if rng.random() < p_a else "b")
        votes.append({"model_a": a, "model_b": b, "winner": winner, "rater": rater})
    return votes


def expected_ratings() -> dict[str, float]:
    """What ties as half a win to each side should give in expectation: a pair's win share becomes
    (1 - t) p + t / 2. With every pair equally often, beta stays in the middle and alpha = 1000 + x where
    x solves alpha's likelihood equation, share(alpha, beta) + share(alpha, gamma) = P(x) + P(2x)."""

    def p(gap: float) -> float:
        return 1 / (1 + 10 ** (-gap / 400))

    def share(gap: float) -> float:
        return (1 - TIE_SHARE) * p(gap) + TIE_SHARE / 2

    x = brentq(lambda x: p(x) + p(2 * x) - share(100.0) - share(200.0), 0.0, 400.0)
    return {"alpha": 1000 + x, "beta": 1000.0, "gamma": 1000 - x}


def test_the_arena_command_fits_bradley_terry_with_ties_as_half_wins_and_flags_raters(tmp_path):
    rng = np.random.default_rng(7)
    honest = [v for r in ("r1", "r2", "r3") for v in planted_votes(rng, r, 500)]
    path = tmp_path / "votes.csv"
    pd.DataFrame(honest).to_csv(path, index=False)
    done = cli(tmp_path, "arena", "--preferences", str(path), "--json")
    assert done.returncode == 0, done.stderr
    ratings = {r["model"]: r for r in json.loads(done.stdout)["ratings"]}
    assert list(ratings) == ["alpha", "beta", "gamma"]
    for model, value in expected_ratings().items():
        assert ratings[model]["ci_low"] < value < ratings[model]["ci_high"], model
        assert ratings[model]["n"] == sum(model in (v["model_a"], v["model_b"]) for v in honest)
    dropped_ties = 100.0  # what ignoring the ties would estimate for alpha - beta
    assert ratings["alpha"]["ci_high"] - 1000 < dropped_ties

    clicker = [{**v, "winner": "a", "rater": "clicker"} for v in planted_votes(rng, "x", 40)]
    contrarian = [
        {**v, "winner": "a" if TRUE_RATINGS[v["model_a"]] < TRUE_RATINGS[v["model_b"]] else "b", "rater": "contrarian"}
        for v in planted_votes(rng, "x", 40)
    ]
    pd.DataFrame(honest + clicker + contrarian).to_csv(path, index=False)
    done = cli(tmp_path, "arena", "--preferences", str(path), "--json")
    flags = {r["rater"]: r["flags"] for r in json.loads(done.stdout)["raters"]}
    assert flags == {"r1": "", "r2": "", "r3": "", "clicker": "one_side", "contrarian": "against_consensus"}


# --- 12. Part I / Part II subtotals of the classic CTRS ----------------------------------------------------


def test_classic_ctrs_part_subtotals_find_an_effect_planted_in_part_ii_only(tmp_path_factory):
    scores = make_planted_scores(seed=12, n_patients=20, n_sessions=2, judges=(JUDGES[0],), effect=0.0)
    scores["score"] = np.clip(scores["score"] - 2, 0, 5)  # on the classic 0-6 scale, room for +1
    part_two = list(CTRS_ITEMS[6:])
    tuned = (scores["variant"] == "tuned") & scores["item"].isin(part_two)
    scores.loc[tuned, "score"] = scores.loc[tuned, "score"] + 1  # +5 on Part II, nothing on Part I
    report = stored_report(tmp_path_factory, "classic", scores.assign(rubric_id="ctrs-classic-0-6"))
    parts = report.table("part_subtotals").set_index(["therapist"])
    # Part II's subtotal: 5 items sharing 5/11 of the session noise, 40 transcripts per arm
    se = math.sqrt(2 * ((5 / 11) ** 2 * 36 + 5 * ITEM_NOISE) / 40)
    for family in ("llama3.1-8b", "qwen2.5-7b", "mistral-7b"):
        tuned_row, base_row = parts.loc[f"{family}-tuned"], parts.loc[f"{family}-base"]
        assert abs(tuned_row["part_II_mean"] - base_row["part_II_mean"] - 5.0) < 3 * se
        assert abs(tuned_row["part_I_mean"] - base_row["part_I_mean"]) < 3 * se * math.sqrt(6 / 5)
    assert report.table("transcript_totals")["total"].max() <= 66
    named = report.table("rubric_parts").set_index("part")
    assert named.loc["I", "items"] == ", ".join(CTRS_ITEMS[:6]) and named.loc["II", "items"] == ", ".join(part_two)
    assert "General therapeutic skills (items 1-6)" in report.page


# --- 13. conventions, and a degenerate fit withheld --------------------------------------------------------


def test_the_page_states_its_conventions_and_withholds_a_degenerate_estimate(tmp_path_factory):
    # every patient gains exactly +1 per item: no spread of the tuning effect, the slope variance is zero
    base = make_planted_scores(seed=9, n_patients=8, n_sessions=2, judges=(JUDGES[0],))
    base = base[base["variant"] == "base"]
    tuned = base.assign(
        variant="tuned",
        therapist=base["therapist"].str.replace("-base", "-tuned"),
        transcript_id=base["transcript_id"].str.replace("-base-", "-tuned-"),
        score=(base["score"] + 1).clip(upper=10),
    )
    report = stored_report(tmp_path_factory, "degenerate", pd.concat([base, tuned], ignore_index=True))
    fit = report.table("random_slope").iloc[0]
    assert fit["withheld"] and pd.isna(fit["estimate"]) and pd.isna(fit["p_lrt"])
    assert "Random-slope model: estimate withheld" in report.page
    for convention in ("zero differences are dropped", "Wald tests and CIs come from REML fits",
                       "refit both models by ML", "estimate withheld"):  # fmt: skip
        assert convention in report.page
    tables = "".join(re.findall(r"<table.*?</table>", report.page, flags=re.DOTALL))
    assert "p_t" in tables and not re.search(r"\d[eE]-\d", tables)  # no number in scientific notation
