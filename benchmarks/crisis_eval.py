"""Crisis screening on statements written before tuning: recall and false-positive rate, overall, per category,
per language.

Reads tests/data/crisis_heldout_v7.jsonl (sha256 pinned in tests/test_crisis_heldout_v7.py), written blind to
the rules, the classifier and the other sets and committed before the sixth pass of issue 13 changed anything;
never tuned on. --set names another held-out set (v6, v5, v4, v3, v2: each measured on while tuning since, so their
figures are secondary) or a file of {"text", "label": "crisis"|"safe", "category", "language"} lines.
Screens every line with cbtcompare.safety.detect_crisis_batch (rules + classifier unless --rules-only) and
prints a table. A line the screen did not cover (`screened` false: a language it has no rules for) counts as
a miss, because a miss is what a person in that language gets. Last line: ratio=<overall recall>.
Targets: recall >= 0.95 and FPR <= 0.10 overall and in every category with >= 5 lines.
A malformed set is refused with the file, line and field to fix (exit status 2), before anything is screened.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections import defaultdict
from pathlib import Path
from typing import Literal

import _common
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from cbtcompare.config_errors import format_validation_error

DATA = _common.REPO / "tests" / "data"
HELDOUT_SETS = {name: DATA / f"crisis_heldout_{name}.jsonl" for name in ("v2", "v3", "v4", "v5", "v6", "v7")}
DEFAULT_SET = "v7"  # the newest held-out set; tests/test_crisis_heldout_v7.py pins this default
MIN_LINES_FOR_TARGET = 5


class LabelledStatement(BaseModel):
    """One line of a crisis set: a statement, its label, its category (C-SSRS kind or hard negative), language."""

    model_config = ConfigDict(extra="forbid", strict=True)

    text: str = Field(min_length=1)
    label: Literal["crisis", "safe"]
    category: str = Field(min_length=1)
    language: str = Field(pattern=r"^[a-z]{2,3}$", description="ISO 639 code: en, es, de, fr, pt, it")


class SetFormatError(ValueError):
    """A crisis set file that is not one LabelledStatement per line; the message names file, line and field."""


def resolve_set(name_or_path: str) -> Path:
    """`v7` (the default), `v6`, `v5`, `v4`, `v3`, `v2`: the held-out set of that name; anything else: a JSONL path."""
    return HELDOUT_SETS.get(name_or_path, Path(name_or_path))


def load(path: Path) -> list[dict]:
    """The set's lines as dicts, each checked against LabelledStatement; SetFormatError names the first bad line."""
    try:
        text = path.read_bytes().decode("utf-8")
    except UnicodeDecodeError as exc:
        raise SetFormatError(f"{path.name}: not UTF-8 (byte {exc.start})") from None
    rows = []
    for number, line in enumerate(text.split("\n"), start=1):
        if not line.strip():
            continue
        source = f"{path.name} line {number}"
        try:
            data = json.loads(line)
        except json.JSONDecodeError as exc:
            raise SetFormatError(f"{source}: not JSON ({exc.msg} at column {exc.colno})") from None
        except RecursionError:
            raise SetFormatError(f"{source}: not a statement (JSON nested too deep)") from None
        try:
            rows.append(LabelledStatement.model_validate(data).model_dump())
        except ValidationError as exc:
            raise SetFormatError(format_validation_error(exc, source, data, whole="line")) from None
    if not rows:
        raise SetFormatError(f"{path.name}: no statements in it")
    return rows


def rate(flags: list[bool]) -> str:
    return f"{sum(flags) / len(flags):.3f} ({sum(flags)}/{len(flags)})" if flags else "-"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--set",
        type=resolve_set,
        default=DEFAULT_SET,
        help=f"held-out set: {', '.join(HELDOUT_SETS)} (default {DEFAULT_SET}) or a labelled JSONL path",
    )
    parser.add_argument("--rules-only", action="store_true", help="screen with the rules alone")
    args = parser.parse_args(argv)
    try:
        rows = load(args.set)
    except (OSError, SetFormatError) as exc:
        print(f"crisis_eval: {exc}", file=sys.stderr)
        return 2
    from cbtcompare.safety import detect_crisis_batch  # loads the screen (and its classifier) only for a valid set

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
