"""Simulated sessions: one session, a matched group of 2-3 therapists, a multi-session course, a batch.

A session is a simulated patient (any ChatModel playing a PatientProfile) talking with a therapist model.
The patient opens; then each therapist turn is followed by a patient reply, until a stop condition: the
turn limit, the patient's end marker, the context budget, or crisis language from the patient (the
session then gets one more therapist turn, and whether it pointed to crisis resources is recorded).
Seeds follow a schedule that depends only on the run seed, the role, the session and the turn index, so
in a matched group every therapist meets the same opening and the same patient sampling seeds, and
differences come from the therapists. Every transcript carries what is needed to reproduce it.

This module never imports gradio, never writes outside the store it is given, and never runs local
(llama.cpp / hf) models concurrently: only endpoint backends are run in parallel.
"""

from __future__ import annotations

import hashlib
import queue
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from cbtcompare.annotate import annotate_turn, annotation_versions
from cbtcompare.models.base import ChatModel, ContextOverflow, Message, ModelError, Sampling, Usage
from cbtcompare.patients import (
    PatientProfile,
    carryover_opening,
    clean_turn,
    fidelity_summary,
    load_profile,
    mentions_crisis_resources,
    opening_request,
    patient_prompt_versions,
    patient_system_prompt,
    patient_turn_problems,
    profile_json,
    rules,
)
from cbtcompare.prompts import DEFAULT_SESSION_PROMPT, load_prompt, resolve_system_prompt
from cbtcompare.seeds import derive_seed
from cbtcompare.simulate.settings import SEED_SCHEDULE, SummaryPolicy
from cbtcompare.transcript import Transcript, Turn, new_id, patient_messages, therapist_messages

SUMMARY_PROMPT = "session_summary"
MAX_GROUP = 3
ENDPOINT_BACKENDS = frozenset({"openai", "gemini"})

StopReason = Literal["max_turns", "end_marker", "context_budget", "crisis", "stopped"]
TurnCallback = Callable[[Transcript, Turn], None]
TranscriptCallback = Callable[[Transcript], None]


# Annotations and provenance ------------------------------------------------------------------------------


def guess_variant(model: ChatModel) -> str:
    """ "tuned" (an adapter or a fine-tune's name), "prompted" (a CBT system prompt or name) or "base"."""
    spec = model.spec
    r = rules()
    name = spec.name.lower()
    if spec.adapter:
        return "tuned"
    if any(p.search(name) for p in r.variant_prompted):
        return "prompted"
    if any(p.search(name) for p in r.variant_tuned):
        return "tuned"
    if spec.system_prompt and spec.system_prompt not in r.plain_system_prompts:
        return "prompted"
    return "base"


def guess_family(model: ChatModel) -> str:
    """The model family (llama, qwen, mistral, smollm2...) from the name and weights, else the name's stem."""
    haystack = f"{model.spec.name} {model.spec.weights}".lower()
    for family in rules().families:
        if family in haystack:
            return family
    return model.spec.name.lower().split("-")[0]


def model_info(model: ChatModel) -> dict[str, Any]:
    return {**asdict(model.info()), "spec": model.spec.public_dict()}


def is_endpoint(model: ChatModel) -> bool:
    return model.spec.backend in ENDPOINT_BACKENDS


