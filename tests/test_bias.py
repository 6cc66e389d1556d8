"""cbtcompare.ctrs.bias: judge bias measured by manipulation. The planted-bias cases use scripted judges,
ChatModel implementations whose bias is known by construction (a legitimate planted-data test: the
answer is known exactly); the real SmolLM2 judge runs once on a tiny transcript (slow). All synthetic."""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterator

import numpy as np
import pandas as pd
import pytest
from test_stats import JUDGES, make_planted_scores

from cbtcompare import stats
from cbtcompare.ctrs import JudgeConfig, load_rubric
from cbtcompare.ctrs.bias import (
    filler_exchanges,
    length_bias_by_padding,
    pad_transcript,
    position_bias_by_swap,
    relative_self_preference,
)
from cbtcompare.models.base import ChatModel, Message, ModelSpec, Sampling, Usage
from cbtcompare.transcript import Transcript, Turn

CONFIG = JudgeConfig(retries=0, quote_choices=False)


class ScriptedCTRSJudge(ChatModel):
    """Answers every asked item with `score_of(prompt)`, no evidence; pairwise prompts get `pairwise(prompt)`."""

    supports_json_schema = True

    def __init__(self, name: str, score_of=None, pairwise=None):  # type: ignore[no-untyped-def]
        super().__init__(ModelSpec(name=name, backend="openai", weights=f"test-double-{name}"))
        self.score_of, self.pairwise = score_of, pairwise

    def _stream(self, messages: list[Message], sampling: Sampling, usage: Usage) -> Iterator[str]:
        yield self._complete_json(messages, {}, sampling)

    def _complete_json(self, messages: list[Message], schema: dict, sampling: Sampling) -> str:
        prompt = messages[-1].content
        items = schema.get("required") or list(load_rubric("paper").item_ids)
        if self.pairwise is not None and "better" in json.dumps(schema):
            return json.dumps({i: {"justification": "x", "better": self.pairwise(prompt, i)} for i in items})
        return json.dumps(
            {i: {"evidence": [], "justification": "Seen.", "score": self.score_of(prompt)} for i in items}
        )


def session(label: str, turns: int = 4) -> Transcript:
    body = []
    for k in range(turns):
        body += [
            Turn(role="therapist", text=f"What would you like to focus on today, {label} {k}?"),
            Turn(role="patient", text=f"I keep thinking I failed ({label} {k})."),
        ]
    return Transcript(turns=[*body, Turn(role="therapist", text="This week, try one thought record.")])


def test_padding_adds_only_neutral_exchanges_before_the_ending_and_never_touches_the_original():
    original = session("x")
    before = original.model_dump()
    padded = pad_transcript(original, exchanges=3)
    assert original.model_dump() == before and padded.id != original.id
    assert padded.turns[-1] == original.turns[-1] and padded.turns[: len(original.turns) - 1] == original.turns[:-1]
    added = padded.turns[len(original.turns) - 1 : -1]
    assert [(t.role, t.text) for t in added] == [
        (role, text)
        for pair in filler_exchanges()[:3]
        for role, text in zip(("therapist", "patient"), pair, strict=True)
    ]
    assert padded.meta["padded_from"] == original.id


def test_length_bias_is_measured_by_padding_not_by_correlation():
    paper = load_rubric("paper")
    transcripts = [session(f"s{k}", turns=2 + k % 3) for k in range(6)]

    def fair(prompt: str) -> int:  # quality is in the words, length plays no part
        return 7 if "thought record" in prompt else 3

    shortest: dict[str, int] = {}

    def long_lover(prompt: str) -> int:  # +1 on every item for any longer version of a session it has seen
        label = re.search(r"today, (s\d+)", prompt).group(1)
        shortest.setdefault(label, len(prompt))
        return fair(prompt) + (1 if len(prompt) > shortest[label] + 100 else 0)

    judges = [ScriptedCTRSJudge("fair-judge", fair), ScriptedCTRSJudge("long-lover", long_lover)]
    per_transcript, summary = length_bias_by_padding(judges, transcripts, paper, CONFIG, exchanges=3)
    table = summary.set_index("judge")
    assert table.loc["fair-judge", "mean"] == 0 and table.loc["fair-judge", "n"] == 6
    assert table.loc["long-lover", "mean"] == len(paper.items)  # +1 on each of the 11 items
    assert table.loc["long-lover", "ci_low"] == table.loc["long-lover", "ci_high"] == len(paper.items)
    assert (per_transcript["padded_turns"] == per_transcript["original_turns"] + 6).all()
    assert (per_transcript["items_compared"] == 11).all()


