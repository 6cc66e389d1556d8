"""`export`: write every stored transcript as JSONL (exact) or CSV (one row per turn, for spreadsheets).

JSONL is the store's own format: importing it into an empty store and exporting again gives the same
bytes. CSV is for reading: a text cell that a spreadsheet would run as a formula (starting with =, +,
-, @, tab or carriage return) is prefixed with an apostrophe, so CSV is not for re-importing. Output goes
to stdout, or to --output; it is always UTF-8 with "\\n" line ends. This module never echoes a password.
"""

from __future__ import annotations

import argparse
import csv
import io
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO

from cbtcompare.store import Store

CSV_COLUMNS = [
    "transcript_id",
    "group_id",
    "kind",
    "created_at",
    "therapist_name",
    "turn_index",
    "role",
    "text",
    "tokens",
    "seconds",
    "seed",
]
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("export", help="write every stored transcript as JSONL (exact) or CSV (per turn)")
    parser.add_argument("--db", default=None, help="store URL (default: CBTCOMPARE_DB_URL, else the app's store)")
    parser.add_argument("--format", required=True, choices=["jsonl", "csv"], help="jsonl: exact; csv: one row per turn")
    parser.add_argument("--output", type=Path, default=None, help="file to write (default: stdout)")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    store = Store(args.db)
    with _output(args.output) as out:
        count = store.export_jsonl(out) if args.format == "jsonl" else write_csv(store, out)
    print(f"exported {count} transcript(s) from {store.display_url}", file=sys.stderr)
    return 0


def write_csv(store: Store, out: IO[str]) -> int:
    """One row per turn, transcripts oldest first; returns how many transcripts were written."""
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    count = 0
    for transcript in store.iter_transcripts():
        count += 1
        for index, turn in enumerate(transcript.turns):
            row = [
                transcript.id,
                transcript.group_id,
                transcript.kind,
                transcript.created_at,
                transcript.therapist_name,
                index,
                turn.role,
                turn.text,
                turn.tokens,
                turn.seconds,
                turn.seed,
            ]
            writer.writerow([spreadsheet_safe(v) if isinstance(v, str) else v for v in row])
    return count


def spreadsheet_safe(text: str) -> str:
    """Text a spreadsheet shows as text: a leading formula character is escaped with an apostrophe."""
    return "'" + text if text.startswith(FORMULA_STARTS) else text


@contextmanager
def _output(path: Path | None) -> Iterator[IO[str]]:
    if path is not None:
        with path.open("w", encoding="utf-8", newline="\n") as handle:
            yield handle
        return
    stream = io.TextIOWrapper(sys.stdout.buffer, encoding="utf-8", newline="\n", write_through=True)
    try:
        yield stream
        stream.flush()
    finally:
        stream.detach()  # leave sys.stdout open for whoever prints next
