"""Transcript importers: plain text, JSON and JSONL files into Transcripts, all-or-nothing.

Formats (chosen by extension, else sniffed from the first character):
- plain text (.txt, .md): the paper's format, turns starting with "Patient:" or "Therapist:" ("Client:"
  and "Counselor:"/"Counsellor:" are read as the same roles); a turn runs on over following lines until
  the next speaker label.
- JSON (.json): a list of chat messages [{"role", "content"}] with role user/assistant (user = patient,
  assistant = therapist) or patient/therapist, an optional leading system message; {"messages": [...]};
  one of our Transcript objects (with "turns"); or a list of Transcripts.
- JSONL (.jsonl): one Transcript (or {"messages": [...]}) per line, or one chat message per line (the
  whole file is then one transcript).

Lines are counted at "\n" only (as editors do): U+2028, U+2029 and U+0085 inside a turn are text, not
line breaks. Every error names the file and the line. Input over the limits in cbtcompare.limits (bytes,
transcripts, turns, characters per turn, JSON nesting) is refused before or while parsing, with the limit
in the message, and parsing is linear in the input.

A transcript record that carries its own "id" is stored exactly as given (so export -> import -> export
is byte-identical); transcripts the importer builds (plain text, chat messages, records without an id)
get a new id and their provenance (source file, format, index) in `meta`.

An import never changes a stored transcript. A transcript whose id is already stored with identical
content is left alone (reported as unchanged); one whose id is stored with different content is refused
with a message naming the file and line, and then nothing from the import is stored. We refuse rather
than silently store a renamed copy: scores, rating pairs and unblinding refer to transcripts by id, so a
quiet re-id would leave a study pointing at content nobody asked for. Everything is validated before
anything is stored, and the store write is one transaction. This module never calls a model.
"""

from __future__ import annotations

import json
import json.decoder
import json.scanner
import math
import re
from bisect import bisect_right
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from cbtcompare.config_errors import format_validation_error
from cbtcompare.limits import DEFAULT_LIMITS, ImportLimits, describe_bytes, first_offset_too_deep
from cbtcompare.provenance import VARIANTS, Variant
from cbtcompare.store import (
    THERAPIST_NAME_CHARS,
    ImportFailed,
    SaveReport,
    Store,
    TranscriptConflict,
    check_storable,
    field_problem,
)
from cbtcompare.transcript import Transcript, Turn

TEXT_SUFFIXES = {".txt", ".md", ".text"}
ROLE_ALIASES = {
    "patient": "patient",
    "client": "patient",
    "user": "patient",
    "therapist": "therapist",
    "counselor": "therapist",
    "counsellor": "therapist",
    "assistant": "therapist",
}
MESSAGE_ROLES = "user, assistant, patient, therapist (and system first)"
_LABEL = re.compile(
    r"^\s*(?:\*\*)?(patient|therapist|client|counsell?or)(?:\*\*)?\s*:(?:\*\*)?[ \t]?(.*)$", re.IGNORECASE
)
_LONG_DIGITS = re.compile(r"\d{4300}")  # Python refuses to convert integers this long (sys.int_info)
# A JSON string (an unterminated one runs to the end, keeping the scan linear), or a non-finite number.
_NON_FINITE = re.compile(
    r'"[^"\\]*(?:\\.[^"\\]*)*(?:"|\\?\Z)|(NaN|-?Infinity|-?\d+(?:\.\d+)?[eE][+-]?\d{3,})', re.DOTALL
)


@dataclass
class ParsedFile:
    """The transcripts of one file, with the line each one starts on (for messages about storing them)."""

    source: str
    transcripts: list[Transcript]
    lines: list[int] = field(default_factory=list)


@dataclass(frozen=True)
class ImportReport:
    """What an import stored: per file, the transcripts; overall, which ids are new and which were there."""

    files: list[ParsedFile]
    saved: SaveReport | None

    @property
    def transcripts(self) -> list[Transcript]:
        return [t for parsed in self.files for t in parsed.transcripts]


