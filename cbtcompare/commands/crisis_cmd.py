"""`crisis-check`: screen statements for crisis language, one per stdin line, one JSON object per stdout line.

The output contract is used by checks outside the test suite; keep it exactly:
{"text": ..., "crisis": true|false, "categories": [...], "screened": true|false, "language": "en"}, in input
order. Blank lines are skipped. "screened" is false when the line is in a language the screen has no rules for
(then "crisis" false means "not read", not "safe"); "language" is the detected ISO 639-1 code.
`--explain` adds "kinds" (the C-SSRS-organised categories), "matched" (the rules, or the classifier, that
fired, each with its kind), "screened_by" and "probability".
Screening is cbtcompare.safety's: the rules OR the local MiniLM classifier (`--rules-only` skips it; when
it cannot be loaded the command says so once on stderr and screens with the rules). Lines are screened in
the batches they arrive in, so a file is fast and an interactive user still gets an answer per line.
It never sends text anywhere.
"""

from __future__ import annotations

import argparse
import codecs
import io
import json
import os
import re
import sys
from collections.abc import Iterator
from typing import TextIO

from cbtcompare.safety import detect_crisis_batch

_READ_BYTES = 1 << 16
_NEWLINE = re.compile(r"\r\n|\r|\n")


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "crisis-check",
        help="read statements (one per line) on stdin, print one JSON crisis verdict per line",
    )
    parser.add_argument(
        "--explain", action="store_true", help='add "matched" (what fired), "screened_by" and "probability"'
    )
    parser.add_argument("--rules-only", action="store_true", help="screen with the rules alone (no classifier)")
    parser.set_defaults(handler=run)


def line_batches(stream: TextIO) -> Iterator[list[str]]:
    """The stream's lines (without line ends), grouped as they become available: each read takes whatever the
    pipe holds, so piped files come in large batches and typed lines one at a time."""
    try:
        fd = stream.fileno()
    except (AttributeError, OSError, io.UnsupportedOperation):
        for line in stream:
            yield [line.rstrip("\r\n")]
        return
    decoder = codecs.getincrementaldecoder(stream.encoding or "utf-8")(errors=stream.errors or "strict")
    pending = ""
    while True:
        chunk = os.read(fd, _READ_BYTES)
        pending += decoder.decode(chunk, final=not chunk)
        *lines, pending = _NEWLINE.split(pending)
        if lines:
            yield lines
        if not chunk:
            break
    if pending:
        yield [pending]


def run(args: argparse.Namespace) -> int:
    warned = False
    for batch in line_batches(sys.stdin):
        texts = [text for text in batch if text.strip()]
        if not texts:
            continue
        results = detect_crisis_batch(texts, use_classifier=not args.rules_only)
        for text, result in zip(texts, results, strict=True):
            model_missing = result.screened_by == "rules" and result.probability is None and result.language == "en"
            if model_missing and not args.rules_only and not warned:
                print(f"crisis-check: screening with the rules only: {result.fallback_reason}", file=sys.stderr)
                warned = True
            row: dict[str, object] = {"text": text, "crisis": result.crisis, "categories": list(result.categories)}
            row.update(screened=result.screened, language=result.language)
            if args.explain:
                row.update(kinds=list(result.kinds), matched=list(result.matched), screened_by=result.screened_by)
                row["probability"] = None if result.probability is None else round(result.probability, 4)
            print(json.dumps(row))
        sys.stdout.flush()
    return 0