def test_position_bias_flip_rate_from_order_swaps():
    paper = load_rubric("paper")
    positional = {"pacing", "homework", "feedback"}

    def verdict(prompt: str, item: str) -> str:
        if item in positional:
            return "first"  # whichever transcript is shown first
        return "first" if prompt.index("GOOD") < prompt.index("POOR") else "second"

    pairs = [(session(f"GOOD {k}"), session(f"POOR {k}")) for k in range(4)]
    judge = ScriptedCTRSJudge("position-judge", pairwise=verdict)
    results, table = position_bias_by_swap([judge], pairs, paper, CONFIG)
    row = table.set_index("judge").loc["position-judge"]
    assert row["n_items"] == 4 * 11 and row["flips"] == 4 * len(positional)
    assert row["flip_rate"] == pytest.approx(len(positional) / 11)
    # AB: all 11 answers name the first-shown; BA: only the positional ones do
    assert row["first_rate"] == pytest.approx((11 + len(positional)) / 22)
    assert row["flip_ci_low"] < row["flip_rate"] < row["flip_ci_high"] and row["p_first"] < 0.05
    assert all(r.items["agenda"].outcome == "A" for r in results)


def test_relative_self_preference_separates_self_preference_from_leniency():
    judges = (*JUDGES, "qwen-judge")
    scores = make_planted_scores(seed=6, judges=judges, self_bias=1.0, n_patients=10, n_sessions=2)
    lenient = (scores["judge"] == "qwen-judge") & (scores["family"] != "qwen2.5-7b")
    scores.loc[lenient, "score"] = (scores.loc[lenient, "score"] + 1).clip(upper=10)  # +1 everywhere: leniency
    old = stats.self_preference(scores).set_index(["judge", "family"])
    assert old.loc[("qwen-judge", "qwen2.5-7b"), "difference"] > 5  # the old table calls leniency self-preference
    table = relative_self_preference(scores).set_index("judge")
    llama = table.loc["llama3.1-70b-judge"]
    assert llama["ci_low"] < len(stats.CTRS_ITEMS) < llama["ci_high"] and llama["p_value"] < 1e-6
    qwen = table.loc["qwen-judge"]
    assert qwen["ci_low"] < 0 < qwen["ci_high"]  # as lenient on every family: no self-preference
    assert qwen["leniency"] > table.loc["llama3.1-70b-judge", "leniency"] + 5  # measured, and netted out
    assert "gemini-1.5-pro" not in table.index  # no own family among the therapists


@pytest.mark.slow
def test_the_real_smollm2_judge_on_a_tiny_transcript_gives_a_padding_measurement(instruct_model):
    rubric = load_rubric("tests/data/ctrs_rubric_two_items.yaml")
    tiny = Transcript(
        turns=[
            Turn(role="therapist", text="What shall we put on our agenda today?"),
            Turn(role="patient", text="My exam worries."),
            Turn(role="therapist", text="This week, write one thought record."),
        ]
    )
    config = JudgeConfig(retries=1, max_tokens=160, max_evidence=1)
    per_transcript, summary = length_bias_by_padding([instruct_model], [tiny], rubric, config, exchanges=2)
    row = per_transcript.iloc[0]
    assert row["padded_turns"] == 7 and 0 <= row["items_compared"] <= 2
    if row["items_compared"]:
        span = rubric.scale.max - rubric.scale.min
        assert abs(row["difference"]) <= span * len(rubric.items)  # a measured change, in range
    else:
        assert math.isnan(row["difference"])
    assert summary.iloc[0]["n"] == (1 if row["items_compared"] else 0)
    assert not re.search(r"padded_from", tiny.model_dump_json())  # the original is untouched


def test_per_judge_tables_keep_their_columns_when_empty():
    empty = relative_self_preference(make_planted_scores(seed=1, judges=("gemini-a", "gemini-b"), n_patients=3))
    assert empty.empty and "relative_self_preference" in empty.columns
    assert isinstance(empty, pd.DataFrame) and np.isnan(np.nan)
