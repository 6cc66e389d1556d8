"""cbtcompare.stats on synthetic scores with planted effects, each statistic checked against a direct
scipy / statsmodels / krippendorff call on the same numbers. All data here is synthetic."""

from __future__ import annotations

import math
import warnings
from pathlib import Path

import krippendorff
import numpy as np
import pandas as pd
import pytest
import statsmodels.formula.api as smf
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats as sps
from statsmodels.stats.multitest import multipletests

from cbtcompare import stats
from cbtcompare.stats import CTRS_ITEMS, AnalysisError, ScoresSchemaError

# Planted truth: family offsets on the total (llama ahead, as in the paper), tuned = base + 11 points.
FAMILY_EFFECTS = {"llama3.1-8b": 3.7, "qwen2.5-7b": 0.0, "mistral-7b": -0.1}
PLANTED_EFFECT = 11.0
ITEM_OFFSETS = np.linspace(-1.0, 1.0, len(CTRS_ITEMS))
JUDGES = ("gemini-1.5-pro", "llama3.1-70b-judge")
SEED = 2412
META = ["therapist", "family", "variant", "patient_id", "session"]


def make_planted_scores(
    seed: int = SEED,
    n_patients: int = 20,
    n_sessions: int = 4,
    judges: tuple[str, ...] = JUDGES,
    repeats: int = 1,
    self_bias: float = 0.0,
    noise_sd: float = 6.0,
    patient_sd: float = 4.0,
    effect: float = PLANTED_EFFECT,
    slope_sd: float = 0.0,
    families: dict[str, float] | None = None,
) -> pd.DataFrame:
    """Three families x base/tuned x patients x sessions; total ~ 50 + family + patient + 0.5*session
    + (effect + patient's own deviation, SD slope_sd)*tuned + N(0, noise_sd), spread over the 11 items
    (1-10, rounded), seen by each judge with its own noise; a judge of the same family adds `self_bias` per
    item. Tokens grow with the latent total."""
    rng = np.random.default_rng(seed)
    patient_effect = rng.normal(0, patient_sd, n_patients)
    patient_slope = rng.normal(0, slope_sd, n_patients) if slope_sd > 0 else np.zeros(n_patients)
    centre = (n_sessions + 1) / 2
    rows = []
    for family, family_effect in (families or FAMILY_EFFECTS).items():
        for patient in range(n_patients):
            for session in range(1, n_sessions + 1):
                for variant in ("base", "tuned"):
                    latent = (
                        50
                        + family_effect
                        + patient_effect[patient]
                        + 0.5 * (session - centre)
                        + ((effect + patient_slope[patient]) if variant == "tuned" else 0.0)
                        + rng.normal(0, noise_sd)
                    )
                    item_latent = latent / len(CTRS_ITEMS) + ITEM_OFFSETS + rng.normal(0, 0.8, len(CTRS_ITEMS))
                    tokens = round(2000 + 30 * latent + rng.normal(0, 300))
                    for judge in judges:
                        view = item_latent + rng.normal(0, 0.5, len(CTRS_ITEMS))
                        if stats.same_family(judge, family):
                            view = view + self_bias
                        for repeat in range(repeats):
                            values = np.clip(np.rint(view + rng.normal(0, 0.3, len(CTRS_ITEMS))), 1, 10)
                            for item, value in zip(CTRS_ITEMS, values, strict=True):
                                rows.append(
                                    {
                                        "transcript_id": f"{family}-{variant}-p{patient:02d}-s{session}",
                                        "therapist": f"{family}-{variant}",
                                        "family": family,
                                        "variant": variant,
                                        "patient_id": f"p{patient:02d}",
                                        "session": session,
                                        "judge": judge,
                                        "repeat": repeat,
                                        "item": item,
                                        "score": float(value),
                                        "status": "scored",
                                        "transcript_tokens": tokens,
                                    }
                                )
    return pd.DataFrame(rows)


def direct_totals(scores: pd.DataFrame) -> pd.DataFrame:
    """The oracle for aggregation: item medians over all scored rows, total = their sum."""
    scored = scores[scores["status"] == "scored"]
    items = scored.groupby(["transcript_id", "item"])["score"].median().unstack()
    meta = scores.groupby("transcript_id")[META].first()
    return meta.join(items).assign(total=items.sum(axis=1))


def small_frame(rows: list[tuple[str, str, str, float | None, str]], **meta: object) -> pd.DataFrame:
    """Rows of (transcript_id, judge, item, score, status) with fixed metadata, repeat 0."""
    base = {"therapist": "m-base", "family": "m", "variant": "base", "patient_id": "p1", "session": 1, "repeat": 0}
    base.update(meta)
    return pd.DataFrame(
        [
            {**base, "transcript_id": t, "judge": j, "item": i, "score": np.nan if s is None else s, "status": st}
            for t, j, i, s, st in rows
        ]
    )


@pytest.fixture(scope="module")
def planted() -> pd.DataFrame:
    return make_planted_scores()


@pytest.fixture(scope="module")
def oracle(planted: pd.DataFrame) -> pd.DataFrame:
    return direct_totals(planted)


# --- schema ---------------------------------------------------------------------------------------------


def test_validate_keeps_every_row_and_normalises_types(planted):
    shuffled = planted.sample(frac=1.0, random_state=1)
    shuffled["variant"] = shuffled["variant"].str.upper()
    shuffled["session"] = shuffled["session"].astype(str)
    checked = stats.validate_scores(shuffled)
    assert len(checked) == len(planted)
    assert checked["session"].dtype == np.int64
    assert checked["score"].dtype == float
    assert set(checked["variant"]) == {"base", "tuned"}
    assert "transcript_tokens" in checked.columns


def test_missing_column_is_named(planted):
    with pytest.raises(ScoresSchemaError, match="missing column\\(s\\) judge, status"):
        stats.validate_scores(planted.drop(columns=["judge", "status"]))


