"""Pairwise judging of matched pairs: per item, which transcript shows the better CBT, asked in both orders.

The judge sees (A, B) and then (B, A), each answer constrained and validated like absolute scores. A
win counts only when both orders agree on the same transcript. Agreement on "tie" is a tie; one order
naming a winner and the other a tie is a tie; the two orders naming different transcripts (position
bias) is "inconsistent". An item unanswered in either order is "unscored". Never a guess.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict
from typing import Literal

from pydantic import BaseModel, Field

from cbtcompare.ctrs.judge import JudgeConfig, ask_until_valid
from cbtcompare.ctrs.render import build_pairwise_prompt
from cbtcompare.ctrs.rubric import Rubric
from cbtcompare.ctrs.validate import check_pairwise_answer, pairwise_schema
from cbtcompare.models.base import ChatModel, Message
from cbtcompare.transcript import Transcript, new_id, utc_now

Side = Literal["A", "B", "tie"]
Outcome = Literal["A", "B", "tie", "inconsistent", "unscored"]
Order = Literal["AB", "BA"]


def side_for(choice: str, order: Order) -> Side:
    """A judge's "first"/"second"/"tie" in a given order, as transcript A, B or tie."""
    if choice == "tie":
        return "tie"
    first_is_a = order == "AB"
    return "A" if (choice == "first") == first_is_a else "B"


def combine_orders(ab: Side | None, ba: Side | None) -> Outcome:
    """The outcome of both orders: a win only when they agree (see the module docstring)."""
    if ab is None or ba is None:
        return "unscored"
    if ab == ba:
        return ab
    if "tie" in (ab, ba):
        return "tie"
    return "inconsistent"


class PairwiseAnswer(BaseModel):
    """One order's answer for one item."""

    order: Order
    side: Side | None = None
    justification: str = ""
    reason: str | None = None
    raw_output: str = ""
    attempts: int = 0
    prompt_version: str = ""
    sampling: dict[str, object] = Field(default_factory=dict)


class PairwiseItem(BaseModel):
    item: str
    outcome: Outcome
    answers: list[PairwiseAnswer]


class PairwiseResult(BaseModel):
    id: str = Field(default_factory=new_id)
    transcript_a: str
    transcript_b: str
    judge: str
    judge_info: dict[str, object] = Field(default_factory=dict)
    repeat: int = 0
    rubric_id: str
    rubric_version: str
    mode: Literal["all", "per-item"]
    items: dict[str, PairwiseItem]
    created_at: str = Field(default_factory=utc_now)

    def counts(self) -> dict[str, int]:
        outcomes = [i.outcome for i in self.items.values()]
        return {k: outcomes.count(k) for k in ("A", "B", "tie", "inconsistent", "unscored")}

    def summary_dict(self) -> dict[str, object]:
        return {
            "transcript_a": self.transcript_a,
            "transcript_b": self.transcript_b,
            "judge": self.judge,
            "rubric": self.rubric_id,
            "items": {
                name: {"outcome": item.outcome, **{a.order: a.side for a in item.answers}}
                for name, item in self.items.items()
            },
            "counts": self.counts(),
        }


def compare_pair(
    judge: ChatModel,
    transcript_a: Transcript,
    transcript_b: Transcript,
    rubric: Rubric,
    config: JudgeConfig | None = None,
    *,
    repeat: int = 0,
) -> PairwiseResult:
    """Ask the judge in both orders, per item (all items per call, or one call per item per order)."""
    config = config or JudgeConfig()
    if not transcript_a.turns or not transcript_b.turns:
        raise ValueError("both transcripts need turns to be compared")
    answers: dict[str, list[PairwiseAnswer]] = {i: [] for i in rubric.item_ids}
    for order in ("AB", "BA"):
        first, second = (transcript_a, transcript_b) if order == "AB" else (transcript_b, transcript_a)

        def render(
            items: Sequence[str],
            errors: Sequence[str],
            anchors: bool,
            first: Transcript = first,
            second: Transcript = second,
        ) -> tuple[list[Message], str]:
            prompt = build_pairwise_prompt(rubric, first.turns, second.turns, items, anchors=anchors, errors=errors)
            return prompt.messages, prompt.prompt_version

        groups = [[i] for i in rubric.item_ids] if config.mode == "per-item" else [rubric.item_ids]
        for group in groups:
            outcomes = ask_until_valid(
                judge,
                group,
                render=render,
                schema_for=lambda pending: pairwise_schema(pending, justification_chars=config.justification_chars),
                check=check_pairwise_answer,
                config=config,
                repeat=repeat,
            )
            for item_id, outcome in outcomes.items():
                choice, justification = outcome.value if isinstance(outcome.value, tuple) else (None, "")
                answers[item_id].append(
                    PairwiseAnswer(
                        order=order,  # type: ignore[arg-type]
                        side=side_for(choice, order) if choice else None,  # type: ignore[arg-type]
                        justification=justification,
                        reason=outcome.reason,
                        raw_output=outcome.raw,
                        attempts=outcome.attempts,
                        prompt_version=outcome.prompt_version,
                        sampling=outcome.sampling,
                    )
                )
    items = {}
    for item_id, item_answers in answers.items():
        by_order = {a.order: a.side for a in item_answers}
        items[item_id] = PairwiseItem(
            item=item_id, outcome=combine_orders(by_order.get("AB"), by_order.get("BA")), answers=item_answers
        )
    return PairwiseResult(
        transcript_a=transcript_a.id,
        transcript_b=transcript_b.id,
        judge=judge.name,
        judge_info=asdict(judge.info()),
        repeat=repeat,
        rubric_id=rubric.id,
        rubric_version=rubric.version,
        mode=config.mode,
        items=items,
    )
