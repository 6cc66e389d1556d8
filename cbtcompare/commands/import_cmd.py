"""`import`: store transcript files (plain text "Patient:/Therapist:", JSON, JSONL) in the store.

Every file is parsed and checked first; only when all of them are valid is anything stored, in one
transaction. An import never changes a stored transcript (see cbtcompare.importers). Errors name the
file and the line and exit 2. This module only parses arguments and prints; it never echoes a database
password.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from cbtcompare.importers import import_files
from cbtcompare.provenance import VARIANTS
from cbtcompare.store import Store


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "import", help="store transcript files (plain text, JSON, JSONL); never changes a stored transcript"
    )
    parser.add_argument("files", nargs="+", type=Path, metavar="FILE", help="transcript files to import")
    parser.add_argument("--db", default=None, help="store URL (default: CBTCOMPARE_DB_URL, else the app's store)")
    parser.add_argument("--therapist", default=None, help="therapist name for transcripts that name none")
    parser.add_argument(
        "--variant",
        default=None,
        choices=VARIANTS,
        help="what produced transcripts that record no variant (default: unassigned, left out of tuned-vs-base "
        "analyses)",
    )
    parser.add_argument("--family", default=None, help="model family for transcripts that record none, e.g. smollm2")
    parser.add_argument("--json", action="store_true", help="print the result as JSON")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    store = Store(args.db)
    report = import_files(args.files, store, therapist=args.therapist, variant=args.variant, family=args.family)
    saved = report.saved
    assert saved is not None  # a store was given
    if args.json:
        summary = {
            "database": store.display_url,
            "files": [{"file": f.source, "transcripts": [t.id for t in f.transcripts]} for f in report.files],
            "stored": saved.stored,
            "unchanged": saved.unchanged,
        }
        print(json.dumps(summary, ensure_ascii=False))
        return 0
    for parsed in report.files:
        print(f"{parsed.source}: {len(parsed.transcripts)} transcript(s)")
    print(f"stored {len(saved.stored)} new transcript(s) in {store.display_url}")
    if saved.unchanged:
        ids = ", ".join(saved.unchanged)
        print(f"{len(saved.unchanged)} already stored with identical content, left unchanged: {ids}")
    return 0