@pytest.mark.parametrize(
    ("column", "value", "fragment"),
    [
        ("variant", "finetuned", "column 'variant' has 'finetuned' at row 3; allowed: base, tuned, prompted"),
        ("item", "empathy", "column 'item' has 'empathy' at row 3"),
        ("status", "failed", "column 'status' has 'failed' at row 3"),
        ("session", "two", "column 'session' has 'two' at row 3: not a number"),
        ("session", 1.5, "column 'session' needs a whole number, got 1.5 at row 3"),
        ("score", "high", "column 'score' has 'high' at row 3"),
        ("score", 11.0, "row 3 .*outside 0-10"),
        ("score", np.nan, "row 3 .*status is 'scored' but the score is empty"),
        ("family", "  ", "column 'family' is empty at row 3"),
    ],
)
def test_bad_value_names_column_row_and_value(planted, column, value, fragment):
    bad = planted.head(12).astype({column: object}).copy()
    bad.loc[3, column] = value
    with pytest.raises(ScoresSchemaError, match=fragment):
        stats.validate_scores(bad)


def test_unscored_item_must_not_carry_a_number(planted):
    bad = planted.head(12).copy()
    bad.loc[5, "status"] = "unscored"
    with pytest.raises(ScoresSchemaError, match="row 5 .*must not carry a score"):
        stats.validate_scores(bad)


def test_duplicate_and_inconsistent_rows_are_refused(planted):
    with pytest.raises(ScoresSchemaError, match="duplicate score at row 12"):
        stats.validate_scores(pd.concat([planted.head(12), planted.head(1)]))
    mixed = planted.head(12).copy()
    mixed.loc[4, "variant"] = "tuned"
    with pytest.raises(ScoresSchemaError, match="several values of 'variant' \\(base, tuned\\)"):
        stats.validate_scores(mixed)


def test_empty_table_is_refused(planted):
    with pytest.raises(ScoresSchemaError, match="no rows"):
        stats.validate_scores(planted.head(0))


def test_csv_round_trip_keeps_n_a_status(tmp_path, planted):
    frame = planted.head(22).copy()
    frame.loc[3, ["status", "score"]] = ["n/a", np.nan]
    frame.loc[4, ["status", "score"]] = ["unscored", np.nan]
    path = tmp_path / "scores.csv"
    frame.to_csv(path, index=False)
    loaded = stats.load_scores_csv(path)
    assert loaded["status"].tolist() == frame["status"].tolist()
    assert np.allclose(loaded["score"].to_numpy(), frame["score"].to_numpy(), equal_nan=True)
    assert loaded["session"].tolist() == frame["session"].tolist()
    assert loaded["patient_id"].tolist() == frame["patient_id"].tolist()


def test_csv_errors_name_file_and_line(tmp_path, planted):
    path = tmp_path / "scores.csv"
    frame = planted.head(22).astype({"variant": object}).copy()
    frame.loc[3, "variant"] = "finetuned"  # data row 3 is file line 5 (header is line 1)
    frame.to_csv(path, index=False)
    with pytest.raises(ScoresSchemaError, match=f"{path}: column 'variant' has 'finetuned' at line 5"):
        stats.load_scores_csv(path)
    planted.head(5).drop(columns=["item"]).to_csv(path, index=False)
    with pytest.raises(ScoresSchemaError, match="missing column\\(s\\) item"):
        stats.load_scores_csv(path)
    path.write_text("")
    with pytest.raises(ScoresSchemaError, match="the file is empty"):
        stats.load_scores_csv(path)
    with pytest.raises(FileNotFoundError, match="scores file not found"):
        stats.load_scores_csv(tmp_path / "absent.csv")


# --- aggregation and partial totals ---------------------------------------------------------------------


def test_item_is_the_median_over_judges_and_repeats():
    rows = [("t1", "j1", item, 5.0, "scored") for item in CTRS_ITEMS]
    frame = small_frame(rows)
    extra = small_frame([("t1", "j1", "agenda", 9.0, "scored"), ("t1", "j2", "agenda", 4.0, "scored")])
    extra["repeat"] = [1, 0]
    frame = pd.concat([frame, extra], ignore_index=True)
    totals = stats.transcript_totals(frame).set_index("transcript_id")
    assert totals.loc["t1", "agenda"] == np.median([5.0, 9.0, 4.0]) == 5.0
    assert totals.loc["t1", "total"] == 55.0
    assert not totals.loc["t1", "partial"]


def test_partial_totals_are_kept_flagged_and_never_filled():
    complete = [("a", "j1", item, 6.0, "scored") for item in CTRS_ITEMS]
    partial = [("b", "j1", item, 7.0, "scored") for item in CTRS_ITEMS if item not in ("agenda", "homework")]
    partial += [
        ("b", "j1", "agenda", None, "unscored"),
        ("b", "j2", "agenda", 3.0, "scored"),  # another judge scored it: the item counts
        ("b", "j1", "homework", None, "unscored"),
        ("b", "j2", "homework", None, "n/a"),
    ]
    frame = small_frame(complete + partial)
    totals = stats.transcript_totals(frame).set_index("transcript_id")
    assert totals.loc["a", "total"] == 66.0 and not totals.loc["a", "partial"]
    assert math.isnan(totals.loc["b", "homework"])
    assert totals.loc["b", "agenda"] == 3.0
    scored_b = [7.0] * 9 + [3.0]
    assert totals.loc["b", "sum_scored"] == sum(scored_b)
    assert totals.loc["b", "total"] == pytest.approx(np.mean(scored_b) * len(CTRS_ITEMS))  # prorated
    assert math.isnan(totals.loc["b", "total_complete"]) and totals.loc["a", "total_complete"] == 66.0
    assert totals.loc["b", "scored_items"] == 10 and totals.loc["b", "partial"]
    table = stats.descriptive_table(frame).iloc[0]
    assert (table["n"], table["partial"], table["unscored_items"]) == (2, 1, 1)
    assert table["unscored_rate"] == pytest.approx(1 / (2 * len(CTRS_ITEMS)))
    assert table["total_mean"] == pytest.approx((66.0 + np.mean(scored_b) * len(CTRS_ITEMS)) / 2)
    assert table["total_complete_mean"] == 66.0 and table["total_complete_n"] == 1
    assert table["homework_mean"] == 6.0  # the mean over transcripts that scored it, not a filled value


def test_a_transcript_with_no_scored_item_has_no_total():
    frame = small_frame([("z", "j1", item, None, "unscored") for item in CTRS_ITEMS])
    totals = stats.transcript_totals(frame)
    assert math.isnan(totals.loc[0, "total"]) and totals.loc[0, "scored_items"] == 0


