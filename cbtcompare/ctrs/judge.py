"""The CTRS judge: any ChatModel scores a transcript on a rubric, constrained, validated, retried.

One call for all items (the paper) or one call per item (CACTUS). Every answer goes through the
validator; rejected items are asked again with the validation errors appended, up to `retries` times,
and an item still without a valid answer is "unscored" with the reason kept. No score is ever
defaulted, clamped or guessed. K judges x R repeats are separate results (`score_many`), aggregated
per item by the median with the spread kept (`aggregate_results`). This module never imports gradio
and never writes to the store itself (see cbtcompare.ctrs.results).
"""

from __future__ import annotations

import statistics
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from cbtcompare.ctrs.render import build_score_prompt, new_tag
from cbtcompare.ctrs.rubric import Rubric
from cbtcompare.ctrs.validate import Checked, ValidItem, check_score_answer, score_schema
from cbtcompare.models.base import (
    AdapterMismatch,
    AuthenticationFailed,
    BackendUnavailable,
    ChatModel,
    ContextOverflow,
    InvalidConstraint,
    InvalidWeights,
    Message,
    ModelError,
    ModelNotFound,
    Sampling,
)
from cbtcompare.transcript import Transcript, new_id, utc_now

Mode = Literal["all", "per-item"]
ItemStatus = Literal["scored", "unscored", "n/a"]
# Errors that another attempt cannot fix: the item is unscored at once, with the error as the reason.
FATAL_ERRORS = (
    ContextOverflow,
    AuthenticationFailed,
    ModelNotFound,
    InvalidWeights,
    BackendUnavailable,
    AdapterMismatch,
    InvalidConstraint,
)
CONTEXT_MARGIN = 8  # tokens kept free beyond the prompt and the reply budget


class JudgeConfig(BaseModel):
    """How a judge is run. The judge model's own chat sampling is not used: these settings are."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    mode: Mode = Field("all", description="'all': every item in one call (the paper); 'per-item': one call each")
    retries: int = Field(2, ge=0, le=10, description="extra attempts for items whose answer failed validation")
    temperature: float = Field(0.1, ge=0.0, le=2.0, description="the paper's judge used 0.1")
    top_p: float = Field(0.95, gt=0.0, le=1.0)
    seed: int | None = Field(0, description="repeat r, attempt a uses seed + 1000*r + a; None = unseeded")
    max_tokens: int | None = Field(
        None, ge=16, description="reply budget per call; default 110 per item asked (all) or 200 (per-item)"
    )
    max_evidence: int = Field(3, ge=0, le=10, description="most evidence quotes per item")
    quote_choices: bool = Field(
        True,
        description="constrain each quote to one of the cited turn's sentences (where the backend constrains "
        "output and the transcript is not too long); quotes are validated either way",
    )
    justification_chars: int | None = Field(
        300,
        ge=20,
        le=4000,
        description="longest justification the schema allows, so a looping judge still closes its JSON "
        "(None: bounded only by max_tokens)",
    )
    quote_chars: int | None = Field(None, ge=10, le=2000, description="longest evidence quote the schema allows")
    detail: Literal["auto", "anchors", "brief"] = Field(
        "auto",
        description="'anchors' shows every item's level anchors; 'brief' only the item descriptions and the scale "
        "labels; 'auto' uses anchors unless they do not fit the judge's context with the reply budget",
    )

    def reply_budget(self, items_asked: int) -> int:
        if self.max_tokens is not None:
            return self.max_tokens
        return 200 if self.mode == "per-item" else 110 * items_asked + 40

    def sampling(self, max_tokens: int, repeat: int, attempt: int) -> Sampling:
        seed = None if self.seed is None else self.seed + 1000 * repeat + attempt
        return Sampling(temperature=self.temperature, top_p=self.top_p, max_tokens=max_tokens, seed=seed)


class EvidenceOut(BaseModel):
    turn: int
    quote: str


class ItemScore(BaseModel):
    """One item of one judge's answer. `score` is None unless status is 'scored'."""

    item: str
    status: ItemStatus
    score: int | None = None
    justification: str = ""
    evidence: list[EvidenceOut] = Field(default_factory=list)
    reason: str | None = Field(None, description="why the item is unscored (the last validation or model error)")
    raw_output: str = Field("", description="the judge's raw text that produced this item's final state")
    attempts: int = 0
    prompt_version: str = ""
    sampling: dict[str, object] = Field(default_factory=dict)

    def public_dict(self) -> dict[str, object]:
        out: dict[str, object] = {
            "score": self.score,
            "status": self.status,
            "justification": self.justification,
            "evidence": [e.model_dump() for e in self.evidence],
        }
        if self.reason:
            out["reason"] = self.reason
        return out


