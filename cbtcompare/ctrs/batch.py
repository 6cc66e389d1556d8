"""Batch judging over stored transcripts: score what is not yet scored, and judge matched pairs both ways.

A stored judgement (one transcript, or one pair, x one judge x one repeat) counts as done when it has
the same judge, rubric id and version, mode and prompt version as the one that would be made now. A
target with fewer than `repeats` done judgements gets the missing ones under the next free repeat
numbers (the store's key is transcript x judge x rubric x repeat x item), so a rerun after a kill adds
only what is missing, and an edited prompt or rubric makes everything due again while the older
judgements keep their rows. Each result is stored in its own transaction as it lands.
Scoring itself is cbtcompare.ctrs.judge / pairwise; storing is cbtcompare.ctrs.results. This module
never imports gradio and never writes SQL.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from cbtcompare.ctrs.judge import JudgeConfig, JudgeResult, score_transcript
from cbtcompare.ctrs.pairwise import PairwiseResult, compare_pair
from cbtcompare.ctrs.render import build_pairwise_prompt, build_score_prompt
from cbtcompare.ctrs.results import load_pairwise, load_results, save_pairwise, save_results, transcript_columns
from cbtcompare.ctrs.rubric import Rubric
from cbtcompare.fanout import fan_out, values_or_raise
from cbtcompare.models.base import ChatModel, Message
from cbtcompare.models.registry import backend_capabilities
from cbtcompare.store import Store
from cbtcompare.transcript import Transcript

# (finished, due, line): once with (0, due, "") when the due judgements are known, then once per judgement.
Progress = Callable[[int, int, str], None]


@dataclass
class RoleTally:
    """Calls, time and (estimated) reply tokens spent by one role, here the judges."""

    judgements: int = 0
    seconds: float = 0.0
    completion_tokens: int = 0

    def as_dict(self) -> dict[str, float | int]:
        return {"judgements": self.judgements, "seconds": round(self.seconds, 3),
                "completion_tokens_estimated": self.completion_tokens}  # fmt: skip


@dataclass
class BatchJudging:
    """What one batch judging pass did."""

    planned: int = 0
    added: int = 0
    skipped: int = 0
    unscored_items: int = 0
    inconsistent_items: int = 0
    failed: list[str] = field(default_factory=list)
    usage: RoleTally = field(default_factory=RoleTally)

    def as_dict(self) -> dict[str, object]:
        return {
            "planned": self.planned,
            "added": self.added,
            "skipped": self.skipped,
            "unscored_items": self.unscored_items,
            "inconsistent_items": self.inconsistent_items,
            "failed": list(self.failed),
            "usage": self.usage.as_dict(),
        }


# What "the same judgement" means ------------------------------------------------------------------------


def absolute_prompt_versions(rubric: Rubric, transcript: Transcript, config: JudgeConfig) -> set[str]:
    """The prompt versions a score of this transcript could carry now (either rubric detail level)."""
    per_item = config.mode == "per-item"
    items = rubric.item_ids[:1] if per_item else rubric.item_ids
    return {
        build_score_prompt(
            rubric, transcript.turns, items, per_item=per_item, anchors=anchors, max_evidence=config.max_evidence
        ).prompt_version
        for anchors in (True, False)
    }


def pairwise_prompt_versions(rubric: Rubric, config: JudgeConfig) -> set[str]:
    items = rubric.item_ids[:1] if config.mode == "per-item" else rubric.item_ids
    return {build_pairwise_prompt(rubric, [], [], items, anchors=anchors).prompt_version for anchors in (True, False)}


def _same_judgement(
    result: JudgeResult | PairwiseResult, rubric: Rubric, config: JudgeConfig, versions: set[str]
) -> bool:
    if (result.rubric_id, result.rubric_version, result.mode) != (rubric.id, rubric.version, config.mode):
        return False
    if isinstance(result, JudgeResult):
        used = {item.prompt_version for item in result.items.values()}
    else:
        used = {answer.prompt_version for item in result.items.values() for answer in item.answers}
    used.discard("")
    return bool(used) and used <= versions


def scored_repeats(store: Store, transcript: Transcript, judge: str, rubric: Rubric, config: JudgeConfig) -> set[int]:
    """Repeats of this transcript already scored by `judge` the way they would be scored now."""
    versions = absolute_prompt_versions(rubric, transcript, config)
    return {
        r.repeat
        for r in load_results(store, transcript_ids=[transcript.id], judge=judge, rubric_id=rubric.id)
        if _same_judgement(r, rubric, config, versions)
    }


def compared_repeats(store: Store, judge: str, rubric: Rubric, config: JudgeConfig) -> dict[tuple[str, str], set[int]]:
    """(transcript_a, transcript_b) -> repeats already judged pairwise by `judge` the way they would be now."""
    versions = pairwise_prompt_versions(rubric, config)
    done: dict[tuple[str, str], set[int]] = {}
    for result in load_pairwise(store, judge=judge):
        if _same_judgement(result, rubric, config, versions):
            done.setdefault((result.transcript_a, result.transcript_b), set()).add(result.repeat)
    return done


# What to judge ------------------------------------------------------------------------------------------


def batch_transcript_ids(store: Store, batch_id: str) -> list[str]:
    """The finished sessions of a simulation batch (cbtcompare.simulate.run_batch), in run-key order."""
    runs = store.batch_runs(batch_id)
    if not runs:
        raise ValueError(f"no batch {batch_id!r} in {store.display_url}; batch ids look like NAME@FINGERPRINT")
    return [runs[key].transcript_id for key in sorted(runs) if runs[key].transcript_id]  # type: ignore[misc]


def variant_pairs(
    store: Store, transcript_ids: Sequence[str], variant_a: str = "tuned", variant_b: str = "base"
) -> list[tuple[str, str]]:
    """Matched pairs (same group: patient, opening, seeds and session) of the same family, variant A vs B,
    as the transcripts themselves record them (cbtcompare.ctrs.results.transcript_columns)."""
    by_group: dict[tuple[str, str], dict[str, str]] = {}
    for transcript_id in transcript_ids:
        columns = transcript_columns(store.get_transcript(transcript_id))
        if columns["group_id"]:
            key = (str(columns["group_id"]), str(columns["family"]))
            by_group.setdefault(key, {}).setdefault(str(columns["variant"]), transcript_id)
    return [
        (variants[variant_a], variants[variant_b])
        for variants in by_group.values()
        if variant_a in variants and variant_b in variants
    ]


# Running ------------------------------------------------------------------------------------------------

Judgement = JudgeResult | PairwiseResult


@dataclass(frozen=True)
class _Target:
    """One thing to judge (a transcript, or a pair in order A, B): how it is named in messages, the
    repeats already judged the way they would be judged now, and how to judge it once."""

    label: str
    short: str
    verb: str
    done: set[int]
    first_free: int
    judge_once: Callable[[ChatModel, int], Judgement]


def _reply_tokens(judge: ChatModel, raws: set[str]) -> int:
    total = 0
    for raw in raws:
        if not raw:
            continue
        counted = judge.count_tokens([Message("assistant", raw)])
        total += counted if counted is not None else max(1, len(raw) // 4)
    return total


def _workers(judge: ChatModel, concurrency: dict[str, int] | None) -> int:
    if not backend_capabilities(judge.spec.backend).remote:
        return 1  # local models share one set of weights and contexts: one judgement at a time
    return max(1, (concurrency or {}).get(judge.spec.backend, 1))


def _raw_outputs(result: Judgement) -> set[str]:
    if isinstance(result, JudgeResult):
        return {item.raw_output for item in result.items.values()}
    return {answer.raw_output for item in result.items.values() for answer in item.answers}


def _store(store: Store, result: Judgement) -> tuple[str, int, int]:
    """Store one result (its own transaction); what the progress line says, unscored and inconsistent items."""
    if isinstance(result, JudgeResult):
        save_results(store, [result])
        return f"total {result.total}, {result.unscored_items} unscored", result.unscored_items, 0
    save_pairwise(store, result)
    counts = result.counts()
    return str(counts), counts["unscored"], counts["inconsistent"]


def _judge_targets(
    store: Store,
    judges: Sequence[ChatModel],
    targets_for: Callable[[ChatModel], list[_Target]],
    *,
    repeats: int,
    concurrency: dict[str, int] | None,
    progress: Progress | None,
    stop_event: threading.Event | None,
) -> BatchJudging:
    """Judge each target until `repeats` judgements of it are stored the way they would be made now.

    What is missing is judged under new repeat numbers, after every stored one (an older way of judging
    keeps its repeats, and its rows), so a rerun adds only what is missing and never a duplicate key.
    Each result is stored as it lands and tallied.

    The one loop behind judge_stored and pairwise_stored; a judge's own units run one at a time for a
    local model and `concurrency[backend]` at a time for an endpoint; a set stop event starts no more."""
    if repeats < 1:
        raise ValueError("repeats must be at least 1")
    if not judges:
        raise ValueError("name at least one judge")
    tally = BatchJudging()
    lock = threading.Lock()
    per_judge: list[tuple[ChatModel, list[Callable[[threading.Event], None]]]] = []
    for judge in judges:
        units: list[Callable[[threading.Event], None]] = []
        for target in targets_for(judge):
            tally.planned += repeats
            tally.skipped += min(repeats, len(target.done))
            missing = max(0, repeats - len(target.done))
            for repeat in range(target.first_free, target.first_free + missing):

                def unit(
                    stop: threading.Event, target: _Target = target, repeat: int = repeat, judge: ChatModel = judge
                ) -> None:
                    if stop.is_set():
                        return
                    started = time.perf_counter()
                    try:
                        result = target.judge_once(judge, repeat)
                    except ValueError as exc:  # e.g. a transcript with no turns: nothing to judge, said once
                        with lock:
                            tally.failed.append(f"{judge.name} on {target.label}: {exc}")
                        return
                    summary, unscored, inconsistent = _store(store, result)
                    with lock:
                        tally.added += 1
                        tally.unscored_items += unscored
                        tally.inconsistent_items += inconsistent
                        tally.usage.judgements += 1
                        tally.usage.seconds += time.perf_counter() - started
                        tally.usage.completion_tokens += _reply_tokens(judge, _raw_outputs(result))
                        finished = tally.added
                    if progress is not None:
                        progress(finished, due, f"{judge.name} {target.verb} {target.short} r{repeat}: {summary}")

                units.append(unit)
        per_judge.append((judge, units))
    due = sum(len(units) for _, units in per_judge)
    if progress is not None:
        progress(0, due, "")
    for judge, units in per_judge:
        values_or_raise(fan_out(units, _workers(judge, concurrency), stop_event))
    return tally


def judge_stored(
    store: Store,
    transcript_ids: Sequence[str],
    judges: Sequence[ChatModel],
    rubric: Rubric,
    config: JudgeConfig | None = None,
    *,
    repeats: int = 1,
    concurrency: dict[str, int] | None = None,
    progress: Progress | None = None,
    stop_event: threading.Event | None = None,
) -> BatchJudging:
    """Score every stored transcript by every judge until it holds `repeats` scores made the way they would
    be made now (repeats 0..repeats-1 in a fresh store); store each as it lands."""
    config = config or JudgeConfig()
    settings: JudgeConfig = config

    def targets_for(judge: ChatModel) -> list[_Target]:
        targets = []
        for transcript_id in transcript_ids:
            transcript = store.get_transcript(transcript_id)
            targets.append(
                _Target(
                    label=transcript.id,
                    short=transcript.id[:8],
                    verb="scored",
                    done=scored_repeats(store, transcript, judge.name, rubric, settings),
                    first_free=store.next_repeat(transcript.id, judge.name, rubric.id),
                    judge_once=lambda judge, repeat, transcript=transcript: score_transcript(
                        judge, transcript, rubric, settings, repeat=repeat
                    ),
                )
            )
        return targets

    return _judge_targets(
        store, judges, targets_for, repeats=repeats, concurrency=concurrency, progress=progress, stop_event=stop_event
    )


def pairwise_stored(
    store: Store,
    pairs: Sequence[tuple[str, str]],
    judges: Sequence[ChatModel],
    rubric: Rubric,
    config: JudgeConfig | None = None,
    *,
    repeats: int = 1,
    concurrency: dict[str, int] | None = None,
    progress: Progress | None = None,
    stop_event: threading.Event | None = None,
) -> BatchJudging:
    """Judge every (A, B) pair by every judge until it holds `repeats` judgements made the way they would be
    made now, each in both orders (position consistency is in each stored item's outcome: 'inconsistent'
    when the two orders named different transcripts)."""
    config = config or JudgeConfig()
    settings: JudgeConfig = config

    def targets_for(judge: ChatModel) -> list[_Target]:
        done = compared_repeats(store, judge.name, rubric, settings)
        return [
            _Target(
                label=f"{a_id} vs {b_id}",
                short=f"{a_id[:8]} vs {b_id[:8]}",
                verb="compared",
                done=done.get((a_id, b_id), set()),
                first_free=store.next_pairwise_repeat(a_id, b_id, judge.name, rubric.id),
                judge_once=lambda judge, repeat, a_id=a_id, b_id=b_id: compare_pair(
                    judge, store.get_transcript(a_id), store.get_transcript(b_id), rubric, settings, repeat=repeat
                ),
            )
            for a_id, b_id in pairs
        ]

    return _judge_targets(
        store, judges, targets_for, repeats=repeats, concurrency=concurrency, progress=progress, stop_event=stop_event
    )