@dataclass
class RoleUsage:
    calls: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    seconds: float = 0.0

    def add(self, usage: Usage, seconds: float) -> None:
        self.calls += 1
        self.prompt_tokens += usage.prompt_tokens or 0
        self.completion_tokens += usage.completion_tokens
        self.seconds += seconds

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
    seed: int,
    *,
    session_index: int = 1,
    previous_summary: str | None = None,
    patient_sampling: Sampling | None = None,
    usage: RoleUsage | None = None,
) -> Turn:
    """The patient's first turn: the carried-over summary, the profile's own opening, or a generated line."""
    if previous_summary is not None:
        turn = Turn(role="patient", text=carryover_opening(previous_summary), flags={"opening": "carryover"})
        return annotate_turn(turn, use_classifier=False)
    if profile.opening:
        return annotate_turn(
            Turn(role="patient", text=profile.opening.strip(), flags={"opening": "profile"}), use_classifier=False
        )
    sampling = (patient_sampling or patient_model.spec.sampling).merged(
        seed=derive_seed(seed, "patient", session_index, 0)
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
    max_turns: int = 6,
    seed: int = 0,
    *,
    session_index: int = 1,
    previous_summary: str | None = None,
    opening: Turn | None = None,
    group_id: str | None = None,
    course_id: str | None = None,
    therapist_sampling: Sampling | None = None,
    patient_sampling: Sampling | None = None,
    session_prompt: str | None = None,
    summary: SummaryPolicy = "none",
    summary_max_tokens: int = 160,
    stop_on_crisis: bool = True,
    on_turn: TurnCallback | None = None,
    stop_event: threading.Event | None = None,
    extra_meta: dict[str, Any] | None = None,
) -> Transcript:
    """Run one simulated session and return its transcript (not stored; the caller decides).

    `max_turns` counts therapist turns; the transcript ends with a therapist turn unless the patient ends
    it. `session_prompt` is the therapist's system prompt when its spec names none (default: the same
    basic prompt side-by-side sessions use). `summary` asks the therapist for a closing summary (the
    carry-over of a course) or takes its last turn as one.
    """
    if max_turns < 1:
        raise ValueError(f"max_turns must be at least 1; got {max_turns}")
    started = time.perf_counter()
    session_text = load_prompt(DEFAULT_SESSION_PROMPT).text if session_prompt is None else session_prompt
    system = resolve_system_prompt(therapist.spec.system_prompt, session_text)
    t_sampling = therapist_sampling or therapist.spec.sampling
    p_sampling = patient_sampling or patient_model.spec.sampling
    t_usage, p_usage = RoleUsage(), RoleUsage()
    transcript = Transcript(
        group_id=group_id,
        kind="simulation",
        therapist=model_info(therapist),
        system_prompt=system.text,
        sampling=t_sampling.model_dump(mode="json"),
        seed=seed,
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
            "course_id": course_id,
            "variant": guess_variant(therapist),
            "family": guess_family(therapist),
            "seed_schedule": SEED_SCHEDULE,
            "max_turns": max_turns,
            **(extra_meta or {}),
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
        sampling = t_sampling.merged(seed=derive_seed(seed, "therapist", session_index, index))
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
        sampling = p_sampling.merged(seed=derive_seed(seed, "patient", session_index, index))
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
            opening.model_copy(deep=True)
            if opening is not None
            else make_opening(
                patient_model,
                profile,
                seed,
                session_index=session_index,
                previous_summary=previous_summary,
                patient_sampling=p_sampling,
                usage=p_usage,
            )
        )
        emit(first)
        if stop_on_crisis and first.flags.get("crisis"):
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
                if stop_on_crisis and reply.flags.get("crisis"):
                    handle_crisis(reply, index + 1)
                    stop_reason = "crisis"
                    break
                if reply.flags.get("end_marker"):
                    stop_reason = "end_marker"
                    break
    except ContextOverflow as exc:
        stop_reason = "context_budget"
        transcript.meta["context_overflow"] = str(exc)

    if summary != "none" and any(t.role == "therapist" for t in turns):
        transcript.meta["summary"] = _session_summary(
            therapist, transcript, system.text, t_sampling, seed, session_index, summary, summary_max_tokens, t_usage
        )
        if summary == "prompt":
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
    sampling: Sampling,
    seed: int,
    session_index: int,
    policy: SummaryPolicy,
    max_tokens: int,
    tally: RoleUsage,
) -> dict[str, Any]:
    last = next(t.text for t in reversed(transcript.turns) if t.role == "therapist")
    if policy == "last_turn":
        return {"text": last, "source": "last_turn"}
    messages = therapist_messages(transcript.turns, system_text) + [Message("user", load_prompt(SUMMARY_PROMPT).text)]
    resolved = sampling.merged(seed=derive_seed(seed, "summary", session_index, 0), max_tokens=max_tokens)
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


# Matched groups and courses ---------------------------------------------------------------------------


def _check_group(therapists: Sequence[ChatModel]) -> None:
    if not 1 <= len(therapists) <= MAX_GROUP:
        raise ValueError(f"a matched group takes 1 to {MAX_GROUP} therapist models; got {len(therapists)}")


