"""cbtcompare.arena and `python -m cbtcompare arena`: Bradley-Terry ratings on votes drawn from known
strengths, checked against FastChat's own recipe (scikit-learn's logistic regression on the same table),
rater flags on planted raters, the CSV's validation on arbitrary text, and a real rating study's votes
read from SQLite. All data here is synthetic."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn.linear_model import LogisticRegression

from cbtcompare import arena, cli

TRUE_RATINGS = {"alpha-tuned": 1100.0, "alpha-base": 1000.0, "beta-tuned": 1050.0, "beta-base": 900.0}


def simulate_votes(n: int = 1500, seed: int = 0, tie_share: float = 0.15, raters: int = 6) -> pd.DataFrame:
    """Votes between random model pairs: P(a wins | decisive) = 1 / (1 + 10^((Rb - Ra)/400))."""
    rng = np.random.default_rng(seed)
    models = list(TRUE_RATINGS)
    rows = []
    for k in range(n):
        a, b = rng.choice(models, size=2, replace=False)
        p_a = 1 / (1 + 10 ** ((TRUE_RATINGS[b] - TRUE_RATINGS[a]) / 400))
        winner = "tie" if rng.random() < tie_share else "a" if rng.random() < p_a else "b"
        rows.append({"model_a": a, "model_b": b, "winner": winner, "rater": f"rater-{k % raters}"})
    return pd.DataFrame(rows)


def fastchat_mle_elo(votes: pd.DataFrame) -> dict[str, float]:
    """FastChat's compute_mle_elo (fastchat/serve/monitor/elo_analysis.py): wins weigh 2, ties 1 for each
    side, logistic regression without intercept or penalty, 400 * coef + 1000."""
    models = sorted(set(votes["model_a"]) | set(votes["model_b"]))
    index = {m: i for i, m in enumerate(models)}
    weights: dict[tuple[int, int], float] = {}
    for row in votes.itertuples():
        a, b = index[row.model_a], index[row.model_b]
        if row.winner in ("a", "tie"):
            weights[(a, b)] = weights.get((a, b), 0) + (2 if row.winner == "a" else 1)
        if row.winner in ("b", "tie"):
            weights[(b, a)] = weights.get((b, a), 0) + (2 if row.winner == "b" else 1)
    x, y, w = [], [], []
    for (winner, loser), weight in weights.items():
        row = np.zeros(len(models))
        row[winner], row[loser] = math.log(10), -math.log(10)
        x += [row, row]
        y += [1, 0]
        w += [weight, 0.0]  # sklearn needs both classes present; the zero-weight row adds nothing
    fit = LogisticRegression(fit_intercept=False, C=np.inf, tol=1e-8, max_iter=1000)
    fit.fit(np.array(x), np.array(y), sample_weight=np.array(w))
    ratings = 400 * fit.coef_[0]
    return dict(zip(models, ratings - ratings.mean() + 1000, strict=True))


@pytest.fixture(scope="module")
def votes() -> pd.DataFrame:
    return simulate_votes()


def test_ratings_match_fastchats_recipe_and_recover_the_planted_strengths(votes):
    board = arena.bradley_terry(votes, bootstrap_rounds=100, seed=1)
    mine = {r.model: r.rating for r in board.ratings}
    reference = fastchat_mle_elo(votes)
    for model, rating in reference.items():
        assert mine[model] == pytest.approx(rating, abs=0.5)  # the tiny ridge moves ratings by far less
    # ties drawn regardless of strength pull ratings together, so coverage is checked on decisive votes
    decisive = arena.bradley_terry(simulate_votes(tie_share=0.0, seed=5), bootstrap_rounds=100, seed=1)
    centred_truth = {m: r - np.mean(list(TRUE_RATINGS.values())) + 1000 for m, r in TRUE_RATINGS.items()}
    for r in decisive.ratings:
        assert r.ci_low < centred_truth[r.model] < r.ci_high
    for r in board.ratings:
        assert r.n == int(((votes["model_a"] == r.model) | (votes["model_b"] == r.model)).sum())
    assert [r.model for r in board.ratings] == sorted(TRUE_RATINGS, key=lambda m: -TRUE_RATINGS[m])


def test_ties_are_half_wins_and_a_clean_sweep_stays_finite():
    even = pd.DataFrame([{"model_a": "x", "model_b": "y", "winner": "tie", "rater": "r"}] * 10)
    board = arena.bradley_terry(even, bootstrap_rounds=20)
    assert board.ratings[0].rating == pytest.approx(board.ratings[1].rating)
    sweep = pd.DataFrame([{"model_a": "x", "model_b": "y", "winner": "a", "rater": "r"}] * 10)
    ratings = {r.model: r.rating for r in arena.bradley_terry(sweep, bootstrap_rounds=20).ratings}
    assert math.isfinite(ratings["x"]) and ratings["x"] > ratings["y"] + 400


def test_rater_flags_catch_a_position_voter_and_a_contrarian(votes):
    rng = np.random.default_rng(3)
    pairs = votes.sample(60, random_state=2)
    always_a = pairs.assign(winner="a", rater="always-a")
    contrarian = votes.sample(60, random_state=4).copy()
    contrarian["winner"] = contrarian["winner"].map({"a": "b", "b": "a", "tie": "tie"})
    contrarian["rater"] = "contrarian"
    few = pairs.head(3).assign(rater="newcomer", winner=rng.choice(["a", "b"], 3))
    flags = arena.rater_flags(pd.concat([votes, always_a, contrarian, few], ignore_index=True)).set_index("rater")
    assert "one_side" in flags.loc["always-a", "flags"]
    assert "against_consensus" in flags.loc["contrarian", "flags"]
    assert flags.loc["newcomer", "flags"] == "few_votes"
    honest = flags.loc[[f"rater-{k}" for k in range(6)]]
    assert (honest["flags"] == "").all() and (honest["agreement"] > 0.6).all()


def test_pairwise_judge_verdicts_become_votes():
    outcomes = [
        ("m-tuned", "m-base", "judge-x", {"agenda": "A", "pacing": "A", "homework": "inconsistent"}),
        ("m-tuned", "m-base", "judge-x", {"agenda": "tie", "pacing": "B", "homework": "A"}),
        ("m-tuned", "m-base", "judge-x", {"agenda": "unscored"}),
    ]
    votes = arena.preferences_from_pairwise(outcomes)
    assert votes["winner"].tolist() == ["a", "tie"] and set(votes["rater"]) == {"judge-x"}


def test_the_arena_cli_prints_the_promised_json(tmp_path, votes, capsys):
    path = tmp_path / "votes.csv"
    votes.to_csv(path, index=False)
    assert cli.main(["arena", "--preferences", str(path), "--json", "--rounds", "50"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert [set(r) for r in out["ratings"]] == [{"model", "rating", "ci_low", "ci_high", "n"}] * 4
    assert out["ratings"][0]["model"] == "alpha-tuned" and out["n_votes"] == len(votes)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("model_a,model_b,winner\nx,y,a\n", "line 1 (header) lacks column(s) rater"),
        ("model_a,model_b,winner,rater\nx,y,a,r\nx,y,A,r\nx,y,left,r\n", "line 4, column winner: 'left'"),
        ("model_a,model_b,winner,rater\nx,,a,r\n", "line 2, column model_b: empty"),
        ("model_a,model_b,winner,rater\nx,x,a,r\n", "line 2: model_a and model_b are both 'x'"),
        ("model_a,model_b,winner,rater\nx,y,a\n", "line 2: 3 fields, but the header has 4"),
        ("", "the file is empty"),
        ("model_a,model_b,winner,rater\n", "no votes below the header"),
    ],
)
def test_bad_preferences_name_the_line_and_column(text, message):
    with pytest.raises(arena.PreferencesError, match=message.replace("(", r"\(").replace(")", r"\)")):
        arena.parse_preferences_csv(text, source="votes.csv")


def test_a_bad_file_exits_2_with_the_line(tmp_path, capsys):
    path = tmp_path / "votes.csv"
    path.write_bytes(b"model_a,model_b,winner,rater\nx,y,\xff,r\n")
    assert cli.main(["arena", "--preferences", str(path)]) == 2
    assert "not UTF-8" in capsys.readouterr().err


TRICKY = st.sampled_from(['"', "\\", ",", "\n", "\r", "\u2028", "\u2029", "\x85", "\x00", "<|im_start|>", "tie", "a"])


@given(st.lists(st.lists(st.one_of(st.text(max_size=12), TRICKY), min_size=0, max_size=5), max_size=6))
@settings(deadline=None, max_examples=150)
def test_any_csv_text_is_votes_or_an_error_naming_where(cells):
    lines = ["model_a,model_b,winner,rater"] + [",".join(row) for row in cells]
    text = "\n".join(lines)
    try:
        votes = arena.parse_preferences_csv(text, source="votes.csv")
    except arena.PreferencesError as exc:
        assert "votes.csv" in str(exc) and ("line" in str(exc) or "file" in str(exc))
    else:
        assert set(votes["winner"]) <= {"a", "b", "tie"} and (votes["model_a"] != votes["model_b"]).all()
        arena.bradley_terry(votes, bootstrap_rounds=3) if votes[["model_a", "model_b"]].stack().nunique() > 1 else None


def test_a_rating_studys_votes_come_from_the_store(tmp_path, monkeypatch, capsys):
    from test_rating import CANARY, prefers_zorblat, rate_all, study_with

    from cbtcompare import rating
    from cbtcompare.store import Store

    monkeypatch.setenv("CBTCOMPARE_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv(rating.READING_WPM_ENV, "1e9")
    store = Store()
    created = study_with(store, 6, 2)
    for code in created.invite_codes:
        rate_all(store, code, prefers_zorblat)
    votes, skipped = arena.preferences_from_study(store, created.study_id)
    assert len(votes) == 12 and skipped == 0
    assert cli.main(["arena", "--study", created.study_id, "--json", "--rounds", "20"]) == 0
    ratings = json.loads(capsys.readouterr().out)["ratings"]
    assert ratings[0]["model"] == CANARY["name_a"] and ratings[0]["n"] == 12


def test_the_results_tab_fits_the_leaderboard_through_the_official_client(app_url, tmp_path, votes):
    from gradio_client import Client, handle_file

    path = tmp_path / "votes.csv"
    votes.to_csv(path, index=False)
    client = Client(app_url, verbose=False)
    board, raters, _ = client.predict(handle_file(str(path)), api_name="/arena")
    models = [row[0] for row in board["data"]]
    assert models[0] == "alpha-tuned" and len(models) == 4
    assert all(len(str(row[1]).split(".")[1]) == 2 for row in board["data"])  # rounded for people
    assert len(raters["data"]) == 6
    bad = tmp_path / "bad.csv"
    bad.write_text("model_a,model_b,winner,rater\nx,y,maybe,r\n", encoding="utf-8")
    with pytest.raises(Exception, match="line 2, column winner"):
        client.predict(handle_file(str(bad)), api_name="/arena")
