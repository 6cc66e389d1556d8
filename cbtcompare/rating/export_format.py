"""How rating exports are written and read back: spreadsheet-safe CSV cells, strict JSON, checked scores.

CSV: a cell a spreadsheet would run as a formula (one starting with = + - @, a tab or a carriage
return, also their full-width forms, after any leading quotes or spaces) is written with a leading
apostrophe (OWASP, "CSV Injection"), and only such cells, so reading it back removes exactly that one
apostrophe and gives the original text. JSON: NaN and infinities become null and nothing else is
changed; the writer refuses to emit the non-standard NaN token, and escapes the line separators
U+0085/U+2028/U+2029 so a JSONL record is always one line. Reading a ratings CSV back checks every
score against its rubric's range and names the line and column of the first one outside it.
This module never imports gradio.
"""

from __future__ import annotations

import csv
import json
import math
import re
from collections.abc import Iterable, Mapping
from functools import cache
from pathlib import Path
from typing import IO

import pandas as pd

from cbtcompare.ctrs.rubric import load_rubric, rubric_names

# After any run of apostrophes and spaces, a character that starts a formula (ASCII or full-width).
_FORMULA_START = re.compile(r"^['\s]*[=+\-@\t\r\uff1d\uff0b\uff0d\uff20]")
_NEUTRALISED = re.compile(r"^'['\s]*[=+\-@\t\r\uff1d\uff0b\uff0d\uff20]")
DEFAULT_RUBRIC = "paper"
LONG_COLUMNS = ("transcript_id", "item", "score")


class RatingsFileError(ValueError):
    """A ratings file that cannot be read as it stands; the message names the line and column to fix."""


def neutralise_cell(value: object) -> object:
    """A text cell a spreadsheet will show as text, never run; any other value unchanged."""
    if isinstance(value, str) and _FORMULA_START.match(value):
        return "'" + value
    return value


def restore_cell(value: str) -> str:
    """The original text of a cell written by neutralise_cell."""
    return value[1:] if _NEUTRALISED.match(value) else value


def write_csv(out: IO[str], columns: list[str], records: Iterable[Mapping[str, object]]) -> int:
    """Header plus one row per record (None as an empty cell, text cells neutralised); returns the rows."""
    writer = csv.DictWriter(out, fieldnames=columns, lineterminator="\n", extrasaction="ignore")
    writer.writeheader()
    count = 0
    for record in records:
        writer.writerow({k: "" if v is None else neutralise_cell(v) for k, v in record.items()})
        count += 1
    return count


def write_frame_csv(frame: pd.DataFrame, out: IO[str]) -> int:
    """A table as CSV, text cells neutralised and missing numbers empty; returns the rows."""
    records = frame.astype(object).where(frame.notna(), None).to_dict("records")
    return write_csv(out, [str(c) for c in frame.columns], records)


def json_safe(value: object) -> object:
    """The value with every NaN or infinity (at any depth) replaced by None."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, Mapping):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [json_safe(v) for v in value]
    return value


# Line breaks other than \n that str.splitlines() and some JSONL readers split on; JSON allows them raw.
_OTHER_LINE_BREAKS = {"\u0085": "\\u0085", "\u2028": "\\u2028", "\u2029": "\\u2029"}


def dumps(value: object) -> str:
    """Standard JSON on one line (null where a number is missing), never the NaN or Infinity tokens, and
    no raw U+0085/U+2028/U+2029 (escaped), so every JSONL reader sees one record per line."""
    text = json.dumps(json_safe(value), ensure_ascii=False, allow_nan=False)
    for raw, escaped in _OTHER_LINE_BREAKS.items():
        text = text.replace(raw, escaped)
    return text


def frame_records(frame: pd.DataFrame) -> list[dict]:
    """A table as JSON-ready records, NaN as None."""
    return json.loads(frame.to_json(orient="records"))


@cache
def rubric_range(rubric_id: str) -> tuple[int, int]:
    """(min, max) of a shipped rubric, by id or short name."""
    for name in rubric_names():
        rubric = load_rubric(name)
        if rubric_id in (rubric.id, name):
            return rubric.scale.min, rubric.scale.max
    raise KeyError(rubric_id)


def checked_score(raw: str, *, line: int, column: str, rubric_id: str | None) -> int:
    """One score cell as an integer inside its rubric's range, or RatingsFileError saying where and why."""
    where = f"line {line}, column {column}"
    wanted = rubric_id or load_rubric(DEFAULT_RUBRIC).id
    try:
        low, high = rubric_range(wanted)
    except KeyError:
        raise RatingsFileError(f"{where}: unknown rubric {wanted!r}; use one of {', '.join(rubric_names())}") from None
    text = raw.strip()
    try:
        number = float(text)
    except ValueError:
        raise RatingsFileError(f"{where}: {text!r} is not a score; give a whole number from {low} to {high}") from None
    if not math.isfinite(number) or number != int(number):
        raise RatingsFileError(f"{where}: {text!r} is not a score; give a whole number from {low} to {high}")
    if not low <= number <= high:
        raise RatingsFileError(
            f"{where}: score {text} is outside {low}-{high}, the range of rubric {wanted}; fix or remove the row"
        )
    return int(number)


def read_long_ratings(source: str | Path | IO[str]) -> pd.DataFrame:
    """A long ratings CSV (transcript_id, item, score; optional rubric_id and any other column), as written
    by `rating export --format long`, with every score checked against its rubric's range (the paper rubric
    when there is no rubric_id column). Empty scores stay missing."""
    handle = open(source, encoding="utf-8", newline="") if isinstance(source, str | Path) else source  # noqa: SIM115
    try:
        reader = csv.DictReader(handle)
        columns = reader.fieldnames or []
        missing = [c for c in LONG_COLUMNS if c not in columns]
        if missing:
            raise RatingsFileError(
                f"line 1: missing column(s) {', '.join(missing)}; a ratings CSV needs {', '.join(LONG_COLUMNS)}"
            )
        rows = []
        for line, row in enumerate(reader, start=2):
            if None in row:
                raise RatingsFileError(f"line {line}: more cells than the {len(columns)} columns of the header")
            record: dict[str, object] = {k: restore_cell(v or "") for k, v in row.items()}
            raw = (row["score"] or "").strip()
            rubric_id = row.get("rubric_id") or None
            record["score"] = checked_score(raw, line=line, column="score", rubric_id=rubric_id) if raw else None
            rows.append(record)
    except csv.Error as exc:
        raise RatingsFileError(f"not a readable CSV: {exc}") from exc
    finally:
        if handle is not source:
            handle.close()
    frame = pd.DataFrame(rows, columns=columns)
    frame["score"] = pd.to_numeric(frame["score"], errors="coerce")
    return frame