# --- the paper's table ----------------------------------------------------------------------------------


def test_descriptive_table_matches_pandas_and_recovers_the_planted_effect(planted, oracle):
    table = stats.descriptive_table(planted).set_index("therapist")
    assert list(table.index) == sorted(oracle["therapist"].unique())
    for therapist, group in oracle.groupby("therapist"):
        row = table.loc[therapist]
        assert row["n"] == len(group) == 80
        assert row["partial"] == 0 and row["unscored_items"] == 0
        assert row["total_mean"] == pytest.approx(group["total"].mean())
        assert row["total_sd"] == pytest.approx(group["total"].std(ddof=1))
        for item in CTRS_ITEMS:
            assert row[f"{item}_mean"] == pytest.approx(group[item].mean())
            assert row[f"{item}_sd"] == pytest.approx(group[item].std(ddof=1))
    for family in FAMILY_EFFECTS:
        tuned, base = table.loc[f"{family}-tuned"], table.loc[f"{family}-base"]
        se = math.sqrt(tuned["total_sd"] ** 2 / tuned["n"] + base["total_sd"] ** 2 / base["n"])
        assert abs(tuned["total_mean"] - base["total_mean"] - PLANTED_EFFECT) < 3 * se
    assert 6 < table["total_sd"].mean() < 10  # the planted spread is about 8 points


def test_item_means_ci_matches_scipy(planted, oracle):
    means = stats.item_means(planted)
    row = means[(means["therapist"] == "qwen2.5-7b-tuned") & (means["measure"] == "pacing")].iloc[0]
    values = oracle.loc[oracle["therapist"] == "qwen2.5-7b-tuned", "pacing"]
    low, high = sps.t.interval(0.95, len(values) - 1, loc=values.mean(), scale=sps.sem(values))
    assert (row["n"], row["mean"]) == (80, pytest.approx(values.mean()))
    assert (row["ci_low"], row["ci_high"]) == (pytest.approx(low), pytest.approx(high))


# --- paired tuned vs base -------------------------------------------------------------------------------


def _direct_pairs(oracle: pd.DataFrame, measure: str) -> pd.DataFrame:
    wide = oracle.pivot_table(index=["family", "patient_id", "session"], columns="variant", values=measure)
    return wide.dropna()


def test_paired_statistics_match_scipy(planted, oracle):
    result = stats.paired_comparison(planted).set_index("measure")
    for measure in (*CTRS_ITEMS, "total"):
        pairs = _direct_pairs(oracle, measure)
        diff = pairs["tuned"] - pairs["base"]
        t = sps.ttest_rel(pairs["tuned"], pairs["base"])
        w = sps.wilcoxon(pairs["tuned"], pairs["base"])
        row = result.loc[measure]
        assert row["n_pairs"] == len(pairs) == 240
        assert row["mean_diff"] == pytest.approx(diff.mean())
        assert (row["t"], row["p_t"]) == (pytest.approx(t.statistic), pytest.approx(t.pvalue, rel=1e-9, abs=1e-300))
        interval = t.confidence_interval(0.95)
        assert (row["ci_low"], row["ci_high"]) == (pytest.approx(interval.low), pytest.approx(interval.high))
        assert row["wilcoxon_w"] == pytest.approx(w.statistic)
        assert row["p_wilcoxon"] == pytest.approx(w.pvalue, rel=1e-9, abs=1e-300)
        assert row["cohens_dz"] == pytest.approx(diff.mean() / diff.std(ddof=1))
    items = result.loc[list(CTRS_ITEMS)]
    assert np.allclose(items["p_t_holm"], multipletests(items["p_t"], method="holm")[1], rtol=1e-9, atol=0)
    assert np.allclose(items["p_wilcoxon_holm"], multipletests(items["p_wilcoxon"], method="holm")[1])
    assert math.isnan(result.loc["total", "p_t_holm"]) and result.loc["total", "partial_pairs"] == 0


@pytest.mark.parametrize("seed", range(6))
def test_small_sample_wilcoxon_matches_scipy(seed):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(5, 14))
    diff = rng.integers(-3, 6, n).astype(float)  # integer scores: ties and zeros, scipy's slow exact branch
    statistic, p_value = stats.wilcoxon_signed_rank(diff)
    direct = sps.wilcoxon(diff)
    assert statistic == pytest.approx(direct.statistic) and p_value == pytest.approx(direct.pvalue, rel=1e-12)


def test_holm_and_bonferroni_match_statsmodels():
    rng = np.random.default_rng(3)
    p = rng.uniform(0, 0.2, 11)
    p[4] = p[2]  # a tie
    assert np.allclose(stats.holm_adjust(p), multipletests(p, method="holm")[1])
    assert np.allclose(stats.bonferroni_adjust(p), multipletests(p, method="bonferroni")[1])
    adjusted = stats.holm_adjust(np.r_[p[:5], np.nan])
    assert np.isnan(adjusted[-1]) and np.allclose(adjusted[:5], multipletests(p[:5], method="holm")[1])


def test_paired_comparison_recovers_the_planted_effect(planted):
    result = stats.paired_comparison(planted).set_index("measure")
    total = result.loc["total"]
    assert total["ci_low"] < PLANTED_EFFECT < total["ci_high"]
    assert total["p_t"] < 1e-6 and total["p_wilcoxon"] < 1e-6 and total["cohens_dz"] > 0.8
    items = result.loc[list(CTRS_ITEMS)]
    planted_per_item = PLANTED_EFFECT / len(CTRS_ITEMS)
    assert (items["mean_diff"] - planted_per_item).abs().max() < 0.4  # about 4 standard errors
    assert (items["p_t_holm"] < 1e-3).all()


def test_paired_by_family_equals_the_analysis_of_each_family_alone(planted):
    by_family = stats.paired_comparison(planted, by="family")
    for family in FAMILY_EFFECTS:
        alone = stats.paired_comparison(planted[planted["family"] == family]).set_index("measure")
        mine = by_family[by_family["family"] == family].set_index("measure")
        assert np.allclose(mine["mean_diff"], alone["mean_diff"])
        assert np.allclose(mine["p_t_holm"].iloc[:11], alone["p_t_holm"].iloc[:11])
        assert abs(mine.loc["total", "mean_diff"] - PLANTED_EFFECT) < 4.0  # SE per family is about 1


