"""Matched groups and courses: 1-3 therapists meet the same patient, opening and seed schedule, session after
session, with the paper's carry-over (each session after the first opens with the previous one's summary).

`run_course_sessions` is the one course runner (carry-over, a crisis ends that course, a stop ends it);
`run_course` here and the batch runner both use it. Therapists run at once (`fan_out`) as many as
`sessions_at_once` allows, the one rule batches use too: one when every model is local. Never imports gradio,
never stores.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Hashable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from cbtcompare.fanout import fan_out, values_or_raise
from cbtcompare.models.base import BackendCapabilities, ChatModel
from cbtcompare.models.registry import backend_capabilities
from cbtcompare.patients import PatientProfile
from cbtcompare.simulate.session import (
    SessionPlace,
    TranscriptCallback,
    TurnCallback,
    make_opening,
    run_session,
    summary_of,
)
from cbtcompare.simulate.settings import SessionSettings
from cbtcompare.transcript import Transcript, Turn, new_id

MAX_GROUP = 3
COURSE_OVER = frozenset({"crisis", "stopped"})
"""Stop reasons after which a course has no next session."""

Lane = TypeVar("Lane", bound=Hashable)
CourseStep = Callable[[int, list[tuple[Lane, str | None]]], Sequence[Transcript | None]]


def sessions_at_once(requested: int, capabilities: Sequence[BackendCapabilities]) -> int:
    """How many sessions run at once, from the capabilities of the session models (patient and therapists).

    Every model local: one (they share this machine's cores; overlapping them gains nothing). Otherwise
    `requested`, an endpoint's network wait overlapping another session's work, but no more than the model
    serving the fewest requests at once allows (`parallel_requests`: a llama.cpp context pool's size, one
    for a backend that queues on a lock), so each session in flight keeps its own cached prefix. Results
    do not depend on it: each session's seeds come from its run key and local generation is deterministic
    per context. The one rule for batches, matched groups and the study plan's estimate.
    """
    if not any(c.remote for c in capabilities):
        return 1
    limits = [c.parallel_requests for c in capabilities if c.parallel_requests is not None]
    return max(1, min([requested, *limits]))


def model_capabilities(models: Sequence[ChatModel]) -> list[BackendCapabilities]:
    """The capabilities of each loaded model's backend, for sessions_at_once."""
    return [backend_capabilities(m.spec.backend) for m in models]


def run_course_sessions(
    lanes: Sequence[Lane],
    sessions: int,
    step: CourseStep[Lane],
    on_ended: Callable[[Lane, int], None] | None = None,
) -> list[Transcript]:
    """The one course runner: session 1..`sessions` for each lane (a therapist's course), in lockstep.

    `step(session_index, [(lane, previous summary or None), ...])` runs one session per active lane and
    returns its transcript, or None when the lane has no transcript (stopped before it began, failed). A
    lane's course ends on a crisis stop (`on_ended(lane, later_index)` for each session it will not run), on
    a stop, or on None. Returns the transcripts session by session, lanes in the order given.
    """
    if sessions < 1:
        raise ValueError(f"sessions must be at least 1; got {sessions}")
    summaries: dict[Lane, str | None] = {lane: None for lane in lanes}
    active = list(lanes)
    results: list[Transcript] = []
    for session_index in range(1, sessions + 1):
        if not active:
            break
        transcripts = step(session_index, [(lane, summaries[lane]) for lane in active])
        still_active = []
        for lane, transcript in zip(active, transcripts, strict=True):
            if transcript is None:
                continue
            results.append(transcript)
            reason = transcript.meta.get("stop_reason")
            if reason in COURSE_OVER:
                if reason == "crisis" and on_ended is not None:
                    for later in range(session_index + 1, sessions + 1):
                        on_ended(lane, later)
                continue
            summaries[lane] = summary_of(transcript)
            still_active.append(lane)
        active = still_active
    return results


def _check_group(therapists: Sequence[ChatModel]) -> None:
    if not 1 <= len(therapists) <= MAX_GROUP:
        raise ValueError(f"a matched group takes 1 to {MAX_GROUP} therapist models; got {len(therapists)}")


@dataclass(frozen=True)
class GroupHooks:
    """What a caller watches and controls while a group runs."""

    on_turn: TurnCallback | None = None
    on_transcript: TranscriptCallback | None = None
    stop_event: threading.Event | None = None


def run_group(
    therapists: Sequence[ChatModel],
    patient_model: ChatModel,
    profile: PatientProfile,
    settings: SessionSettings,
    places: Sequence[SessionPlace] | None = None,
    hooks: GroupHooks | None = None,
) -> list[Transcript]:
    """The same patient, opening and seed schedule for each of 1-3 therapists; transcripts share a group_id.

    Every therapist samples with the group's shared sampling (the first one's spec plus the overrides).
    `places` (one per therapist) carry course ids and previous summaries; when none carries a summary
    (session 1) the patient's opening is made once and given to every therapist, otherwise each
    therapist's patient opens with the summary of that therapist's previous session.
    """
    _check_group(therapists)
    hooks = hooks or GroupHooks()
    places = list(places or [SessionPlace() for _ in therapists])
    if len(places) != len(therapists):
        raise ValueError("a group needs one session place per therapist")
    group_id = places[0].group_id or new_id()
    shared_settings = settings.shared_by([t.spec for t in therapists])
    opening: Turn | None = None
    if all(p.previous_summary is None and p.opening is None for p in places):
        opening = make_opening(patient_model, profile, shared_settings, places[0])
        opening.flags["shared_opening"] = True
    places = [
        SessionPlace(
            session_index=p.session_index,
            previous_summary=p.previous_summary,
            opening=p.opening or opening,
            group_id=group_id,
            course_id=p.course_id,
            meta=p.meta,
        )
        for p in places
    ]

    def session_task(index: int) -> Callable[[threading.Event], Transcript]:
        def task(_: threading.Event) -> Transcript:
            # Every therapist's session starts and checks the caller's stop itself, so a stopped group still
            # returns one transcript per therapist (stop reason "stopped").
            transcript = run_session(
                therapists[index], patient_model, profile, shared_settings, places[index],
                on_turn=hooks.on_turn, stop_event=hooks.stop_event,
            )  # fmt: skip
            if hooks.on_transcript is not None:
                hooks.on_transcript(transcript)
            return transcript

        return task

    workers = sessions_at_once(len(therapists), model_capabilities([patient_model, *therapists]))
    outcomes = fan_out([session_task(i) for i in range(len(therapists))], workers, halt_on_error=True)
    return [t for t in values_or_raise(outcomes) if t is not None]


def run_pair(
    therapist_a: ChatModel,
    therapist_b: ChatModel,
    patient_model: ChatModel,
    profile: PatientProfile,
    settings: SessionSettings,
    hooks: GroupHooks | None = None,
) -> tuple[Transcript, Transcript]:
    """A matched pair: `run_group` for two therapists."""
    first, second = run_group([therapist_a, therapist_b], patient_model, profile, settings, hooks=hooks)
    return first, second


def run_course(
    therapists: ChatModel | Sequence[ChatModel],
    patient_model: ChatModel,
    profile: PatientProfile,
    settings: SessionSettings,
    sessions: int,
    hooks: GroupHooks | None = None,
) -> list[Transcript]:
    """N sessions per therapist with the paper's carry-over, each session a matched group of the therapists
    still in their course. Sessions are fresh conversations (only the summary carries over), so the context
    policy applies per session; it is stored with the course. A crisis stop ends that course. Returns the
    transcripts session by session (in each session, therapists in the order given). `settings.summary`
    is the carry-over policy; left unset, a course asks for a summary ("prompt").
    """
    group = [therapists] if isinstance(therapists, ChatModel) else list(therapists)
    _check_group(group)
    if "summary" not in settings.model_fields_set:
        settings = settings.model_copy(update={"summary": "prompt"})
    course_ids = [new_id() for _ in group]

    def step(session_index: int, lanes: list[tuple[int, str | None]]) -> list[Transcript]:
        active = [i for i, _ in lanes]
        course = {
            "sessions": sessions,
            "carryover": f"summary:{settings.summary}",
            "context_policy": "per session; "
            + ", ".join(f"{group[i].name}={group[i].spec.context_policy}" for i in active),
        }
        places = [
            SessionPlace(
                session_index=session_index,
                previous_summary=summary if session_index > 1 else None,
                course_id=course_ids[i],
                meta={"course": course},
            )
            for i, summary in lanes
        ]
        return run_group(
            [group[i] for i in active], patient_model, profile,
            settings.for_course_session(session_index, sessions), places, hooks,
        )  # fmt: skip

    return run_course_sessions(list(range(len(group))), sessions, step)


@dataclass
class GroupProgress:
    """A matched group while it runs: every turn so far per therapist; `transcripts` is set on the last one."""

    turns: dict[str, list[Turn]]
    latest: str | None = None
    transcripts: list[Transcript] | None = None


def stream_group(
    therapists: Sequence[ChatModel],
    patient_model: ChatModel,
    profile: PatientProfile,
    settings: SessionSettings,
    stop_event: threading.Event | None = None,
) -> Iterator[GroupProgress]:
    """`run_group` in a worker thread, yielding after every new turn (for a UI that shows the panes fill).

    The last item carries the transcripts; an error in the run is raised here. Set `stop_event` to stop.
    """
    events: queue.Queue[tuple[str, Turn | None]] = queue.Queue()
    progress = GroupProgress(turns={model.name: [] for model in therapists})
    outcome: dict[str, Any] = {}
    hooks = GroupHooks(
        on_turn=lambda transcript, turn: events.put((transcript.therapist_name, turn)), stop_event=stop_event
    )

    def work() -> None:
        try:
            outcome["transcripts"] = run_group(therapists, patient_model, profile, settings, hooks=hooks)
        except Exception as exc:  # handed to the caller below
            outcome["error"] = exc
        finally:
            events.put(("", None))

    threading.Thread(target=work, daemon=True, name="simulate-group").start()
    while True:
        name, turn = events.get()
        if turn is None:
            break
        progress.turns.setdefault(name, []).append(turn)
        progress.latest = name
        yield progress
    if "error" in outcome:
        raise outcome["error"]
    progress.transcripts = outcome["transcripts"]
    yield progress