class JudgeResult(BaseModel):
    """One judge's scores for one transcript on one rubric (one repeat)."""

    id: str = Field(default_factory=new_id)
    transcript_id: str
    judge: str
    judge_info: dict[str, object] = Field(default_factory=dict)
    repeat: int = 0
    rubric_id: str
    rubric_version: str
    mode: Mode
    items: dict[str, ItemScore]
    created_at: str = Field(default_factory=utc_now)

    @property
    def scored_items(self) -> int:
        return sum(1 for i in self.items.values() if i.status == "scored")

    @property
    def na_items(self) -> int:
        return sum(1 for i in self.items.values() if i.status == "n/a")

    @property
    def unscored_items(self) -> int:
        return sum(1 for i in self.items.values() if i.status == "unscored")

    @property
    def total(self) -> int:
        """Sum of the scored items only; see `partial` and `scored_items` before comparing totals."""
        return sum(i.score for i in self.items.values() if i.status == "scored" and i.score is not None)

    @property
    def partial(self) -> bool:
        return self.unscored_items > 0

    @property
    def prompt_version(self) -> str:
        return " | ".join(sorted({i.prompt_version for i in self.items.values() if i.prompt_version}))

    def summary_dict(self) -> dict[str, object]:
        """The CLI's JSON shape."""
        return {
            "items": {name: item.public_dict() for name, item in self.items.items()},
            "total": self.total,
            "scored_items": self.scored_items,
            "na_items": self.na_items,
            "partial": self.partial,
            "transcript_id": self.transcript_id,
            "judge": self.judge,
            "repeat": self.repeat,
            "rubric": self.rubric_id,
            "rubric_version": self.rubric_version,
            "mode": self.mode,
            "prompt_version": self.prompt_version,
        }


# The ask-validate-retry loop ----------------------------------------------------------------------


@dataclass
class _Outcome:
    """The final state of one item after the loop: an accepted value, or the reason there is none."""

    value: object | None
    raw: str
    attempts: int
    reason: str | None
    prompt_version: str
    sampling: dict[str, object]


Render = Callable[[Sequence[str], Sequence[str], bool], tuple[list[Message], str]]


def ask_until_valid(
    model: ChatModel,
    item_ids: Sequence[str],
    *,
    render: Render,
    schema_for: Callable[[Sequence[str]], dict],
    check: Callable[[str, Sequence[str]], Checked],
    config: JudgeConfig,
    repeat: int,
) -> dict[str, _Outcome]:
    """Ask for `item_ids`; re-ask only the rejected ones with their errors, `config.retries` times at most.

    `render(items, errors, anchors)` -> (messages, prompt_version). The anchors decision is made once
    from the first prompt and kept for the retries, so one answer never mixes rubric renderings.
    """
    outcomes: dict[str, _Outcome] = {}
    pending = list(item_ids)
    errors: dict[str, list[str]] = {}
    answered: dict[str, _Outcome] = {}  # the last rejected answer per item, kept if a model error follows
    anchors = _choose_anchors(model, render, pending, config)
    for attempt in range(config.retries + 1):
        error_lines = list(dict.fromkeys(e for item in pending for e in errors.get(item, [])))[:12]
        messages, prompt_version = render(pending, error_lines, anchors)
        try:
            budget = _reply_budget(model, messages, config.reply_budget(len(pending)))
            sampling = config.sampling(budget, repeat, attempt)
            raw = model.complete_json(messages, schema_for(pending), sampling)
        except ModelError as exc:
            # Not the judge's answer failing: keep the last answer's raw text and errors beside the reason.
            reason = f"{type(exc).__name__}: {exc}"
            for item in pending:
                last = answered.get(item)
                kept = f"{reason}; the answer before it: {last.reason}" if last else reason
                outcomes[item] = _Outcome(
                    None, last.raw if last else "", attempt + 1, kept, prompt_version, last.sampling if last else {}
                )
            if isinstance(exc, FATAL_ERRORS):
                return outcomes
            continue
        checked = check(raw, pending)
        sampling_dict = sampling.model_dump(mode="json")
        for item, value in checked.accepted.items():
            outcomes[item] = _Outcome(value, raw, attempt + 1, None, prompt_version, sampling_dict)
        errors = {
            item: checked.errors.get(item, ["no valid answer"]) for item in pending if item not in checked.accepted
        }
        for item, problems in errors.items():
            outcomes[item] = _Outcome(None, raw, attempt + 1, "; ".join(problems), prompt_version, sampling_dict)
            answered[item] = outcomes[item]
        pending = list(errors)
        if not pending:
            break
    return outcomes


def _choose_anchors(model: ChatModel, render: Render, items: Sequence[str], config: JudgeConfig) -> bool:
    if config.detail != "auto":
        return config.detail == "anchors"
    n_ctx = model.context_length
    if n_ctx is None:
        return True
    messages, _ = render(items, [], True)
    used = model.count_tokens(messages)
    return used is None or used + config.reply_budget(len(items)) + CONTEXT_MARGIN <= n_ctx