class Attribution(BaseModel):
    """Who produced imported transcripts, as the person importing says; applied where a transcript records
    nothing itself. Without a variant from either, a transcript the importer builds is `unassigned`: its
    producer is unknown, so tuned-vs-base analyses leave it out (it is never counted as a base model)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    therapist: str | None = Field(
        None, min_length=1, max_length=THERAPIST_NAME_CHARS, description="therapist name for transcripts naming none"
    )
    variant: Variant | None = Field(None, description="base, tuned, prompted or unassigned")
    family: str | None = Field(
        None, min_length=1, max_length=200, description="model family shared by a base model and its tuned variants"
    )

    @classmethod
    def of(cls, therapist: str | None, variant: str | None, family: str | None) -> Attribution:
        try:
            return cls(therapist=therapist or None, variant=variant or None, family=family or None)  # type: ignore[arg-type]
        except ValidationError as exc:
            raise ImportFailed(format_validation_error(exc, "import options", whole="options")) from None


# Public entry points ---------------------------------------------------------------------------------


def import_file(
    path: str | Path,
    store: Store | None = None,
    *,
    therapist: str | None = None,
    variant: str | None = None,
    family: str | None = None,
    meta: dict[str, Any] | None = None,
    limits: ImportLimits = DEFAULT_LIMITS,
    mark_unassigned: bool = True,
) -> list[Transcript]:
    """Parse a transcript file (any format above); when `store` is given, save all of it in one transaction."""
    return import_files(
        [path],
        store,
        therapist=therapist,
        variant=variant,
        family=family,
        meta=meta,
        limits=limits,
        mark_unassigned=mark_unassigned,
    ).transcripts


def import_files(
    paths: Sequence[str | Path],
    store: Store | None = None,
    *,
    therapist: str | None = None,
    variant: str | None = None,
    family: str | None = None,
    meta: dict[str, Any] | None = None,
    limits: ImportLimits = DEFAULT_LIMITS,
    mark_unassigned: bool = True,
) -> ImportReport:
    """Parse every file first; only when all of them are valid, store them all in one transaction."""
    Attribution.of(therapist, variant, family)  # refused before any file is read
    options = {"therapist": therapist, "variant": variant, "family": family, "meta": meta, "limits": limits}
    options["mark_unassigned"] = mark_unassigned
    parsed = [read_file(path, **options) for path in paths]
    saved = save_parsed(store, parsed) if store is not None else None
    return ImportReport(files=parsed, saved=saved)


def read_file(
    path: str | Path,
    *,
    therapist: str | None = None,
    variant: str | None = None,
    family: str | None = None,
    meta: dict[str, Any] | None = None,
    limits: ImportLimits = DEFAULT_LIMITS,
    mark_unassigned: bool = True,
) -> ParsedFile:
    """Read and parse one file; the size limit is checked before a byte is read."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no transcript file at {path}")
    size = path.stat().st_size
    if size > limits.max_bytes:
        raise ImportFailed(
            f"{path.name}: the file is {describe_bytes(size)}, over the import limit of "
            f"{describe_bytes(limits.max_bytes)}; split it into smaller files"
        )
    with path.open("rb") as handle:
        raw = handle.read(limits.max_bytes + 1)  # the file may have grown since stat
    if len(raw) > limits.max_bytes:
        raise ImportFailed(f"{path.name}: the file is over the import limit of {describe_bytes(limits.max_bytes)}")
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise ImportFailed(f"{path.name}: not UTF-8 text (byte {exc.start}); save the file as UTF-8") from None
    return parse_file_text(
        text,
        source=path.name,
        fmt=detect_format(path, text),
        therapist=therapist,
        variant=variant,
        family=family,
        meta=meta,
        limits=limits,
        mark_unassigned=mark_unassigned,
    )


def save_imported(store: Store, transcripts: Sequence[Transcript]) -> list[str]:
    """Store already-validated transcripts in one transaction; returns their ids (new and already stored)."""
    return store.save_transcripts(list(transcripts)).ids


def save_parsed(store: Store, files: Sequence[ParsedFile]) -> SaveReport:
    """Store the transcripts of several parsed files in one transaction; a conflict names its file and line."""
    everything = [t for parsed in files for t in parsed.transcripts]
    try:
        return store.save_transcripts(everything)
    except TranscriptConflict as exc:
        for parsed in files:
            for transcript, line in zip(parsed.transcripts, parsed.lines, strict=False):
                if transcript.id == exc.transcript_id:
                    raise TranscriptConflict(exc.transcript_id, f"{parsed.source}: line {line}: {exc}") from None
        raise


