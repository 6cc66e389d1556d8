"""Arena leaderboard: Bradley-Terry ratings from blind pairwise preferences, bootstrap CIs, rater flags.

A preference is one vote (model_a, model_b, winner a|b|tie, rater), from a person in a rating study or
from a pairwise judge. As FastChat's compute_mle_elo does, a win counts twice and a tie once for each
side (a tie is half a win), strengths are fitted by maximum likelihood on that table, and ratings are on
the Elo scale: rating = 1000 + 400 * log10-strength, centred on the mean model. Unlike FastChat a tiny
ridge (RIDGE) keeps a model that won or lost every vote finite. CIs are percentiles of refits on votes
resampled with replacement (a seeded bootstrap). Rater flags point at votes to read, not to drop:
always the same side (position), almost always tie, or agreeing with the other raters' leaderboard
significantly less than chance. Nothing here reads the store; see preferences_from_study for that.
"""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd
from pydantic import BaseModel
from scipy import stats as sps
from scipy.optimize import minimize

PREFERENCE_COLUMNS: tuple[str, ...] = ("model_a", "model_b", "winner", "rater")
WINNERS: tuple[str, ...] = ("a", "b", "tie")
SCALE, INIT_RATING = 400.0, 1000.0
RIDGE = 1e-4
BOOTSTRAP_ROUNDS = 200
# Rater flags need this many votes before a share or an agreement rate says anything.
MIN_VOTES_FOR_FLAGS = 10
ONE_SIDE_SHARE = 0.9
TIE_SHARE = 0.9
AGAINST_CONSENSUS_P = 0.05

Winner = Literal["a", "b", "tie"]


class PreferencesError(ValueError):
    """A preferences file or frame is malformed; the message names the line and column and what to fix."""


class Rating(BaseModel):
    model: str
    rating: float
    ci_low: float
    ci_high: float
    n: int


class Leaderboard(BaseModel):
    ratings: list[Rating]
    n_votes: int
    bootstrap_rounds: int

    def frame(self) -> pd.DataFrame:
        return pd.DataFrame([r.model_dump() for r in self.ratings], columns=list(Rating.model_fields))


def _clean_text(value: object, line: str, column: str) -> str:
    text = "" if value is None else str(value).strip()
    if not text:
        raise PreferencesError(f"{line}, column {column}: empty; every vote needs {', '.join(PREFERENCE_COLUMNS)}")
    return text


def validate_preferences(
    rows: Iterable[Mapping[str, object]], *, source: str = "preferences", first_line: int = 2
) -> pd.DataFrame:
    """Check votes (mappings with PREFERENCE_COLUMNS) and return a clean frame; winner is lower-cased.
    Errors name `source`, the line (row i is line first_line + i) and the column."""
    records = []
    for index, row in enumerate(rows):
        line = f"{source}: line {first_line + index}"
        missing = [c for c in PREFERENCE_COLUMNS if c not in row]
        if missing:
            raise PreferencesError(f"{line}: missing column(s) {', '.join(missing)}")
        model_a = _clean_text(row["model_a"], line, "model_a")
        model_b = _clean_text(row["model_b"], line, "model_b")
        rater = _clean_text(row["rater"], line, "rater")
        winner = _clean_text(row["winner"], line, "winner").lower()
        if winner not in WINNERS:
            raise PreferencesError(f"{line}, column winner: {row['winner']!r} is not one of a, b, tie")
        if model_a == model_b:
            raise PreferencesError(f"{line}: model_a and model_b are both {model_a!r}; a vote compares two models")
        records.append({"model_a": model_a, "model_b": model_b, "winner": winner, "rater": rater})
    if not records:
        raise PreferencesError(f"{source}: no votes; a preferences table needs a row per vote")
    return pd.DataFrame(records, columns=list(PREFERENCE_COLUMNS))