def test_pairs_with_a_partial_side_are_counted_and_missing_items_dropped(planted):
    frame = planted.copy()
    knock_out = (frame["transcript_id"] == "qwen2.5-7b-tuned-p03-s2") & (frame["item"] == "homework")
    frame.loc[knock_out, ["status", "score"]] = ["unscored", np.nan]
    result = stats.paired_comparison(frame).set_index("measure")
    assert result.loc["homework", "n_pairs"] == 239 and result.loc["homework", "dropped_pairs"] == 1
    assert result.loc["agenda", "n_pairs"] == 240
    assert result.loc["total", "partial_pairs"] == 1 and result.loc["total", "n_pairs"] == 240


def test_pairing_needs_both_variants(planted):
    with pytest.raises(AnalysisError, match="no transcripts with variant 'tuned'"):
        stats.paired_comparison(planted[planted["variant"] == "base"])


# --- the paper's mixed model ----------------------------------------------------------------------------


def test_mixed_model_matches_statsmodels_and_recovers_the_planted_effects(planted, oracle):
    result = stats.mixed_model(planted)
    assert result.formula == "total ~ C(family) + C(variant) + session_centred"
    data = oracle.reset_index()
    data["session_centred"] = data["session"] - data["session"].mean()
    direct = smf.mixedlm(result.formula, data, groups=data["patient_id"]).fit(reml=True)
    effects = result.fixed_effects.set_index("term")
    assert list(effects.index) == list(direct.fe_params.index)
    assert np.allclose(effects["estimate"], direct.fe_params, rtol=1e-6)
    assert np.allclose(effects["std_error"], direct.bse_fe, rtol=1e-6)
    assert np.allclose(effects["p_value"], direct.pvalues[effects.index], rtol=1e-6, atol=1e-300)
    assert np.allclose(effects[["ci_low", "ci_high"]], direct.conf_int().loc[effects.index], rtol=1e-6)
    tested = effects.drop(index="Intercept")
    assert np.allclose(tested["p_bonferroni"], np.minimum(1.0, tested["p_value"] * len(tested)))
    assert math.isnan(effects.loc["Intercept", "p_bonferroni"])
    assert result.group_variance == pytest.approx(float(direct.cov_re.iloc[0, 0]), rel=1e-6)
    assert (result.n_observations, result.n_patients, result.converged) == (480, 20, True)
    assert result.reference_levels == {"family": "llama3.1-8b", "variant": "base"}

    variant = effects.loc["C(variant)[T.tuned]"]
    assert variant["ci_low"] < PLANTED_EFFECT < variant["ci_high"] and variant["p_bonferroni"] < 1e-6
    for family, term in (("mistral-7b", "C(family)[T.mistral-7b]"), ("qwen2.5-7b", "C(family)[T.qwen2.5-7b]")):
        planted_difference = FAMILY_EFFECTS[family] - FAMILY_EFFECTS["llama3.1-8b"]
        assert effects.loc[term, "ci_low"] < planted_difference < effects.loc[term, "ci_high"]
    assert effects.loc["C(variant)[T.tuned]", "label"] == "variant: tuned vs base"
    assert result.group_variance > 0


def test_mixed_model_returns_the_fit_warnings_statsmodels_raises():
    scores = make_planted_scores(seed=0, n_patients=5, n_sessions=2, judges=("j",), patient_sd=0.0)
    result = stats.mixed_model(scores)
    data = direct_totals(scores).reset_index()
    data["session_centred"] = data["session"] - data["session"].mean()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        direct = smf.mixedlm(result.formula, data, groups=data["patient_id"]).fit(reml=True)
    expected = {f"{w.category.__name__}: {w.message}" for w in caught}
    assert expected and expected <= set(result.warnings)
    assert any(w.startswith("ConvergenceWarning") for w in result.warnings)
    # statsmodels 0.15 retries with lbfgs and may then converge: the flag follows statsmodels' own
    assert result.converged == direct.converged
    assert ("the optimiser reports that the fit did not converge" in result.warnings) == (not direct.converged)


def test_mixed_model_leaves_out_a_single_level_factor_and_says_so(planted):
    result = stats.mixed_model(planted[planted["family"] == "qwen2.5-7b"])
    assert result.formula == "total ~ C(variant) + session_centred"
    assert "C(family) left out of the model: only one level (qwen2.5-7b)" in result.warnings


# --- between models and judges --------------------------------------------------------------------------


def test_friedman_matches_scipy(planted, oracle):
    result = stats.friedman_test(planted, variant="tuned")
    tuned = oracle[oracle["variant"] == "tuned"]
    table = tuned.pivot_table(index=["patient_id", "session"], columns="therapist", values="total")
    direct = sps.friedmanchisquare(*(table[column] for column in table.columns))
    assert result.therapists == tuple(table.columns)
    assert (result.statistic, result.p_value) == (pytest.approx(direct.statistic), pytest.approx(direct.pvalue))
    assert result.n_blocks == 80 and result.dropped_blocks == 0
    assert result.kendalls_w == pytest.approx(direct.statistic / (80 * 2))
    ranks = result.mean_ranks.set_index("therapist")["mean_rank"]
    assert np.allclose(ranks, table.rank(axis=1).mean())
    item = stats.friedman_test(planted, measure="agenda", variant="base")
    base = oracle[oracle["variant"] == "base"]
    base = base.pivot_table(index=["patient_id", "session"], columns="therapist", values="agenda")
    assert item.statistic == pytest.approx(sps.friedmanchisquare(*(base[c] for c in base.columns)).statistic)


def test_friedman_drops_incomplete_blocks_and_needs_three_models(planted):
    missing = planted[~planted["transcript_id"].isin(["mistral-7b-tuned-p05-s1", "qwen2.5-7b-tuned-p06-s3"])]
    result = stats.friedman_test(missing, variant="tuned")
    assert (result.n_blocks, result.dropped_blocks) == (78, 2)
    two = stats.friedman_test(planted[planted["family"] == "qwen2.5-7b"])
    assert math.isnan(two.statistic) and "at least 3 therapists" in two.note


