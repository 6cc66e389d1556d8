"""Generate synthetic CBT training courses with any ChatModel as the teacher, following training/data/PROTOCOL.md.

The paper's recipe (arXiv 2412.00251): a profile, a narrative the teacher writes from it, then each session
written by the teacher in parts. Part 1 must set an agenda, parts before the last must not wrap up, the last
part must end with a summary and homework; from session 2 the patient opens by reading the previous session's
closing summary; the phase follows the session index. Each part is parsed strictly ("Patient: ..." /
"Therapist: ...", the importers' plain-text parser), checked (the part's own rules here, then the validator of
training/validate.py over the session so far, then its safety rules), and regenerated with a new derived seed up
to `max_retries` times. Output: DIR/sessions.jsonl (messages JSONL, the format of training/data/cbt_synthetic),
DIR/manifest.json (rewritten atomically after every session), DIR/rejected.jsonl (every rejected attempt and
why) and DIR/profiles/ (each profile with its narrative, so a resumed run uses the same one).

    python -m training.generate --teacher MODEL --profiles ID[,ID...] --sessions K --parts P --out DIR [--resume]
    python -m training.generate --teacher MODEL --sample N --seed S --sessions K --parts P --out DIR

It must never keep a part that failed its checks, write a session holding a failed part, or read or write
real patient data: profiles are synthetic (curated, sampled, or the user's own synthetic files).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import sys
import tempfile
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, fields
from datetime import UTC, datetime
from functools import cache
from pathlib import Path
from typing import Literal

from cbtcompare.importers import parse_transcripts
from cbtcompare.models.base import ChatModel, ContextOverflow, Message, Sampling
from cbtcompare.patients import (
    CARRYOVER_PROMPT,
    NARRATIVE_PROMPT,
    PROFILE_PROMPT,
    PatientProfile,
    carryover_opening,
    expand_narrative,
    load_profile,
    profile_yaml,
    render_profile,
    sample_profile,
)
from cbtcompare.prompts import Prompt, load_prompt
from cbtcompare.safety import rules_version as safety_rules_version
from cbtcompare.seeds import derive_seed
from cbtcompare.store import ImportFailed
from cbtcompare.techniques import RULES_VERSION as TECHNIQUE_RULES_VERSION
from cbtcompare.techniques import tag_turn
from training.validate import (
    CLOSING_TURNS,
    DEFAULT_MAX_TOKENS,
    DEFAULT_TOKEN_MODEL,
    OPENING_TURNS,
    PHASES,
    TokenCounter,
    ValidationReport,
    model_token_counter,
    protocol_problems,
    validate_file,
)

SYSTEM_PROMPT = "therapist_cbt"  # messages[0] of every session: the prompt the tuned model is served with
TEACHER_SYSTEM = "teacher_system"
TEACHER_PART = "teacher_part"
TEACHER_FIRST = "teacher_part_first"
TEACHER_CONTINUE = "teacher_part_continue"
TEACHER_NOT_LAST = "teacher_part_not_last"
TEACHER_LAST = "teacher_part_last"
TEACHER_LIMITS = "teacher_limits"
TEACHER_CARRYOVER = "teacher_carryover"
TEACHER_SO_FAR = "teacher_so_far"
WRAPUP_RULES = "teacher_wrapup_rules"
PHASE_PROMPTS = {phase: f"teacher_phase_{phase}" for phase in PHASES}
COURSE_SESSIONS = max(max(span) for span in PHASES.values())  # the protocol's course: 20 sessions

SESSIONS_FILE = "sessions.jsonl"
MANIFEST_FILE = "manifest.json"
REJECTED_FILE = "rejected.jsonl"
PROFILES_DIR = "profiles"

SPEAKERS = {"user": "Patient", "assistant": "Therapist"}
# A speaker label inside a turn: the teacher wrote two turns on one line, or quoted a label.
_INNER_LABEL = re.compile(r"(?<![\w\"'])(?:\*\*)?(patient|therapist|client|counsell?or)(?:\*\*)?\s*:", re.IGNORECASE)
# A heading, a rule or a note between turns ("Part 2", "---", "(End of part 1)"): narration, not speech.
_NOT_SPEECH = re.compile(r"^\s*(?:#{1,6}\s|(?:\*\*)?part\s+\d+\b|[-=_*]{3,}\s*$|\(?\s*end of\b)", re.IGNORECASE)
_VALIDATOR_INDEX = re.compile(r"^messages\[(\d+)\]")
_BLANK_LINE = re.compile(r"\n[ \t]*\n")

SessionStatus = Literal["written", "existing", "failed", "blocked"]


@dataclass
class GenerationSettings:
    """How sessions are written and checked; every field is stored in the manifest."""

    max_retries: int = field(default=2, metadata={"help": "regenerations of a failed part before it counts as failed"})
    max_tokens: int = field(default=900, metadata={"help": "most tokens the teacher writes for one part"})
    exchanges_per_part: int = field(default=5, metadata={"help": "patient+therapist exchanges asked for in one part"})
    min_therapist_turns: int = field(default=2, metadata={"help": "fewest therapist turns a part may hold"})
    context_turns: int = field(default=8, metadata={"help": "latest turns of the session shown to the teacher"})
    narrative: bool = field(default=True, metadata={"help": "have the teacher write a narrative for profiles without"})
    narrative_max_tokens: int = field(default=320, metadata={"help": "most tokens of the narrative"})
    temperature: float | None = field(default=None, metadata={"help": "teacher temperature (default: its spec's)"})
    max_session_tokens: int = field(
        default=DEFAULT_MAX_TOKENS, metadata={"help": "a session's token limit, system prompt included (validator)"}
    )
    token_model: str = field(
        default=DEFAULT_TOKEN_MODEL, metadata={"help": "registry model whose chat template counts session tokens"}
    )
    strict: bool = field(default=False, metadata={"help": "also reject sessions with validator protocol warnings"})

    def __post_init__(self) -> None:
        if self.max_retries < 0:
            raise ValueError(f"max_retries must be 0 or more; got {self.max_retries}")
        positive = ("max_tokens", "exchanges_per_part", "min_therapist_turns", "context_turns", "narrative_max_tokens",
                    "max_session_tokens")
        for name in positive:
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1; got {getattr(self, name)}")


@dataclass
class PartAttempt:
    """One try at one part: its seed, and why it was rejected (empty `problems` = accepted)."""

    attempt: int
    seed: int
    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    finish_reason: str | None = None
    text: str = ""

    @property
    def accepted(self) -> bool:
        return not self.problems

    def manifest_entry(self) -> dict[str, object]:
        return {
            "attempt": self.attempt,
            "seed": self.seed,
            "accepted": self.accepted,
            "problems": self.problems,
            "notes": self.notes,
            "finish_reason": self.finish_reason,
        }


@dataclass
class PartRecord:
    part: int
    attempts: list[PartAttempt] = field(default_factory=list)

    @property
    def accepted(self) -> bool:
        return bool(self.attempts) and self.attempts[-1].accepted

    def manifest_entry(self) -> dict[str, object]:
        return {"part": self.part, "accepted": self.accepted, "attempts": [a.manifest_entry() for a in self.attempts]}


@dataclass
class GeneratedSession:
    """One session of a course and what happened to it.

    status: "written" (generated now and valid), "existing" (already in sessions.jsonl; skipped on resume),
    "failed" (a part failed after its retries, or the validator refused the session: nothing written) or
    "blocked" (an earlier session of the course failed, so there is no summary to open this one with).
    """

    id: str
    profile_id: str
    session_index: int
    phase: str
    status: SessionStatus
    messages: list[Message] = field(default_factory=list)
    parts: list[PartRecord] = field(default_factory=list)
    reason: str | None = None
    warnings: list[str] = field(default_factory=list)
    summary: str | None = None

    @property
    def written(self) -> bool:
        return self.status in ("written", "existing")

    def to_record(self) -> dict[str, object]:
        """The sessions.jsonl line: the same fields as training/data/cbt_synthetic/sessions.jsonl."""
        return {
            "id": self.id,
            "profile_id": self.profile_id,
            "session_index": self.session_index,
            "phase": self.phase,
            "messages": [m.to_dict() for m in self.messages],
        }

    def manifest_entry(self) -> dict[str, object]:
        return {
            "status": self.status,
            "profile_id": self.profile_id,
            "session_index": self.session_index,
            "phase": self.phase,
            "reason": self.reason,
            "turns": sum(m.role != "system" for m in self.messages),
            "protocol_warnings": self.warnings,
            "parts": [p.manifest_entry() for p in self.parts],
        }


# Phases, prompts, rules ------------------------------------------------------------------------------------


def phase_of(session_index: int) -> str:
    """The protocol's phase for a session index (1-20)."""
    for name, span in PHASES.items():
        if session_index in span:
            return name
    raise ValueError(f"session {session_index} is outside the {COURSE_SESSIONS}-session course (1-{COURSE_SESSIONS})")


