"""The crisis screen's development set v5 (tests/data/crisis_dev_v5.jsonl): the broad, chat-style training and
tuning set of issue 13. Checked here: it reads with benchmarks/crisis_eval.py's loader (the one reader of a crisis
set's lines), it covers every category in the proportions the issue asks for, and no line of it repeats a line of
any other crisis set (a held-out line in a dev set would be training on the test). The other sets are compared
inside the test and never printed: a failure names only v5's line numbers.
"""

from __future__ import annotations

import json
import sys
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.append(str(ROOT / "benchmarks"))  # appended: its script names never shadow a package
import crisis_eval  # noqa: E402  (a benchmark script: importable once benchmarks/ is on the path)
from crisis_sets import (  # noqa: E402
    CRISIS_CATEGORIES,
    OTHER_LANGUAGES,
    SAFE_CATEGORIES,
    assert_every_line_has_exactly_the_four_fields,
    statement_key,
)

DATA = Path(__file__).parent / "data"
DEV_V5 = DATA / "crisis_dev_v5.jsonl"

MIN_LINES = 600
MIN_ENGLISH_PER_CRISIS_KIND = 25
MIN_ENGLISH_PER_SAFE_KIND = 20
ENGLISH_SHARE = (0.70, 0.80)  # "about 75%"
OTHER_LANGUAGE_SHARE = (0.035, 0.07)  # "about 5% each"
CRISIS_SHARE = (0.50, 0.60)  # "about 55%"


def coverage_problems(rows: list[dict]) -> list[str]:
    """What the set lacks against issue 13's coverage asks, one sentence each; empty when it meets them all."""
    problems = []
    if len(rows) < MIN_LINES:
        problems.append(f"{len(rows)} lines, at least {MIN_LINES} wanted")
    for row in rows:
        expected = "crisis" if row["category"] in CRISIS_CATEGORIES else "safe"
        if row["category"] not in CRISIS_CATEGORIES | SAFE_CATEGORIES:
            problems.append(f"unknown category {row['category']!r}")
        elif row["label"] != expected:
            problems.append(f"{row['category']} line labelled {row['label']}: {row['text'][:60]!r}")
        if row["language"] not in {*OTHER_LANGUAGES, "en"}:
            problems.append(f"unknown language {row['language']!r}")
    english = Counter(row["category"] for row in rows if row["language"] == "en")
    for kind in sorted(CRISIS_CATEGORIES):
        if english[kind] < MIN_ENGLISH_PER_CRISIS_KIND:
            problems.append(f"{kind}: {english[kind]} English lines, at least {MIN_ENGLISH_PER_CRISIS_KIND} wanted")
    for kind in sorted(SAFE_CATEGORIES):
        if english[kind] < MIN_ENGLISH_PER_SAFE_KIND:
            problems.append(f"{kind}: {english[kind]} English lines, at least {MIN_ENGLISH_PER_SAFE_KIND} wanted")
    if rows:
        languages = Counter(row["language"] for row in rows)
        shares = {lang: languages[lang] / len(rows) for lang in {*OTHER_LANGUAGES, "en"}}
        for lang, share in sorted(shares.items()):
            low, high = ENGLISH_SHARE if lang == "en" else OTHER_LANGUAGE_SHARE
            if not low <= share <= high:
                problems.append(f"{lang}: {share:.1%} of lines, {low:.0%}-{high:.0%} wanted")
        crisis_share = sum(row["label"] == "crisis" for row in rows) / len(rows)
        if not CRISIS_SHARE[0] <= crisis_share <= CRISIS_SHARE[1]:
            problems.append(f"crisis: {crisis_share:.1%} of lines, {CRISIS_SHARE[0]:.0%}-{CRISIS_SHARE[1]:.0%} wanted")
    return problems


def test_dev_v5_loads_with_the_benchmark_loader() -> None:
    rows = crisis_eval.load(DEV_V5)
    assert_every_line_has_exactly_the_four_fields(rows, DEV_V5)


def test_dev_v5_covers_every_kind_in_the_asked_proportions() -> None:
    assert coverage_problems(crisis_eval.load(DEV_V5)) == []


def test_coverage_check_reports_a_missing_kind_and_a_mislabelled_line() -> None:
    rows = [row for row in crisis_eval.load(DEV_V5) if row["category"] != "access_to_means"]
    rows.append({"text": "killing it at work today", "label": "crisis", "category": "idiom", "language": "en"})
    problems = coverage_problems(rows)
    assert any(problem.startswith("access_to_means: 0 English lines") for problem in problems)
    assert any(problem.startswith("idiom line labelled crisis") for problem in problems)


def test_dev_v5_has_no_line_twice() -> None:
    seen: dict[str, int] = {}
    repeats = []
    for number, row in enumerate(crisis_eval.load(DEV_V5), start=1):
        key = statement_key(row["text"])
        if key in seen:
            repeats.append((seen[key], number))
        seen.setdefault(key, number)
    assert repeats == []


def test_dev_v5_shares_no_line_with_any_other_crisis_set() -> None:
    mine = {statement_key(row["text"]): number for number, row in enumerate(crisis_eval.load(DEV_V5), start=1)}
    others = sorted(path for path in DATA.glob("crisis_*.jsonl") if path != DEV_V5)
    assert others, "the other crisis sets are missing from tests/data"
    shared = {}
    for path in others:
        texts = {
            statement_key(json.loads(line)["text"])
            for line in path.read_text(encoding="utf-8").splitlines()
            if line.strip()
        }
        lines = sorted(mine[text] for text in texts & mine.keys())
        if lines:
            shared[path.name] = lines  # v5's line numbers only: the other set's text is never shown
    assert shared == {}