def test_inter_judge_alpha_matches_krippendorff(planted):
    table = stats.inter_judge_alpha(planted).set_index("item")
    for item in ("agenda", "homework"):
        rows = planted[planted["item"] == item]
        matrix = rows.pivot_table(index="judge", columns="transcript_id", values="score").to_numpy()
        direct = krippendorff.alpha(reliability_data=matrix, level_of_measurement="ordinal")
        assert table.loc[item, "alpha"] == pytest.approx(direct)
    assert (table["n_judges"] == 2).all() and (table["n_units"] == 480).all()
    assert (table["alpha"] > 0.5).all()  # the two planted judges see the same latent scores


def test_alpha_uses_each_judges_median_over_repeats_and_ignores_single_judge_units():
    rows = []
    for unit, (a, b) in enumerate([(1, 2), (5, 5), (8, 9), (3, 1), (6, 7)]):
        rows += [(f"t{unit}", "j1", "agenda", float(a), "scored"), (f"t{unit}", "j2", "agenda", float(b), "scored")]
    rows += [("t9", "j1", "agenda", 4.0, "scored")]  # only one judge: not pairable
    frame = small_frame(rows)
    repeat = small_frame([("t0", "j1", "agenda", 3.0, "scored"), ("t0", "j1", "agenda", 5.0, "scored")])
    repeat["repeat"] = [1, 2]  # j1 on t0: median of 1, 3, 5 = 3
    frame = pd.concat([frame, repeat], ignore_index=True)
    row = stats.inter_judge_alpha(frame).set_index("item").loc["agenda"]
    direct = krippendorff.alpha(
        reliability_data=[[3, 5, 8, 3, 6, 4], [2, 5, 9, 1, 7, np.nan]], level_of_measurement="ordinal"
    )
    assert row["alpha"] == pytest.approx(direct) and row["n_units"] == 5
    single = stats.inter_judge_alpha(frame[frame["judge"] == "j1"])
    assert single["alpha"].isna().all()


def test_length_bias_matches_spearman(planted, oracle):
    table = stats.length_bias(planted).set_index("judge")
    tokens = planted.groupby("transcript_id")["transcript_tokens"].first()
    direct = sps.spearmanr(oracle["total"], tokens.reindex(oracle.index))
    assert table.loc[stats.ALL_JUDGES, "spearman_rho"] == pytest.approx(direct.statistic)
    assert table.loc[stats.ALL_JUDGES, "p_value"] == pytest.approx(direct.pvalue, abs=1e-300)
    one = planted[planted["judge"] == JUDGES[0]]
    judge_direct = sps.spearmanr(direct_totals(one)["total"], tokens.reindex(direct_totals(one).index))
    assert table.loc[JUDGES[0], "spearman_rho"] == pytest.approx(judge_direct.statistic)
    assert table.loc[stats.ALL_JUDGES, "spearman_rho"] > 0.3  # tokens were planted to grow with quality
    assert stats.length_bias(planted.drop(columns=["transcript_tokens"])).empty


@pytest.mark.parametrize(
    ("judge", "family", "expected"),
    [
        ("llama3.1-70b-judge", "llama3.1-8b", True),
        ("Meta-Llama-3.1-405B-Instruct", "llama3.1-8b", True),
        ("mistral-large", "mistral-7b", True),
        ("gemini-1.5-pro", "gemma-2-9b", False),
        ("deepseek-v2.5", "qwen2.5-7b", False),
    ],
)
def test_same_family(judge, family, expected):
    assert stats.same_family(judge, family) is expected


def test_self_preference_finds_the_planted_bias():
    scores = make_planted_scores(self_bias=1.0)
    table = stats.self_preference(scores).set_index(["judge", "family"])
    own = table.loc[("llama3.1-70b-judge", "llama3.1-8b")]
    assert own["same_family"] and own["n_shared"] == 160
    assert abs(own["difference"] - 11.0) < 1.0  # +1 on each of 11 items
    others = table.drop(index=("llama3.1-70b-judge", "llama3.1-8b")).drop(index=("gemini-1.5-pro", "llama3.1-8b"))
    assert (others["difference"].abs() < 1.0).all() and not others["same_family"].any()
    direct = direct_totals(scores[scores["judge"] == "llama3.1-70b-judge"])
    assert own["judge_mean_total"] == pytest.approx(direct.loc[direct["family"] == "llama3.1-8b", "total"].mean())


def test_human_judge_agreement_matches_spearman_and_alpha(planted):
    rng = np.random.default_rng(5)
    judged = planted[(planted["judge"] == JUDGES[0]) & (planted["family"] == "mistral-7b")]
    ratings = judged[["transcript_id", "item", "score"]].copy()
    ratings["score"] = np.clip(ratings["score"] + rng.integers(-1, 2, len(ratings)), 1, 10)
    ratings.loc[ratings.index[:3], "score"] = np.nan  # unrated cells are missing, not zero
    table = stats.human_judge_agreement(planted, ratings)
    row = table[(table["judge"] == JUDGES[0]) & (table["item"] == "collaboration")].iloc[0]
    pair = judged[judged["item"] == "collaboration"].merge(ratings, on=["transcript_id", "item"]).dropna()
    direct = sps.spearmanr(pair["score_x"], pair["score_y"])
    alpha = krippendorff.alpha(reliability_data=[pair["score_y"], pair["score_x"]], level_of_measurement="ordinal")
    assert row["n"] == len(pair) == 160
    assert row["spearman_rho"] == pytest.approx(direct.statistic) and row["alpha"] == pytest.approx(alpha)
    assert row["spearman_rho"] > 0.5
    assert set(table["judge"]) == {stats.ALL_JUDGES, *JUDGES}
    with pytest.raises(ScoresSchemaError, match="ratings: missing column\\(s\\) score"):
        stats.human_judge_agreement(planted, ratings.drop(columns=["score"]))


