"""Batches: profiles x therapists x replicates (x sessions), stored run by run and resumable.

Every finished session is stored with its run key in one transaction, so a killed batch resumes where it
stopped. Courses run through the one course runner (group.run_course_sessions) and fan out through the
one fan-out helper, as many at once as sessions_at_once allows: several whenever some role is a remote
endpoint (its network wait overlaps the others' work), bounded by the backends' `parallel_requests`, one
when every model is local. A stop event ends
the batch within a turn: running sessions stop before their next therapist turn and are not recorded (a
rerun runs them), finished ones stay stored. Never imports gradio.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from cbtcompare.config_errors import format_validation_error
from cbtcompare.content_hash import content_digest
from cbtcompare.fanout import fan_out, values_or_raise
from cbtcompare.models.base import ModelError
from cbtcompare.patients import PatientProfile, curated_profiles, load_profile
from cbtcompare.seeds import replicate_seed
from cbtcompare.simulate.group import model_capabilities, run_course_sessions, sessions_at_once
from cbtcompare.simulate.session import RoleUsage, SessionPlace, make_opening, run_session
from cbtcompare.simulate.settings import SessionSettings, SummaryPolicy
from cbtcompare.transcript import Transcript, Turn


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
    concurrency: int = Field(
        4, ge=1, le=64, description="sessions at once when some role is an endpoint (see sessions_at_once)"
    )
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
            raise ValueError(format_validation_error(exc, str(path), data)) from exc

    def session_settings(self) -> SessionSettings:
        """The settings every session of the batch shares (each run then takes its replicate's seed)."""
        try:
            return SessionSettings(
                max_turns=self.turns,
                therapist_sampling=self.therapist_sampling,
                patient_sampling=self.patient_sampling,
                summary=self.summary,
                summary_max_tokens=self.summary_max_tokens,
                seed=self.seed,
            )
        except ValidationError as exc:
            raise ValueError(format_validation_error(exc, f"batch {self.name}")) from exc

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
        return content_digest(yaml.safe_dump(material, sort_keys=True), 8)

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
    usage: dict[str, RoleUsage] = field(default_factory=dict)  # role -> what its backend reported, and its time
    seconds: float = 0.0
    error: str | None = None
    started: float | None = None  # time.perf_counter() when the run began and ended (shows overlap)
    finished: float | None = None

    @property
    def therapist_tokens(self) -> int:
        return self.usage["therapist"].completion_tokens if "therapist" in self.usage else 0

    @property
    def patient_tokens(self) -> int:
        return self.usage["patient"].completion_tokens if "patient" in self.usage else 0


ROLES = ("therapist", "patient")


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
    stopped: bool = False  # the stop event ended the batch before every run finished

    def count(self, status: str) -> int:
        return sum(r.status == status for r in self.runs)

    @property
    def sessions_per_minute(self) -> float:
        done = self.count("done")
        return done / (self.seconds / 60) if self.seconds > 0 else 0.0

    def role_usage(self) -> dict[str, RoleUsage]:
        """Calls, prompt and completion tokens (as the backends reported them), the calls that reported no
        prompt tokens, and seconds per role, summed over the sessions this run finished."""
        totals = {role: RoleUsage() for role in ROLES}
        for run in self.runs:
            if run.status != "done":
                continue
            for role, used in run.usage.items():
                totals.setdefault(role, RoleUsage()).add_up(used)
        return totals

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
            "stopped": self.stopped,
            "seconds": round(self.seconds, 2),
            "sessions_per_minute": round(self.sessions_per_minute, 3),
            "therapist_tokens": sum(r.therapist_tokens for r in done),
            "patient_tokens": sum(r.patient_tokens for r in done),
            "usage": {role: used.as_dict() for role, used in self.role_usage().items()},
            "stop_reasons": {
                reason: sum(r.stop_reason == reason for r in done) for reason in sorted({r.stop_reason for r in done})
            },
            "errors": [f"{r.spec.run_key}: {r.error}" for r in self.runs if r.status == "failed"],
        }


FINISHED = frozenset({"done", "ended"})


