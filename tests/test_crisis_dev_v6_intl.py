"""The crisis screen's development set for the five other languages (tests/data/crisis_dev_v6_intl.jsonl): the
sixth pass's tuning set for the Spanish, German, French, Portuguese and Italian rules, written before those rules
were changed. Checked here: it reads with benchmarks/crisis_eval.py's loader, every language has enough crisis and
safe lines over every kind (idioms of its own with death and kill words among them), and no line repeats, nor
repeats a line of any other crisis set. Other sets are compared inside the test and never printed: a failure names
only this set's line numbers.
"""

from __future__ import annotations

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
    repeated_statements,
    shared_with_other_sets,
)

DEV_V6_INTL = Path(__file__).parent / "data" / "crisis_dev_v6_intl.jsonl"

MIN_CRISIS_PER_LANGUAGE = 60
MIN_SAFE_PER_LANGUAGE = 45
MIN_PER_CRISIS_KIND = 4  # in every language
MIN_PER_SAFE_KIND = 4
MIN_IDIOMS = 8


def coverage_problems(rows: list[dict]) -> list[str]:
    """What the set lacks against the sixth pass's asks, one sentence each; empty when it meets them all."""
    problems = []
    for row in rows:
        expected = "crisis" if row["category"] in CRISIS_CATEGORIES else "safe"
        if row["category"] not in CRISIS_CATEGORIES | SAFE_CATEGORIES:
            problems.append(f"unknown category {row['category']!r}")
        elif row["label"] != expected:
            problems.append(f"{row['category']} line labelled {row['label']}: {row['text'][:60]!r}")
        if row["language"] not in OTHER_LANGUAGES:
            problems.append(f"language {row['language']!r}: this set is for {OTHER_LANGUAGES} only")
    for language in OTHER_LANGUAGES:
        ours = [row for row in rows if row["language"] == language]
        labels = Counter(row["label"] for row in ours)
        if labels["crisis"] < MIN_CRISIS_PER_LANGUAGE or labels["safe"] < MIN_SAFE_PER_LANGUAGE:
            problems.append(f"{language}: {labels['crisis']} crisis / {labels['safe']} safe lines")
        kinds = Counter(row["category"] for row in ours)
        for kind in sorted(CRISIS_CATEGORIES | SAFE_CATEGORIES):
            wanted = (
                MIN_IDIOMS
                if kind == "idiom"
                else MIN_PER_CRISIS_KIND
                if kind in CRISIS_CATEGORIES
                else MIN_PER_SAFE_KIND
            )
            if kinds[kind] < wanted:
                problems.append(f"{language} {kind}: {kinds[kind]} lines, at least {wanted} wanted")
    return problems


def test_dev_v6_intl_loads_with_the_benchmark_loader() -> None:
    rows = crisis_eval.load(DEV_V6_INTL)
    assert_every_line_has_exactly_the_four_fields(rows, DEV_V6_INTL)


def test_dev_v6_intl_covers_every_kind_in_every_language() -> None:
    assert coverage_problems(crisis_eval.load(DEV_V6_INTL)) == []


def test_coverage_check_reports_a_missing_kind_and_a_mislabelled_line() -> None:
    rows = [r for r in crisis_eval.load(DEV_V6_INTL) if not (r["language"] == "de" and r["category"] == "idiom")]
    rows.append({"text": "ich lach mich schlapp", "label": "crisis", "category": "idiom", "language": "de"})
    problems = coverage_problems(rows)
    assert "de idiom: 1 lines, at least 8 wanted" in problems
    assert any(problem.startswith("idiom line labelled crisis") for problem in problems)


def test_dev_v6_intl_has_no_line_twice() -> None:
    assert repeated_statements(crisis_eval.load(DEV_V6_INTL)) == []


def test_dev_v6_intl_shares_no_line_with_any_other_crisis_set() -> None:
    assert shared_with_other_sets(crisis_eval.load(DEV_V6_INTL), DEV_V6_INTL) == {}