@pytest.mark.slow
def test_confidence_intervals_cover_the_planted_effect_across_seeds():
    estimates, paired_cover, model_cover = [], 0, 0
    for seed in range(20):
        scores = make_planted_scores(seed=seed, judges=("gemini-1.5-pro",))
        total = stats.paired_comparison(scores).set_index("measure").loc["total"]
        effect = stats.mixed_model(scores).fixed_effects.set_index("term").loc["C(variant)[T.tuned]"]
        estimates.append(total["mean_diff"])
        paired_cover += total["ci_low"] < PLANTED_EFFECT < total["ci_high"]
        model_cover += effect["ci_low"] < PLANTED_EFFECT < effect["ci_high"]
    assert abs(np.mean(estimates) - PLANTED_EFFECT) < 0.4  # unbiased: SE of the mean of 20 is about 0.14
    assert paired_cover >= 16 and model_cover >= 16  # nominal 95%: 19 of 20 expected


# --- issue 17: honest totals, explicit pairing, patient-level inference, reliability ----------------------


def test_a_total_from_too_few_items_is_missing_not_prorated():
    rows = [
        ("t", "j1", item, 6.0 if k < 5 else None, "scored" if k < 5 else "unscored")
        for k, item in enumerate(CTRS_ITEMS)
    ]
    totals = stats.transcript_totals(small_frame(rows)).iloc[0]
    assert totals["scored_items"] == 5 and totals["sum_scored"] == 30.0
    assert math.isnan(totals["total"]) and math.isnan(totals["total_complete"])


def knock_out_homework(scores: pd.DataFrame, share: float, variant: str, seed: int = 5) -> pd.DataFrame:
    """Mark homework unscored (every judge) in `share` of one variant's transcripts."""
    rng = np.random.default_rng(seed)
    ids = sorted(scores.loc[scores["variant"] == variant, "transcript_id"].unique())
    chosen = set(rng.choice(ids, size=round(share * len(ids)), replace=False))
    frame = scores.copy()
    hit = frame["transcript_id"].isin(chosen) & (frame["item"] == "homework")
    frame.loc[hit, "status"] = "unscored"
    frame.loc[hit, "score"] = np.nan
    return frame


def test_unscored_homework_in_one_arm_does_not_make_a_null_effect_significant():
    from cbtcompare.stats.patient_level import patient_level_comparison

    null = make_planted_scores(seed=17, effect=0.0, judges=(JUDGES[0],), noise_sd=2.0)
    frame = knock_out_homework(null, 0.3, "base")
    # the old total (the sum of what was scored) is biased: base loses its homework points
    cells = stats.transcript_totals(frame).pivot_table(
        index=["family", "patient_id", "session"], columns="variant", values="sum_scored"
    )
    assert sps.ttest_rel(cells["tuned"], cells["base"]).pvalue < 0.05
    primary = patient_level_comparison(frame).set_index("measure")
    session = stats.paired_comparison(frame).set_index("measure")
    for table in (primary, session):
        assert table.loc["total", "p_t"] > 0.05 and table.loc["total_complete", "p_t"] > 0.05
    assert session.loc["total_complete", "n_pairs"] == 240 - round(0.3 * 240)
    rates = stats.descriptive_table(frame).groupby("variant")["unscored_rate"].mean()
    assert rates["base"] == pytest.approx(0.3 / len(CTRS_ITEMS)) and rates["tuned"] == 0


def two_base_models(effect: float = 4.0, gap: float = 2.0) -> pd.DataFrame:
    """One family with base 'm-base', a second base 'm-base-q4' scoring `gap` lower on every item, and
    'm-tuned' = m-base + `effect`: averaging both bases would report effect + 11 * gap / 2."""
    scores = make_planted_scores(
        seed=4, effect=effect, judges=(JUDGES[0],), families={"m": 0.0}, noise_sd=3.0, n_patients=16
    )
    second = scores[scores["variant"] == "base"].copy()
    second["therapist"] = "m-base-q4"
    second["transcript_id"] = second["transcript_id"] + "-q4"
    second["score"] = (second["score"] - gap).clip(lower=1)
    return pd.concat([scores, second], ignore_index=True)


def test_two_base_models_in_a_family_are_refused_with_their_names():
    scores = two_base_models()
    with pytest.raises(AnalysisError, match=r"m-base, m-base-q4.*--pair m-base=m-tuned"):
        stats.paired_comparison(scores)
    with pytest.raises(AnalysisError, match="m-tuned is a tuned therapist"):
        stats.paired_comparison(scores, pairs=[("m-tuned", "m-base")])
    with pytest.raises(AnalysisError, match="no transcripts from therapist 'nobody'"):
        stats.paired_comparison(scores, pairs=[("nobody", "m-tuned")])


def test_an_explicit_pairing_recovers_the_true_effect_and_counts_the_unmatched():
    from cbtcompare.stats.patient_level import patient_level_comparison

    scores = two_base_models(effect=4.0)
    pairs = [("m-base", "m-tuned")]
    totals = stats.transcript_totals(scores)
    averaged = totals.groupby("variant")["total"].mean()
    assert averaged["tuned"] - averaged["base"] > 12  # what averaging the two bases reported
    for table in (stats.paired_comparison(scores, pairs=pairs), patient_level_comparison(scores, pairs=pairs)):
        total = table.set_index("measure").loc["total"]
        assert total["ci_low"] < 4.0 < total["ci_high"] and abs(total["mean_diff"] - 4.0) < 1.5
    summary = stats.pairing_summary(scores, pairs=pairs).set_index("control")
    assert summary.loc["m-base", "matched_cells"] == 16 * 4
    assert summary.loc["m-base", ["unmatched_control", "unmatched_treatment"]].tolist() == [0, 0]
    assert summary.loc["m-base-q4", "unmatched_control"] == 16 * 4 and summary.loc["m-base-q4", "pair"] == ""


@given(st.lists(st.text(), max_size=4))
@settings(deadline=None, max_examples=60)
def test_pair_arguments_parse_or_say_what_is_wrong(items):
    try:
        parsed = stats.parse_pair_args(items)
    except ValueError as exc:
        assert "BASE_THERAPIST=TUNED_THERAPIST" in str(exc)
    else:
        assert len(parsed) == len(items) and all(c and t for c, t in parsed)