def _reply_budget(model: ChatModel, messages: list[Message], wanted: int) -> int:
    """The wanted reply budget, shrunk to what the judge's context leaves; ContextOverflow when too little."""
    n_ctx = model.context_length
    used = model.count_tokens(messages) if n_ctx is not None else None
    if n_ctx is None or used is None:
        return wanted
    room = n_ctx - used - CONTEXT_MARGIN
    floor = min(wanted, 64)
    if room < floor:
        raise ContextOverflow(
            f"the judge prompt takes {used} of {n_ctx} context tokens, leaving {max(room, 0)} for the answer; "
            "use --mode per-item, a shorter transcript, or a judge with a longer context",
            model=model.name,
        )
    return min(wanted, room)


# Scoring ------------------------------------------------------------------------------------------


def score_transcript(
    judge: ChatModel,
    transcript: Transcript,
    rubric: Rubric,
    config: JudgeConfig | None = None,
    *,
    repeat: int = 0,
) -> JudgeResult:
    """One judge, one repeat: every rubric item scored, n/a, or unscored with its reason."""
    config = config or JudgeConfig()
    turns = list(transcript.turns)
    if not turns:
        raise ValueError(f"transcript {transcript.id} has no turns to judge")
    limits = {
        "max_evidence": config.max_evidence,
        "quote_choices": config.quote_choices,
        "justification_chars": config.justification_chars,
        "quote_chars": config.quote_chars,
    }
    per_item = config.mode == "per-item"
    # One delimiter for the whole transcript: per-item calls then share the system prompt, scale and transcript
    # as a token prefix (the item comes after the transcript), which a backend's prefix cache serves once.
    tag = new_tag()

    def render(items: Sequence[str], errors: Sequence[str], anchors: bool) -> tuple[list[Message], str]:
        prompt = build_score_prompt(
            rubric,
            turns,
            items,
            per_item=per_item,
            anchors=anchors,
            max_evidence=config.max_evidence,
            errors=errors,
            tag=tag,
        )
        return prompt.messages, prompt.prompt_version

    def ask(items: Sequence[str]) -> dict[str, _Outcome]:
        return ask_until_valid(
            judge,
            items,
            render=render,
            schema_for=lambda pending: score_schema(rubric, pending, turns, per_item=per_item, **limits),
            check=lambda raw, pending: check_score_answer(raw, rubric, pending, turns, per_item=per_item),
            config=config,
            repeat=repeat,
        )

    outcomes: dict[str, _Outcome] = {}
    if per_item:
        for item_id in rubric.item_ids:
            outcomes.update(ask([item_id]))
    else:
        outcomes = ask(rubric.item_ids)
    return JudgeResult(
        transcript_id=transcript.id,
        judge=judge.name,
        judge_info=asdict(judge.info()),
        repeat=repeat,
        rubric_id=rubric.id,
        rubric_version=rubric.version,
        mode=config.mode,
        items={item_id: _item_score(item_id, outcomes[item_id]) for item_id in rubric.item_ids},
    )


def _item_score(item_id: str, outcome: _Outcome) -> ItemScore:
    common = {
        "item": item_id,
        "raw_output": outcome.raw,
        "attempts": outcome.attempts,
        "prompt_version": outcome.prompt_version,
        "sampling": outcome.sampling,
    }
    value = outcome.value
    if not isinstance(value, ValidItem):
        return ItemScore(status="unscored", score=None, reason=outcome.reason or "no valid answer", **common)
    return ItemScore(
        status=value.status,
        score=value.score,
        justification=value.justification,
        evidence=[EvidenceOut(turn=e.turn, quote=e.quote) for e in value.evidence],
        **common,
    )


Progress = Callable[[int, int, str], None]


def score_many(
    transcripts: Sequence[Transcript],
    judges: Sequence[ChatModel],
    rubric: Rubric,
    config: JudgeConfig | None = None,
    *,
    repeats: int = 1,
    on_result: Callable[[JudgeResult], None] | None = None,
    progress: Progress | None = None,
    first_repeat: Callable[[Transcript, ChatModel], int] | None = None,
) -> list[JudgeResult]:
    """K judges x R repeats for each transcript, each a separate result (`on_result` sees each as it lands).

    Repeats count from `first_repeat(transcript, judge)` (default 0): a caller that stores the results
    passes the next free repeat number, so judging again draws new samples (new seeds)."""
    if repeats < 1:
        raise ValueError("repeats must be at least 1")
    if not judges:
        raise ValueError("name at least one judge")
    results: list[JudgeResult] = []
    total = len(transcripts) * len(judges) * repeats
    for transcript in transcripts:
        for judge in judges:
            start = first_repeat(transcript, judge) if first_repeat else 0
            for repeat in range(start, start + repeats):
                if progress:
                    progress(len(results), total, f"{judge.name} on {transcript.id[:8]} (repeat {repeat + 1})")
                result = score_transcript(judge, transcript, rubric, config, repeat=repeat)
                results.append(result)
                if on_result:
                    on_result(result)
    if progress:
        progress(total, total, "done")
    return results


