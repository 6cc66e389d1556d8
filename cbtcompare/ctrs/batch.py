"""Batch judging over stored transcripts: score what is not yet scored, and judge matched pairs both ways.

A judgement (one transcript, or one pair, x one judge x one repeat) counts as done when a stored result
has the same judge, rubric id and version, mode, repeat and prompt version as the one that would be made
now; done judgements are skipped, so a rerun after a kill adds only what is missing, and an edited
prompt or rubric makes everything due again. Each result is stored in its own transaction as it lands.
Scoring itself is cbtcompare.ctrs.judge / pairwise; storing is cbtcompare.ctrs.results. This module
never imports gradio and never writes SQL.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from cbtcompare.ctrs.judge import JudgeConfig, JudgeResult, score_transcript
from cbtcompare.ctrs.pairwise import PairwiseResult, compare_pair
from cbtcompare.ctrs.render import build_pairwise_prompt, build_score_prompt
from cbtcompare.ctrs.results import load_pairwise, load_results, save_pairwise, save_results, transcript_columns
from cbtcompare.ctrs.rubric import Rubric
from cbtcompare.models.base import ChatModel, Message
from cbtcompare.store import Store
from cbtcompare.transcript import Transcript

ENDPOINT_BACKENDS = frozenset({"openai", "gemini"})
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


def scored_repeats(
    store: Store, transcript: Transcript, judge: str, rubric: Rubric, config: JudgeConfig
) -> set[int]:
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
        raise ValueError(f"no batch {batch_id!r} in {store.url}; batch ids look like NAME@FINGERPRINT")
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


def _reply_tokens(judge: ChatModel, raws: set[str]) -> int:
    total = 0
    for raw in raws:
        if not raw:
            continue
        counted = judge.count_tokens([Message("assistant", raw)])
        total += counted if counted is not None else max(1, len(raw) // 4)
    return total


def _workers(judge: ChatModel, concurrency: dict[str, int] | None) -> int:
    if judge.spec.backend not in ENDPOINT_BACKENDS:
        return 1  # local models share one set of weights and contexts: one judgement at a time
    return max(1, (concurrency or {}).get(judge.spec.backend, 1))


def _run_units(units: list[Callable[[], None]], workers: int) -> None:
    if workers > 1 and len(units) > 1:
        with ThreadPoolExecutor(max_workers=workers) as pool:
            for future in [pool.submit(unit) for unit in units]:
                future.result()
    else:
        for unit in units:
            unit()


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
    """Score every stored transcript x judge x repeat (0..repeats-1) not yet scored; store each as it lands."""
    if repeats < 1:
        raise ValueError("repeats must be at least 1")
    if not judges:
        raise ValueError("name at least one judge")
    config = config or JudgeConfig()
    tally = BatchJudging()
    lock = threading.Lock()
    per_judge: list[tuple[ChatModel, list[Callable[[], None]]]] = []
    for judge in judges:
        units: list[Callable[[], None]] = []
        for transcript_id in transcript_ids:
            transcript = store.get_transcript(transcript_id)
            done = scored_repeats(store, transcript, judge.name, rubric, config)
            for repeat in range(repeats):
                tally.planned += 1
                if repeat in done:
                    tally.skipped += 1
                    continue

                def unit(transcript: Transcript = transcript, repeat: int = repeat, judge: ChatModel = judge) -> None:
                    if stop_event is not None and stop_event.is_set():
                        return
                    started = time.perf_counter()
                    try:
                        result = score_transcript(judge, transcript, rubric, config, repeat=repeat)
                    except ValueError as exc:  # e.g. a transcript with no turns: nothing to score, said once
                        with lock:
                            tally.failed.append(f"{judge.name} on {transcript.id}: {exc}")
                        return
                    save_results(store, [result])
                    with lock:
                        tally.added += 1
                        tally.unscored_items += result.unscored_items
                        tally.usage.judgements += 1
                        tally.usage.seconds += time.perf_counter() - started
                        tally.usage.completion_tokens += _reply_tokens(
                            judge, {i.raw_output for i in result.items.values()}
                        )
                        finished = tally.added
                    if progress is not None:
                        progress(finished, due, f"{judge.name} scored {transcript.id[:8]} r{repeat}: total "
                                 f"{result.total}, {result.unscored_items} unscored")  # fmt: skip

                units.append(unit)
        per_judge.append((judge, units))
    due = sum(len(units) for _, units in per_judge)
    if progress is not None:
        progress(0, due, "")
    for judge, units in per_judge:
        _run_units(units, _workers(judge, concurrency))
    return tally


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
    """Judge every (A, B) pair x judge x repeat not yet judged, in both orders (position consistency is in
    each stored item's outcome: 'inconsistent' when the two orders named different transcripts)."""
    if repeats < 1:
        raise ValueError("repeats must be at least 1")
    if not judges:
        raise ValueError("name at least one judge")
    config = config or JudgeConfig()
    tally = BatchJudging()
    lock = threading.Lock()
    per_judge: list[tuple[ChatModel, list[Callable[[], None]]]] = []
    for judge in judges:
        done = compared_repeats(store, judge.name, rubric, config)
        units: list[Callable[[], None]] = []
        for a_id, b_id in pairs:
            for repeat in range(repeats):
                tally.planned += 1
                if repeat in done.get((a_id, b_id), set()):
                    tally.skipped += 1
                    continue

                def unit(a_id: str = a_id, b_id: str = b_id, repeat: int = repeat, judge: ChatModel = judge) -> None:
                    if stop_event is not None and stop_event.is_set():
                        return
                    started = time.perf_counter()
                    a, b = store.get_transcript(a_id), store.get_transcript(b_id)
                    try:
                        result = compare_pair(judge, a, b, rubric, config, repeat=repeat)
                    except ValueError as exc:
                        with lock:
                            tally.failed.append(f"{judge.name} on {a_id} vs {b_id}: {exc}")
                        return
                    save_pairwise(store, result)
                    counts = result.counts()
                    with lock:
                        tally.added += 1
                        tally.unscored_items += counts["unscored"]
                        tally.inconsistent_items += counts["inconsistent"]
                        tally.usage.judgements += 1
                        tally.usage.seconds += time.perf_counter() - started
                        tally.usage.completion_tokens += _reply_tokens(
                            judge, {a.raw_output for i in result.items.values() for a in i.answers}
                        )
                        finished = tally.added
                    if progress is not None:
                        progress(finished, due, f"{judge.name} compared {a_id[:8]} vs {b_id[:8]} r{repeat}: {counts}")

                units.append(unit)
        per_judge.append((judge, units))
    due = sum(len(units) for _, units in per_judge)
    if progress is not None:
        progress(0, due, "")
    for judge, units in per_judge:
        _run_units(units, _workers(judge, concurrency))
    return tally