def session_id(profile_id: str, session_index: int) -> str:
    return f"{profile_id}-s{session_index:02d}"


def _prompt_names() -> list[str]:
    return [
        SYSTEM_PROMPT, TEACHER_SYSTEM, TEACHER_PART, TEACHER_FIRST, TEACHER_CONTINUE, TEACHER_NOT_LAST, TEACHER_LAST,
        TEACHER_LIMITS, TEACHER_CARRYOVER, TEACHER_SO_FAR, WRAPUP_RULES, *PHASE_PROMPTS.values(), NARRATIVE_PROMPT,
        PROFILE_PROMPT, CARRYOVER_PROMPT,
    ]


def prompt_versions() -> dict[str, str]:
    """Versions of every prompt and rules file that shapes generated data, stored in the manifest."""
    versions = {name: load_prompt(name).version for name in _prompt_names()}
    versions["technique_rules"] = TECHNIQUE_RULES_VERSION
    versions["safety_rules"] = safety_rules_version()
    return versions


@cache
def wrapup_patterns(prompt: Prompt | None = None) -> tuple[re.Pattern[str], ...]:
    """Closing language (cbtcompare/prompts/teacher_wrapup_rules.txt) that marks a part as wrapping up early."""
    rules = prompt or load_prompt(WRAPUP_RULES)
    patterns = []
    for number, line in enumerate(rules.text.splitlines(), start=1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        try:
            patterns.append(re.compile(line.strip(), re.IGNORECASE))
        except re.error as exc:
            raise ValueError(f"{rules.name}.txt line {number}: {line.strip()!r} does not compile: {exc}") from exc
    return tuple(patterns)


# Parsing and checking one part -------------------------------------------------------------------------------


@dataclass
class ParsedPart:
    turns: list[Message]
    problems: list[str]


def parse_part(text: str) -> ParsedPart:
    """A teacher's "Patient: ... / Therapist: ..." text as patient (user) and therapist (assistant) turns.

    Strict: text before the first label, an empty turn, a label inside a turn or a heading between turns is
    a format problem; nothing is repaired.
    """
    if not text.strip():
        return ParsedPart([], ["format: the teacher wrote nothing"])
    try:
        transcript = parse_transcripts(text, source="teacher output", fmt="text")[0]
    except ImportFailed as exc:
        return ParsedPart([], [f"format: {exc}"])
    turns = [Message("user" if t.role == "patient" else "assistant", t.text) for t in transcript.turns]
    return ParsedPart(turns, turn_format_problems(turns))


def turn_format_problems(turns: Sequence[Message]) -> list[str]:
    """A speaker label inside a turn, a heading or note written between turns, or text after a blank line
    inside a turn (narration or a note tacked on after the dialogue: the teacher writes one turn per line)."""
    problems = []
    for number, turn in enumerate(turns, start=1):
        speaker = SPEAKERS[turn.role]
        paragraphs = _BLANK_LINE.split(turn.content)
        if len(paragraphs) > 1:
            problems.append(
                f"format: turn {number} ({speaker}) goes on after a blank line with {_clip(paragraphs[1])!r}"
            )
        inner = _INNER_LABEL.search(turn.content)
        if inner:
            problems.append(f"format: turn {number} ({speaker}) holds another speaker label {inner.group(0)!r}")
        heading = next((line for line in turn.content.splitlines() if _NOT_SPEECH.match(line)), None)
        if heading is not None:
            problems.append(f"format: turn {number} ({speaker}) holds a heading or note {heading.strip()!r}")
    return problems


def _clip(text: str, limit: int = 60) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def part_shape_problems(turns: Sequence[Message], *, part: int, parts: int, min_therapist_turns: int) -> list[str]:
    """The paper's part rules: enough turns, part 1 sets an agenda, no wrap-up before the last part, and the
    last part closes with a summary and homework (judged by the technique tagger)."""
    problems = []
    therapist = [m for m in turns if m.role == "assistant"]
    if len(therapist) < min_therapist_turns:
        problems.append(f"too_short: {len(therapist)} therapist turns; a part needs at least {min_therapist_turns}")
    tags = [{tag.id for tag in tag_turn(m.content)} for m in therapist]
    if part == 1 and therapist and not any("agenda_setting" in t for t in tags[:OPENING_TURNS]):
        problems.append(f"no_agenda: the therapist sets no agenda in its first {OPENING_TURNS} turns")
    if part < parts:
        for number, turn in enumerate(turns, start=1):
            hit = next((m for p in wrapup_patterns() if (m := p.search(turn.content))), None)
            if hit:
                problems.append(
                    f"early_wrap_up: turn {number} ({SPEAKERS[turn.role]}) closes the session ({hit.group(0)!r}) "
                    f"in part {part} of {parts}"
                )
                break
    if part == parts and therapist:
        closing = set().union(*tags[-CLOSING_TURNS:])
        if "summary" not in closing:
            problems.append(f"no_summary: no session summary in the therapist's last {CLOSING_TURNS} turns")
        if "homework" not in closing:
            problems.append(f"no_homework: no homework in the therapist's last {CLOSING_TURNS} turns")
    return problems


def _validate_messages(
    messages: Sequence[Message], meta: dict[str, object], *, count_tokens: TokenCounter, max_tokens: int, protocol: bool
) -> ValidationReport:
    """Run training/validate.py's validator on one session (through a temporary one-line file)."""
    record = {**meta, "messages": [m.to_dict() for m in messages]}
    with tempfile.TemporaryDirectory(prefix="cbt-generate-") as folder:
        path = Path(folder) / "candidate.jsonl"
        path.write_text(json.dumps(record, ensure_ascii=False) + "\n", encoding="utf-8")
        return validate_file(path, max_tokens=max_tokens, count_tokens=count_tokens, protocol=protocol)


def with_carryover(turns: Sequence[Message], previous_summary: str) -> list[Message]:
    """Session 2 on: the patient's first turn reads out the previous summary (patient_carryover.txt) first."""
    first, *rest = turns
    return [Message(first.role, carryover_opening(previous_summary) + "\n\n" + first.content), *rest]


def check_part(
    session_so_far: Sequence[Message],
    turns: Sequence[Message],
    *,
    part: int,
    parts: int,
    meta: dict[str, object],
    count_tokens: TokenCounter,
    settings: GenerationSettings,
    previous_summary: str | None = None,
) -> ParsedPart:
    """The part's turns as they would be kept, and every reason to reject them (empty when they may be kept).

    The part's own rules on the teacher's turns; then, on the session so far plus this part (its first patient
    turn opening with `previous_summary` in part 1 from session 2), the validator (structure, alternation,
    empty and repeated turns, stage directions, speaker labels, the token limit) and the validator's safety
    rules (a harmful therapist reply, a disclosure not pointed to crisis services) for the part's turns.
    """
    problems = part_shape_problems(turns, part=part, parts=parts, min_therapist_turns=settings.min_therapist_turns)
    kept = list(turns)
    if part == 1 and previous_summary and kept and kept[0].role == "user":
        kept = with_carryover(kept, previous_summary)
    candidate = [*session_so_far, *kept]
    report = _validate_messages(
        candidate, meta, count_tokens=count_tokens, max_tokens=settings.max_session_tokens, protocol=False
    )
    problems += [f"validator: {message}" for _, message in report.errors]
    problems += [f"validator: {message}" for _, message in report.warnings]
    first = len(session_so_far)
    for problem in protocol_problems(candidate):
        where = _VALIDATOR_INDEX.match(problem)
        if where and int(where.group(1)) >= first:
            kind = "harmful_reply" if "harmful" in problem else "crisis_unanswered"
            problems.append(f"{kind}: {problem}")
    return ParsedPart(kept, problems)


def trim_truncated(turns: list[Message]) -> tuple[list[Message], list[str]]:
    """The teacher stopped at max_tokens: drop the unfinished last turn, and a patient turn left last."""
    kept = list(turns[:-1])
    dropped = 1 if turns else 0
    while kept and kept[-1].role != "assistant":
        kept.pop()
        dropped += 1
    return kept, [f"truncated at max_tokens: dropped the unfinished last turn ({dropped} turn(s) dropped)"]


# Prompts for one part ---------------------------------------------------------------------------------------


def render_dialogue(turns: Sequence[Message]) -> str:
    return "\n".join(f"{SPEAKERS[m.role]}: {m.content}" for m in turns if m.role in SPEAKERS)


def part_messages(
    profile: PatientProfile,
    *,
    session_index: int,
    part: int,
    parts: int,
    dialogue: Sequence[Message],
    previous_summary: str | None,
    settings: GenerationSettings,
) -> list[Message]:
    """The teacher's request for one part: its system prompt and the part prompt (teacher_*.txt)."""
    phase = phase_of(session_index)
    context = []
    if part == 1 and previous_summary:
        context.append(load_prompt(TEACHER_CARRYOVER).render(summary=previous_summary.strip()))
    shown = [m for m in dialogue if m.role != "system"][-settings.context_turns :]
    if shown:
        context.append(load_prompt(TEACHER_SO_FAR).render(dialogue=render_dialogue(shown)))
    instructions = []
    if part == 1:
        instructions.append(load_prompt(TEACHER_FIRST).text)
        if session_index == 1:
            instructions.append(load_prompt(TEACHER_LIMITS).text)
    else:
        instructions.append(load_prompt(TEACHER_CONTINUE).text)
    instructions.append(load_prompt(TEACHER_LAST if part == parts else TEACHER_NOT_LAST).text)
    text = load_prompt(TEACHER_PART).render(
        name=profile.name,
        profile=render_profile(profile),
        part=part,
        parts=parts,
        session_index=session_index,
        course_sessions=COURSE_SESSIONS,
        phase=phase,
        phase_focus=load_prompt(PHASE_PROMPTS[phase]).text,
        context="\n" + "\n\n".join(context) + "\n" if context else "",
        exchanges=settings.exchanges_per_part,
        instructions=" ".join(instructions),
    )
    return [Message("system", load_prompt(TEACHER_SYSTEM).text), Message("user", text)]


# One session ------------------------------------------------------------------------------------------------


def closing_summary(messages: Sequence[Message]) -> str:
    """What the patient brings to the next session: the therapist's closing turns, from the one that
    summarises (within the last CLOSING_TURNS) to the end; the last therapist turn when none summarises."""
    therapist = [m.content for m in messages if m.role == "assistant"]
    if not therapist:
        return ""
    closing = therapist[-CLOSING_TURNS:]
    start = next(
        (i for i, text in enumerate(closing) if any(tag.id == "summary" for tag in tag_turn(text))), len(closing) - 1
    )
    return "\n".join(closing[start:])


def _teacher_text(teacher: ChatModel, messages: Sequence[Message], sampling: Sampling) -> tuple[str, str | None]:
    stream = teacher.stream(messages, sampling)
    for _ in stream:
        pass
    return stream.text, stream.usage.finish_reason


def _teacher_sampling(teacher: ChatModel, settings: GenerationSettings, max_tokens: int) -> Sampling:
    return teacher.spec.sampling.merged(max_tokens=max_tokens, temperature=settings.temperature)


RejectedSink = Callable[[dict[str, object]], None]


def generate_session(
    teacher: ChatModel,
    profile: PatientProfile,
    session_index: int,
    parts: int,
    seed: int,
    *,
    previous_summary: str | None = None,
    settings: GenerationSettings | None = None,
    count_tokens: TokenCounter | None = None,
    on_rejected: RejectedSink | None = None,
) -> GeneratedSession:
    """Write one session in `parts` parts; a part is regenerated up to `max_retries` times, then the session
    fails (status "failed", with the reason) and nothing of it is kept. From session 2 `previous_summary` is
    required: the patient's first turn reads it out (patient_carryover.txt) before the teacher's words."""
    settings = settings or GenerationSettings()
    if parts < 1:
        raise ValueError(f"parts must be at least 1; got {parts}")
    if session_index > 1 and not (previous_summary or "").strip():
        raise ValueError(f"session {session_index} needs the summary of session {session_index - 1}")
    counter = count_tokens or token_counter_for(teacher, settings.token_model)
    phase = phase_of(session_index)
    sid = session_id(profile.id, session_index)
    meta: dict[str, object] = {"id": sid, "profile_id": profile.id, "session_index": session_index, "phase": phase}
    session = GeneratedSession(sid, profile.id, session_index, phase, status="failed")
    messages = [Message("system", load_prompt(SYSTEM_PROMPT).text)]
    for part in range(1, parts + 1):
        record = PartRecord(part)
        session.parts.append(record)
        request = part_messages(
            profile, session_index=session_index, part=part, parts=parts, dialogue=messages,
            previous_summary=previous_summary, settings=settings,
        )
        for attempt_number in range(settings.max_retries + 1):
            part_seed = derive_seed(seed, profile.id, session_index, "part", part, attempt_number)
            attempt = PartAttempt(attempt_number, part_seed)
            record.attempts.append(attempt)
            sampling = _teacher_sampling(teacher, settings, settings.max_tokens).merged(seed=attempt.seed)
            overflow = False
            try:
                attempt.text, attempt.finish_reason = _teacher_text(teacher, request, sampling)
            except ContextOverflow as exc:  # the same request cannot fit on a retry either
                attempt.problems.append(f"context_overflow: {exc}")
                overflow = True
            turns = [] if overflow else _accepted_turns(
                attempt, messages, part, parts, meta, counter, settings, session_index, previous_summary
            )
            if on_rejected is not None and not attempt.accepted:
                on_rejected({"session_id": sid, "part": part, **attempt.manifest_entry(), "text": attempt.text})
            if attempt.accepted:
                messages.extend(turns)
            if attempt.accepted or overflow:
                break
        if not record.accepted:
            last = record.attempts[-1]
            session.reason = f"part {part} failed after {len(record.attempts)} attempt(s): " + "; ".join(last.problems)
            return session
    report = _validate_messages(
        messages, meta, count_tokens=counter, max_tokens=settings.max_session_tokens, protocol=True
    )
    session.messages = messages
    session.warnings = [message for _, message in report.warnings]
    if not report.ok:
        session.reason = "validator: " + "; ".join(message for _, message in report.errors)
        return session
    if settings.strict and session.warnings:
        session.reason = "strict: validator warnings: " + "; ".join(session.warnings)
        return session
    session.status = "written"
    session.summary = closing_summary(messages)
    return session


def _accepted_turns(
    attempt: PartAttempt,
    messages: list[Message],
    part: int,
    parts: int,
    meta: dict[str, object],
    counter: TokenCounter,
    settings: GenerationSettings,
    session_index: int,
    previous_summary: str | None,
) -> list[Message]:
    """Parse and check one attempt; fills `attempt.problems` (empty when the part may be kept)."""
    parsed = parse_part(attempt.text)
    turns, problems = parsed.turns, parsed.problems
    if attempt.finish_reason == "length" and turns:
        turns, notes = trim_truncated(turns)
        attempt.notes += notes
        problems = turn_format_problems(turns)
    if problems:
        attempt.problems += problems
        return []
    if not turns:
        attempt.problems.append("truncated: nothing complete was left before max_tokens")
        return []
    checked = check_part(
        messages, turns, part=part, parts=parts, meta=meta, count_tokens=counter, settings=settings,
        previous_summary=previous_summary if session_index > 1 else None,
    )
    attempt.problems += checked.problems
    return checked.turns


@cache
def _registry_token_counter(model_name: str) -> TokenCounter:
    return model_token_counter(model_name)


def token_counter_for(teacher: ChatModel, model_name: str) -> TokenCounter:
    """The chat-template token counter of `model_name`: the teacher's own when it is that model."""
    if teacher.name == model_name:
        return teacher.count_tokens
    return _registry_token_counter(model_name)


# Output: sessions.jsonl, manifest.json, rejected.jsonl, profiles/ ------------------------------------------


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def _atomic_write(path: Path, text: str) -> None:
    """Write to a temporary file beside `path`, sync it, then rename it over `path`."""
    temporary = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    with temporary.open("w", encoding="utf-8") as handle:
        handle.write(text)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(temporary, path)


def _problem_code(problem: object) -> str:
    return str(problem).split(":", 1)[0]


class DatasetWriter:
    """One output folder. Sessions are appended to sessions.jsonl one line at a time (flushed and synced), so a
    killed run loses at most the session in progress; manifest.json is rewritten atomically after each one.

    With `resume`, the sessions already in sessions.jsonl are kept and skipped (an unfinished last line left by
    a kill is cut off and noted); the manifest's teacher, seed and parts must match this run's.
    """

    def __init__(
        self,
        out_dir: str | Path,
        *,
        teacher: ChatModel,
        seed: int,
        parts: int,
        settings: GenerationSettings,
        resume: bool = False,
    ):
        self.out_dir = Path(out_dir)
        self.sessions_path = self.out_dir / SESSIONS_FILE
        self.manifest_path = self.out_dir / MANIFEST_FILE
        self.rejected_path = self.out_dir / REJECTED_FILE
        self.seed, self.parts, self.settings = seed, parts, settings
        self.teacher_info = asdict(teacher.info())
        self.teacher_sampling = teacher.spec.sampling.model_dump(mode="json")
        self.repairs: list[str] = []
        if not resume and self.sessions_path.is_file() and self.sessions_path.stat().st_size > 0:
            raise FileExistsError(
                f"{self.sessions_path} already holds sessions; pass --resume to continue it, or choose a new --out "
                "folder"
            )
        self.out_dir.mkdir(parents=True, exist_ok=True)
        previous: dict = {}
        if resume and self.manifest_path.is_file():
            previous = json.loads(self.manifest_path.read_text(encoding="utf-8"))
            self._check_same_run(previous, teacher.name)
        self.existing: dict[str, dict] = self._read_existing() if resume else {}
        self.entries: dict[str, dict] = {
            sid: entry for sid, entry in previous.get("sessions", {}).items()
            if entry.get("status") != "written" or sid in self.existing
        }
        for sid, record in self.existing.items():
            if self.entries.get(sid, {}).get("status") != "written":
                self.entries[sid] = {
                    "status": "written", "profile_id": record.get("profile_id"),
                    "session_index": record.get("session_index"), "phase": record.get("phase"),
                    "reason": None, "note": "found in sessions.jsonl without a manifest entry", "parts": [],
                }
        self.profiles: dict[str, dict] = dict(previous.get("profiles", {}))
        self.runs: list[dict] = [*previous.get("runs", []), {"started_at": _now(), "resumed": resume}]
        self.validation: dict[str, object] | None = None
        self.sessions_path.touch()
        self.write_manifest()

    def _check_same_run(self, previous: dict, teacher_name: str) -> None:
        differences = []
        if previous.get("teacher", {}).get("name") != teacher_name:
            differences.append(f"teacher {previous.get('teacher', {}).get('name')!r} (now {teacher_name!r})")
        if previous.get("seed") != self.seed:
            differences.append(f"seed {previous.get('seed')} (now {self.seed})")
        if previous.get("parts") != self.parts:
            differences.append(f"parts {previous.get('parts')} (now {self.parts})")
        if differences:
            raise ValueError(
                f"{self.out_dir} was generated with {', '.join(differences)}; resume with the same settings "
                "or choose a new --out folder"
            )

    def _read_existing(self) -> dict[str, dict]:
        if not self.sessions_path.is_file():
            return {}
        raw = self.sessions_path.read_bytes()
        complete_end = raw.rfind(b"\n") + 1
        if complete_end < len(raw):
            with self.sessions_path.open("r+b") as handle:
                handle.truncate(complete_end)
            self.repairs.append(
                f"{_now()}: cut an unfinished last line ({len(raw) - complete_end} bytes) from {SESSIONS_FILE}, "
                "left by an interrupted run; that session is generated again"
            )
        records: dict[str, dict] = {}
        for number, line in enumerate(raw[:complete_end].decode("utf-8").splitlines(), start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as exc:
                raise ValueError(
                    f"{self.sessions_path}: line {number} is not valid JSON ({exc.msg}); fix or move it"
                ) from None
            if not isinstance(record, dict) or not isinstance(record.get("id"), str):
                raise ValueError(f"{self.sessions_path}: line {number} is not a session with an 'id'")
            records[record["id"]] = record
        return records

    # Profiles

    def profile_path(self, profile_id: str) -> Path:
        return self.out_dir / PROFILES_DIR / f"{profile_id}.yaml"

    def saved_profile(self, profile_id: str) -> PatientProfile | None:
        path = self.profile_path(profile_id)
        return load_profile(path) if path.is_file() else None

    def save_profile(self, profile: PatientProfile, narrative_source: str) -> None:
        path = self.profile_path(profile.id)
        path.parent.mkdir(parents=True, exist_ok=True)
        _atomic_write(path, profile_yaml(profile))
        self.profiles[profile.id] = {
            "file": f"{PROFILES_DIR}/{profile.id}.yaml",
            "source": profile.source,
            "narrative": narrative_source,
        }
        self.write_manifest()

    # Sessions

    def existing_session(self, sid: str) -> dict | None:
        return self.existing.get(sid)

    def save(self, session: GeneratedSession) -> None:
        """Append a written session (one line, flushed and synced), then record it in the manifest."""
        if session.status == "written":
            record = session.to_record()
            with self.sessions_path.open("a", encoding="utf-8") as handle:
                handle.write(json.dumps(record, ensure_ascii=False) + "\n")
                handle.flush()
                os.fsync(handle.fileno())
            self.existing[session.id] = record
        self.entries[session.id] = session.manifest_entry()
        self.write_manifest()

    def reject(self, item: dict[str, object]) -> None:
        """Keep a rejected attempt (its text and problems) in rejected.jsonl, never in the dataset."""
        with self.rejected_path.open("a", encoding="utf-8") as handle:
            handle.write(json.dumps(item, ensure_ascii=False) + "\n")
            handle.flush()

    def finish(self, count_tokens: TokenCounter | None) -> ValidationReport | None:
        """Validate the whole file (with the protocol checks), store the outcome, and close the run."""
        report = None
        if self.existing:
            report = validate_file(
                self.sessions_path, max_tokens=self.settings.max_session_tokens, count_tokens=count_tokens,
                protocol=True,
            )
            self.validation = {
                "ok": report.ok,
                "errors": len(report.errors),
                "warnings": len(report.warnings),
                "first_errors": [f"line {line}: {message}" for line, message in report.errors[:20]],
                "counts": report.counts,
            }
        self.runs[-1]["finished_at"] = _now()
        self.write_manifest()
        return report

    # Manifest

    def counts(self) -> tuple[dict[str, int], dict[str, int], dict[str, str]]:
        statuses = Counter(entry.get("status") for entry in self.entries.values())
        parts = [part for entry in self.entries.values() for part in entry.get("parts", [])]
        attempts = [attempt for part in parts for attempt in part.get("attempts", [])]
        rejected = [attempt for attempt in attempts if not attempt.get("accepted")]
        reasons = Counter(_problem_code(p) for attempt in rejected for p in attempt.get("problems", []))
        counts = {
            "sessions_in_file": len(self.existing),
            "sessions_written": statuses["written"],
            "sessions_failed": statuses["failed"],
            "sessions_blocked": statuses["blocked"],
            "parts_accepted": sum(bool(part.get("accepted")) for part in parts),
            "parts_failed": sum(not part.get("accepted") for part in parts),
            "parts_regenerated": sum(len(part.get("attempts", [])) > 1 for part in parts),
            "attempts": len(attempts),
            "attempts_rejected": len(rejected),
        }
        failures = {
            sid: str(entry.get("reason"))
            for sid, entry in sorted(self.entries.items())
            if entry.get("status") in ("failed", "blocked")
        }
        return counts, dict(sorted(reasons.items())), failures

    def manifest(self) -> dict[str, object]:
        data = self.sessions_path.read_bytes() if self.sessions_path.is_file() else b""
        counts, reasons, failures = self.counts()
        return {
            "dataset": "synthetic CBT sessions written by a teacher model with training.generate (PROTOCOL.md); "
            "all profiles and sessions are synthetic, no real patient data",
            "format": "messages-jsonl",
            "sessions_file": SESSIONS_FILE,
            "sessions_sha256": hashlib.sha256(data).hexdigest(),
            "teacher": self.teacher_info,
            "teacher_sampling": self.teacher_sampling,
            "prompts": prompt_versions(),
            "seed": self.seed,
            "parts": self.parts,
            "settings": asdict(self.settings),
            "counts": counts,
            "rejection_reasons": reasons,
            "failures": failures,
            "validation": self.validation,
            "profiles": dict(sorted(self.profiles.items())),
            "repairs": self.repairs,
            "runs": self.runs,
            "sessions": dict(sorted(self.entries.items())),
        }

    def write_manifest(self) -> None:
        _atomic_write(self.manifest_path, json.dumps(self.manifest(), indent=2, ensure_ascii=False) + "\n")


# Courses and datasets ---------------------------------------------------------------------------------------


SessionCallback = Callable[[GeneratedSession], None]


def _existing(record: dict) -> GeneratedSession:
    messages = [Message(m["role"], m["content"]) for m in record["messages"]]
    return GeneratedSession(
        record["id"], record["profile_id"], record["session_index"], record["phase"], "existing",
        messages=messages, summary=closing_summary(messages),
    )


def generate_course(
    teacher: ChatModel,
    profile: PatientProfile,
    sessions: int,
    parts: int,
    seed: int,
    *,
    settings: GenerationSettings | None = None,
    writer: DatasetWriter | None = None,
    count_tokens: TokenCounter | None = None,
    on_session: SessionCallback | None = None,
) -> list[GeneratedSession]:
    """Sessions 1..`sessions` of one profile's course, each written in `parts` parts by `teacher`.

    The narrative is written first (when the profile has none and settings.narrative is on). Each session
    from the second opens with the previous one's closing summary; when a session fails, the rest of the
    course is "blocked". With a `writer`, sessions already in its file are skipped ("existing") and each
    new one is saved as soon as it is done.
    """
    settings = settings or GenerationSettings()
    if not 1 <= sessions <= COURSE_SESSIONS:
        raise ValueError(f"sessions must be 1 to {COURSE_SESSIONS}; got {sessions}")
    if parts < 1:
        raise ValueError(f"parts must be at least 1; got {parts}")
    counter = count_tokens or token_counter_for(teacher, settings.token_model)
    prepared: PatientProfile | None = None
    results: list[GeneratedSession] = []
    previous_summary: str | None = None
    blocked_by: str | None = None

    def emit(session: GeneratedSession) -> None:
        if writer is not None and session.status != "existing":
            writer.save(session)
        results.append(session)
        if on_session is not None:
            on_session(session)

    for index in range(1, sessions + 1):
        sid = session_id(profile.id, index)
        record = writer.existing_session(sid) if writer is not None else None
        if record is not None:
            session = _existing(record)
            previous_summary, blocked_by = session.summary, None
            emit(session)
            continue
        if blocked_by is not None:
            emit(GeneratedSession(sid, profile.id, index, phase_of(index), "blocked",
                                  reason=f"{blocked_by} was not written, so there is no summary to open with"))
            continue
        if prepared is None:
            try:
                prepared = _prepare_profile(teacher, profile, seed, settings, writer)
            except (ValueError, ContextOverflow) as exc:
                emit(GeneratedSession(sid, profile.id, index, phase_of(index), "failed", reason=f"narrative: {exc}"))
                blocked_by = sid
                continue
        session = generate_session(
            teacher, prepared, index, parts, seed, previous_summary=previous_summary, settings=settings,
            count_tokens=counter, on_rejected=writer.reject if writer is not None else None,
        )
        emit(session)
        if session.status == "written":
            previous_summary = session.summary
        else:
            blocked_by = sid
    return results


def _prepare_profile(
    teacher: ChatModel, profile: PatientProfile, seed: int, settings: GenerationSettings, writer: DatasetWriter | None
) -> PatientProfile:
    """The profile with its narrative: the one saved in the output folder, the profile's own, or a new one."""
    saved = writer.saved_profile(profile.id) if writer is not None else None
    if saved is not None:
        return saved
    if profile.narrative or not settings.narrative:
        prepared, source = profile, "profile" if profile.narrative else "none"
    else:
        sampling = _teacher_sampling(teacher, settings, settings.narrative_max_tokens)
        narrative_seed = derive_seed(seed, profile.id, "narrative")
        prepared = expand_narrative(profile, teacher, seed=narrative_seed, sampling=sampling)
        source = f"teacher (seed {narrative_seed})"
    if writer is not None:
        writer.save_profile(prepared, source)
    return prepared


@dataclass
class DatasetResult:
    sessions: list[GeneratedSession]
    out_dir: Path
    validation: ValidationReport | None

    @property
    def complete(self) -> bool:
        return all(s.written for s in self.sessions)


def generate_dataset(
    teacher: ChatModel,
    profiles: Sequence[PatientProfile],
    sessions: int,
    parts: int,
    seed: int,
    out_dir: str | Path,
    *,
    resume: bool = False,
    settings: GenerationSettings | None = None,
    count_tokens: TokenCounter | None = None,
    on_session: SessionCallback | None = None,
) -> DatasetResult:
    """A course per profile into `out_dir` (sessions.jsonl, manifest.json, rejected.jsonl, profiles/)."""
    settings = settings or GenerationSettings()
    if not 1 <= sessions <= COURSE_SESSIONS:
        raise ValueError(f"sessions must be 1 to {COURSE_SESSIONS}; got {sessions}")
    if parts < 1:
        raise ValueError(f"parts must be at least 1; got {parts}")
    if not profiles:
        raise ValueError("no profiles to generate courses for")
    ids = [p.id for p in profiles]
    if len(set(ids)) != len(ids):
        raise ValueError(f"profile ids must be unique; got {', '.join(ids)}")
    counter = count_tokens or token_counter_for(teacher, settings.token_model)
    writer = DatasetWriter(out_dir, teacher=teacher, seed=seed, parts=parts, settings=settings, resume=resume)
    results: list[GeneratedSession] = []
    for profile in profiles:
        results += generate_course(
            teacher, profile, sessions, parts, seed, settings=settings, writer=writer, count_tokens=counter,
            on_session=on_session,
        )
    report = writer.finish(counter)
    return DatasetResult(results, writer.out_dir, report)


def sampled_profiles(count: int, seed: int) -> list[PatientProfile]:
    """`count` profiles from the seeded attribute sampler; each reloads as `sampled-<n>` (load_profile)."""
    if count < 1:
        raise ValueError(f"--sample must be at least 1; got {count}")
    return [sample_profile(derive_seed(seed, "sample", index)) for index in range(count)]


# Command line -----------------------------------------------------------------------------------------------


def _settings_arguments(parser: argparse.ArgumentParser) -> None:
    defaults = GenerationSettings()
    for item in fields(GenerationSettings):
        flag = "--" + item.name.replace("_", "-")
        help_text = f"{item.metadata.get('help', '')} (default {getattr(defaults, item.name)})"
        if item.type in ("bool", bool):
            parser.add_argument(flag, action=argparse.BooleanOptionalAction, default=None, help=help_text)
        elif item.name == "temperature":
            parser.add_argument(flag, type=float, default=None, help=help_text)
        elif item.name == "token_model":
            parser.add_argument(flag, default=None, help=help_text)
        else:
            parser.add_argument(flag, type=int, default=None, help=help_text)


def _describe(session: GeneratedSession) -> str:
    if session.status == "existing":
        return f"{session.id}: already in {SESSIONS_FILE}, skipped"
    regenerated = sum(len(p.attempts) > 1 for p in session.parts)
    if session.status == "written":
        return f"{session.id}: written ({len(session.parts)} parts, {regenerated} regenerated)"
    return f"{session.id}: {session.status}: {session.reason}"


def main(argv: Sequence[str] | None = None) -> int:
    """Exit 0 when every session is in the file, 3 when some failed (see the manifest), 1 on an error."""
    parser = argparse.ArgumentParser(prog="python -m training.generate", description=__doc__.splitlines()[0])
    parser.add_argument("--teacher", required=True, help="registry name of the teacher model (models.yaml)")
    chosen = parser.add_mutually_exclusive_group(required=True)
    chosen.add_argument("--profiles", help="comma-separated profile ids or files (curated, saved, sampled-<n>)")
    chosen.add_argument("--sample", type=int, help="draw this many profiles from the seeded attribute sampler")
    parser.add_argument("--seed", type=int, default=0, help="run seed: profiles, narratives and parts derive from it")
    parser.add_argument("--sessions", type=int, required=True, help=f"sessions per course, 1-{COURSE_SESSIONS}")
    parser.add_argument("--parts", type=int, default=4, help="parts per session (the paper: 4)")
    parser.add_argument("--out", type=Path, required=True, help="output folder")
    parser.add_argument("--resume", action="store_true", help="keep the sessions already in the folder and go on")
    _settings_arguments(parser)
    args = parser.parse_args(argv)
    given = {item.name: getattr(args, item.name) for item in fields(GenerationSettings)}
    overrides = {name: value for name, value in given.items() if value is not None}
    try:
        settings = GenerationSettings(**overrides)
        if args.profiles:
            profiles = [load_profile(name.strip()) for name in args.profiles.split(",") if name.strip()]
        else:
            profiles = sampled_profiles(args.sample, args.seed)
        from cbtcompare.models.registry import Registry

        teacher = Registry.from_files().load(args.teacher)
        result = generate_dataset(
            teacher, profiles, args.sessions, args.parts, args.seed, args.out, resume=args.resume,
            settings=settings, on_session=lambda s: print(_describe(s), flush=True),
        )
    except (ValueError, KeyError, FileNotFoundError, FileExistsError, ImportFailed) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except Exception as exc:  # a model error (endpoint down, timeout...) after earlier sessions were saved
        print(f"error: {type(exc).__name__}: {exc}\nsessions written so far are kept; rerun with --resume",
              file=sys.stderr)
        return 1
    written = sum(s.written for s in result.sessions)
    print(f"{written} of {len(result.sessions)} sessions in {result.out_dir / SESSIONS_FILE}; "
          f"manifest: {result.out_dir / MANIFEST_FILE}")
    if result.validation is not None:
        print(result.validation.format(limit=20).splitlines()[0])
    return 0 if result.complete else 3


if __name__ == "__main__":
    sys.exit(main())