def read_preferences_csv(path: str | Path) -> pd.DataFrame:
    """Read and validate a preferences CSV (header model_a, model_b, winner, rater; extra columns ignored)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"preferences file not found: {path}")
    try:
        text = path.read_bytes().decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise PreferencesError(f"{path}: not UTF-8 text (byte {exc.start}); save the CSV as UTF-8") from exc
    return parse_preferences_csv(text, source=str(path))


def parse_preferences_csv(text: str, *, source: str = "preferences") -> pd.DataFrame:
    """Validate preferences CSV text; see read_preferences_csv."""
    reader = csv.reader(io.StringIO(text, newline=""))
    try:
        header = next(reader, None)
        if header is None:
            raise PreferencesError(f"{source}: the file is empty; it needs a header {','.join(PREFERENCE_COLUMNS)}")
        header = [h.strip().lower() for h in header]
        missing = [c for c in PREFERENCE_COLUMNS if c not in header]
        if missing:
            raise PreferencesError(
                f"{source}: line 1 (header) lacks column(s) {', '.join(missing)}; "
                f"the header needs {','.join(PREFERENCE_COLUMNS)}"
            )
        rows = []
        for fields in reader:
            line = f"{source}: line {reader.line_num}"
            if not any(f.strip() for f in fields):
                continue
            if len(fields) != len(header):
                raise PreferencesError(f"{line}: {len(fields)} fields, but the header has {len(header)}")
            rows.append((reader.line_num, dict(zip(header, fields, strict=True))))
    except csv.Error as exc:
        raise PreferencesError(f"{source}: line {reader.line_num}: not readable CSV ({exc})") from exc
    if not rows:
        raise PreferencesError(f"{source}: no votes below the header line; add a row per vote")
    frames = []
    for number, row in rows:
        frames.append(validate_preferences([row], source=source, first_line=number))
    return pd.concat(frames, ignore_index=True)


# ---------------------------------------------------------------------------------------------------------
# Fitting


def _win_matrix(votes: pd.DataFrame, models: Sequence[str], weights: np.ndarray | None = None) -> np.ndarray:
    """wins[i, j]: weighted wins of model i over j (a win 2, a tie 1 for each side)."""
    index = {m: k for k, m in enumerate(models)}
    a = votes["model_a"].map(index).to_numpy()
    b = votes["model_b"].map(index).to_numpy()
    winner = votes["winner"].to_numpy()
    w = np.ones(len(votes)) if weights is None else weights
    k = len(models)
    wins = np.zeros((k, k))
    np.add.at(wins, (a, b), w * np.where(winner == "a", 2.0, np.where(winner == "tie", 1.0, 0.0)))
    np.add.at(wins, (b, a), w * np.where(winner == "b", 2.0, np.where(winner == "tie", 1.0, 0.0)))
    return wins


def _fit_strengths(wins: np.ndarray) -> np.ndarray:
    """Log10 strengths (mean 0) maximising sum wins[i,j] * log P(i beats j), P = 1/(1 + 10^(s_j - s_i))."""
    k = wins.shape[0]
    ln10 = math.log(10)

    def objective(s: np.ndarray) -> tuple[float, np.ndarray]:
        diff = (s[:, None] - s[None, :]) * ln10
        log_p = -np.logaddexp(0.0, -diff)
        value = -float(np.sum(wins * log_p)) + RIDGE * float(s @ s)
        p_lose = 1.0 / (1.0 + np.exp(diff))  # 1 - P(i beats j)
        g = wins * p_lose * ln10
        grad = -(g.sum(axis=1) - g.sum(axis=0)) + 2 * RIDGE * s
        return value, grad

    result = minimize(objective, np.zeros(k), jac=True, method="L-BFGS-B", options={"maxiter": 1000, "gtol": 1e-10})
    strengths = result.x
    return strengths - strengths.mean()


def bradley_terry(
    votes: pd.DataFrame, *, bootstrap_rounds: int = BOOTSTRAP_ROUNDS, seed: int = 0, confidence: float = 0.95
) -> Leaderboard:
    """Ratings (Elo scale) with percentile bootstrap CIs, best first; `n` is each model's vote count."""
    votes = validate_preferences(votes.to_dict("records"), source="votes")
    models = sorted(set(votes["model_a"]) | set(votes["model_b"]))
    if len(models) < 2:
        raise PreferencesError("a leaderboard needs votes between at least two models")
    point = INIT_RATING + SCALE * _fit_strengths(_win_matrix(votes, models))
    rng = np.random.default_rng(seed)
    boots = np.empty((bootstrap_rounds, len(models)))
    for r in range(bootstrap_rounds):
        counts = np.bincount(rng.integers(0, len(votes), len(votes)), minlength=len(votes)).astype(float)
        boots[r] = INIT_RATING + SCALE * _fit_strengths(_win_matrix(votes, models, counts))
    tail = (1 - confidence) / 2 * 100
    if bootstrap_rounds:
        low, high = np.percentile(boots, [tail, 100 - tail], axis=0)
    else:
        low = high = np.full(len(models), np.nan)
    n = pd.concat([votes["model_a"], votes["model_b"]]).value_counts()
    ratings = [
        Rating(model=m, rating=float(point[i]), ci_low=float(low[i]), ci_high=float(high[i]), n=int(n.get(m, 0)))
        for i, m in enumerate(models)
    ]
    ratings.sort(key=lambda r: (-r.rating, r.model))
    return Leaderboard(ratings=ratings, n_votes=len(votes), bootstrap_rounds=bootstrap_rounds)


# ---------------------------------------------------------------------------------------------------------
# Rater flags