def detect_format(path: Path, text: str) -> str:
    suffix = path.suffix.lower()
    if suffix == ".jsonl":
        return "jsonl"
    if suffix == ".json":
        return "json"
    if suffix in TEXT_SUFFIXES:
        return "text"
    first = text.lstrip()[:1]
    if first == "[":
        return "json"
    if first == "{":
        lines = [line for line in text.split("\n") if line.strip()]
        return "jsonl" if len(lines) > 1 and all(line.lstrip().startswith("{") for line in lines) else "json"
    return "text"


def parse_transcripts(
    text: str,
    *,
    source: str = "upload",
    fmt: str = "text",
    therapist: str | None = None,
    variant: str | None = None,
    family: str | None = None,
    meta: dict[str, Any] | None = None,
    limits: ImportLimits = DEFAULT_LIMITS,
    mark_unassigned: bool = True,
) -> list[Transcript]:
    """Parse text in one of the formats; ImportFailed names the source and the line of the first problem."""
    options = {"therapist": therapist, "variant": variant, "family": family, "meta": meta, "limits": limits}
    return parse_file_text(text, source=source, fmt=fmt, mark_unassigned=mark_unassigned, **options).transcripts


def parse_file_text(
    text: str,
    *,
    source: str = "upload",
    fmt: str = "text",
    therapist: str | None = None,
    variant: str | None = None,
    family: str | None = None,
    meta: dict[str, Any] | None = None,
    limits: ImportLimits = DEFAULT_LIMITS,
    mark_unassigned: bool = True,
) -> ParsedFile:
    """`parse_transcripts`, keeping the line each transcript starts on."""
    attribution = Attribution.of(therapist, variant, family)
    parsers: dict[str, Callable[[str, ImportLimits], list[tuple[int, Transcript, bool]]]] = {
        "text": _parse_plain_text,
        "json": _parse_json,
        "jsonl": _parse_jsonl,
    }
    if fmt not in parsers:
        raise ValueError(f"unknown transcript format {fmt!r}; use one of {', '.join(parsers)}")
    if len(text) > limits.max_bytes:  # a character is at least one byte
        raise ImportFailed(
            f"{source}: the input is over the import limit of {describe_bytes(limits.max_bytes)}; "
            "split it into smaller files"
        )
    try:
        found = parsers[fmt](text, limits)
    except _LineError as exc:
        raise ImportFailed(f"{source}: line {exc.line}: {exc.problem}") from None
    if not found:
        raise ImportFailed(f"{source}: the file holds no transcripts")
    for index, (line, transcript, built_here) in enumerate(found):
        if built_here:
            provenance: dict[str, Any] = {"source": source, "format": fmt}
            if len(found) > 1:
                provenance["source_index"] = index
            transcript.meta = {**provenance, **transcript.meta}
        if meta:
            transcript.meta = {**meta, **transcript.meta}
        try:
            _attribute(transcript, attribution, built_here=built_here, mark_unassigned=mark_unassigned)
            check_storable(transcript)
        except ImportFailed as exc:
            raise ImportFailed(f"{source}: line {line}: {exc}") from None
    return ParsedFile(source=source, transcripts=[t for _, t, _ in found], lines=[line for line, _, _ in found])


def _attribute(transcript: Transcript, attribution: Attribution, *, built_here: bool, mark_unassigned: bool) -> None:
    """Therapist, variant and family: what the transcript records, else what its file said beside the
    messages ({"messages": [...], "therapist": ..., "variant": ..., "family": ...}), else the importer's
    options; a transcript the importer built with no variant from any of them is `unassigned` (unless
    `mark_unassigned` is off: a caller that labels the uploads itself, as the Judge tab does). A
    transcript that came whole with its own id is changed only by options the person gave."""
    beside = transcript.meta.get("source_fields") if built_here else None
    beside = beside if isinstance(beside, dict) else {}
    name = next(
        (v.strip() for v in (beside.get("therapist"), attribution.therapist) if isinstance(v, str) and v.strip()), ""
    )
    if not transcript.therapist and name:
        transcript.therapist = {"name": name[:THERAPIST_NAME_CHARS]}
    for key in ("variant", "family"):
        if transcript.meta.get(key) or transcript.therapist.get(key):
            continue  # the transcript records it
        value = beside.get(key) or getattr(attribution, key)
        if value is None and key == "variant" and built_here and mark_unassigned:
            value = "unassigned"
        if value is None:
            continue
        if key == "variant" and value not in VARIANTS:
            raise ImportFailed(f"variant {_clip(repr(value))} is not one of {', '.join(VARIANTS)}")
        if not isinstance(value, str) or not value.strip():
            raise ImportFailed(f"{key} must be a non-empty text, not {_clip(repr(value))}")
        transcript.meta = {**transcript.meta, key: value}


