"""One judging request as a visitor sends it (the Judge tab): checked in full, then written.

Everything a request names is checked before anything is stored: the rubric is one of the shipped
ones (a visitor never names a file on the server), every judge is a registry model and loads, the
repeat count and mode are in range, stored transcripts exist and an upload parses. Only then is the
upload stored (one transaction), the transcripts judged and the scores stored (one transaction).
This module never imports gradio.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from cbtcompare.ctrs.judge import JudgeConfig, JudgeResult, Progress, score_many
from cbtcompare.ctrs.results import save_results
from cbtcompare.ctrs.rubric import Rubric, load_rubric, rubric_names
from cbtcompare.importers import import_file, save_imported
from cbtcompare.models.base import ChatModel
from cbtcompare.models.registry import Registry
from cbtcompare.store import Store
from cbtcompare.transcript import Transcript

MAX_REPEATS = 10
MODES = ("all", "per-item")


@dataclass(frozen=True)
class CheckedRequest:
    """A request that passed every check: what to judge, with what, how often."""

    stored: list[Transcript]
    uploaded: list[Transcript]
    rubric: Rubric
    judges: list[ChatModel]
    repeats: int
    config: JudgeConfig


def check_request(
    registry: Registry,
    store: Store,
    *,
    stored_ids: Sequence[str],
    upload: str | Path | None,
    rubric_name: str,
    judge_names: Sequence[str],
    repeats: float | int | None,
    mode: str,
    upload_therapist: str | None = None,
    upload_variant: str | None = None,
    upload_family: str | None = None,
) -> CheckedRequest:
    """Every check, nothing written; ValueError (or a typed model error) says what to fix.

    An upload's transcripts take the therapist, variant and family given here where they record none;
    without a variant they are `unassigned` (cbtcompare.importers.Attribution)."""
    if rubric_name not in rubric_names():
        raise ValueError(f"unknown rubric {str(rubric_name)[:80]!r}; choose one of {', '.join(rubric_names())}")
    if mode not in MODES:
        raise ValueError(f"mode must be one of {', '.join(MODES)}, not {str(mode)[:40]!r}")
    repeat_count = _repeat_count(repeats)
    names = list(dict.fromkeys(judge_names or []))
    if not names:
        raise ValueError("pick at least one judge model")
    for name in names:
        registry.spec(name)  # an unknown name fails here, before anything loads
    stored = [_stored(store, i) for i in dict.fromkeys(stored_ids or [])]
    attribution = {"therapist": upload_therapist, "variant": upload_variant, "family": upload_family}
    # Without labels here the caller labels the uploads itself (the Judge tab's label_uploads, whose default
    # is unassigned): the importer must not mark them first, or its mark would win over the person's labels.
    labelled_here = any(attribution.values())
    uploaded = import_file(upload, mark_unassigned=labelled_here, **attribution) if upload else []
    if not stored and not uploaded:
        raise ValueError("pick stored transcripts or upload a file first")
    for transcript in stored + uploaded:
        if not transcript.turns:
            raise ValueError(f"transcript {transcript.id} has no turns to judge")
    judges = [registry.load(name) for name in names]
    return CheckedRequest(
        stored=stored,
        uploaded=uploaded,
        rubric=load_rubric(rubric_name),
        judges=judges,
        repeats=repeat_count,
        config=JudgeConfig(mode=mode),  # type: ignore[arg-type]
    )


def run_request(
    store: Store, request: CheckedRequest, progress: Progress | None = None
) -> tuple[list[Transcript], list[JudgeResult]]:
    """Store the upload, judge every transcript, store the scores; the transcripts as stored, and the results."""
    transcripts = list(request.stored)
    if request.uploaded:
        # The store may keep an upload under a new id (never replacing a stored transcript): read it back.
        transcripts += [store.get_transcript(i) for i in save_imported(store, request.uploaded)]
    results = score_many(
        transcripts,
        request.judges,
        request.rubric,
        request.config,
        repeats=request.repeats,
        progress=progress,
        first_repeat=lambda transcript, judge: store.next_repeat(transcript.id, judge.name, request.rubric.id),
    )
    save_results(store, results)
    return transcripts, results


def _repeat_count(repeats: object) -> int:
    if repeats is None:
        return 1
    try:
        count = float(repeats)  # type: ignore[arg-type]
        whole = count.is_integer()
    except (TypeError, ValueError, OverflowError):
        whole = False
    if not whole or not 1 <= count <= MAX_REPEATS:
        raise ValueError(f"repeats per judge must be a whole number from 1 to {MAX_REPEATS}, not {str(repeats)[:40]}")
    return int(count)


def _stored(store: Store, transcript_id: str) -> Transcript:
    try:
        return store.get_transcript(transcript_id)
    except KeyError:
        raise ValueError(f"no stored transcript with id {str(transcript_id)[:80]!r}; refresh the list") from None