def test_patient_level_analysis_tests_patient_means_as_scipy_does(planted):
    from cbtcompare.stats.patient_level import patient_level_comparison

    totals = direct_totals(planted).reset_index()
    wide = totals.pivot_table(index=["family", "patient_id", "session"], columns="variant", values="total")
    per_patient = (wide["tuned"] - wide["base"]).groupby(level="patient_id").mean()
    direct = sps.ttest_1samp(per_patient, 0.0)
    row = patient_level_comparison(planted).set_index("measure").loc["total"]
    assert row["n_pairs"] == 20 and row["n_cells"] == 240
    assert row["mean_diff"] == pytest.approx(per_patient.mean())
    assert row["p_t"] == pytest.approx(direct.pvalue, rel=1e-9)
    assert row["p_wilcoxon"] == pytest.approx(sps.wilcoxon(np.round(per_patient, 9)).pvalue)


def test_patient_varying_effects_widen_the_patient_level_interval_but_not_the_session_one():
    from cbtcompare.stats.patient_level import patient_level_comparison

    varying = make_planted_scores(seed=8, effect=0.0, slope_sd=8.0, judges=(JUDGES[0],))
    patient = patient_level_comparison(varying).set_index("measure").loc["total"]
    session = stats.paired_comparison(varying).set_index("measure").loc["total"]
    # the session test pretends to have 240 independent pairs; the patient test has 20 patients
    assert (patient["ci_high"] - patient["ci_low"]) > 1.8 * (session["ci_high"] - session["ci_low"])


def test_cohens_dz_interval_agrees_with_the_large_sample_formula(planted):
    row = stats.paired_comparison(planted).set_index("measure").loc["total"]
    dz, n = row["cohens_dz"], row["n_pairs"]
    half = 1.959964 * math.sqrt(1 / n + dz**2 / (2 * n))
    assert row["dz_ci_low"] == pytest.approx(dz - half, abs=0.02)
    assert row["dz_ci_high"] == pytest.approx(dz + half, abs=0.02)


def test_random_slope_model_estimates_the_effect_and_withholds_a_degenerate_fit():
    from cbtcompare.stats.patient_level import random_slope_model

    varying = make_planted_scores(seed=9, effect=6.0, slope_sd=5.0, judges=(JUDGES[0],), n_patients=24)
    fit = random_slope_model(varying)
    assert not fit.withheld and fit.converged
    assert fit.ci_low < 6.0 < fit.ci_high and fit.slope_variance > 4
    assert 0 < fit.p_lrt < 0.05 and 0 < fit.p_wald < 0.05
    # every patient gains exactly the same: the tuning-slope variance is zero, on its boundary
    base = varying[varying["variant"] == "base"]
    tuned = base.assign(
        variant="tuned",
        therapist=base["therapist"].str.replace("-base", "-tuned"),
        transcript_id=base["transcript_id"].str.replace("-base-", "-tuned-"),
        score=(base["score"] + 1).clip(upper=10),
    )
    degenerate = random_slope_model(pd.concat([base, tuned], ignore_index=True))
    assert degenerate.withheld and math.isnan(degenerate.estimate) and math.isnan(degenerate.p_lrt)


def test_family_interaction_finds_a_family_specific_effect_and_holm_corrects_follow_ups():
    from cbtcompare.stats.patient_level import family_interaction

    equal = make_planted_scores(seed=3, effect=5.0, judges=(JUDGES[0],))
    uneven = equal.copy()
    boosted = (uneven["family"] == "qwen2.5-7b") & (uneven["variant"] == "tuned")
    uneven.loc[boosted, "score"] = (uneven.loc[boosted, "score"] + 1).clip(upper=10)
    result = family_interaction(uneven)
    assert result.p_interaction < 0.01
    assert np.allclose(result.follow_ups["p_t_holm"], multipletests(result.follow_ups["p_t"], method="holm")[1])
    assert family_interaction(equal).p_interaction > 0.01


def test_icc_family_matches_shrout_and_fleiss_1979_table_4():
    from cbtcompare.rating import icc_2_1
    from cbtcompare.stats.reliability import icc_table

    # Shrout & Fleiss (1979), Table 2 data: 6 targets x 4 judges; their Table 4 gives these ICCs
    data = np.array([[9, 2, 5, 8], [6, 1, 3, 2], [8, 4, 6, 8], [7, 1, 2, 6], [10, 5, 6, 9], [6, 2, 4, 7]], float)
    table = icc_table(data).set_index("icc")
    published = {"ICC(2,1)": 0.29, "ICC(3,1)": 0.71, "ICC(2,k)": 0.62, "ICC(3,k)": 0.91}
    for name, value in published.items():
        assert table.loc[name, "value"] == pytest.approx(value, abs=0.005)
        assert table.loc[name, "ci_low"] < table.loc[name, "value"] < table.loc[name, "ci_high"]
    assert table.loc["ICC(2,1)", "value"] == pytest.approx(icc_2_1(data))


def test_icc_intervals_cover_the_truth_in_simulation():
    from cbtcompare.stats.reliability import icc_table

    rng = np.random.default_rng(0)
    covered = {"ICC(2,1)": 0, "ICC(3,1)": 0}
    rounds = 200
    true_icc = 4.0 / (4.0 + 1.0 + 1.0)  # target var 4, rater var 1, error var 1 -> ICC(2,1)
    true_icc3 = 4.0 / (4.0 + 1.0)
    for _ in range(rounds):
        data = rng.normal(0, 2, (20, 1)) + rng.normal(0, 1, (1, 3)) + rng.normal(0, 1, (20, 3))
        table = icc_table(data).set_index("icc")
        covered["ICC(2,1)"] += table.loc["ICC(2,1)", "ci_low"] <= true_icc <= table.loc["ICC(2,1)", "ci_high"]
        covered["ICC(3,1)"] += table.loc["ICC(3,1)", "ci_low"] <= true_icc3 <= table.loc["ICC(3,1)", "ci_high"]
    assert covered["ICC(3,1)"] / rounds == pytest.approx(0.95, abs=0.04)
    assert covered["ICC(2,1)"] / rounds > 0.88  # Shrout-Fleiss' interval is approximate


def test_kendalls_w_has_a_bootstrap_interval_around_it(planted):
    result = stats.friedman_test(planted)
    low, high = result.kendalls_w_ci
    assert low < result.kendalls_w < high and low >= 0 and high <= 1