def _digest(*parts: object) -> str:
    return content_digest("|".join(map(str, parts)), 32)


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
    if config.profiles == "all":
        return curated_profiles()
    profiles = [load_profile(item) for item in config.profiles]
    ids = [p.id for p in profiles]
    if len(set(ids)) != len(ids):
        raise ValueError(f"the batch names a profile twice: {', '.join(sorted({i for i in ids if ids.count(i) > 1}))}")
    return profiles


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
    pool of sessions_at_once(config.concurrency, ...) threads. A failed run is recorded with its error and
    the rest go on. `stop_event` ends the batch within a turn; `BatchResult.stopped` says so, and the runs
    it lists are the ones that finished.
    """
    started = time.perf_counter()
    settings = config.session_settings()
    profiles = {p.id: p for p in _resolve_profiles(config)}
    for name in [*config.therapists, config.patient]:
        registry.spec(name)  # unknown names fail before anything loads
    patient_model = registry.load(config.patient)
    therapists = {name: registry.load(name) for name in config.therapists}
    # One therapist sampling for every therapist: a fair comparison (the one shared-sampling rule).
    settings = settings.shared_by([therapists[name].spec for name in config.therapists])
    courses = plan_batch(config, list(profiles.values()))
    total = sum(len(c) for c in courses)
    batch_id = config.batch_id
    finished = store.batch_runs(batch_id)
    session_models = [patient_model, *therapists.values()]
    workers = sessions_at_once(config.concurrency, model_capabilities(session_models))

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

    def run_settings(spec: RunSpec) -> SessionSettings:
        seed = replicate_seed(config.seed, spec.profile_id, spec.replicate)
        return settings.model_copy(update={"seed": seed}).for_course_session(spec.session_index, config.sessions)

    def shared_opening(profile: PatientProfile, replicate: int, seeded: SessionSettings) -> Turn:
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
                    openings[key] = make_opening(patient_model, profile, seeded)
                openings[key].flags["shared_opening"] = True
            return openings[key]

    def run_one(spec: RunSpec, summary: str | None, stop: threading.Event) -> Transcript | None:
        """One session of a course: the stored one when it already finished, else run and stored now."""
        previous = finished.get(spec.run_key)
        if previous is not None and previous.status in FINISHED:
            report(RunResult(spec, "skipped", transcript_id=previous.transcript_id))
            return store.get_transcript(previous.transcript_id) if previous.transcript_id else None
        if stop.is_set():
            return None
        profile = profiles[spec.profile_id]
        seeded = run_settings(spec)
        place = SessionPlace(
            session_index=spec.session_index,
            previous_summary=summary if spec.session_index > 1 else None,
            opening=shared_opening(profile, spec.replicate, seeded) if spec.session_index == 1 else None,
            group_id=_digest(batch_id, spec.profile_id, spec.replicate, spec.session_index),
            course_id=_digest(batch_id, spec.profile_id, spec.therapist, spec.replicate),
            meta={
                "batch_id": batch_id,
                "run_key": spec.run_key,
                "replicate": spec.replicate,
                "course": {"sessions": config.sessions, "carryover": f"summary:{config.summary}"},
            },
        )
        run_started = time.perf_counter()
        try:
            transcript = run_session(therapists[spec.therapist], patient_model, profile, seeded, place, stop_event=stop)
        except (ModelError, ValueError) as exc:
            store.save_batch_run(spec.run_key, batch_id, None, "failed", error=str(exc))
            ended = time.perf_counter()
            failed = RunResult(spec, "failed", error=str(exc), started=run_started, finished=ended)
            failed.seconds = ended - run_started
            report(failed)
            return None
        if transcript.meta["stop_reason"] == "stopped":
            return None  # cancelled mid-session: not recorded, so a rerun runs it again
        store.save_batch_run(spec.run_key, batch_id, transcript, "done")
        usage = transcript.meta["usage"]
        ended = time.perf_counter()
        used = {role: RoleUsage(**usage[role]) for role in ROLES}
        report(
            RunResult(
                spec,
                "done",
                transcript_id=transcript.id,
                stop_reason=transcript.meta["stop_reason"],
                turns=len(transcript.turns),
                usage=used,
                seconds=ended - run_started,
                started=run_started,
                finished=ended,
            )
        )
        return transcript

    def course_task(specs: list[RunSpec]) -> Callable[[threading.Event], list[Transcript]]:
        by_index = {spec.session_index: spec for spec in specs}

        def ended(_: int, session_index: int) -> None:
            spec = by_index[session_index]
            store.save_batch_run(spec.run_key, batch_id, None, "ended")
            report(RunResult(spec, "ended", stop_reason="course_ended_on_crisis"))

        def task(stop: threading.Event) -> list[Transcript]:
            def step(session_index: int, lanes: list[tuple[int, str | None]]) -> list[Transcript | None]:
                return [run_one(by_index[session_index], summary, stop) for _, summary in lanes]

            return run_course_sessions([0], len(specs), step, ended)

        return task

    stop = stop_event or threading.Event()
    values_or_raise(fan_out([course_task(course) for course in courses], workers, stop))
    return BatchResult(batch_id, total, results, time.perf_counter() - started, workers, stopped=stop.is_set())
