"""Crisis screening on statements written before tuning: recall and false-positive rate, overall, per category,
per language.

Reads tests/data/crisis_heldout_v3.jsonl (written and committed before the second pass of issue 13 changed any
rule or the classifier; its sha256 is pinned in tests/test_crisis_heldout.py; never tuned on) unless --set names
another file of {"text", "label": "crisis"|"safe", "category", "language"} lines. crisis_heldout_v2.jsonl, the
first pass's held-out set, has been measured on while tuning since, so it is a secondary figure now.
Screens every line with cbtcompare.safety.detect_crisis_batch (rules + classifier unless --rules-only) and
prints a table. A line the screen did not cover (`screened` false: a language it has no rules for) counts as
a miss, because a miss is what a person in that language gets. Last line: ratio=<overall recall>.
Targets: recall >= 0.95 and FPR <= 0.10 overall and in every category with >= 5 lines.
"""

from __future__ import annotations

import argparse
import json
import time
from collections import defaultdict
from pathlib import Path

import _common

from cbtcompare.safety import detect_crisis_batch

HELDOUT = _common.REPO / "tests" / "data" / "crisis_heldout_v3.jsonl"
MIN_LINES_FOR_TARGET = 5


def load(path: Path) -> list[dict]:
    with path.open(encoding="utf-8") as handle:
        return [json.loads(line) for line in handle if line.strip()]


def rate(flags: list[bool]) -> str:
    return f"{sum(flags) / len(flags):.3f} ({sum(flags)}/{len(flags)})" if flags else "-"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--set", type=Path, default=HELDOUT, help="labelled JSONL to measure on")
    parser.add_argument("--rules-only", action="store_true", help="screen with the rules alone")
    args = parser.parse_args(argv)
    rows = load(args.set)
    started = time.perf_counter()
    results = detect_crisis_batch([r["text"] for r in rows], use_classifier=not args.rules_only)
    seconds = time.perf_counter() - started
    by_category: dict[tuple[str, str], list[bool]] = defaultdict(list)
    by_language: dict[tuple[str, str], list[bool]] = defaultdict(list)
    overall: dict[str, list[bool]] = defaultdict(list)
    for row, result in zip(rows, results, strict=True):
        flagged = bool(result.crisis) and getattr(result, "screened", True)
        overall[row["label"]].append(flagged)
        by_category[(row["label"], row["category"])].append(flagged)
        by_language[(row["label"], row["language"])].append(flagged)
    screened_by = sorted({getattr(r, "screened_by", "?") for r in results})
    print(f"set: {args.set.name}, {len(rows)} lines, screened by {screened_by}, {seconds:.2f} s")
    print(f"overall  recall {rate(overall['crisis'])}   FPR {rate(overall['safe'])}")
    below = []
    for (label, category), flags in sorted(by_category.items()):
        what = "recall" if label == "crisis" else "FPR   "
        value = sum(flags) / len(flags)
        ok = value >= 0.95 if label == "crisis" else value <= 0.10
        mark = "" if ok or len(flags) < MIN_LINES_FOR_TARGET else "   BELOW TARGET"
        if mark:
            below.append(category)
        print(f"  {label:6} {category:24} {what} {rate(flags)}{mark}")
    for language in sorted({lang for _, lang in by_language}):
        print(
            f"  language {language}: recall {rate(by_language[('crisis', language)])}"
            f"   FPR {rate(by_language[('safe', language)])}"
        )
    print(f"categories below target: {below or 'none'}")
    recall = sum(overall["crisis"]) / len(overall["crisis"])
    print(f"ratio={recall:.4f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
