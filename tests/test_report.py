"""The figures (cbtcompare.plots), the HTML + CSV report (cbtcompare.report) and `python -m cbtcompare report`.
All data here is synthetic (see test_stats.make_planted_scores)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from plotly.offline import get_plotlyjs
from test_stats import JUDGES, SEED, direct_totals, make_planted_scores

from cbtcompare import cli, plots, report, stats
from cbtcompare.paths import REPO_ROOT
from cbtcompare.stats import CTRS_ITEMS

EXPECTED_CSVS = {
    "paper_table.csv",
    "descriptive.csv",
    "paired.csv",
    "paired_by_family.csv",
    "mixed_model.csv",
    "mixed_model_fit.csv",
    "friedman.csv",
    "friedman_ranks.csv",
    "judge_alpha.csv",
    "length_bias.csv",
    "self_preference.csv",
    "transcript_totals.csv",
    "unscored_by_arm.csv",
    "tuned_vs_base.csv",
    "pairing.csv",
    "patient_level.csv",
    "random_slope.csv",
    "interaction.csv",
    "power.csv",
    "judge_icc.csv",
    "relative_self_preference.csv",  # a llama judge scores llama therapists: self-preference is measurable
}


@pytest.fixture(scope="module")
def planted() -> pd.DataFrame:
    return make_planted_scores()


@pytest.fixture(scope="module")
def small() -> pd.DataFrame:
    """Fewer patients and one judge: enough for every analysis, quick to report."""
    return make_planted_scores(seed=SEED, n_patients=8, n_sessions=2, judges=(JUDGES[0],))


# --- figures --------------------------------------------------------------------------------------------


def test_item_bars_show_each_models_means_and_cis(planted):
    figure = plots.item_bars(planted)
    means = stats.item_means(planted)
    assert [trace.name for trace in figure.data] == sorted(planted["therapist"].unique())
    trace = next(t for t in figure.data if t.name == "mistral-7b-tuned")
    rows = means[(means["therapist"] == "mistral-7b-tuned")].set_index("measure").loc[list(CTRS_ITEMS)]
    assert np.allclose(trace.y, rows["mean"])
    assert np.allclose(trace.error_y.array, rows["ci_high"] - rows["mean"])
    assert np.allclose(trace.error_y.arrayminus, rows["mean"] - rows["ci_low"])
    assert list(trace.x) == [plots.ITEM_LABELS[item] for item in CTRS_ITEMS]


def test_radar_is_a_closed_profile_per_model(planted):
    figure = plots.radar(planted)
    assert len(figure.data) == 6
    trace = figure.data[0]
    oracle = direct_totals(planted)
    expected = oracle[oracle["therapist"] == trace.name][list(CTRS_ITEMS)].mean()
    assert len(trace.r) == 12 and trace.r[0] == trace.r[-1] and trace.theta[0] == trace.theta[-1]
    assert np.allclose(trace.r[:11], expected)


def test_paired_slopes_draw_a_line_per_patient_in_each_family(planted):
    figure = plots.paired_slopes(planted)
    oracle = direct_totals(planted)
    per_patient = oracle.pivot_table(index=["family", "patient_id"], columns="variant", values="total")
    assert len(figure.data) == 3 * (20 + 1)  # 20 patients and a mean line per family
    first_family = sorted(per_patient.index.get_level_values("family").unique())[0]
    first = figure.data[0]
    expected = per_patient.loc[(first_family, first.name)]
    assert list(first.x) == ["base", "tuned"] and np.allclose(first.y, [expected["base"], expected["tuned"]])
    with pytest.raises(ValueError, match="no transcripts with variant 'base'"):
        plots.paired_slopes(planted[planted["variant"] == "tuned"])


def test_totals_distribution_marks_partial_totals(small):
    figure = plots.totals_distribution(small)
    assert [t.name for t in figure.data] == sorted(small["therapist"].unique())  # no partial trace
    frame = small.copy()
    knock_out = frame["transcript_id"].eq("qwen2.5-7b-base-p01-s1") & frame["item"].eq("agenda")
    frame.loc[knock_out, ["status", "score"]] = ["unscored", np.nan]
    partial = plots.totals_distribution(frame).data[-1]
    assert partial.name == "partial total" and list(partial.text) == ["qwen2.5-7b-base-p01-s1"]
    scored_sum = direct_totals(frame).loc["qwen2.5-7b-base-p01-s1", "total"]  # 10 items scored
    assert list(partial.y) == [pytest.approx(scored_sum * len(CTRS_ITEMS) / 10)]  # prorated to 11


def test_loss_curve_sorts_steps_and_refuses_bad_records():
    history = [{"step": 20, "loss": 1.2}, {"step": 10, "loss": 1.9}, {"step": 20, "eval_loss": 1.4}]
    figure = plots.loss_curve(history)
    train, evaluation = figure.data
    assert list(train.x) == [10, 20] and list(train.y) == [1.9, 1.2]
    assert evaluation.name == "evaluation loss" and list(evaluation.y) == [1.4]
    with pytest.raises(ValueError, match="record 1 has no 'step'"):
        plots.loss_curve([{"step": 1, "loss": 1.0}, {"loss": 2.0}])
    with pytest.raises(ValueError, match="record 0 has neither 'loss' nor 'eval_loss'"):
        plots.loss_curve([{"step": 1, "lr": 0.1}])
    with pytest.raises(ValueError, match="empty"):
        plots.loss_curve([])


# --- the report -----------------------------------------------------------------------------------------


@pytest.mark.slow
def test_report_writes_a_self_contained_page_and_a_csv_per_table(tmp_path, planted):
    history = [{"step": s, "loss": 2.0 / s} for s in range(1, 6)]
    index = report.write_report(planted, tmp_path / "out", loss_history=history)
    assert index == tmp_path / "out" / "index.html"
    written = {path.name for path in index.parent.glob("*.csv")}
    assert written == EXPECTED_CSVS
    page = index.read_text(encoding="utf-8")
    assert page.count(get_plotlyjs()) == 1  # plotly.js embedded exactly once
    assert "<script src" not in page and 'src="http' not in page  # nothing fetched: works offline
    assert page.count("Plotly.newPlot(") == 5  # bars, radar, distribution, slopes, loss
    for title in ("Mean ± SD per model", "primary (patient level) first", "session cells", "linear mixed model"):
        assert title in page
    paired = pd.read_csv(index.parent / "paired.csv")
    direct = stats.paired_comparison(planted)
    assert np.allclose(paired["mean_diff"], direct["mean_diff"]) and np.allclose(paired["p_t"], direct["p_t"])
    effects = pd.read_csv(index.parent / "mixed_model.csv").set_index("term")
    assert effects.loc["C(variant)[T.tuned]", "ci_low"] < 11 < effects.loc["C(variant)[T.tuned]", "ci_high"]
    paper = pd.read_csv(index.parent / "paper_table.csv").set_index("measure")
    tuned = direct_totals(planted).query("therapist == 'llama3.1-8b-tuned'")["total"]
    assert paper.loc["Total", "llama3.1-8b-tuned (tuned)"] == f"{tuned.mean():.2f} ± {tuned.std():.2f}"


def test_filters_restrict_every_table(tmp_path, planted):
    index = report.write_report(planted, tmp_path, {"family": ["llama3.1-8b", "qwen2.5-7b"], "judge": JUDGES[0]})
    descriptive = pd.read_csv(tmp_path / "descriptive.csv")
    assert set(descriptive["family"]) == {"llama3.1-8b", "qwen2.5-7b"}
    alone = planted[planted["family"].isin(["llama3.1-8b", "qwen2.5-7b"]) & (planted["judge"] == JUDGES[0])]
    expected = direct_totals(alone).groupby("therapist")["total"].mean()
    assert np.allclose(descriptive.set_index("therapist")["total_mean"], expected)
    page = index.read_text(encoding="utf-8")
    assert "family=llama3.1-8b|qwen2.5-7b, judge=gemini-1.5-pro" in page
    assert "one judge" in page and not (tmp_path / "judge_alpha.csv").exists()


def test_bad_filters_are_refused(planted):
    with pytest.raises(ValueError, match="unknown filter 'model'"):
        report.apply_filters(planted, {"model": "x"})
    with pytest.raises(ValueError, match="no scores match the filters \\(family=gpt\\)"):
        report.apply_filters(planted, {"family": "gpt"})
    with pytest.raises(ValueError, match="not column=value"):
        report.parse_filter_args(["family"])
    assert report.parse_filter_args(["judge=a", "judge=b", "session=2"]) == {"judge": ["a", "b"], "session": ["2"]}


def test_a_filter_picks_one_rubric_out_of_a_mixed_table(small):
    classic = small.copy()
    classic["score"] = np.clip(classic["score"], 0, 6)
    mixed = pd.concat([small.assign(rubric_id="ctrs-paper-1-10"), classic.assign(rubric_id="ctrs-classic-0-6")])
    with pytest.raises(stats.ScoresSchemaError, match="the scores mix rubrics \\(ctrs-classic-0-6, ctrs-paper-1-10\\)"):
        stats.validate_scores(mixed)
    picked = report.apply_filters(mixed, {"rubric_id": "ctrs-classic-0-6"})
    assert len(picked) == len(small) and picked["score"].max() == 6


def test_filtered_csv_errors_still_name_the_file_line(tmp_path, small):
    frame = small.astype({"variant": object}).copy()
    frame.loc[30, "variant"] = "finetuned"
    path = tmp_path / "scores.csv"
    frame.to_csv(path, index=False)
    raw = stats.read_scores_csv(path)
    with pytest.raises(stats.ScoresSchemaError, match="column 'variant' has 'finetuned' at line 32"):
        report.apply_filters(raw, {"family": small.loc[30, "family"]}, source=str(path), line_offset=2)


def test_report_escapes_names_and_shows_notes(tmp_path, small):
    frame = small.copy()
    hostile = "<script>alert('x')</script>"
    frame.loc[frame["therapist"] == "mistral-7b-base", "therapist"] = hostile
    knock_out = frame["item"].eq("homework") & frame["transcript_id"].eq("qwen2.5-7b-tuned-p02-s2")
    frame.loc[knock_out, ["status", "score"]] = ["n/a", np.nan]
    page = report.write_report(frame, tmp_path).read_text(encoding="utf-8")
    assert hostile not in page
    assert "&lt;script&gt;alert('x')&lt;/script&gt;" in page  # shown as text in the tables
    assert "1 of 96 transcripts have a partial total" in page
    assert "Length bias" in page


def test_report_shows_mixed_model_warnings(tmp_path):
    scores = make_planted_scores(seed=0, n_patients=5, n_sessions=2, judges=("j",), patient_sd=0.0)
    page = report.write_report(scores, tmp_path).read_text(encoding="utf-8")
    assert "Mixed model warning: ConvergenceWarning" in page
    fit = pd.read_csv(tmp_path / "mixed_model_fit.csv")
    assert "ConvergenceWarning" in fit.loc[0, "warnings"]  # statsmodels may still converge after its retry


def test_report_skips_what_the_data_cannot_support(tmp_path, small):
    only_tuned = small[small["variant"] == "tuned"]
    bundle = report.build_results(only_tuned)
    assert "paired" not in bundle.tables and "paired_slopes" not in bundle.figures
    assert any("no family has both a base and a tuned therapist" in note for note in bundle.notes)
    assert "descriptive" in bundle.tables and "mixed_model" in bundle.tables
    assert bundle.mixed_model.formula == "total ~ C(family) + session_centred"


def test_human_agreement_table_joins_the_report(tmp_path, small):
    ratings = small[["transcript_id", "item", "score"]].copy()
    ratings["rater"] = "r1"
    report.write_report(small, tmp_path, ratings=ratings)
    agreement = pd.read_csv(tmp_path / "human_agreement.csv")
    assert set(agreement["item"]) == set(CTRS_ITEMS)
    assert np.allclose(agreement["alpha"], 1.0)  # ratings identical to the judge's scores


# --- the CLI --------------------------------------------------------------------------------------------


def test_cli_report_from_a_scores_csv(tmp_path, small, capsys):
    scores = tmp_path / "scores.csv"
    small.to_csv(scores, index=False)
    loss = tmp_path / "trainer_state.json"
    loss.write_text(json.dumps({"log_history": [{"step": 1, "loss": 2.1}, {"step": 2, "loss": 1.7}]}))
    out = tmp_path / "report"
    code = cli.main(["report", "--out", str(out), "--scores", str(scores), "--filter", "variant=tuned",
                     "--loss", str(loss)])  # fmt: skip
    assert code == 0
    assert f"wrote {out / 'index.html'}" in capsys.readouterr().out
    assert set(pd.read_csv(out / "descriptive.csv")["variant"]) == {"tuned"}
    assert "Training loss" in (out / "index.html").read_text(encoding="utf-8")


def test_cli_bad_csv_exits_2_naming_the_problem(tmp_path, small, capsys):
    scores = tmp_path / "scores.csv"
    small.drop(columns=["repeat"]).to_csv(scores, index=False)
    assert cli.main(["report", "--out", str(tmp_path / "r"), "--scores", str(scores)]) == 2
    assert "missing column(s) repeat" in capsys.readouterr().err
    assert cli.main(["report", "--out", str(tmp_path / "r"), "--scores", str(tmp_path / "nope.csv")]) == 2
    assert "scores file not found" in capsys.readouterr().err
    small.to_csv(scores, index=False)
    assert cli.main(["report", "--out", str(tmp_path / "r"), "--scores", str(scores), "--filter", "bogus=1"]) == 2
    assert "unknown filter 'bogus'" in capsys.readouterr().err


def test_cli_without_scores_and_an_empty_store_exits_2(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("CBTCOMPARE_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.delenv("CBTCOMPARE_DB_URL", raising=False)
    assert cli.main(["report", "--out", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err
    assert "no scores to report: pass --scores FILE.csv" in err and "python -m cbtcompare judge" in err
    assert not (tmp_path / "r").exists()


def test_cli_report_reads_the_stores_scores(tmp_path, monkeypatch, small):
    """The judge's stored results -> ctrs.scores_frame -> `report` without --scores."""
    from cbtcompare.ctrs import ItemScore, JudgeResult, save_results
    from cbtcompare.store import Store
    from cbtcompare.transcript import Transcript, Turn

    monkeypatch.setenv("CBTCOMPARE_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.delenv("CBTCOMPARE_DB_URL", raising=False)
    store = Store()
    chosen = small[small["patient_id"].isin(["p00", "p01", "p02"])]
    results = []
    for transcript_id, rows in chosen.groupby("transcript_id"):
        first = rows.iloc[0]
        transcript = Transcript(
            id=transcript_id,
            kind="simulation",
            therapist={"name": first["therapist"]},
            meta={
                "family": first["family"],
                "variant": first["variant"],
                "patient_id": first["patient_id"],
                "session": int(first["session"]),
            },
            turns=[
                Turn(role="patient", text="I feel low.", tokens=5),
                Turn(role="therapist", text="Tell me.", tokens=3),
            ],
        )
        store.save_transcript(transcript)
        items = {
            row["item"]: ItemScore(item=row["item"], status="scored", score=int(row["score"]))
            for _, row in rows.iterrows()
        }
        items["homework"] = ItemScore(item="homework", status="unscored", reason="no valid answer")
        results.append(
            JudgeResult(
                transcript_id=transcript_id,
                judge=first["judge"],
                rubric_id="ctrs-paper-1-10",
                rubric_version="test",
                mode="all",
                items=items,
            )
        )
    save_results(store, results)
    out = tmp_path / "r"
    assert cli.main(["report", "--out", str(out), "--filter", "rubric_id=ctrs-paper-1-10"]) == 0
    totals = pd.read_csv(out / "transcript_totals.csv").set_index("transcript_id")
    expected = direct_totals(chosen[chosen["item"] != "homework"])
    assert set(totals.index) == set(expected.index) and len(totals) == 3 * 3 * 2 * 2
    assert np.allclose(totals.loc[expected.index, "sum_scored"], expected["total"])
    assert np.allclose(totals.loc[expected.index, "total"], expected["total"] * len(CTRS_ITEMS) / 10)  # prorated
    assert totals["partial"].all() and (totals["scored_items"] == 10).all()
    assert (totals["transcript_tokens"] == 8).all()


@pytest.mark.slow
def test_python_dash_m_report_form(tmp_path, small):
    scores = tmp_path / "scores.csv"
    small.to_csv(scores, index=False)
    env = {**os.environ, "CBTCOMPARE_DATA_DIR": str(tmp_path / "data")}
    done = subprocess.run(
        [sys.executable, "-m", "cbtcompare", "report", "--out", str(tmp_path / "r"), "--scores", str(scores),
         "--filter", "family=mistral-7b"],
        cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "r" / "index.html").is_file()
    assert set(pd.read_csv(tmp_path / "r" / "descriptive.csv")["family"]) == {"mistral-7b"}
    assert Path(tmp_path / "r" / "transcript_totals.csv").is_file()


# --- issue 17 through the report: planted data with known answers ----------------------------------------


def _report_cli(tmp_path: Path, scores: pd.DataFrame, *extra: str, name: str = "r") -> tuple[int, Path, str]:
    """Run `python -m cbtcompare report` on `scores` written as a CSV; (exit code, out folder, stderr)."""
    path = tmp_path / f"{name}.csv"
    scores.to_csv(path, index=False)
    env = {**os.environ, "CBTCOMPARE_DATA_DIR": str(tmp_path / "data")}
    done = subprocess.run(
        [sys.executable, "-m", "cbtcompare", "report", "--out", str(tmp_path / name), "--scores", str(path), *extra],
        cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    return done.returncode, tmp_path / name, done.stderr


def test_report_refuses_two_base_models_then_pairs_them_as_told(tmp_path):
    from test_stats import two_base_models

    scores = two_base_models(effect=4.0)
    code, out, stderr = _report_cli(tmp_path, scores, name="ambiguous")
    assert code == 0 and not (out / "paired.csv").exists() and not (out / "tuned_vs_base.csv").exists()
    assert "m-base, m-base-q4" in stderr and "--pair m-base=m-tuned" in stderr
    code, out, stderr = _report_cli(tmp_path, scores, "--pair", "m-base=m-tuned", name="paired")
    assert code == 0, stderr
    summary = pd.read_csv(out / "tuned_vs_base.csv")
    primary = summary.iloc[0]
    assert primary["analysis"].startswith("primary") and primary["unit"] == "patient"
    assert primary["ci_low"] < 4.0 < primary["ci_high"] and abs(primary["mean_diff"] - 4.0) < 1.5
    pairing = pd.read_csv(out / "pairing.csv", keep_default_na=False).set_index("control")
    assert int(pairing.loc["m-base-q4", "unmatched_control"]) == 16 * 4
    assert "have no partner" in stderr
    code, _, stderr = _report_cli(tmp_path, scores, "--pair", "m-tuned=m-base", name="reversed")
    assert "m-tuned is a tuned therapist" in stderr


def test_report_primary_total_ignores_unscored_homework_under_the_null(tmp_path):
    from test_stats import knock_out_homework

    null = make_planted_scores(seed=17, effect=0.0, judges=(JUDGES[0],), noise_sd=2.0)
    frame = knock_out_homework(null, 0.3, "base")
    assert cli.main(["report", "--out", str(tmp_path / "r"), "--scores", _csv(tmp_path, frame)]) == 0
    summary = pd.read_csv(tmp_path / "r" / "tuned_vs_base.csv").set_index("analysis")
    assert summary.filter(like="primary", axis=0)["p_value"].iloc[0] > 0.05
    assert summary.filter(like="complete cases", axis=0)["p_value"].iloc[0] > 0.05
    arms = pd.read_csv(tmp_path / "r" / "unscored_by_arm.csv").groupby("variant")["unscored_rate"].mean()
    assert arms["base"] == pytest.approx(0.3 / len(CTRS_ITEMS)) and arms["tuned"] == 0


def _csv(tmp_path: Path, frame: pd.DataFrame, name: str = "scores.csv") -> str:
    path = tmp_path / name
    frame.to_csv(path, index=False)
    return str(path)


def test_report_leads_with_the_patient_level_analysis_and_states_its_conventions(tmp_path, small):
    from statsmodels.stats.power import TTestPower

    index = report.write_report(small, tmp_path)
    page = index.read_text(encoding="utf-8")
    assert page.index("primary (patient level) first") < page.index("session cells")
    for convention in ("zero differences are dropped", "REML", "refit both models by ML", "withheld"):
        assert convention in page
    summary = pd.read_csv(tmp_path / "tuned_vs_base.csv")
    assert list(summary["analysis"].str.split(":").str[0]) == ["primary", "sensitivity", "patient level",
                                                              "secondary", "secondary"]  # fmt: skip
    assert summary.loc[0, "n_units"] == 8  # patients, not the 48 session cells
    power_row = pd.read_csv(tmp_path / "power.csv").iloc[0]
    effect = TTestPower().solve_power(nobs=power_row["n_patients"], alpha=0.05, power=0.8)
    assert power_row["minimal_detectable_difference"] == pytest.approx(
        effect * power_row["sd_of_patient_differences"], rel=1e-3
    )
    full = pd.read_csv(tmp_path / "tuned_vs_base.csv")
    shown = report.display_frame(full)
    assert str(full.loc[0, "mean_diff"]) != shown.loc[0, "mean_diff"]  # the CSV keeps full precision
    assert len(shown.loc[0, "mean_diff"].split(".")[1]) == 2  # the page rounds for people


def test_report_adds_the_arena_leaderboard_from_preferences(tmp_path, small):
    votes = pd.DataFrame(
        [{"model_a": "a-model", "model_b": "b-model", "winner": "a" if k % 4 else "b", "rater": f"r{k % 3}"}
         for k in range(40)]
    )  # fmt: skip
    bundle = report.build_results(small, preferences=votes)
    board = bundle.tables["arena"].set_index("model")
    assert board.loc["a-model", "rating"] > board.loc["b-model", "rating"]
    assert "arena_ratings" in bundle.figures and "arena_raters" in bundle.tables


def _pairwise(judge: str, ab: str, ba: str, n: int) -> list:
    from cbtcompare.ctrs.pairwise import PairwiseAnswer, PairwiseItem, PairwiseResult

    outcome = ab if ab == ba else "inconsistent"
    items = {
        item: PairwiseItem(item=item, outcome=outcome, answers=[PairwiseAnswer(order="AB", side=ab),
                                                                 PairwiseAnswer(order="BA", side=ba)])
        for item in CTRS_ITEMS
    }  # fmt: skip
    return [
        PairwiseResult(transcript_a=f"a{k}", transcript_b=f"b{k}", judge=judge, rubric_id="ctrs-paper-1-10",
                       rubric_version="v", mode="all", items=items)
        for k in range(n)
    ]  # fmt: skip


def test_the_report_has_a_judge_bias_section_measured_by_manipulation_with_cis(tmp_path: Path):
    # A judge of the llama family adds +1 per item to llama therapists (11 points on the total); in pairwise
    # mode one judge always picks whichever transcript is shown first, the other always the same one.
    scores = make_planted_scores(n_patients=6, n_sessions=2, self_bias=1.0)
    pairwise = _pairwise("first-lover", "A", "B", 5) + _pairwise("steady", "A", "A", 5)
    padding = pd.DataFrame([{"judge": JUDGES[0], "n": 8, "mean": 2.5, "ci_low": 1.0, "ci_high": 4.0, "p_value": 0.01}])
    bundle = report.build_results(scores, pairwise_results=pairwise, padding_bias=padding)

    position = bundle.tables["position_bias"].set_index("judge")
    assert position.loc["first-lover", "flip_rate"] == 1.0 and position.loc["first-lover", "flip_ci_low"] > 0.9
    assert position.loc["first-lover", "first_rate"] == 1.0 and position.loc["first-lover", "p_first"] < 1e-6
    assert position.loc["steady", "flip_rate"] == 0.0 and position.loc["steady", "first_rate"] == 0.5
    assert position.loc["steady", "flip_ci_low"] == 0.0 < position.loc["steady", "flip_ci_high"] < 0.1

    relative = bundle.tables["relative_self_preference"].set_index("judge")
    own = relative.loc["llama3.1-70b-judge"]
    assert own["own_family"] == "llama3.1-8b" and own["ci_low"] < 11.0 < own["ci_high"] and own["ci_low"] > 5
    assert "gemini-1.5-pro" not in relative.index  # no therapist of its family: nothing to measure
    assert bundle.tables["length_bias_padding"].equals(padding)

    index = report.write_results(bundle, scores, tmp_path / "out")
    page = index.read_text(encoding="utf-8")
    section = page.split("<h2>Judge bias, measured by manipulation</h2>")[1].split("<h2>")[0]
    for name in ("position_bias", "relative_self_preference", "length_bias_padding"):
        assert f'href="{name}.csv"' in section and (tmp_path / "out" / f"{name}.csv").is_file()
    assert "Judge bias is measured by manipulation" in page  # the convention is stated


def test_one_judge_gets_no_relative_self_preference_and_says_why(small):
    bundle = report.build_results(small)
    assert "relative_self_preference" not in bundle.tables and "position_bias" not in bundle.tables
    assert any("Relative self-preference not computed" in note for note in bundle.notes)