def run_group(
    therapists: Sequence[ChatModel],
    patient_model: ChatModel,
    profile: PatientProfile,
    max_turns: int = 6,
    seed: int = 0,
    *,
    group_id: str | None = None,
    session_index: int = 1,
    previous_summaries: Sequence[str | None] | None = None,
    course_ids: Sequence[str | None] | None = None,
    on_transcript: TranscriptCallback | None = None,
    **session_options: Any,
) -> list[Transcript]:
    """The same patient, opening and seed schedule for each of 1-3 therapists; transcripts share a group_id.

    In session 1 the patient's opening is made once and given to every therapist. From session 2 each
    therapist's patient opens with the summary of that therapist's previous session.
    """
    _check_group(therapists)
    group_id = group_id or new_id()
    summaries = list(previous_summaries or [None] * len(therapists))
    courses = list(course_ids or [None] * len(therapists))
    if len(summaries) != len(therapists) or len(courses) != len(therapists):
        raise ValueError("previous_summaries and course_ids need one entry per therapist")
    shared = None
    if all(s is None for s in summaries):
        shared = make_opening(
            patient_model,
            profile,
            seed,
            session_index=session_index,
            patient_sampling=session_options.get("patient_sampling"),
        )
        shared.flags["shared_opening"] = True

    def one(index: int) -> Transcript:
        transcript = run_session(
            therapists[index],
            patient_model,
            profile,
            max_turns,
            seed,
            session_index=session_index,
            previous_summary=summaries[index],
            opening=shared,
            group_id=group_id,
            course_id=courses[index],
            **session_options,
        )
        if on_transcript is not None:
            on_transcript(transcript)
        return transcript

    parallel = len(therapists) > 1 and is_endpoint(patient_model) and all(is_endpoint(t) for t in therapists)
    if parallel:
        with ThreadPoolExecutor(max_workers=len(therapists)) as pool:
            return list(pool.map(one, range(len(therapists))))
    return [one(index) for index in range(len(therapists))]


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
    max_turns: int = 6,
    seed: int = 0,
    **options: Any,
) -> Iterator[GroupProgress]:
    """`run_group` in a worker thread, yielding after every new turn (for a UI that shows the panes fill).

    The last item carries the transcripts; an error in the run is raised here. Pass `stop_event` to stop.
    """
    events: queue.Queue[tuple[str, Turn | None]] = queue.Queue()
    progress = GroupProgress(turns={model.name: [] for model in therapists})
    outcome: dict[str, Any] = {}

    def work() -> None:
        try:
            outcome["transcripts"] = run_group(
                therapists,
                patient_model,
                profile,
                max_turns,
                seed,
                on_turn=lambda transcript, turn: events.put((transcript.therapist_name, turn)),
                **options,
            )
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


def run_pair(
    therapist_a: ChatModel,
    therapist_b: ChatModel,
    patient_model: ChatModel,
    profile: PatientProfile,
    max_turns: int = 6,
    seed: int = 0,
    **options: Any,
) -> tuple[Transcript, Transcript]:
    """A matched pair: `run_group` for two therapists."""
    first, second = run_group([therapist_a, therapist_b], patient_model, profile, max_turns, seed, **options)
    return first, second


def run_course(
    therapists: ChatModel | Sequence[ChatModel],
    patient_model: ChatModel,
    profile: PatientProfile,
    sessions: int,
    max_turns: int = 6,
    seed: int = 0,
    *,
    summary: SummaryPolicy = "prompt",
    on_transcript: TranscriptCallback | None = None,
    **session_options: Any,
) -> list[Transcript]:
    """N sessions per therapist with the paper's carry-over: each session after the first opens with the
    previous session's summary. Sessions are fresh conversations (only the summary carries over), so the
    context policy applies per session; it is stored with the course. A crisis stop ends that course.
    Returns the transcripts session by session (in each session, therapists in the order given).
    """
    group = [therapists] if isinstance(therapists, ChatModel) else list(therapists)
    _check_group(group)
    if sessions < 1:
        raise ValueError(f"sessions must be at least 1; got {sessions}")
    course_ids = [new_id() for _ in group]
    caller_meta = session_options.pop("extra_meta", None) or {}
    active = list(range(len(group)))
    summaries: list[str | None] = [None] * len(group)
    results: list[Transcript] = []
    for session_index in range(1, sessions + 1):
        course_meta = {
            "course": {
                "sessions": sessions,
                "carryover": f"summary:{summary}",
                "context_policy": "per session; "
                + ", ".join(f"{group[i].name}={group[i].spec.context_policy}" for i in active),
            }
        }
        transcripts = run_group(
            [group[i] for i in active],
            patient_model,
            profile,
            max_turns,
            seed,
            session_index=session_index,
            previous_summaries=[summaries[i] for i in active] if session_index > 1 else None,
            course_ids=[course_ids[i] for i in active],
            summary=summary if session_index < sessions else "none",
            extra_meta={**caller_meta, **course_meta},
            on_transcript=on_transcript,
            **session_options,
        )
        results.extend(transcripts)
        still_active = []
        for i, transcript in zip(active, transcripts, strict=True):
            summaries[i] = summary_of(transcript)
            if transcript.meta.get("stop_reason") != "crisis":
                still_active.append(i)
        active = still_active
        if not active:
            break
    return results