# Aggregation --------------------------------------------------------------------------------------


class ItemAggregate(BaseModel):
    """One item over K judges x R repeats: the median with its spread, and how many runs scored it."""

    item: str
    status: ItemStatus
    score: int | None = Field(None, description="the median; with an even count, the lower middle value")
    median: float | None = None
    min: int | None = None
    max: int | None = None
    q1: float | None = None
    q3: float | None = None
    iqr: float | None = None
    n_scored: int = 0
    n_na: int = 0
    n_unscored: int = 0
    justification: str = ""
    evidence: list[EvidenceOut] = Field(default_factory=list)
    reasons: list[str] = Field(default_factory=list)

    def public_dict(self) -> dict[str, object]:
        out = self.model_dump(mode="json", exclude={"item", "reasons"})
        if self.reasons and self.status == "unscored":
            out["reason"] = "; ".join(dict.fromkeys(self.reasons))
        return out


class TranscriptAggregate(BaseModel):
    transcript_id: str
    rubric_id: str
    rubric_version: str
    judges: list[str]
    runs: int
    items: dict[str, ItemAggregate]
    run_totals: list[dict[str, object]]

    @property
    def scored_items(self) -> int:
        return sum(1 for i in self.items.values() if i.status == "scored")

    @property
    def total(self) -> int:
        return sum(i.score for i in self.items.values() if i.status == "scored" and i.score is not None)

    @property
    def partial(self) -> bool:
        return any(i.status == "unscored" for i in self.items.values())

    def summary_dict(self) -> dict[str, object]:
        return {
            "items": {name: item.public_dict() for name, item in self.items.items()},
            "total": self.total,
            "scored_items": self.scored_items,
            "na_items": sum(1 for i in self.items.values() if i.status == "n/a"),
            "partial": self.partial,
            "transcript_id": self.transcript_id,
            "rubric": self.rubric_id,
            "rubric_version": self.rubric_version,
            "judges": self.judges,
            "runs": self.runs,
            "run_totals": self.run_totals,
        }


def aggregate_results(results: Sequence[JudgeResult]) -> TranscriptAggregate:
    """Median per item over every judge and repeat of one transcript, with min/max/IQR kept.

    An item is scored when at least one run scored it (its median is over the runs that did); else
    n/a when a run said n/a; else unscored. The reported integer score is the lower median, an observed
    value; the exact median is in `median`.
    """
    if not results:
        raise ValueError("nothing to aggregate")
    first = results[0]
    for result in results:
        if (result.transcript_id, result.rubric_id) != (first.transcript_id, first.rubric_id):
            raise ValueError("aggregate one transcript on one rubric at a time")
    items: dict[str, ItemAggregate] = {}
    for item_id in first.items:
        runs = [r.items[item_id] for r in results if item_id in r.items]
        scored = [i for i in runs if i.status == "scored" and i.score is not None]
        n_na = sum(1 for i in runs if i.status == "n/a")
        reasons = [i.reason for i in runs if i.status == "unscored" and i.reason]
        counts = {"n_scored": len(scored), "n_na": n_na, "n_unscored": len(runs) - len(scored) - n_na}
        if scored:
            values = sorted(i.score for i in scored if i.score is not None)
            low_median = statistics.median_low(values)
            q1, q3 = (float(q) for q in np.percentile(values, [25, 75]))
            representative = next(i for i in scored if i.score == low_median)
            items[item_id] = ItemAggregate(
                item=item_id,
                status="scored",
                score=low_median,
                median=float(statistics.median(values)),
                min=values[0],
                max=values[-1],
                q1=q1,
                q3=q3,
                iqr=q3 - q1,
                justification=representative.justification,
                evidence=representative.evidence,
                reasons=reasons,
                **counts,
            )
        else:
            status: ItemStatus = "n/a" if n_na else "unscored"
            items[item_id] = ItemAggregate(item=item_id, status=status, reasons=reasons, **counts)
    return TranscriptAggregate(
        transcript_id=first.transcript_id,
        rubric_id=first.rubric_id,
        rubric_version=first.rubric_version,
        judges=list(dict.fromkeys(r.judge for r in results)),
        runs=len(results),
        items=items,
        run_totals=[
            {
                "judge": r.judge,
                "repeat": r.repeat,
                "total": r.total,
                "scored_items": r.scored_items,
                "partial": r.partial,
            }
            for r in results
        ],
    )