# Shared checks -----------------------------------------------------------------------------------------


class _LineError(Exception):
    def __init__(self, line: int, problem: str):
        self.line, self.problem = line, problem
        super().__init__(f"line {line}: {problem}")


class _LineIndex:
    """Line numbers of character offsets, by binary search over the newline offsets (built on first use)."""

    def __init__(self, text: str, first_line: int = 1):
        self.text, self.first_line = text, first_line
        self._newlines: list[int] | None = None

    def line(self, offset: int) -> int:
        if self._newlines is None:
            self._newlines = [m.start() for m in re.finditer("\n", self.text)]
        return self.first_line + bisect_right(self._newlines, offset - 1)


def _check_turns(turns: Sequence[Turn], line: int, limits: ImportLimits) -> None:
    for index, turn in enumerate(turns):
        if len(turn.text) > limits.max_turn_chars:
            raise _LineError(
                line,
                f"turn {index + 1} is {len(turn.text):,} characters; the most one turn may hold is "
                f"{limits.max_turn_chars:,}",
            )


def _too_many_turns(limits: ImportLimits) -> str:
    return f"the transcript has more than {limits.max_turns:,} turns, the most one import may hold; split it"


def _too_many_transcripts(limits: ImportLimits) -> str:
    return f"the file holds more than {limits.max_transcripts:,} transcripts, the most one import may hold; split it"


# Plain text --------------------------------------------------------------------------------------------


def _parse_plain_text(text: str, limits: ImportLimits) -> list[tuple[int, Transcript, bool]]:
    turns: list[tuple[int, str, list[str]]] = []  # (line of the label, role, lines)
    for number, line in enumerate(text.split("\n"), start=1):
        line = line.removesuffix("\r")
        match = _LABEL.match(line)
        if match:
            if len(turns) >= limits.max_turns:
                raise _LineError(number, _too_many_turns(limits))
            turns.append((number, ROLE_ALIASES[match.group(1).lower()], [match.group(2)]))
        elif turns:
            turns[-1][2].append(line)
        elif line.strip():
            raise _LineError(
                number,
                f"expected a speaker label 'Patient:' or 'Therapist:' to start the first turn, found {_clip(line)!r}",
            )
    if not turns:
        raise _LineError(1, "no turns found; each turn must start with 'Patient:' or 'Therapist:'")
    parsed = []
    for number, role, lines in turns:
        body = "\n".join(lines).strip()
        if not body:
            raise _LineError(number, f"the {role} turn is empty")
        if len(body) > limits.max_turn_chars:
            raise _LineError(
                number,
                f"the {role} turn is {len(body):,} characters; the most one turn may hold is {limits.max_turn_chars:,}",
            )
        parsed.append(Turn(role=role, text=body))  # type: ignore[arg-type]
    return [(turns[0][0], Transcript(kind="import", turns=parsed), True)]


# JSON --------------------------------------------------------------------------------------------------
#
# The success path parses with the C decoder. Only when a problem is found is the text parsed again with a
# decoder that records where each object and list starts, so the same problem can name its line.


class _Obj(dict):
    start = 0


class _Arr(list):
    start = 0


def _finite_float(literal: str) -> float:
    value = float(literal)
    if not math.isfinite(value):
        raise ValueError(f"{literal} is out of range for a number")
    return value


def _refuse_constant(name: str) -> float:
    raise ValueError(f"{name} is not a JSON number")


def _loads_fast(text: str) -> Any:
    return json.loads(text, parse_float=_finite_float, parse_constant=_refuse_constant)


