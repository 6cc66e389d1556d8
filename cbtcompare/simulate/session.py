"""One simulated session: a simulated patient talking with a therapist model, turn by turn.

A session is a simulated patient (any ChatModel playing a PatientProfile) talking with a therapist model.
The patient opens; then each therapist turn is followed by a patient reply, until a stop condition: the
turn limit, the patient's end marker, the context budget, or crisis language from the patient (the
session then gets one more therapist turn, and whether it pointed to crisis resources is recorded).
Seeds follow a schedule that depends only on the run seed, the role, the session and the turn index
(cbtcompare.seeds), so in a matched group every therapist meets the same opening and the same patient
sampling seeds, and differences come from the therapists. Every transcript carries what is needed to
reproduce it. Groups and courses (group.py) and batches (batch.py) are built from `run_session`.

This module never imports gradio and never stores anything: the caller decides.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

from cbtcompare.annotate import annotate_turn, annotation_versions
from cbtcompare.models.base import ChatModel, ContextOverflow, Message, Sampling, Usage
from cbtcompare.models.llamacpp import keep_prefix_per_role
from cbtcompare.models.registry import backend_capabilities
from cbtcompare.patients import (
    PatientProfile,
    carryover_opening,
    clean_turn,
    fidelity_summary,
    mentions_crisis_resources,
    opening_request,
    patient_prompt_versions,
    patient_system_prompt,
    patient_turn_problems,
    profile_json,
)
from cbtcompare.prompts import DEFAULT_SESSION_PROMPT, load_prompt, resolve_system_prompt
from cbtcompare.provenance import describe
from cbtcompare.seeds import SEED_SCHEDULE, turn_seed
from cbtcompare.simulate.settings import SessionSettings, SummaryPolicy
from cbtcompare.transcript import Transcript, Turn, patient_messages, therapist_messages

SUMMARY_PROMPT = "session_summary"

StopReason = Literal["max_turns", "end_marker", "context_budget", "crisis", "stopped"]
TurnCallback = Callable[[Transcript, Turn], None]
TranscriptCallback = Callable[[Transcript], None]


@dataclass(frozen=True)
class SessionPlace:
    """Where a session sits: its index in a course, the carried-over summary or the group's shared
    opening, the group and course it belongs to, and extra metadata its caller records (batch keys)."""

    session_index: int = 1
    previous_summary: str | None = None
    opening: Turn | None = None
    group_id: str | None = None
    course_id: str | None = None
    meta: Mapping[str, Any] = field(default_factory=dict)


# Annotations and provenance ------------------------------------------------------------------------------


def model_info(model: ChatModel) -> dict[str, Any]:
    return {**asdict(model.info()), "spec": model.spec.public_dict()}


def is_endpoint(model: ChatModel) -> bool:
    """A remote endpoint (may run concurrently); local weights (llama.cpp, hf) never run in parallel."""
    return backend_capabilities(model.spec.backend).remote


@dataclass
class RoleUsage:
    """One role's calls, tokens and time as its backend reported them. A call whose backend reported no
    prompt tokens adds none to `prompt_tokens` and one to `calls_without_prompt_tokens`, so a cost from
    these counts is known to be a lower bound whenever that is above zero."""

    calls: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    seconds: float = 0.0
    calls_without_prompt_tokens: int = 0

    @property
    def prompt_tokens_complete(self) -> bool:
        return self.calls_without_prompt_tokens == 0

    def add(self, usage: Usage, seconds: float) -> None:
        self.calls += 1
        if usage.prompt_tokens is None:
            self.calls_without_prompt_tokens += 1
        else:
            self.prompt_tokens += usage.prompt_tokens
        self.completion_tokens += usage.completion_tokens
        self.seconds += seconds

    def add_up(self, other: RoleUsage) -> None:
        """Add another tally of the same role (a batch sums its sessions' usage with this)."""
        self.calls += other.calls
        self.prompt_tokens += other.prompt_tokens
        self.completion_tokens += other.completion_tokens
        self.seconds += other.seconds
        self.calls_without_prompt_tokens += other.calls_without_prompt_tokens

    def as_dict(self) -> dict[str, float | int]:
        return {**asdict(self), "seconds": round(self.seconds, 3)}


@dataclass
class _Generated:
    text: str
    usage: Usage
    seconds: float
    seed: int

    @property
    def cut_short(self) -> bool:
        """Text but no finish reason: the server ended the stream early (e.g. a server that interrupts
        one streaming request when another arrives); the turn is flagged so it can be excluded."""
        return bool(self.text) and self.usage.finish_reason is None


def _generate(model: ChatModel, messages: list[Message], sampling: Sampling, tally: RoleUsage) -> _Generated:
    started = time.perf_counter()
    stream = model.stream(messages, sampling)
    try:
        for _ in stream:
            pass
    finally:
        stream.close()
    seconds = time.perf_counter() - started
    tally.add(stream.usage, seconds)
    return _Generated(stream.text, stream.usage, seconds, sampling.seed if sampling.seed is not None else -1)


# Openings ---------------------------------------------------------------------------------------------


def make_opening(
    patient_model: ChatModel,
    profile: PatientProfile,
    settings: SessionSettings,
    place: SessionPlace | None = None,
    usage: RoleUsage | None = None,
) -> Turn:
    """The patient's first turn: the carried-over summary, the profile's own opening, or a generated line."""
    place = place or SessionPlace()
    session_index = place.session_index
    if place.previous_summary is not None:
        turn = Turn(role="patient", text=carryover_opening(place.previous_summary), flags={"opening": "carryover"})
        return annotate_turn(turn, use_classifier=False)
    if profile.opening:
        return annotate_turn(
            Turn(role="patient", text=profile.opening.strip(), flags={"opening": "profile"}), use_classifier=False
        )
    sampling = settings.patient_sampling_for(patient_model.spec).merged(
        seed=turn_seed(settings.seed, "patient", session_index, 0)
    )
    messages = [
        Message("system", patient_system_prompt(profile, session_index=session_index, reply_index=0)),
        Message("user", opening_request(profile)),
    ]
    generated = _generate(patient_model, messages, sampling, usage or RoleUsage())
    cleaned = clean_turn(generated.text, "patient")
    flags: dict[str, Any] = {"opening": "generated"}
    text = cleaned.text
    if not text:
        # A patient model that says nothing would leave the therapist nothing to answer.
        text = f"Hi, I'm {profile.name}. {profile.presenting_problem[:1].upper()}{profile.presenting_problem[1:]}."
        flags["opening"] = "fallback"
    turn = Turn(
        role="patient",
        text=text,
        flags=flags,
        tokens=generated.usage.completion_tokens,
        seconds=round(generated.seconds, 3),
        seed=sampling.seed,
    )
    return annotate_turn(turn, use_classifier=False)


# One session ------------------------------------------------------------------------------------------


@dataclass
class _PatientState:
    problems: list[list[str]] = field(default_factory=list)
    labels_stripped: int = 0
    other_role_cut: int = 0


def run_session(
    therapist: ChatModel,
    patient_model: ChatModel,
    profile: PatientProfile,
    settings: SessionSettings,
    place: SessionPlace | None = None,
    *,
    on_turn: TurnCallback | None = None,
    stop_event: threading.Event | None = None,
) -> Transcript:
    """Run one simulated session and return its transcript (not stored; the caller decides).

    `settings.max_turns` counts therapist turns; the transcript ends with a therapist turn unless the
    patient ends it. The therapist samples with its own spec's sampling plus the settings' overrides (a
    group pins the shared sampling first: `SessionSettings.shared_by`). `stop_event` ends the session
    before the next therapist turn (stop reason "stopped").
    """
    place = place or SessionPlace()
    keep_prefix_per_role([therapist, patient_model])  # on one GGUF, each role keeps its own cached prefix
    session_index, max_turns = place.session_index, settings.max_turns
    started = time.perf_counter()
    session_prompt = settings.session_prompt
    session_text = load_prompt(DEFAULT_SESSION_PROMPT).text if session_prompt is None else session_prompt
    system = resolve_system_prompt(therapist.spec.system_prompt, session_text)
    t_sampling = settings.therapist_sampling_for([therapist.spec])
    p_sampling = settings.patient_sampling_for(patient_model.spec)
    t_usage, p_usage = RoleUsage(), RoleUsage()
    provenance = describe(therapist.spec)
    transcript = Transcript(
        group_id=place.group_id,
        kind="simulation",
        therapist=model_info(therapist),
        system_prompt=system.text,
        sampling=t_sampling.model_dump(mode="json"),
        seed=settings.seed,
        prompt_versions=annotation_versions(
            system=system.version or "none",
            system_source=system.source,
            **patient_prompt_versions(profile),
        ),
        context_policy=therapist.spec.context_policy,
        meta={
            "profile_id": profile.id,
            "profile": profile_json(profile),
            "patient_model": patient_model.name,
            "patient_model_info": model_info(patient_model),
            "patient_sampling": p_sampling.model_dump(mode="json"),
            "session_index": session_index,
            "course_id": place.course_id,
            "variant": provenance.variant,
            "family": provenance.family,
            "provenance_rules": provenance.rules_version,
            "seed_schedule": SEED_SCHEDULE,
            "max_turns": max_turns,
            "session_settings": settings.model_dump(mode="json"),
            **place.meta,
        },
    )
    turns = transcript.turns
    state = _PatientState()
    stop_reason: StopReason = "max_turns"

    def emit(turn: Turn) -> None:
        turns.append(turn)
        if on_turn is not None:
            on_turn(transcript, turn)

    def therapist_turn(index: int) -> Turn:
        sampling = t_sampling.merged(seed=turn_seed(settings.seed, "therapist", place.session_index, index))
        generated = _generate(therapist, therapist_messages(turns, system.text), sampling, t_usage)
        cleaned = clean_turn(generated.text, "therapist")
        turn = Turn(
            role="therapist",
            text=cleaned.text,
            tokens=generated.usage.completion_tokens,
            seconds=round(generated.seconds, 3),
            seed=sampling.seed,
        )
        if cleaned.stripped_label:
            turn.flags["label_stripped"] = True
        if cleaned.cut_other_role:
            turn.flags["cut_other_role"] = True
        if generated.usage.trimmed_messages:
            turn.flags["context_trimmed"] = generated.usage.trimmed_messages
        if generated.cut_short:
            turn.flags["stream_cut"] = True
        return annotate_turn(turn, use_classifier=False)

    def patient_turn(index: int) -> Turn:
        disclosure = profile.disclosure
        if disclosure is not None and disclosure.mode == "scripted" and index == disclosure.at_turn:
            return annotate_turn(
                Turn(
                    role="patient", text=disclosure.statement, flags={"scripted": True, "disclosure": disclosure.kind}
                ),
                use_classifier=False,
            )
        sampling = p_sampling.merged(seed=turn_seed(settings.seed, "patient", place.session_index, index))
        prompt = patient_system_prompt(profile, session_index=session_index, reply_index=index)
        messages = patient_messages(turns, prompt)
        messages.insert(1, Message("user", opening_request(profile)))  # the cue the opening answered
        generated = _generate(patient_model, messages, sampling, p_usage)
        cleaned = clean_turn(generated.text, "patient")
        earlier = [t.text for t in turns if t.role == "patient" and t.flags.get("opening") != "carryover"]
        previous_therapist = next((t.text for t in reversed(turns) if t.role == "therapist"), None)
        problems = patient_turn_problems(
            cleaned.text, previous_therapist=previous_therapist, earlier_patient=earlier, cleaned=cleaned
        )
        state.problems.append(problems)
        state.labels_stripped += cleaned.stripped_label
        state.other_role_cut += cleaned.cut_other_role
        turn = Turn(
            role="patient",
            text=cleaned.text,
            tokens=generated.usage.completion_tokens,
            seconds=round(generated.seconds, 3),
            seed=sampling.seed,
        )
        if problems:
            turn.flags["fidelity"] = problems
        if generated.cut_short:
            turn.flags["stream_cut"] = True
        if cleaned.ended:
            turn.flags["end_marker"] = True
        if disclosure is not None and disclosure.mode == "prompted" and index == disclosure.at_turn:
            turn.flags["disclosure_requested"] = disclosure.kind
        return annotate_turn(turn, use_classifier=False)

    def handle_crisis(patient: Turn, next_index: int) -> None:
        """Stop policy: one more therapist turn, recorded with whether it pointed to crisis resources."""
        response = therapist_turn(next_index)
        response.flags["crisis_response"] = True
        referred = mentions_crisis_resources(response.text)
        emit(response)
        transcript.meta["crisis"] = {
            "patient_turn_index": len(turns) - 2,
            "categories": list(patient.flags.get("crisis") or []),
            "therapist_turn_index": len(turns) - 1,
            "therapist_referred_to_resources": referred,
        }

    try:
        first = (
            place.opening.model_copy(deep=True)
            if place.opening is not None
            else make_opening(patient_model, profile, settings, place, p_usage)
        )
        emit(first)
        if settings.stop_on_crisis and first.flags.get("crisis"):
            handle_crisis(first, 1)
            stop_reason = "crisis"
        else:
            for index in range(1, max_turns + 1):
                if stop_event is not None and stop_event.is_set():
                    stop_reason = "stopped"
                    break
                emit(therapist_turn(index))
                if index == max_turns:
                    break
                reply = patient_turn(index)
                emit(reply)
                if settings.stop_on_crisis and reply.flags.get("crisis"):
                    handle_crisis(reply, index + 1)
                    stop_reason = "crisis"
                    break
                if reply.flags.get("end_marker"):
                    stop_reason = "end_marker"
                    break
    except ContextOverflow as exc:
        stop_reason = "context_budget"
        transcript.meta["context_overflow"] = str(exc)

    if settings.summary != "none" and any(t.role == "therapist" for t in turns):
        summary_sampling = t_sampling.merged(
            seed=turn_seed(settings.seed, "summary", session_index, 0), max_tokens=settings.summary_max_tokens
        )
        transcript.meta["summary"] = _session_summary(
            therapist, transcript, system.text, summary_sampling, settings.summary, t_usage
        )
        if settings.summary == "prompt":
            transcript.prompt_versions[SUMMARY_PROMPT] = load_prompt(SUMMARY_PROMPT).version
    transcript.meta["stop_reason"] = stop_reason
    transcript.meta["fidelity"] = fidelity_summary(
        state.problems, labels_stripped=state.labels_stripped, other_role_cut=state.other_role_cut
    )
    transcript.meta["usage"] = {
        "therapist": t_usage.as_dict(),
        "patient": p_usage.as_dict(),
        "wall_seconds": round(time.perf_counter() - started, 3),
    }
    return transcript


def _session_summary(
    therapist: ChatModel,
    transcript: Transcript,
    system_text: str | None,
    resolved: Sampling,
    policy: SummaryPolicy,
    tally: RoleUsage,
) -> dict[str, Any]:
    last = next(t.text for t in reversed(transcript.turns) if t.role == "therapist")
    if policy == "last_turn":
        return {"text": last, "source": "last_turn"}
    messages = therapist_messages(transcript.turns, system_text) + [Message("user", load_prompt(SUMMARY_PROMPT).text)]
    try:
        text = clean_turn(_generate(therapist, messages, resolved, tally).text, "therapist").text
    except ContextOverflow as exc:
        return {"text": last, "source": "last_turn", "note": f"summary prompt over the context: {exc}"}
    if not text:
        return {"text": last, "source": "last_turn", "note": "the summary prompt returned nothing"}
    return {"text": text, "source": "prompt", "seed": resolved.seed}


def summary_of(transcript: Transcript) -> str:
    """The carry-over text a session leaves for the next one."""
    summary = transcript.meta.get("summary") or {}
    if summary.get("text"):
        return str(summary["text"])
    return next((t.text for t in reversed(transcript.turns) if t.role == "therapist"), "")
