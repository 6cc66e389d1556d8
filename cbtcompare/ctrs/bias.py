"""Judge bias measured by manipulation: padding (length), order swap (position), own vs other families.

A correlation of scores with length or with family cannot tell bias from quality (longer sessions may
simply be better), so each bias here is measured by changing only the suspected cause:
- length: the same transcript with neutral filler exchanges appended (bias_filler.txt) is re-judged with
  the same seed; the bias is the prorated total of padded minus original, over items scored in both.
- position: in pairwise mode every item is asked in both orders (cbtcompare.ctrs.pairwise); the flip
  rate is the share of items whose two orders name different transcripts, and the first-position rate
  the share of decisive answers that chose whichever transcript was shown first (0.5 when unbiased).
- self-preference: one fit of all judges' totals, total ~ transcript + judge + own-family indicator per
  judge: quality and leniency are absorbed, and the indicator is the judge's preference for its family.
Each comes per judge with a CI. Padded copies get fresh ids and are never stored: stored transcripts
are never changed. Nothing here imports gradio or the store.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from functools import cache

import numpy as np
import pandas as pd
from scipy import stats as sps

from cbtcompare.ctrs.judge import JudgeConfig, JudgeResult, score_transcript
from cbtcompare.ctrs.pairwise import PairwiseResult, compare_pair
from cbtcompare.ctrs.rubric import Rubric
from cbtcompare.models.base import ChatModel
from cbtcompare.paths import PACKAGE_ROOT
from cbtcompare.transcript import Transcript, Turn, new_id

FILLER_FILE = PACKAGE_ROOT / "ctrs" / "bias_filler.txt"


@cache
def filler_exchanges() -> tuple[tuple[str, str], ...]:
    """(therapist, patient) neutral exchanges from bias_filler.txt."""
    exchanges = []
    for line in FILLER_FILE.read_text(encoding="utf-8").splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        therapist, _, patient = line.partition("|")
        exchanges.append((therapist.strip(), patient.strip()))
    return tuple(exchanges)


def pad_transcript(transcript: Transcript, exchanges: int = 3) -> Transcript:
    """A copy (new id, never stored) with `exchanges` neutral therapist/patient exchanges inserted before
    the last turn, so the session's ending (where homework is set) stays the ending."""
    if exchanges < 1:
        raise ValueError("pad with at least one exchange")
    if not transcript.turns:
        raise ValueError(f"transcript {transcript.id} has no turns to pad")
    filler = filler_exchanges()
    added = []
    for k in range(exchanges):
        therapist, patient = filler[k % len(filler)]
        added += [Turn(role="therapist", text=therapist), Turn(role="patient", text=patient)]
    turns = list(transcript.turns)
    padded = [*turns[:-1], *added, turns[-1]]
    meta = {**transcript.meta, "padded_from": transcript.id, "padding_exchanges": exchanges}
    return transcript.model_copy(update={"id": new_id(), "turns": padded, "meta": meta}, deep=True)


def _prorated_difference(original: JudgeResult, padded: JudgeResult, n_items: int) -> tuple[float, int]:
    common = [
        item
        for item, score in original.items.items()
        if score.status == "scored" and padded.items.get(item) is not None and padded.items[item].status == "scored"
    ]
    if not common:
        return math.nan, 0
    diffs = [float(padded.items[i].score) - float(original.items[i].score) for i in common]  # type: ignore[arg-type]
    return float(np.mean(diffs)) * n_items, len(common)


def _mean_interval(values: Sequence[float], confidence: float) -> dict[str, float]:
    array = np.asarray([v for v in values if math.isfinite(v)], dtype=float)
    n = int(array.size)
    out = {"n": n, "mean": math.nan, "ci_low": math.nan, "ci_high": math.nan, "p_value": math.nan}
    if n == 0:
        return out
    out["mean"] = float(array.mean())
    if n >= 2:
        sd = float(array.std(ddof=1))
        if sd == 0:
            out["ci_low"] = out["ci_high"] = out["mean"]
            out["p_value"] = 1.0 if out["mean"] == 0 else 0.0
        else:
            half = float(sps.t.ppf(0.5 + confidence / 2, n - 1)) * sd / math.sqrt(n)
            out["ci_low"], out["ci_high"] = out["mean"] - half, out["mean"] + half
            out["p_value"] = float(sps.ttest_1samp(array, 0.0).pvalue)
    return out