RATER_COLUMNS = ["rater", "n_votes", "share_a", "share_b", "share_tie", "agreement", "n_compared", "p_against", "flags"]


def rater_flags(votes: pd.DataFrame) -> pd.DataFrame:
    """Per rater: vote shares by side, agreement of the rater's decisive votes with the leaderboard fitted
    on everyone else's votes (the favourite by that leaderboard), a one-sided binomial p of agreeing less
    than chance, and flags: one_side, mostly_ties, against_consensus, few_votes."""
    rows = []
    for rater, own in votes.groupby("rater", sort=True):
        shares = own["winner"].value_counts(normalize=True)
        others = votes[votes["rater"] != rater]
        agreement = p_against = math.nan
        compared = 0
        decisive = own[own["winner"] != "tie"]
        if not others.empty and not decisive.empty:
            models = sorted(set(votes["model_a"]) | set(votes["model_b"]))
            strengths = dict(zip(models, _fit_strengths(_win_matrix(others, models)), strict=True))
            gap = decisive["model_a"].map(strengths) - decisive["model_b"].map(strengths)
            known = gap.abs() > 1e-9
            compared = int(known.sum())
            if compared:
                agrees = ((gap > 0) == (decisive["winner"] == "a"))[known]
                agreement = float(agrees.mean())
                p_against = float(sps.binomtest(int(agrees.sum()), compared, 0.5, alternative="less").pvalue)
        flags = []
        n_votes = len(own)
        if n_votes < MIN_VOTES_FOR_FLAGS:
            flags.append("few_votes")
        else:
            if max(shares.get("a", 0.0), shares.get("b", 0.0)) >= ONE_SIDE_SHARE:
                flags.append("one_side")
            if shares.get("tie", 0.0) >= TIE_SHARE:
                flags.append("mostly_ties")
            if compared >= MIN_VOTES_FOR_FLAGS and p_against < AGAINST_CONSENSUS_P:
                flags.append("against_consensus")
        rows.append(
            {
                "rater": rater,
                "n_votes": n_votes,
                "share_a": float(shares.get("a", 0.0)),
                "share_b": float(shares.get("b", 0.0)),
                "share_tie": float(shares.get("tie", 0.0)),
                "agreement": agreement,
                "n_compared": compared,
                "p_against": p_against,
                "flags": ";".join(flags),
            }
        )
    return pd.DataFrame(rows, columns=RATER_COLUMNS)


# ---------------------------------------------------------------------------------------------------------
# Sources of votes


def preferences_from_records(records: Iterable[Mapping[str, object]]) -> tuple[pd.DataFrame, int]:
    """Votes from a rating study's export records (cbtcompare.rating.export_records: a_therapist,
    b_therapist, preference A/B/tie/both_bad, rater_id); returns (votes, ratings without a preference).
    "Both bad" is a tie for Bradley-Terry, as in FastChat's arena ("tie (bothbad)")."""
    votes, skipped = [], 0
    for record in records:
        preference = record.get("preference")
        if preference is None:
            skipped += 1
            continue
        votes.append(
            {
                "model_a": record["a_therapist"],
                "model_b": record["b_therapist"],
                "winner": "tie" if preference == "both_bad" else str(preference).lower(),
                "rater": record["rater_id"],
            }
        )
    if not votes:
        raise PreferencesError("the study holds no ratings with an overall preference (A, B or tie) yet")
    return validate_preferences(votes, source="study votes", first_line=1), skipped


def preferences_from_study(store: object, study_id: str) -> tuple[pd.DataFrame, int]:
    """A rating study's stored votes, read through cbtcompare.rating's export (the store is not queried here)."""
    from cbtcompare.rating import export_records

    return preferences_from_records(export_records(store, study_id))  # type: ignore[arg-type]


def preferences_from_pairwise(
    outcomes: Iterable[tuple[str, str, str, Mapping[str, str]]],
) -> pd.DataFrame:
    """Votes from pairwise-judge results: (model of A, model of B, judge, {item: outcome}); the vote goes to
    the side that won more items (both orders agreeing, see cbtcompare.ctrs.pairwise), a tie otherwise
    (inconsistent items count for neither side); results with every item unscored are skipped."""
    votes = []
    for model_a, model_b, judge, items in outcomes:
        counted = [o for o in items.values() if o != "unscored"]
        if not counted:
            continue
        a_wins, b_wins = counted.count("A"), counted.count("B")
        winner = "a" if a_wins > b_wins else "b" if b_wins > a_wins else "tie"
        votes.append({"model_a": model_a, "model_b": model_b, "winner": winner, "rater": judge})
    return validate_preferences(votes, source="pairwise verdicts", first_line=1)