# Batches ----------------------------------------------------------------------------------------------


class BatchConfig(BaseModel):
    """A batch: profiles x therapists x replicates (x sessions). Rerunning the same config resumes it."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}$", description="the batch's name; reruns resume it")
    profiles: list[str] | Literal["all"] = Field(description="profile ids, files, sampled-<seed>, or 'all' curated")
    therapists: list[str] = Field(min_length=1, description="registry names of the therapist models")
    patient: str = Field(description="registry name of the patient model")
    replicates: int = Field(1, ge=1, le=1000)
    turns: int = Field(6, ge=1, le=200, description="therapist turns per session")
    sessions: int = Field(1, ge=1, le=50, description="sessions per course (carry-over from session 2)")
    seed: int = 0
    concurrency: int = Field(4, ge=1, le=64, description="parallel runs; used only when every model is an endpoint")
    therapist_sampling: dict[str, Any] = Field(default_factory=dict, description="overrides, e.g. {max_tokens: 80}")
    patient_sampling: dict[str, Any] = Field(default_factory=dict)
    summary: SummaryPolicy = "prompt"
    summary_max_tokens: int = Field(160, ge=1, le=4096)
    db: str | None = Field(None, description="store URL; default: the app's store")
    models: str | None = Field(None, description="an extra models file (like CBTCOMPARE_MODELS)")

    @classmethod
    def from_file(cls, path: Path | str) -> BatchConfig:
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"no batch config at {path}")
        try:
            data = yaml.safe_load(path.read_text(encoding="utf-8"))
        except yaml.YAMLError as exc:
            raise ValueError(f"{path}: not valid YAML: {exc}") from exc
        try:
            return cls.model_validate(data)
        except ValidationError as exc:
            problems = "; ".join(
                f"field {'.'.join(str(p) for p in e['loc']) or '(config)'!r}: {e['msg']}" for e in exc.errors()
            )
            raise ValueError(f"{path}: {problems}") from exc

    def fingerprint(self) -> str:
        """What makes two runs comparable; adding profiles or therapists keeps it, changing turns does not."""
        material = {
            "patient": self.patient,
            "turns": self.turns,
            "sessions": self.sessions,
            "seed": self.seed,
            "therapist_sampling": self.therapist_sampling,
            "patient_sampling": self.patient_sampling,
            "summary": self.summary,
            "summary_max_tokens": self.summary_max_tokens,
        }
        return hashlib.sha256(yaml.safe_dump(material, sort_keys=True).encode("utf-8")).hexdigest()[:8]

    @property
    def batch_id(self) -> str:
        return f"{self.name}@{self.fingerprint()}"


@dataclass(frozen=True)
class RunSpec:
    """One session of a batch."""

    profile_id: str
    therapist: str
    replicate: int
    session_index: int
    run_key: str


@dataclass
class RunResult:
    spec: RunSpec
    status: Literal["done", "skipped", "failed", "ended"]
    transcript_id: str | None = None
    stop_reason: str | None = None
    turns: int = 0
    therapist_tokens: int = 0
    patient_tokens: int = 0
    seconds: float = 0.0
    error: str | None = None
    started: float | None = None  # time.perf_counter() when the run began and ended (shows overlap)
    finished: float | None = None


@dataclass
class BatchProgress:
    completed: int
    total: int
    last: RunResult


@dataclass
class BatchResult:
    batch_id: str
    total: int
    runs: list[RunResult]
    seconds: float
    concurrency: int

    def count(self, status: str) -> int:
        return sum(r.status == status for r in self.runs)

    @property
    def sessions_per_minute(self) -> float:
        done = self.count("done")
        return done / (self.seconds / 60) if self.seconds > 0 else 0.0

    def summary(self) -> dict[str, Any]:
        done = [r for r in self.runs if r.status == "done"]
        return {
            "batch_id": self.batch_id,
            "total": self.total,
            "done": len(done),
            "skipped": self.count("skipped"),
            "failed": self.count("failed"),
            "ended": self.count("ended"),
            "concurrency": self.concurrency,
            "seconds": round(self.seconds, 2),
            "sessions_per_minute": round(self.sessions_per_minute, 3),
            "therapist_tokens": sum(r.therapist_tokens for r in done),
            "patient_tokens": sum(r.patient_tokens for r in done),
            "stop_reasons": {
                reason: sum(r.stop_reason == reason for r in done) for reason in sorted({r.stop_reason for r in done})
            },
            "errors": [f"{r.spec.run_key}: {r.error}" for r in self.runs if r.status == "failed"],
        }


FINISHED = frozenset({"done", "ended"})


def _digest(*parts: object) -> str:
    return hashlib.sha256("|".join(map(str, parts)).encode("utf-8")).hexdigest()[:32]


def plan_batch(config: BatchConfig, profiles: Sequence[PatientProfile]) -> list[list[RunSpec]]:
    """Courses (one list of sessions each), ordered so every therapist's run of a profile sits together."""
    courses = []
    for profile in profiles:
        for replicate in range(1, config.replicates + 1):
            for therapist in config.therapists:
                courses.append(
                    [
                        RunSpec(
                            profile.id,
                            therapist,
                            replicate,
                            session,
                            f"{config.batch_id}|{profile.id}|{therapist}|r{replicate}|s{session}",
                        )
                        for session in range(1, config.sessions + 1)
                    ]
                )
    return courses