def _loads_with_positions(text: str) -> Any:
    """json.loads, but every object and list remembers the character offset where it starts."""
    decoder = json.JSONDecoder(parse_float=_finite_float, parse_constant=_refuse_constant)

    def parse_object(s_and_end, *args, **kwargs):  # type: ignore[no-untyped-def]
        value, end = json.decoder.JSONObject(s_and_end, *args, **kwargs)
        positioned = _Obj(value)
        positioned.start = s_and_end[1] - 1
        return positioned, end

    def parse_array(s_and_end, scan_once):  # type: ignore[no-untyped-def]
        value, end = json.decoder.JSONArray(s_and_end, scan_once)
        positioned = _Arr(value)
        positioned.start = s_and_end[1] - 1
        return positioned, end

    decoder.parse_object = parse_object  # type: ignore[assignment]
    decoder.parse_array = parse_array  # type: ignore[assignment]
    decoder.scan_once = json.scanner.py_make_scanner(decoder)
    return decoder.decode(text)


def _decode(text: str, loads: Callable[[str], Any], lines: _LineIndex, limits: ImportLimits) -> Any:
    """Decode one JSON document; every failure is a _LineError (never RecursionError or OverflowError)."""
    too_deep = first_offset_too_deep(text, limits.max_json_depth)
    if too_deep is not None:
        raise _LineError(
            lines.line(too_deep), f"JSON nested deeper than {limits.max_json_depth} levels, the most an import reads"
        )
    try:
        return loads(text)
    except json.JSONDecodeError as exc:
        raise _LineError(lines.line(exc.pos), f"not valid JSON ({exc.msg} at column {exc.colno})") from None
    except ValueError as exc:  # NaN/Infinity/1e999, or an integer too long to convert
        long_number = _LONG_DIGITS.search(text)
        if long_number:
            raise _LineError(
                lines.line(long_number.start()), "a number has 4,300 digits or more; write it as a string"
            ) from None
        offset = next((m.start(1) for m in _NON_FINITE.finditer(text) if m.group(1)), 0)
        raise _LineError(lines.line(offset), f"{exc}; write null or a finite number") from None


def _line_of(value: object, lines: _LineIndex, default: int) -> int:
    start = getattr(value, "start", None)
    return lines.line(start) if start is not None else default


def _parse_json(text: str, limits: ImportLimits) -> list[tuple[int, Transcript, bool]]:
    try:
        return _parse_json_document(text, _loads_fast, limits)
    except _LineError:
        return _parse_json_document(text, _loads_with_positions, limits)  # raises the same error, with its line


def _parse_json_document(
    text: str, loads: Callable[[str], Any], limits: ImportLimits
) -> list[tuple[int, Transcript, bool]]:
    lines = _LineIndex(text)
    document = _decode(text, loads, lines, limits)
    if isinstance(document, dict):
        line = _line_of(document, lines, 1)
        return [(line, *_transcript_from_object(document, lines, line, limits))]
    if isinstance(document, list):
        if not document:
            raise _LineError(1, "the list is empty")
        first = document[0]
        if isinstance(first, dict) and "turns" in first:
            if len(document) > limits.max_transcripts:
                raise _LineError(1, _too_many_transcripts(limits))
            found = []
            for item in document:
                line = _line_of(item, lines, 1)
                found.append((line, *_transcript_from_object(item, lines, line, limits)))
            return found
        transcript = _transcript_from_messages(document, lambda m: _line_of(m, lines, 1), limits)
        return [(_line_of(document, lines, 1), transcript, True)]
    raise _LineError(1, 'expected a list of messages, {"messages": [...]}, or a transcript object with "turns"')


def _parse_jsonl(text: str, limits: ImportLimits) -> list[tuple[int, Transcript, bool]]:
    records: list[tuple[int, Any]] = []
    for number, line in enumerate(text.split("\n"), start=1):
        if not line.strip():
            continue
        value = _decode(line, _loads_fast, _LineIndex(line, number), limits)
        kind = _record_kind(number, value)
        if kind != "message" and len(records) >= limits.max_transcripts:
            raise _LineError(number, _too_many_transcripts(limits))
        records.append((number, value))
    if not records:
        return []
    kinds = [(number, _record_kind(number, value)) for number, value in records]
    first_kind = kinds[0][1]
    for number, kind in kinds:
        if (kind == "message") != (first_kind == "message"):
            raise _LineError(
                number,
                f"this line is a {kind} but line {kinds[0][0]} is a {first_kind}; a JSONL file holds either one "
                "transcript per line or one message per line",
            )
    if first_kind == "message":
        line_numbers = {id(value): number for number, value in records}
        transcript = _transcript_from_messages([v for _, v in records], lambda m: line_numbers[id(m)], limits)
        return [(records[0][0], transcript, True)]
    # A JSONL record is one line, so every problem in it is on that line: no positions needed.
    return [
        (number, *_transcript_from_object(value, _LineIndex("", number), number, limits)) for number, value in records
    ]


