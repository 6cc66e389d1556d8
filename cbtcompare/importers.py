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
Every error names the file and the line. Everything is validated before anything is stored, and the
store write is one transaction: nothing is ever half-imported. This module never calls a model.
"""

from __future__ import annotations

import io
import json
import json.decoder
import json.scanner
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from cbtcompare.store import ImportFailed, Store
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


# Public entry points ---------------------------------------------------------------------------------


def import_file(
    path: str | Path, store: Store | None = None, *, therapist: str | None = None, meta: dict[str, Any] | None = None
) -> list[Transcript]:
    """Parse a transcript file (any format above); when `store` is given, save all of it in one transaction."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no transcript file at {path}")
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as exc:
        raise ImportFailed(f"{path.name}: not UTF-8 text (byte {exc.start}); save the file as UTF-8") from exc
    transcripts = parse_transcripts(
        text, source=path.name, fmt=detect_format(path, text), therapist=therapist, meta=meta
    )
    if store is not None:
        save_imported(store, transcripts)
    return transcripts


def save_imported(store: Store, transcripts: Sequence[Transcript]) -> list[str]:
    """Store already-validated transcripts in one transaction (through the store's JSONL import)."""
    lines = io.StringIO("".join(t.to_json_line() + "\n" for t in transcripts))
    return store.import_jsonl(lines)


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
        lines = [line for line in text.splitlines() if line.strip()]
        return "jsonl" if len(lines) > 1 and all(line.lstrip().startswith("{") for line in lines) else "json"
    return "text"


def parse_transcripts(
    text: str,
    *,
    source: str = "upload",
    fmt: str = "text",
    therapist: str | None = None,
    meta: dict[str, Any] | None = None,
) -> list[Transcript]:
    """Parse text in one of the formats; ImportFailed names the source and the line of the first problem."""
    parsers = {"text": _parse_plain_text, "json": _parse_json, "jsonl": _parse_jsonl}
    if fmt not in parsers:
        raise ValueError(f"unknown transcript format {fmt!r}; use one of {', '.join(parsers)}")
    try:
        transcripts = parsers[fmt](text)
    except _LineError as exc:
        raise ImportFailed(f"{source}: line {exc.line}: {exc.problem}") from None
    if not transcripts:
        raise ImportFailed(f"{source}: the file holds no transcripts")
    for index, transcript in enumerate(transcripts):
        provenance: dict[str, Any] = {"source": source, "format": fmt}
        if len(transcripts) > 1:
            provenance["source_index"] = index
        transcript.meta = {**provenance, **(meta or {}), **transcript.meta}
        if therapist and not transcript.therapist:
            transcript.therapist = {"name": therapist}
    return transcripts


# Plain text --------------------------------------------------------------------------------------------


class _LineError(Exception):
    def __init__(self, line: int, problem: str):
        self.line, self.problem = line, problem
        super().__init__(f"line {line}: {problem}")


def _parse_plain_text(text: str) -> list[Transcript]:
    turns: list[tuple[int, str, list[str]]] = []  # (line of the label, role, lines)
    for number, line in enumerate(text.splitlines(), start=1):
        match = _LABEL.match(line)
        if match:
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
        parsed.append(Turn(role=role, text=body))  # type: ignore[arg-type]
    return [Transcript(kind="import", turns=parsed)]


# JSON with positions ---------------------------------------------------------------------------------


class _Obj(dict):
    start = 0


class _Arr(list):
    start = 0


def _loads_with_positions(text: str) -> Any:
    """json.loads, but every object and list remembers the character offset where it starts."""
    decoder = json.JSONDecoder()

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


def _line_of(text: str, value: object, default: int = 1) -> int:
    start = getattr(value, "start", None)
    return text.count("\n", 0, start) + 1 if start is not None else default