def _resolve_profiles(config: BatchConfig) -> list[PatientProfile]:
    from cbtcompare.patients import curated_profiles

    if config.profiles == "all":
        return curated_profiles()
    profiles = [load_profile(item) for item in config.profiles]
    ids = [p.id for p in profiles]
    if len(set(ids)) != len(ids):
        raise ValueError(f"the batch names a profile twice: {', '.join(sorted({i for i in ids if ids.count(i) > 1}))}")
    return profiles


def _sampling_with(base: Sampling, overrides: dict[str, Any], what: str) -> Sampling:
    try:
        return Sampling.model_validate({**base.model_dump(), **overrides})
    except ValidationError as exc:
        first = exc.errors()[0]
        raise ValueError(f"{what}: field {'.'.join(map(str, first['loc']))!r}: {first['msg']}") from exc


def run_batch(
    config: BatchConfig,
    registry: Any,
    store: Any,
    *,
    progress: Callable[[BatchProgress], None] | None = None,
    stop_event: threading.Event | None = None,
) -> BatchResult:
    """Run (or resume) a batch; every finished session is stored with its run key, in one transaction.

    Sessions already finished in the store under the same batch id are skipped. Runs go through a thread
    pool of `config.concurrency` when the patient and all therapists are endpoint models; otherwise one at
    a time. A failed run is recorded with its error and the rest go on.
    """
    started = time.perf_counter()
    profiles = {p.id: p for p in _resolve_profiles(config)}
    for name in [*config.therapists, config.patient]:
        registry.spec(name)  # unknown names fail before anything loads
    patient_model = registry.load(config.patient)
    therapists = {name: registry.load(name) for name in config.therapists}
    p_sampling = _sampling_with(patient_model.spec.sampling, config.patient_sampling, "patient_sampling")
    # One therapist sampling for every therapist (the first one's defaults plus the overrides): a fair comparison.
    shared_sampling = _sampling_with(
        therapists[config.therapists[0]].spec.sampling, config.therapist_sampling, "therapist_sampling"
    )
    courses = plan_batch(config, list(profiles.values()))
    total = sum(len(c) for c in courses)
    batch_id = config.batch_id
    finished = store.batch_runs(batch_id)
    concurrent = is_endpoint(patient_model) and all(is_endpoint(m) for m in therapists.values())
    workers = config.concurrency if concurrent else 1

    lock = threading.Lock()
    openings: dict[tuple[str, int], Turn] = {}
    opening_locks: dict[tuple[str, int], threading.Lock] = {}
    results: list[RunResult] = []

    def report(result: RunResult) -> None:
        with lock:
            results.append(result)
            completed = len(results)
        if progress is not None:
            progress(BatchProgress(completed, total, result))

    def replicate_seed(profile_id: str, replicate: int) -> int:
        return derive_seed(config.seed, "replicate", profile_id, replicate)

    def shared_opening(profile: PatientProfile, replicate: int) -> Turn:
        """One opening per (profile, replicate), reused from a stored sibling run after a resume."""
        key = (profile.id, replicate)
        with lock:
            key_lock = opening_locks.setdefault(key, threading.Lock())
        with key_lock:
            if key not in openings:
                sibling = next(
                    (
                        row.transcript_id
                        for run_key, row in store.batch_runs(batch_id).items()
                        if row.transcript_id
                        and run_key.startswith(f"{batch_id}|{profile.id}|")
                        and run_key.endswith(f"|r{replicate}|s1")
                    ),
                    None,
                )
                if sibling is not None:
                    openings[key] = store.get_transcript(sibling).turns[0]
                else:
                    openings[key] = make_opening(
                        patient_model, profile, replicate_seed(profile.id, replicate), patient_sampling=p_sampling
                    )
                openings[key].flags["shared_opening"] = True
            return openings[key]

    def run_course_specs(specs: list[RunSpec]) -> None:
        summary_text: str | None = None
        course_over = False
        for spec in specs:
            if course_over:
                store.save_batch_run(spec.run_key, batch_id, None, "ended")
                report(RunResult(spec, "ended", stop_reason="course_ended_on_crisis"))
                continue
            previous = finished.get(spec.run_key)
            if previous is not None and previous.status in FINISHED:
                if previous.transcript_id:
                    done_transcript = store.get_transcript(previous.transcript_id)
                    summary_text = summary_of(done_transcript)
                    course_over = done_transcript.meta.get("stop_reason") == "crisis"
                report(RunResult(spec, "skipped", transcript_id=previous.transcript_id))
                continue
            if stop_event is not None and stop_event.is_set():
                return
            profile = profiles[spec.profile_id]
            seed = replicate_seed(spec.profile_id, spec.replicate)
            run_started = time.perf_counter()
            try:
                transcript = run_session(
                    therapists[spec.therapist],
                    patient_model,
                    profile,
                    config.turns,
                    seed,
                    session_index=spec.session_index,
                    previous_summary=summary_text if spec.session_index > 1 else None,
                    opening=shared_opening(profile, spec.replicate) if spec.session_index == 1 else None,
                    group_id=_digest(batch_id, spec.profile_id, spec.replicate, spec.session_index),
                    course_id=_digest(batch_id, spec.profile_id, spec.therapist, spec.replicate),
                    therapist_sampling=shared_sampling,
                    patient_sampling=p_sampling,
                    summary=config.summary if spec.session_index < config.sessions else "none",
                    summary_max_tokens=config.summary_max_tokens,
                    stop_event=stop_event,
                    extra_meta={
                        "batch_id": batch_id,
                        "run_key": spec.run_key,
                        "replicate": spec.replicate,
                        "course": {"sessions": config.sessions, "carryover": f"summary:{config.summary}"},
                    },
                )
            except (ModelError, ValueError) as exc:
                store.save_batch_run(spec.run_key, batch_id, None, "failed", error=str(exc))
                ended = time.perf_counter()
                report(
                    RunResult(
                        spec, "failed", error=str(exc), seconds=ended - run_started, started=run_started, finished=ended
                    )
                )
                return
            if transcript.meta["stop_reason"] == "stopped":
                return  # cancelled mid-session: not recorded, so a rerun runs it again
            store.save_batch_run(spec.run_key, batch_id, transcript, "done")
            usage = transcript.meta["usage"]
            summary_text = summary_of(transcript)
            course_over = transcript.meta["stop_reason"] == "crisis"
            report(
                RunResult(
                    spec,
                    "done",
                    transcript_id=transcript.id,
                    stop_reason=transcript.meta["stop_reason"],
                    turns=len(transcript.turns),
                    therapist_tokens=usage["therapist"]["completion_tokens"],
                    patient_tokens=usage["patient"]["completion_tokens"],
                    seconds=time.perf_counter() - run_started,
                    started=run_started,
                    finished=time.perf_counter(),
                )
            )

    if workers > 1:
        with ThreadPoolExecutor(max_workers=workers) as pool:
            for future in [pool.submit(run_course_specs, course) for course in courses]:
                future.result()
    else:
        for course in courses:
            run_course_specs(course)
    return BatchResult(batch_id, total, results, time.perf_counter() - started, workers)
