"""Judge results in the store: save and load scores, re-score stored transcripts, and the long scores table.

Every stored score row carries the raw judge output, the prompt version, the rubric id and version, the
judge's ModelInfo and the sampling used, so a score can always be traced and reproduced. Transcripts are
read from the store, never regenerated, so a new judge can score old transcripts. This module never
calls gradio; it calls a model only through cbtcompare.ctrs.judge.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence

import pandas as pd
from sqlalchemy.exc import IntegrityError

from cbtcompare import provenance
from cbtcompare.ctrs.judge import EvidenceOut, ItemScore, JudgeConfig, JudgeResult, score_transcript
from cbtcompare.ctrs.pairwise import PairwiseAnswer, PairwiseItem, PairwiseResult
from cbtcompare.ctrs.rubric import Rubric
from cbtcompare.models.base import ChatModel
from cbtcompare.store import Store
from cbtcompare.transcript import Transcript

FRAME_COLUMNS = [
    "transcript_id",
    "therapist",
    "family",
    "variant",
    "patient_id",
    "session",
    "judge",
    "repeat",
    "item",
    "score",
    "status",
    "transcript_tokens",
    "rubric_id",
    "rubric_version",
    "mode",
    "result_id",
    "group_id",
]


def result_rows(result: JudgeResult) -> list[dict]:
    return [
        {
            "result_id": result.id,
            "transcript_id": result.transcript_id,
            "judge_name": result.judge,
            "judge_info": result.judge_info,
            "repeat": result.repeat,
            "rubric_id": result.rubric_id,
            "rubric_version": result.rubric_version,
            "prompt_version": item.prompt_version,
            "mode": result.mode,
            "sampling": item.sampling,
            "item": item.item,
            "score": item.score,
            "status": item.status,
            "justification": item.justification,
            "evidence": [e.model_dump() for e in item.evidence],
            "raw_output": item.raw_output,
            "reason": item.reason,
            "attempts": item.attempts,
            "created_at": result.created_at,
        }
        for item in result.items.values()
    ]


def save_results(store: Store, results: Sequence[JudgeResult]) -> int:
    """Store results (all in one transaction); the transcripts must already be in the store."""
    rows = [row for result in results for row in result_rows(result)]
    try:
        return store.save_scores(rows)
    except IntegrityError as exc:
        ids = sorted({r.transcript_id for r in results})
        raise ValueError(
            f"cannot store scores: transcript(s) {', '.join(ids)} are not all in {store.display_url}; "
            "save or import them first"
        ) from exc


def load_results(
    store: Store, *, transcript_ids: Iterable[str] | None = None, judge: str | None = None, rubric_id: str | None = None
) -> list[JudgeResult]:
    """Stored judge results, one per judge run, in the order they were saved."""
    grouped: dict[str, list[dict]] = {}
    for row in store.list_scores(transcript_ids=transcript_ids, judge=judge, rubric_id=rubric_id):
        grouped.setdefault(row["result_id"], []).append(row)
    results = []
    for result_id, rows in grouped.items():
        first = rows[0]
        results.append(
            JudgeResult(
                id=result_id,
                transcript_id=first["transcript_id"],
                judge=first["judge_name"],
                judge_info=first["judge_info"],
                repeat=first["repeat"],
                rubric_id=first["rubric_id"],
                rubric_version=first["rubric_version"],
                mode=first["mode"],
                created_at=first["created_at"],
                items={
                    r["item"]: ItemScore(
                        item=r["item"],
                        status=r["status"],
                        score=r["score"],
                        justification=r["justification"],
                        evidence=[EvidenceOut(**e) for e in r["evidence"]],
                        reason=r["reason"],
                        raw_output=r["raw_output"],
                        attempts=r["attempts"],
                        prompt_version=r["prompt_version"],
                        sampling=r["sampling"],
                    )
                    for r in rows
                },
            )
        )
    return results


def rescore_stored(
    store: Store,
    transcript_ids: Sequence[str],
    judges: Sequence[ChatModel],
    rubric: Rubric,
    config: JudgeConfig | None = None,
    *,
    repeats: int = 1,
    progress: Callable[[int, int, str], None] | None = None,
) -> list[JudgeResult]:
    """Score stored transcripts with (new) judges and store each result as it lands.

    Repeat numbers continue after those already stored for the same transcript, judge and rubric, so
    running again adds new samples (new seeds) instead of duplicating old ones.
    """
    results: list[JudgeResult] = []
    total = len(transcript_ids) * len(judges) * repeats
    for transcript_id in transcript_ids:
        transcript = store.get_transcript(transcript_id)
        for judge in judges:
            first = store.next_repeat(transcript_id, judge.name, rubric.id)  # the store's one rule
            for repeat in range(first, first + repeats):
                if progress:
                    progress(len(results), total, f"{judge.name} on {transcript_id[:8]} (repeat {repeat + 1})")
                result = score_transcript(judge, transcript, rubric, config, repeat=repeat)
                save_results(store, [result])
                results.append(result)
    if progress:
        progress(total, total, "done")
    return results


# Pairwise -----------------------------------------------------------------------------------------


def save_pairwise(store: Store, result: PairwiseResult) -> int:
    rows = [
        {
            "result_id": result.id,
            "transcript_a": result.transcript_a,
            "transcript_b": result.transcript_b,
            "judge_name": result.judge,
            "judge_info": result.judge_info,
            "repeat": result.repeat,
            "rubric_id": result.rubric_id,
            "rubric_version": result.rubric_version,
            "prompt_version": answer.prompt_version,
            "mode": result.mode,
            "sampling": answer.sampling,
            "item": item.item,
            "order": answer.order,
            "side": answer.side,
            "outcome": item.outcome,
            "justification": answer.justification,
            "raw_output": answer.raw_output,
            "reason": answer.reason,
            "attempts": answer.attempts,
            "created_at": result.created_at,
        }
        for item in result.items.values()
        for answer in item.answers
    ]
    try:
        return store.save_scores(rows, pairwise=True)
    except IntegrityError as exc:
        raise ValueError("cannot store a pairwise result: both transcripts must be in the store first") from exc


def load_pairwise(store: Store, *, transcript_id: str | None = None, judge: str | None = None) -> list[PairwiseResult]:
    grouped: dict[str, list[dict]] = {}
    for row in store.list_pairwise_scores(transcript_id=transcript_id, judge=judge):
        grouped.setdefault(row["result_id"], []).append(row)
    results = []
    for result_id, rows in grouped.items():
        first = rows[0]
        items: dict[str, PairwiseItem] = {}
        for r in rows:
            answer = PairwiseAnswer(
                order=r["order"],
                side=r["side"],
                justification=r["justification"],
                reason=r["reason"],
                raw_output=r["raw_output"],
                attempts=r["attempts"],
                prompt_version=r["prompt_version"],
                sampling=r["sampling"],
            )
            entry = items.setdefault(r["item"], PairwiseItem(item=r["item"], outcome=r["outcome"], answers=[]))
            entry.answers.append(answer)
        results.append(
            PairwiseResult(
                id=result_id,
                transcript_a=first["transcript_a"],
                transcript_b=first["transcript_b"],
                judge=first["judge_name"],
                judge_info=first["judge_info"],
                repeat=first["repeat"],
                rubric_id=first["rubric_id"],
                rubric_version=first["rubric_version"],
                mode=first["mode"],
                created_at=first["created_at"],
                items=items,
            )
        )
    return results


# The long scores table ------------------------------------------------------------------------------


def transcript_columns(transcript: Transcript) -> dict[str, object]:
    """therapist, family, variant, patient_id, session and transcript_tokens for one transcript.

    Variant and family come from cbtcompare.provenance (what the transcript recorded, else classified
    from its therapist record, the same way for Compare, Simulate and imports); a family it cannot tell
    falls back to the therapist's name. patient_id = meta patient_id or profile_id, else the group id (one
    matched pair shares a patient), else the transcript id; session = 1 unless recorded.
    transcript_tokens is the sum of the turns' token counts when every turn has one, else an estimate of
    characters / 4.
    """
    meta = transcript.meta
    variant, family = provenance.of_record(transcript.therapist, meta)
    if family == "unknown":
        family = transcript.therapist_name or "unknown"
    patient = meta.get("patient_id") or meta.get("profile_id") or transcript.group_id or transcript.id
    session = meta.get("session") or meta.get("session_index") or 1
    counts = [t.tokens for t in transcript.turns]
    if counts and all(c is not None for c in counts):
        tokens = float(sum(c for c in counts if c is not None))
    else:
        tokens = float(math.ceil(sum(len(t.text) for t in transcript.turns) / 4))
    return {
        "therapist": transcript.therapist_name,
        "family": str(family),
        "variant": str(variant),
        "patient_id": str(patient),
        "session": int(session),
        "transcript_tokens": tokens,
        "group_id": transcript.group_id,
    }


def scores_frame(
    store: Store,
    *,
    transcript_ids: Iterable[str] | None = None,
    judges: Sequence[str] | None = None,
    rubric: str | None = None,
) -> pd.DataFrame:
    """One row per transcript x judge x repeat x item: the long table the statistics read.

    Columns: FRAME_COLUMNS. `score` is NaN unless status is "scored". `rubric` filters by rubric id
    (e.g. "ctrs-paper-1-10"); mixing rubrics in one analysis is the caller's choice, not ours.
    """
    rows = store.list_scores(transcript_ids=transcript_ids, rubric_id=rubric)
    if judges:
        rows = [r for r in rows if r["judge_name"] in set(judges)]
    cache: dict[str, dict[str, object]] = {}
    records = []
    for row in rows:
        tid = row["transcript_id"]
        if tid not in cache:
            cache[tid] = transcript_columns(store.get_transcript(tid))
        columns = cache[tid]
        records.append(
            {
                "transcript_id": tid,
                **columns,
                "judge": row["judge_name"],
                "repeat": row["repeat"],
                "item": row["item"],
                "score": float(row["score"]) if row["status"] == "scored" and row["score"] is not None else math.nan,
                "status": row["status"],
                "rubric_id": row["rubric_id"],
                "rubric_version": row["rubric_version"],
                "mode": row["mode"],
                "result_id": row["result_id"],
            }
        )
    frame = pd.DataFrame.from_records(records, columns=FRAME_COLUMNS)
    frame["score"] = frame["score"].astype(float)
    frame["transcript_tokens"] = frame["transcript_tokens"].astype(float)
    return frame
