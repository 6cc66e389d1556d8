"""The crisis screen's English development set of the sixth pass (tests/data/crisis_dev_v6_en.jsonl): written
before that pass changed a rule, for the English rules on preparatory behaviour, access to means, plans and
intent, and for pasts the speaker says are over. Checked here: it reads with benchmarks/crisis_eval.py's loader
(the one reader of a crisis set's lines), it is English, it covers every kind with the counts the pass asked
for, and no line repeats, within it or from any other crisis set (a held-out line in a dev set would be tuning
on the test). The other sets are compared inside the test and never printed: a failure names only this set's
line numbers.
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
    SAFE_CATEGORIES,
    assert_every_line_has_exactly_the_four_fields,
    repeated_statements,
    shared_with_other_sets,
)

DEV_V6_EN = Path(__file__).parent / "data" / "crisis_dev_v6_en.jsonl"

# The kinds the sixth pass works on get 40 lines each, the other crisis kinds 20; pasts that are over 50,
# everyday look-alikes of preparation and means 40, negation 30, the other hard negatives 20.
MIN_LINES = {
    **{kind: 20 for kind in CRISIS_CATEGORIES | SAFE_CATEGORIES},
    **{
        kind: 40
        for kind in (
            "preparatory_behaviour", "access_to_means", "ideation_with_plan", "ideation_with_intent",
            "acute_danger", "harm_to_others", "self_injury", "everyday",
        )
    },
    "past_resolved": 50,
    "negation": 30,
}  # fmt: skip


def coverage_problems(rows: list[dict]) -> list[str]:
    """What the set lacks against the sixth pass's asks, one sentence each; empty when it meets them all."""
    problems = []
    for row in rows:
        if row["category"] not in CRISIS_CATEGORIES | SAFE_CATEGORIES:
            problems.append(f"unknown category {row['category']!r}")
        elif row["label"] != ("crisis" if row["category"] in CRISIS_CATEGORIES else "safe"):
            problems.append(f"{row['category']} line labelled {row['label']}: {row['text'][:60]!r}")
        if row["language"] != "en":
            problems.append(f"a {row['language']!r} line in an English set: {row['text'][:60]!r}")
    counts = Counter(row["category"] for row in rows)
    for kind, least in sorted(MIN_LINES.items()):
        if counts[kind] < least:
            problems.append(f"{kind}: {counts[kind]} lines, at least {least} wanted")
    return problems


def test_dev_v6_en_loads_with_the_benchmark_loader() -> None:
    rows = crisis_eval.load(DEV_V6_EN)
    assert_every_line_has_exactly_the_four_fields(rows, DEV_V6_EN)


def test_dev_v6_en_covers_every_kind_with_the_asked_counts() -> None:
    assert coverage_problems(crisis_eval.load(DEV_V6_EN)) == []


def test_coverage_check_reports_a_short_kind_a_mislabelled_line_and_another_language() -> None:
    rows = [row for row in crisis_eval.load(DEV_V6_EN) if row["category"] != "access_to_means"]
    rows.append({"text": "killing it at work today", "label": "crisis", "category": "idiom", "language": "en"})
    rows.append({"text": "me quiero morir", "label": "crisis", "category": "wish_to_be_dead", "language": "es"})
    problems = coverage_problems(rows)
    assert "access_to_means: 0 lines, at least 40 wanted" in problems
    assert any(problem.startswith("idiom line labelled crisis") for problem in problems)
    assert any(problem.startswith("a 'es' line in an English set") for problem in problems)


def test_dev_v6_en_has_no_line_twice() -> None:
    assert repeated_statements(crisis_eval.load(DEV_V6_EN)) == []


def test_dev_v6_en_shares_no_line_with_any_other_crisis_set() -> None:
    assert shared_with_other_sets(crisis_eval.load(DEV_V6_EN), DEV_V6_EN) == {}