def test_repeat_consistency_per_judge_separates_a_steady_judge_from_a_noisy_one():
    from cbtcompare.stats.reliability import repeat_consistency

    steady = make_planted_scores(seed=2, judges=("steady-judge",), repeats=3, n_patients=8)
    noisy = steady.copy()
    noisy["judge"] = "noisy-judge"
    rng = np.random.default_rng(1)
    noisy["score"] = np.clip(noisy["score"] + rng.integers(-4, 5, len(noisy)), 1, 10)
    table = repeat_consistency(pd.concat([steady, noisy], ignore_index=True)).set_index("judge")
    assert table.loc["steady-judge", "value"] > 0.9 > table.loc["noisy-judge", "value"]
    assert table.loc["noisy-judge", "mean_abs_difference"] > table.loc["steady-judge", "mean_abs_difference"]


def test_human_vs_judge_on_totals_and_on_the_contrast(planted):
    from cbtcompare.stats.reliability import human_judge_totals

    judged = stats.judge_item_scores(planted)
    ratings = judged[judged["judge"] == JUDGES[0]][["transcript_id", "item", "score"]].copy()
    table = human_judge_totals(planted, ratings).set_index("comparison")
    assert table.loc["totals", "n"] == 480 and table.loc["totals", "spearman_rho"] > 0.8
    assert table.loc["tuned - base", "n"] == 240 and table.loc["tuned - base", "sign_agreement"] > 0.8
    assert table.loc["totals", "icc21_ci_low"] < table.loc["totals", "icc21"] <= 1


def test_classic_rubric_follows_young_and_beck():
    from cbtcompare.ctrs import load_rubric
    from cbtcompare.ctrs.render import build_score_prompt
    from cbtcompare.transcript import Turn

    classic = load_rubric("classic")
    for rubric_item in classic.items:
        by_level = {a.low: a for a in rubric_item.anchors}
        assert all(a.low == a.high for a in rubric_item.anchors)  # one description per point
        for level in (0, 2, 4, 6):
            assert not by_level[level].text.startswith("Between")
        for level in (1, 3, 5):
            assert by_level[level].text == f"Between the descriptions for {level - 1} and {level + 1}."
    assert [i.part for i in classic.items] == ["I"] * 6 + ["II"] * 5  # Part I items 1-6, Part II 7-11
    assert "patient's difficulty" in classic.instructions
    prompt = build_score_prompt(
        classic, [Turn(role="therapist", text="Hello.")], classic.item_ids, per_item=False, anchors=True, max_evidence=1
    )
    assert "patient's difficulty" in prompt.messages[-1].content
    assert "Between the descriptions for 2 and 4." in prompt.messages[-1].content


def test_part_subtotals_add_up_to_the_total_and_reach_the_report(small_planted_classic):
    from cbtcompare import report
    from cbtcompare.ctrs import load_rubric

    classic = load_rubric("classic")
    parts = stats.part_subtotals(small_planted_classic, classic).set_index("transcript_id")
    totals = stats.transcript_totals(small_planted_classic).set_index("transcript_id")
    first_six = list(CTRS_ITEMS[:6])
    assert np.allclose(parts["part_I"], totals[first_six].sum(axis=1))
    assert np.allclose(parts["part_I"] + parts["part_II"], totals["total"])
    assert stats.rubric_for_scores(small_planted_classic).id == classic.id
    bundle = report.build_results(small_planted_classic)
    assert {"part_I_mean", "part_II_mean"} <= set(bundle.tables["part_subtotals"].columns)


@pytest.fixture(scope="module")
def small_planted_classic() -> pd.DataFrame:
    scores = make_planted_scores(seed=12, n_patients=4, n_sessions=2, judges=(JUDGES[0],))
    scores["score"] = np.clip(scores["score"] - 3, 0, 6)  # on the classic 0-6 scale
    return scores.assign(rubric_id="ctrs-classic-0-6")


def test_a_rubric_part_must_be_declared(tmp_path):
    from cbtcompare.ctrs import load_rubric

    text = (Path(stats.__file__).parent.parent / "rubrics" / "classic_0_6.yaml").read_text(encoding="utf-8")
    broken = tmp_path / "broken.yaml"
    broken.write_text(text.replace("    part: II\n", "    part: III\n", 1), encoding="utf-8")
    with pytest.raises(ValueError, match="III not declared under 'parts'"):
        load_rubric(broken)


def test_unassigned_transcripts_are_scored_shown_left_out_of_tuned_vs_base_and_counted():
    from cbtcompare import report
    from cbtcompare.stats.patient_level import patient_level_comparison

    clean = make_planted_scores(n_patients=8, n_sessions=2, judges=JUDGES[:1], families={"qwen2.5-7b": 0.0})
    # Imports with no known producer, on the same patients and sessions, scored at the top of the scale:
    # counted as tuned (or base) they would move every tuned-vs-base number.
    imported = clean[clean["variant"] == "tuned"].copy()
    imported["transcript_id"] = "import-" + imported["transcript_id"]
    imported["therapist"], imported["family"], imported["variant"] = "imported", "unknown", "unassigned"
    imported["score"] = 10.0
    mixed = pd.concat([clean, imported], ignore_index=True)

    assert stats.unassigned_transcripts(mixed) == 16 and stats.unassigned_transcripts(clean) == 0
    expected = patient_level_comparison(clean).set_index("measure").loc["total"]
    got = patient_level_comparison(mixed).set_index("measure").loc["total"]
    assert got["mean_diff"] == pytest.approx(expected["mean_diff"]) and got["n_pairs"] == expected["n_pairs"] == 8
    assert stats.paired_comparison(mixed).equals(stats.paired_comparison(clean))
    model = stats.mixed_model(mixed)
    assert model.n_observations == 32 and any("16 unassigned" in w for w in model.warnings)
    assert "unassigned" not in " ".join(model.fixed_effects["label"])
    with pytest.raises(AnalysisError, match="unassigned"):
        stats.resolve_pairing(mixed, treatment="unassigned")
    bundle = report.build_results(mixed)
    shown = bundle.tables["unscored_by_arm"].set_index("therapist")
    assert shown.loc["imported", "variant"] == "unassigned" and shown.loc["imported", "n"] == 16
    assert any("16 of 48 transcripts are unassigned" in note for note in bundle.notes)
