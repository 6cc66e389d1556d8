"""The crisis screen's held-out set v6 (tests/data/crisis_heldout_v6.jsonl) is frozen: written blind to the rules,
the classifier and every other crisis set, after v5 had been measured on during tuning and before any rule or
classifier change of the next pass of issue 13, committed alone (docs/crisis-heldout-v6.md), and never tuned on. Its
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
    assert_covers,
    combined_screen_rates,
    repeated_statements,
    shared_with_other_sets,
)

DATA = Path(__file__).parent / "data"
HELDOUT_V6 = DATA / "crisis_heldout_v6.jsonl"
HELDOUT_V6_SHA256 = "d7d4341c40335707dfe09725202da9655fdd4f4d85016c6d426e7ef3562b2456"


def test_heldout_v6_is_unchanged_since_it_was_committed() -> None:
    digest = hashlib.sha256(HELDOUT_V6.read_bytes()).hexdigest()
    assert digest == HELDOUT_V6_SHA256, "crisis_heldout_v6.jsonl was edited: it is frozen; write a new set instead"


def test_every_heldout_v6_line_loads_with_exactly_the_four_fields() -> None:
    lines = [line for line in HELDOUT_V6.read_text(encoding="utf-8").split("\n") if line.strip()]
    rows = crisis_eval.load(HELDOUT_V6)
    assert len(rows) == len(lines) >= 460, (len(rows), len(lines))
    # The loader normalises; the file itself carries no other keys either (nothing a reader could silently drop).
    assert [set(json.loads(line)) for line in lines] == [{"text", "label", "category", "language"}] * len(lines)
    assert rows == [json.loads(line) for line in lines]


def test_heldout_v6_covers_every_category_and_language_it_must() -> None:
    rows = crisis_eval.load(HELDOUT_V6)
    labels = Counter(r["label"] for r in rows)
    assert labels["crisis"] >= 260 and labels["safe"] >= 200, labels
    assert_covers(rows, crisis_per_category=16, safe_per_category=14, per_language=14)


def test_heldout_v6_has_no_statement_twice() -> None:
    assert repeated_statements(crisis_eval.load(HELDOUT_V6)) == []


def test_no_heldout_v6_statement_is_in_any_other_crisis_set() -> None:
    """Dev sets (tuned on) and the older held-out sets (measured on while tuning, v5 included) alike. Only v6's own
    line numbers are reported, so a failure never shows another set's statements."""
    names = [p.name for p in DATA.glob("crisis_*.jsonl")]
    assert any(n.startswith("crisis_dev") for n in names), "no development set found to compare against"
    assert any(n.startswith("crisis_heldout_v5") for n in names), "the previous held-out set is missing"
    shared = shared_with_other_sets(crisis_eval.load(HELDOUT_V6), HELDOUT_V6)
    assert shared == {}, f"v6 line numbers also in other sets: {shared}"


def test_crisis_eval_still_measures_v6_by_name() -> None:
    assert crisis_eval.resolve_set("v6").resolve() == HELDOUT_V6.resolve()


def test_heldout_v6_regression_floor_for_the_combined_screen() -> None:
    """A floor, not a target: the screen as it stood before the fifth pass (mpnet head trained on dev v1-v5),
    measured once on this set, never seen before: recall 0.664 (174/262), FPR 0.078 (16/206), English 0.849 /
    0.096 (docs/crisis-heldout-v6.md). The
    targets are recall >= 0.95 with FPR <= 0.10. A change that loses ground here fails; no change may be made
    *because of* a line here. Only the two counts are shown on a failure, never a line."""
    recall, false_alarms, counts = combined_screen_rates(crisis_eval.load(HELDOUT_V6))
    assert recall >= 0.66 and false_alarms <= 0.085, counts