def length_bias_by_padding(
    judges: Sequence[ChatModel],
    transcripts: Sequence[Transcript],
    rubric: Rubric,
    config: JudgeConfig | None = None,
    *,
    exchanges: int = 3,
    confidence: float = 0.95,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(per transcript, per judge). Per transcript: judge, transcript_id, original_turns, padded_turns,
    items_compared, difference (padded - original, prorated to the rubric length). Per judge: judge, n,
    mean (the length bias in total points), ci_low, ci_high, p_value (t test of no change)."""
    config = config or JudgeConfig()
    rows = []
    for judge in judges:
        for transcript in transcripts:
            padded = pad_transcript(transcript, exchanges)
            original_result = score_transcript(judge, transcript, rubric, config)
            padded_result = score_transcript(judge, padded, rubric, config)
            difference, compared = _prorated_difference(original_result, padded_result, len(rubric.items))
            rows.append(
                {
                    "judge": judge.name,
                    "transcript_id": transcript.id,
                    "original_turns": len(transcript.turns),
                    "padded_turns": len(padded.turns),
                    "items_compared": compared,
                    "difference": difference,
                }
            )
    per_transcript = pd.DataFrame(rows)
    summary = [
        {"judge": judge, **_mean_interval(group["difference"].tolist(), confidence)}
        for judge, group in per_transcript.groupby("judge", sort=True)
    ]
    return per_transcript, pd.DataFrame(summary)


def wilson_interval(successes: int, n: int, confidence: float = 0.95) -> tuple[float, float]:
    """Wilson score interval for a proportion; NaN when n is 0."""
    if n == 0:
        return (math.nan, math.nan)
    z = float(sps.norm.ppf(0.5 + confidence / 2))
    p = successes / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return (max(0.0, centre - half), min(1.0, centre + half))


POSITION_COLUMNS = [
    "judge",
    "n_items",
    "flips",
    "flip_rate",
    "flip_ci_low",
    "flip_ci_high",
    "n_decisive",
    "first_rate",
    "first_ci_low",
    "first_ci_high",
    "p_first",
]


def position_bias(results: Sequence[PairwiseResult], confidence: float = 0.95) -> pd.DataFrame:
    """Per judge from pairwise results (each item asked AB and BA): flip rate (the orders name different
    transcripts) over items answered in both orders, and the first-position rate over decisive answers
    with a Wilson CI and a binomial test against 0.5."""
    tallies: dict[str, list[int]] = {}
    for result in results:
        tally = tallies.setdefault(result.judge, [0, 0, 0, 0])  # items, flips, decisive, chose first
        for item in result.items.values():
            sides = {a.order: a.side for a in item.answers}
            if sides.get("AB") is None or sides.get("BA") is None:
                continue
            tally[0] += 1
            if "tie" not in (sides["AB"], sides["BA"]) and sides["AB"] != sides["BA"]:
                tally[1] += 1
            for order, side in sides.items():
                if side == "tie":
                    continue
                tally[2] += 1
                shown_first = "A" if order == "AB" else "B"
                tally[3] += int(side == shown_first)
    rows = []
    for judge, (items, flips, decisive, first) in sorted(tallies.items()):
        flip_low, flip_high = wilson_interval(flips, items, confidence)
        first_low, first_high = wilson_interval(first, decisive, confidence)
        rows.append(
            {
                "judge": judge,
                "n_items": items,
                "flips": flips,
                "flip_rate": flips / items if items else math.nan,
                "flip_ci_low": flip_low,
                "flip_ci_high": flip_high,
                "n_decisive": decisive,
                "first_rate": first / decisive if decisive else math.nan,
                "first_ci_low": first_low,
                "first_ci_high": first_high,
                "p_first": float(sps.binomtest(first, decisive, 0.5).pvalue) if decisive else math.nan,
            }
        )
    return pd.DataFrame(rows, columns=POSITION_COLUMNS)


def position_bias_by_swap(
    judges: Sequence[ChatModel],
    pairs: Sequence[tuple[Transcript, Transcript]],
    rubric: Rubric,
    config: JudgeConfig | None = None,
    *,
    confidence: float = 0.95,
) -> tuple[list[PairwiseResult], pd.DataFrame]:
    """Judge every pair in both orders with every judge; return the results and position_bias of them."""
    results = [compare_pair(judge, a, b, rubric, config) for judge in judges for a, b in pairs]
    return results, position_bias(results, confidence)


SELF_PREFERENCE_COLUMNS = [
    "judge",
    "own_family",
    "n_own",
    "n_other",
    "leniency",
    "relative_self_preference",
    "std_error",
    "ci_low",
    "ci_high",
    "p_value",
]


def relative_self_preference(
    scores: pd.DataFrame, own_family: dict[str, str] | None = None, confidence: float = 0.95
) -> pd.DataFrame:
    """Per judge with an own family among the therapists (own_family maps judge -> family; by default
    cbtcompare.stats.same_family decides): its self-preference in total points, net of leniency.

    One least-squares fit of every judge's transcript totals, total ~ transcript + judge + one
    own-family indicator per judge: the transcript terms absorb quality, the judge terms leniency, and
    each judge's indicator is how much more it gives its own family than its leniency predicts (t CI).
    `leniency` is the judge's term against the mean judge. Needs at least two judges."""
    import statsmodels.formula.api as smf

    from cbtcompare.stats import TOTAL, _judge_totals, same_family, validate_scores

    scores = validate_scores(scores)
    data = _judge_totals(scores).dropna(subset=[TOTAL])
    data["family"] = data["transcript_id"].map(scores.groupby("transcript_id")["family"].first())
    judges = sorted(data["judge"].unique())

    def is_own(judge: str, fam: str) -> bool:
        return own_family[judge] == fam if own_family and judge in own_family else same_family(judge, fam)

    terms = {}
    for k, judge in enumerate(judges):
        indicator = (data["judge"] == judge) & np.array([is_own(judge, str(f)) for f in data["family"]])
        if indicator.any() and (~indicator[data["judge"] == judge]).any():
            terms[judge] = f"own_{k}"
            data[f"own_{k}"] = indicator.astype(float)
    if len(judges) < 2 or not terms:
        return pd.DataFrame(columns=SELF_PREFERENCE_COLUMNS)
    data["transcript_id"] = data["transcript_id"].astype(str)
    formula = "total ~ C(transcript_id) + C(judge, Sum) + " + " + ".join(terms.values())
    fit = smf.ols(formula, data=data.rename(columns={TOTAL: "total"})).fit()
    interval = fit.conf_int(alpha=1 - confidence)
    leniency = {judges[i]: float(fit.params.get(f"C(judge, Sum)[S.{judges[i]}]", math.nan)) for i in range(len(judges))}
    leniency[judges[-1]] = -sum(v for j, v in leniency.items() if j != judges[-1])  # sum-to-zero coding
    rows = []
    for judge, term in terms.items():
        own = data[term] == 1
        rows.append(
            {
                "judge": judge,
                "own_family": ", ".join(sorted(data.loc[own, "family"].astype(str).unique())),
                "n_own": int(own.sum()),
                "n_other": int(((data["judge"] == judge) & ~own).sum()),
                "leniency": leniency[judge],
                "relative_self_preference": float(fit.params[term]),
                "std_error": float(fit.bse[term]),
                "ci_low": float(interval.loc[term, 0]),
                "ci_high": float(interval.loc[term, 1]),
                "p_value": float(fit.pvalues[term]),
            }
        )
    return pd.DataFrame(rows, columns=SELF_PREFERENCE_COLUMNS)
