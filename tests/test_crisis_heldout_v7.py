"""The crisis screen's held-out set v7 (tests/data/crisis_heldout_v7.jsonl) is frozen: written blind to the rules,
the classifier and every other crisis set, after v6 had been measured on during tuning and before any rule or
classifier change of the next pass of issue 13, committed alone (docs/crisis-heldout-v7.md), and never tuned on. Its
sha256 is pinned here so any edit (a "fix" of a line the screen misses is tuning) fails the suite. Its lines are read
with benchmarks/crisis_eval.py's loader, the one reader of a crisis set.
"""

from __future__ import annotations

import hashlib
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
    assert_covers,
    combined_screen_rates,
    repeated_statements,
    shared_with_other_sets,
)

DATA = Path(__file__).parent / "data"
HELDOUT_V7 = DATA / "crisis_heldout_v7.jsonl"
HELDOUT_V7_SHA256 = "be5037d38cc1b3145e858c700f579ff5a3fe8a22b764c3ba93a4b2fe248f30ed"


def test_heldout_v7_is_unchanged_since_it_was_committed() -> None:
    digest = hashlib.sha256(HELDOUT_V7.read_bytes()).hexdigest()
    assert digest == HELDOUT_V7_SHA256, "crisis_heldout_v7.jsonl was edited: it is frozen; write a new set instead"


def test_every_heldout_v7_line_loads_with_exactly_the_four_fields() -> None:
    lines = [line for line in HELDOUT_V7.read_text(encoding="utf-8").split("\n") if line.strip()]
    rows = crisis_eval.load(HELDOUT_V7)
    assert len(rows) == len(lines) >= 460, (len(rows), len(lines))
    # The loader normalises; the file itself carries no other keys either (nothing a reader could silently drop).
    assert [set(json.loads(line)) for line in lines] == [{"text", "label", "category", "language"}] * len(lines)
    assert rows == [json.loads(line) for line in lines]


def test_heldout_v7_covers_every_category_and_language_it_must() -> None:
    rows = crisis_eval.load(HELDOUT_V7)
    labels = Counter(r["label"] for r in rows)
    assert labels["crisis"] >= 260 and labels["safe"] >= 200, labels
    assert_covers(rows, crisis_per_category=16, safe_per_category=14, per_language=14)


def test_heldout_v7_meets_its_own_per_language_bars() -> None:
    """v7's bars above the shared ones: each other language has >= 20 crisis lines over all 12 crisis kinds and
    >= 18 safe lines over >= 6 safe kinds with >= 3 of its own idioms; English has >= 14 lines of every kind."""
    rows = crisis_eval.load(HELDOUT_V7)
    for language in OTHER_LANGUAGES:
        crisis = [r for r in rows if r["language"] == language and r["label"] == "crisis"]
        safe = [r for r in rows if r["language"] == language and r["label"] == "safe"]
        assert len(crisis) >= 20 and {r["category"] for r in crisis} == CRISIS_CATEGORIES, language
        assert len(safe) >= 18 and len({r["category"] for r in safe}) >= 6, language
        assert sum(r["category"] == "idiom" for r in safe) >= 3, language
    english = Counter((r["label"], r["category"]) for r in rows if r["language"] == "en")
    assert all(english[("crisis", c)] >= 14 for c in CRISIS_CATEGORIES), english
    assert all(english[("safe", c)] >= 14 for c in SAFE_CATEGORIES), english


def test_heldout_v7_has_no_statement_twice() -> None:
    assert repeated_statements(crisis_eval.load(HELDOUT_V7)) == []


def test_no_heldout_v7_statement_is_in_any_other_crisis_set() -> None:
    """Dev sets (tuned on) and the older held-out sets (measured on while tuning, v6 included) alike. Only v7's own
    line numbers are reported, so a failure never shows another set's statements."""
    names = [p.name for p in DATA.glob("crisis_*.jsonl")]
    assert any(n.startswith("crisis_dev") for n in names), "no development set found to compare against"
    assert any(n.startswith("crisis_heldout_v6") for n in names), "the previous held-out set is missing"
    shared = shared_with_other_sets(crisis_eval.load(HELDOUT_V7), HELDOUT_V7)
    assert shared == {}, f"v7 line numbers also in other sets: {shared}"


def test_crisis_eval_measures_v7_unless_told_otherwise() -> None:
    assert crisis_eval.DEFAULT_SET == "v7"
    assert crisis_eval.resolve_set(crisis_eval.DEFAULT_SET).resolve() == HELDOUT_V7.resolve()
    assert crisis_eval.resolve_set("v7").resolve() == HELDOUT_V7.resolve()


def test_heldout_v7_regression_floor_for_the_combined_screen() -> None:
    """A floor, not a target: the sixth pass's screen (rules written on dev v6 en and dev v6 intl, mpnet head on
    dev v1-v5) measured once on this set, never seen before: recall 0.664 (178/268), FPR 0.114 (24/210); the screen
    before the pass gave 0.582 / 0.105 (docs/crisis-heldout-v7.md). The targets are recall >= 0.95 with FPR <= 0.10.
    A change that loses ground here fails; no change may be made *because of* a line here. Only the two counts are
    shown on a failure, never a line."""
    recall, false_alarms, counts = combined_screen_rates(crisis_eval.load(HELDOUT_V7))
    assert recall >= 0.66 and false_alarms <= 0.12, counts