def _parse_json(text: str) -> list[Transcript]:
    try:
        document = _loads_with_positions(text)
    except json.JSONDecodeError as exc:
        raise _LineError(exc.lineno, f"not valid JSON ({exc.msg} at column {exc.colno})") from None
    if isinstance(document, dict):
        return [_transcript_from_object(document, text, _line_of(text, document))]
    if isinstance(document, list):
        if not document:
            raise _LineError(1, "the list is empty")
        first = document[0]
        if isinstance(first, dict) and "turns" in first:
            return [_transcript_from_object(item, text, _line_of(text, item)) for item in document]
        return [_transcript_from_messages(document, lambda _i, m: _line_of(text, m))]
    raise _LineError(1, 'expected a list of messages, {"messages": [...]}, or a transcript object with "turns"')


def _parse_jsonl(text: str) -> list[Transcript]:
    records: list[tuple[int, Any]] = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            records.append((number, _loads_with_positions(line)))
        except json.JSONDecodeError as exc:
            raise _LineError(number, f"not valid JSON ({exc.msg} at column {exc.colno})") from None
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
        lines = {id(value): number for number, value in records}
        return [_transcript_from_messages([v for _, v in records], lambda _i, m: lines[id(m)])]
    all_lines = text.splitlines()
    return [
        _transcript_from_object(value, all_lines[number - 1], 1, line_offset=number - 1) for number, value in records
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


def _transcript_from_object(value: Any, text: str, line: int, line_offset: int = 0) -> Transcript:
    if not isinstance(value, dict):
        raise _LineError(line + line_offset, "expected a transcript object")
    if "messages" in value and "turns" not in value:
        messages = value["messages"]
        if not isinstance(messages, list) or not messages:
            raise _LineError(line + line_offset, '"messages" must be a non-empty list')
        extra = {k: v for k, v in value.items() if k != "messages"}
        transcript = _transcript_from_messages(messages, lambda _i, m: _line_of(text, m, line) + line_offset)
        if extra:
            transcript.meta = {**transcript.meta, "source_fields": extra}
        return transcript
    try:
        transcript = Transcript.model_validate(dict(value))
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise _LineError(
            _line_at(text, value, first["loc"], line) + line_offset, f"field {where!r}: {first['msg']}"
        ) from None
    if not transcript.turns:
        raise _LineError(line + line_offset, "the transcript has no turns")
    return transcript


def _line_at(text: str, root: Any, loc: Sequence[object], default: int) -> int:
    """The line of the deepest object or list on the error's path that we know the position of."""
    line = _line_of(text, root, default)
    node = root
    for key in loc:
        try:
            node = node[key]
        except (KeyError, IndexError, TypeError):
            break
        if getattr(node, "start", None) is not None:
            line = _line_of(text, node, line)
    return line


def _transcript_from_messages(messages: Sequence[Any], line_of: Any) -> Transcript:
    turns: list[Turn] = []
    system_prompt: str | None = None
    for index, message in enumerate(messages):
        number = line_of(index, message)
        where = f"message {index + 1}"
        if not isinstance(message, dict):
            raise _LineError(number, f"{where}: expected an object with role and content")
        role, content = message.get("role"), message.get("content")
        if not isinstance(role, str) or (role.lower() not in ROLE_ALIASES and role.lower() != "system"):
            raise _LineError(number, f"{where}: role {role!r} is not one of {MESSAGE_ROLES}")
        if not isinstance(content, str):
            raise _LineError(number, f"{where}: content must be a string, not {type(content).__name__}")
        if not content.strip():
            raise _LineError(number, f"{where}: content is empty")
        if role.lower() == "system":
            if index != 0:
                raise _LineError(number, f"{where}: a system message may only come first")
            system_prompt = content
            continue
        turns.append(Turn(role=ROLE_ALIASES[role.lower()], text=content))  # type: ignore[arg-type]
    if not turns:
        raise _LineError(line_of(0, messages[0]) if messages else 1, "no patient or therapist messages")
    return Transcript(kind="import", system_prompt=system_prompt, turns=turns)


def _clip(text: str, limit: int = 60) -> str:
    text = text.strip()
    return text if len(text) <= limit else text[: limit - 1] + "…"
