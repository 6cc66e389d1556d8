"""Validate a messages-JSONL training file (one session per line) and report problems by line number.

Checks the schema of PROTOCOL.md (id, profile_id, session_index, phase, messages), roles, strict
patient/therapist alternation, empty turns, each session's token length against the model's context,
and exact duplicates; with `protocol=True` (`--protocol`) it also warns where a session departs from
PROTOCOL.md's shape (agenda first, summary and homework last, a feedback request, a Socratic question,
crisis disclosures answered with crisis services), judged by the technique tagger and the crisis rules.
Used by `python -m training.validate FILE`, the Train tab and the training pipeline. It only reads: it
never edits, fixes or rewrites a dataset.
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import sys
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from cbtcompare.content_hash import content_digest
from cbtcompare.models.base import Message

DEFAULT_MAX_TOKENS = 2048
DEFAULT_TOKEN_MODEL = "smollm2-instruct"
PHASES: dict[str, range] = {
    "assessment": range(1, 4),
    "initial": range(4, 8),
    "middle": range(8, 18),
    "termination": range(18, 21),
}
ROLES = ("system", "user", "assistant")
SPEAKER = {"user": "patient", "assistant": "therapist", "system": "system"}
# A turn repeated across sessions is reported (as a warning) only when it is this long: short replies
# such as "Yes, that makes sense." recur naturally.
DUPLICATE_TURN_MIN_WORDS = 8
STAGE_DIRECTION = re.compile(
    r"(^|\s)(\*[^*\n]{1,60}\*|\[[a-z][^\]\n]{0,60}\]|\((?:sighs|pauses|laughs|smiles|nods|cries)[^)]*\))", re.IGNORECASE
)
ROLE_LABEL = re.compile(r"^\s*(therapist|patient|client|assistant|user|counsell?or)\s*:", re.IGNORECASE)

TokenCounter = Callable[[Sequence[Message]], "int | None"]


@dataclass
class ValidationReport:
    """What `validate_file` found. Line numbers are 1-based lines of the file; 0 means the file as a whole."""

    path: str
    errors: list[tuple[int, str]] = field(default_factory=list)
    warnings: list[tuple[int, str]] = field(default_factory=list)
    counts: dict[str, object] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not self.errors

    def error_lines(self) -> list[int]:
        return [line for line, _ in self.errors]

    def format(self, limit: int = 200) -> str:
        """A report a person can act on: counts, then each error and warning with its line number."""
        status = "VALID" if self.ok else "INVALID"
        out = [f"{self.path}: {status} ({len(self.errors)} errors, {len(self.warnings)} warnings)"]
        for key, value in self.counts.items():
            out.append(f"  {key}: {value}")
        for label, items in (("error", self.errors), ("warning", self.warnings)):
            for line, message in items[:limit]:
                where = f"line {line}" if line else "file"
                out.append(f"{where}: {label}: {message}")
            if len(items) > limit:
                out.append(f"... and {len(items) - limit} more {label}s")
        return "\n".join(out)


def model_token_counter(model_name: str = DEFAULT_TOKEN_MODEL) -> TokenCounter:
    """Count tokens the way a registry model renders its chat template (the default: SmolLM2's GGUF)."""
    from cbtcompare.models.registry import Registry

    return Registry.from_files().load(model_name).count_tokens


def _shown(value: object, limit: int = 80) -> str:
    """A value as it appears in a message: its repr, cut short (a line may hold megabytes)."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _check_messages(line: int, messages: object, report: ValidationReport) -> list[Message] | None:
    """Roles, alternation and empty turns; returns the messages when their structure is usable."""
    if not isinstance(messages, list) or not messages:
        report.errors.append((line, "'messages' must be a non-empty list of {role, content} objects"))
        return None
    parsed: list[Message] = []
    broken = False
    for index, item in enumerate(messages):
        where = f"messages[{index}]"
        if not isinstance(item, dict):
            report.errors.append((line, f"{where} is not an object with 'role' and 'content'"))
            broken = True
            continue
        role, content = item.get("role"), item.get("content")
        if role not in ROLES:
            report.errors.append((line, f"{where} has role {_shown(role)}; expected one of {', '.join(ROLES)}"))
            broken = True
            continue
        if not isinstance(content, str):
            report.errors.append((line, f"{where} ({SPEAKER[role]}) 'content' must be a string"))
            broken = True
            continue
        if not content.strip():
            report.errors.append((line, f"{where} is an empty {SPEAKER[role]} turn"))
            broken = True
        parsed.append(Message(role, content))
    if broken:
        return None
    roles = [m.role for m in parsed]
    for index, role in enumerate(roles):
        if role == "system" and index > 0:
            report.errors.append((line, f"messages[{index}]: a system message may only come first"))
            return None
    offset = 1 if roles[0] == "system" else 0
    if not offset:
        report.warnings.append((line, "no system message; the protocol puts the therapist system prompt first"))
    turns = roles[offset:]
    if not turns:
        report.errors.append((line, "no patient or therapist turns"))
        return None
    for position, role in enumerate(turns):
        expected = "user" if position % 2 == 0 else "assistant"
        if role != expected:
            index = position + offset
            report.errors.append(
                (
                    line,
                    f"messages[{index}]: expected a {SPEAKER[expected]} ({expected}) turn, got {SPEAKER[role]} "
                    f"({role}): turns must alternate patient, therapist, starting with the patient",
                )
            )
            return None
    if turns[-1] != "assistant":
        report.errors.append((line, "the session ends on a patient turn; it must end with the therapist"))
        return None
    for index, message in enumerate(parsed[offset:], start=offset):
        if ROLE_LABEL.match(message.content):
            report.warnings.append((line, f"messages[{index}] starts with a speaker label; the role says who speaks"))
        if STAGE_DIRECTION.search(message.content):
            report.warnings.append(
                (line, f"messages[{index}] looks like it holds a stage direction; write speech only")
            )
    return parsed


OPENING_TURNS = 2  # the agenda must be set within the therapist's first turns
CLOSING_TURNS = 3  # the summary and the homework must come within the therapist's last turns
CRISIS_CATEGORIES = ("suicidal_ideation", "self_harm", "intent_or_plan")
CRISIS_SERVICES = re.compile(
    r"\b988\b|findahelpline|emergency services|\b999\b|\b911\b|\b112\b|crisis line", re.IGNORECASE
)


def protocol_problems(messages: Sequence[Message]) -> list[str]:
    """Where a structurally valid session departs from PROTOCOL.md's shape; empty when it follows it."""
    from cbtcompare.safety import check_model_reply, detect_crisis
    from cbtcompare.techniques import tag_turn

    indexed = [(i, m) for i, m in enumerate(messages) if m.role != "system"]
    therapist = [(i, m) for i, m in indexed if m.role == "assistant"]
    tags = {i: {tag.id for tag in tag_turn(m.content)} for i, m in therapist}
    problems = []
    opening = set().union(*(tags[i] for i, _ in therapist[:OPENING_TURNS]))
    closing = set().union(*(tags[i] for i, _ in therapist[-CLOSING_TURNS:]))
    everywhere = set().union(*tags.values())
    if "agenda_setting" not in opening:
        problems.append(f"no agenda setting in the therapist's first {OPENING_TURNS} turns")
    if "summary" not in closing:
        problems.append(f"no summary in the therapist's last {CLOSING_TURNS} turns")
    if "homework" not in closing:
        problems.append(f"no homework in the therapist's last {CLOSING_TURNS} turns")
    if "feedback_request" not in everywhere:
        problems.append("the therapist never asks for feedback")
    if "socratic_question" not in everywhere:
        problems.append("the therapist never asks a Socratic question")
    for position, (index, message) in enumerate(indexed):
        if message.role == "assistant":
            harm = check_model_reply(message.content)
            if harm.harmful:
                problems.append(f"messages[{index}]: therapist turn flagged as harmful ({', '.join(harm.matched)})")
            continue
        crisis = detect_crisis(message.content, use_classifier=False)  # deterministic checks for datasets
        if not set(crisis.categories) & set(CRISIS_CATEGORIES):
            continue
        # Answered when one of the therapist's next two turns, or of its last two (a pointer just given
        # for an earlier disclosure), names crisis services.
        nearby = indexed[max(0, position - 4) : position] + indexed[position + 1 : position + 4]
        if not any(m.role == "assistant" and CRISIS_SERVICES.search(m.content) for _, m in nearby):
            problems.append(
                f"messages[{index}]: the patient discloses {', '.join(crisis.categories)} but the therapist's turns "
                f"around it do not point to crisis services (988, findahelpline.com, emergency services)"
            )
    return problems


# A session is a flat object of strings and a list of turns: nesting this deep is never one, and Python's
# parser would hit its recursion limit (RecursionError) on a few thousand levels.
MAX_NESTING = 64
_OPENERS = re.compile(r'"(?:[^"\\]|\\.)*"|[\[{]|[\]}]')


def _nesting_depth(text: str) -> int:
    """How deeply brackets nest in a JSON text, not counting those inside strings."""
    depth = deepest = 0
    for token in _OPENERS.finditer(text):
        char = token.group()
        if char in "[{":
            depth += 1
            deepest = max(deepest, depth)
        elif char in "]}":
            depth -= 1
    return deepest


def jsonl_lines(text: str) -> list[str]:
    """The lines of a JSONL text: split at newlines only.

    str.splitlines() also splits at U+2028, U+2029, U+0085 and other separators, which JSON allows raw inside
    a string: a session quoting such a character would be cut in two.
    """
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    return [line[:-1] if line.endswith("\r") else line for line in lines]


def parse_line(text: str) -> tuple[object, str | None]:
    """One JSON value from a line, or None and what is wrong with it (a message, never an exception)."""
    depth = _nesting_depth(text)
    if depth > MAX_NESTING:
        return None, f"JSON nested {depth} levels deep; a session needs only a few (at most {MAX_NESTING})"
    try:
        return json.loads(text), None
    except json.JSONDecodeError as exc:
        return None, f"not valid JSON: {exc.msg} (column {exc.colno})"
    except (ValueError, RecursionError, OverflowError) as exc:  # e.g. an integer with over 4,300 digits
        return None, f"not usable JSON: {str(exc).splitlines()[0][:200]}"


def _check_metadata(line: int, record: dict, report: ValidationReport, seen_ids: dict[str, int]) -> None:
    session_id = record.get("id")
    if session_id is None:
        report.warnings.append((line, "no 'id'"))
    elif not isinstance(session_id, str) or not session_id.strip():
        report.errors.append((line, "'id' must be a non-empty string"))
    elif session_id in seen_ids:
        report.errors.append((line, f"duplicate id {_shown(session_id)} (first on line {seen_ids[session_id]})"))
    else:
        seen_ids[session_id] = line
    profile_id = record.get("profile_id")
    if profile_id is None:
        report.warnings.append((line, "no 'profile_id'"))
    elif not isinstance(profile_id, str) or not profile_id.strip():
        report.errors.append((line, "'profile_id' must be a non-empty string"))
    index = record.get("session_index")
    index_ok = False
    if index is None:
        report.warnings.append((line, "no 'session_index'"))
    elif isinstance(index, bool) or not isinstance(index, int) or index < 1:
        report.errors.append((line, f"'session_index' must be a whole number from 1; got {_shown(index)}"))
    else:
        index_ok = True
    phase = record.get("phase")
    if phase is None:
        report.warnings.append((line, "no 'phase'"))
    elif not isinstance(phase, str) or phase not in PHASES:
        report.errors.append((line, f"'phase' is {_shown(phase)}; expected one of {', '.join(PHASES)}"))
    elif index_ok and index not in PHASES[phase]:
        expected = next((name for name, span in PHASES.items() if index in span), None)
        hint = (
            f"session {index} belongs to {expected!r}" if expected else f"session {index} is past the 20-session course"
        )
        report.errors.append((line, f"'phase' {phase!r} does not match session_index {index}: {hint}"))


def validate_file(
    path: str | Path,
    max_tokens: int = DEFAULT_MAX_TOKENS,
    count_tokens: TokenCounter | None = None,
    model_name: str = DEFAULT_TOKEN_MODEL,
    protocol: bool = False,
) -> ValidationReport:
    """Check a messages-JSONL file; `count_tokens` defaults to the chat template of `model_name`.

    With `protocol=True`, departures from PROTOCOL.md's session shape are added as warnings.
    """
    path = Path(path)
    report = ValidationReport(path=str(path))
    if not path.is_file():
        report.errors.append((0, f"no such file: {path}"))
        return report
    try:
        lines = jsonl_lines(path.read_bytes().decode("utf-8"))  # no universal newlines: a lone \r is text
    except UnicodeDecodeError as exc:
        report.errors.append((0, f"not UTF-8 text: {exc}"))
        return report

    if count_tokens is None:
        try:
            count_tokens = model_token_counter(model_name)
        except Exception as exc:  # a missing backend or weights must not hide the other checks
            report.warnings.append((0, f"token lengths not checked: could not load {model_name!r}: {exc}"))

    seen_ids: dict[str, int] = {}
    seen_sessions: dict[str, int] = {}
    seen_turns: dict[tuple[str, str], int] = {}
    sessions = 0
    profiles: set[str] = set()
    phases: Counter[str] = Counter()
    therapist_turns: list[int] = []
    patient_turns: list[int] = []
    token_lengths: list[int] = []

    for number, text in enumerate(lines, start=1):
        if not text.strip():
            if number < len(lines):
                report.warnings.append((number, "blank line"))
            continue
        record, problem = parse_line(text)
        if problem:
            report.errors.append((number, problem))
            continue
        if not isinstance(record, dict):
            report.errors.append((number, f"expected a JSON object per line, got {type(record).__name__}"))
            continue
        if "messages" not in record:
            report.errors.append((number, "no 'messages' field"))
            continue
        sessions += 1
        _check_metadata(number, record, report, seen_ids)
        messages = _check_messages(number, record["messages"], report)
        if messages is None:
            continue
        if isinstance(record.get("profile_id"), str):
            profiles.add(record["profile_id"])
        if isinstance(record.get("phase"), str) and record["phase"] in PHASES:
            phases[record["phase"]] += 1
        therapist_turns.append(sum(m.role == "assistant" for m in messages))
        patient_turns.append(sum(m.role == "user" for m in messages))

        digest = content_digest(json.dumps([m.to_dict() for m in messages]), length=None)
        if digest in seen_sessions:
            report.errors.append((number, f"duplicate session: the same messages as line {seen_sessions[digest]}"))
        else:
            seen_sessions[digest] = number
        in_session: dict[tuple[str, str], int] = {}
        for index, message in enumerate(messages):
            if message.role == "system":
                continue
            key = (message.role, " ".join(message.content.split()))
            if key in in_session:
                report.errors.append(
                    (
                        number,
                        f"messages[{index}] repeats messages[{in_session[key]}] word for word "
                        f"(a duplicate {SPEAKER[message.role]} turn)",
                    )
                )
                continue
            in_session[key] = index
            if len(key[1].split()) >= DUPLICATE_TURN_MIN_WORDS:
                if key in seen_turns:
                    report.warnings.append(
                        (
                            number,
                            f"messages[{index}]: the same {SPEAKER[message.role]} turn as on line {seen_turns[key]}",
                        )
                    )
                else:
                    seen_turns[key] = number

        if protocol:
            report.warnings.extend((number, f"protocol: {problem}") for problem in protocol_problems(messages))

        if count_tokens is not None:
            used = count_tokens(messages)
            if used is not None:
                token_lengths.append(used)
                if used > max_tokens:
                    report.errors.append(
                        (number, f"session is {used} tokens, over the {max_tokens}-token context; shorten or split it")
                    )

    if sessions == 0 and not report.errors:
        report.errors.append((0, "no sessions in the file"))
    report.counts["sessions"] = sessions
    report.counts["valid_sessions"] = len(therapist_turns)
    report.counts["profiles"] = len(profiles)
    report.counts["phases"] = {name: phases[name] for name in PHASES if phases[name]}
    if therapist_turns:
        report.counts["therapist_turns"] = sum(therapist_turns)
        report.counts["patient_turns"] = sum(patient_turns)
        report.counts["min_therapist_turns_per_session"] = min(therapist_turns)
    if token_lengths:
        report.counts["tokens_min"] = min(token_lengths)
        report.counts["tokens_mean"] = round(statistics.fmean(token_lengths), 1)
        report.counts["tokens_max"] = max(token_lengths)
        report.counts["max_tokens"] = max_tokens
    return report


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m training.validate", description=__doc__.splitlines()[0])
    parser.add_argument("file", type=Path, help="a messages-JSONL file, one session per line")
    parser.add_argument(
        "--max-tokens",
        type=int,
        default=DEFAULT_MAX_TOKENS,
        help=f"the model's context length in tokens (default {DEFAULT_MAX_TOKENS})",
    )
    parser.add_argument(
        "--model",
        default=DEFAULT_TOKEN_MODEL,
        help=f"registry model whose chat template counts tokens (default {DEFAULT_TOKEN_MODEL})",
    )
    parser.add_argument(
        "--protocol",
        action="store_true",
        help="also warn where a session departs from PROTOCOL.md (agenda, summary, homework, safety)",
    )
    args = parser.parse_args(argv)
    report = validate_file(args.file, max_tokens=args.max_tokens, model_name=args.model, protocol=args.protocol)
    print(report.format())
    return 0 if report.ok else 1


if __name__ == "__main__":
    sys.exit(main())
