"""Input limits: the one place that says how big an import or upload may be, and the cheap checks that
enforce them before any expensive parsing starts.

Every limit is generous for real sessions (the paper's longest transcript is well under 100 turns of a
few hundred characters) and small enough that a hostile file is refused in milliseconds. Callers put
the limit in their error message, so a person knows what to change. This module never reads a file
itself and never imports anything from the rest of the package.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from itertools import accumulate

INT64_MIN = -(2**63)
INT64_MAX = 2**63 - 1


@dataclass(frozen=True)
class ImportLimits:
    """The largest input an import accepts; each field is checked before (or while) parsing, never after."""

    max_bytes: int = 16 * 1024 * 1024
    """one file (or one upload), in bytes"""
    max_transcripts: int = 10_000
    """transcripts in one file"""
    max_turns: int = 2_000
    """turns in one transcript"""
    max_turn_chars: int = 50_000
    """characters in one turn"""
    max_json_depth: int = 64
    """nesting of JSON objects and lists (the parser recurses once per level)"""


DEFAULT_LIMITS = ImportLimits()


def describe_bytes(count: int) -> str:
    """A byte count as a person reads it: 16 MiB, 512 KiB, 900 bytes."""
    for unit, size in (("MiB", 1024 * 1024), ("KiB", 1024)):
        if count >= size:
            value = count / size
            return f"{value:.0f} {unit}" if value == int(value) else f"{value:.1f} {unit}"
    return f"{count} bytes"


# A JSON string (with escapes; an unterminated one runs to the end, so the scan stays linear), or one
# structural character: enough to measure nesting without parsing.
_JSON_STRING = r'"[^"\\]*(?:\\.[^"\\]*)*(?:"|\\?\Z)'
_JSON_TOKEN = re.compile(_JSON_STRING + r"|[\[\]{}]", re.DOTALL)
_JSON_STRINGS = re.compile(_JSON_STRING, re.DOTALL)
_NOT_BRACKETS = re.compile(r"[^\[\]{}]+")
_BRACKET_STEP = {"[": 1, "{": 1, "]": -1, "}": -1}


def first_offset_too_deep(text: str, max_depth: int) -> int | None:
    """The character offset of the first `[` or `{` nested deeper than `max_depth`, else None.

    Linear in the text; brackets inside JSON strings do not count. Run it before json.loads, whose
    recursion a few thousand levels deep would otherwise end in RecursionError.
    """
    brackets = _NOT_BRACKETS.sub("", _JSON_STRINGS.sub("", text))  # C-speed passes for the common case
    if max(accumulate(map(_BRACKET_STEP.__getitem__, brackets)), default=0) <= max_depth:
        return None
    depth = 0
    for match in _JSON_TOKEN.finditer(text):
        token = match.group()
        if token in "[{":
            depth += 1
            if depth > max_depth:
                return match.start()
        elif token in "]}":
            depth -= 1
    return None
