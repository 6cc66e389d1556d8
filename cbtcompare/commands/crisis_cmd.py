"""`crisis-check`: screen statements for crisis language, one per stdin line, one JSON object per stdout line.

The output contract is used by checks outside the test suite; keep it exactly:
{"text": ..., "crisis": true|false, "categories": [...]}. Blank lines are skipped. `--explain` adds the
rules that fired as "matched". It never sends text anywhere; it only runs cbtcompare.safety's rules.
"""

from __future__ import annotations

import argparse
import json
import sys

from cbtcompare.safety import detect_crisis


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "crisis-check",
        help="read statements (one per line) on stdin, print one JSON crisis verdict per line",
    )
    parser.add_argument("--explain", action="store_true", help='add "matched": the rules and words that fired')
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    for line in sys.stdin:
        text = line.rstrip("\r\n")
        if not text.strip():
            continue
        result = detect_crisis(text)
        row: dict[str, object] = {"text": text, "crisis": result.crisis, "categories": list(result.categories)}
        if args.explain:
            row["matched"] = list(result.matched)
        print(json.dumps(row), flush=True)
    return 0