def _record_kind(number: int, value: Any) -> str:
    if isinstance(value, dict):
        if "turns" in value:
            return "transcript"
        if "messages" in value:
            return "message list"
        if "role" in value:
            return "message"
    raise _LineError(number, 'expected a transcript (with "turns"), {"messages": [...]}, or a {role, content} message')


def _transcript_from_object(value: Any, lines: _LineIndex, line: int, limits: ImportLimits) -> tuple[Transcript, bool]:
    """A transcript and whether the importer built it (True) or it came whole with its own id (False)."""
    if not isinstance(value, dict):
        raise _LineError(line, "expected a transcript object")
    if "messages" in value and "turns" not in value:
        messages = value["messages"]
        if not isinstance(messages, list) or not messages:
            raise _LineError(line, '"messages" must be a non-empty list')
        extra = {k: v for k, v in value.items() if k != "messages"}
        transcript = _transcript_from_messages(messages, lambda m: _line_of(m, lines, line), limits)
        if extra:
            transcript.meta = {**transcript.meta, "source_fields": extra}
        return transcript, True
    if isinstance(value.get("turns"), list) and len(value["turns"]) > limits.max_turns:
        raise _LineError(line, _too_many_turns(limits))
    try:
        transcript = Transcript.model_validate(dict(value))
    except ValidationError as exc:
        at = _line_at(value, exc.errors()[0]["loc"], lines, line)
        raise _LineError(at, field_problem(exc)) from None
    if not transcript.turns:
        raise _LineError(line, "the transcript has no turns")
    _check_turns(transcript.turns, line, limits)
    return transcript, "id" not in value


def _line_at(root: Any, loc: Sequence[object], lines: _LineIndex, default: int) -> int:
    """The line of the deepest object or list on the error's path that we know the position of."""
    line = _line_of(root, lines, default)
    node = root
    for key in loc:
        try:
            node = node[key]
        except (KeyError, IndexError, TypeError):
            break
        line = _line_of(node, lines, line)
    return line


def _transcript_from_messages(
    messages: Sequence[Any], line_of: Callable[[Any], int], limits: ImportLimits
) -> Transcript:
    turns: list[Turn] = []
    system_prompt: str | None = None
    for index, message in enumerate(messages):
        where = f"message {index + 1}"
        if not isinstance(message, dict):
            raise _LineError(line_of(message), f"{where}: expected an object with role and content")
        role, content = message.get("role"), message.get("content")
        if not isinstance(role, str) or (role.lower() not in ROLE_ALIASES and role.lower() != "system"):
            raise _LineError(line_of(message), f"{where}: role {_clip(repr(role))} is not one of {MESSAGE_ROLES}")
        if not isinstance(content, str):
            raise _LineError(line_of(message), f"{where}: content must be a string, not {type(content).__name__}")
        if not content.strip():
            raise _LineError(line_of(message), f"{where}: content is empty")
        if len(content) > limits.max_turn_chars:
            raise _LineError(
                line_of(message),
                f"{where}: content is {len(content):,} characters; the most one turn may hold is "
                f"{limits.max_turn_chars:,}",
            )
        if role.lower() == "system":
            if index != 0:
                raise _LineError(line_of(message), f"{where}: a system message may only come first")
            system_prompt = content
            continue
        if len(turns) >= limits.max_turns:
            raise _LineError(line_of(message), _too_many_turns(limits))
        turns.append(Turn(role=ROLE_ALIASES[role.lower()], text=content))  # type: ignore[arg-type]
    if not turns:
        raise _LineError(line_of(messages[0]) if messages else 1, "no patient or therapist messages")
    return Transcript(kind="import", system_prompt=system_prompt, turns=turns)


def _clip(text: str, limit: int = 60) -> str:
    text = text.strip()
    return text if len(text) <= limit else text[: limit - 1] + "…"
