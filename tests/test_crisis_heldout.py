"""The crisis screen's held-out set v3 (tests/data/crisis_heldout_v3.jsonl) is frozen: written before any rule
or classifier change of issue 13's second pass, committed alone, and never tuned on. Its sha256 is pinned
here so any edit (a "fix" of a line the screen misses is tuning) fails the suite; the figures it gives are
benchmarks/crisis_eval.py's, not this file's.
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from pathlib import Path

from crisis_sets import combined_screen_rates

HELDOUT_V3 = Path(__file__).parent / "data" / "crisis_heldout_v3.jsonl"
HELDOUT_V3_SHA256 = "5e7568d9f3ee847c7d86e1e89da0c00b346f752b08c0f70c1202b57309975232"
DEV_V3 = Path(__file__).parent / "data" / "crisis_dev_v3.jsonl"


def _rows(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def test_heldout_v3_is_unchanged_since_it_was_committed() -> None:
    digest = hashlib.sha256(HELDOUT_V3.read_bytes()).hexdigest()
    assert digest == HELDOUT_V3_SHA256, "crisis_heldout_v3.jsonl was edited: it is frozen; write a new set instead"


def test_heldout_v3_covers_every_category_and_language_it_must() -> None:
    rows = _rows(HELDOUT_V3)
    assert {tuple(sorted(r)) for r in rows} == {("category", "label", "language", "text")}
    labels = Counter(r["label"] for r in rows)
    assert labels["crisis"] >= 80 and labels["safe"] >= 80 and set(labels) == {"crisis", "safe"}
    crisis_categories = Counter(r["category"] for r in rows if r["label"] == "crisis")
    required = {
        "wish_to_be_dead", "ideation_no_method", "ideation_with_method", "ideation_with_intent",
        "ideation_with_plan", "preparatory_behaviour", "past_attempt", "self_injury", "harm_from_others",
        "harm_to_others", "acute_danger", "access_to_means",
    }  # fmt: skip
    assert {c: n for c, n in crisis_categories.items() if n >= 5}.keys() >= required
    safe_categories = {r["category"] for r in rows if r["label"] == "safe"}
    assert safe_categories >= {"negation", "past_resolved", "third_party_supportive", "fiction", "news", "idiom"}
    per_language = Counter((r["language"], r["label"]) for r in rows)
    for language in ("es", "de", "fr", "pt", "it"):
        assert per_language[(language, "crisis")] >= 8 and per_language[(language, "safe")] >= 8, language


def test_no_heldout_v3_statement_is_in_a_development_set() -> None:
    heldout = {r["text"].casefold().strip() for r in _rows(HELDOUT_V3)}
    dev_sets = [p for p in HELDOUT_V3.parent.glob("crisis_*.jsonl") if p != HELDOUT_V3]
    dev = {r["text"].casefold().strip() for p in dev_sets for r in _rows(p)}
    assert not heldout & dev


def test_heldout_v3_regression_floor_for_the_combined_screen() -> None:
    """A floor, not a target: first measured after the second pass at recall 0.871, FPR 0.093 (the targets are
    recall >= 0.95 with FPR <= 0.10; see docs/crisis-screen.md). A change that loses ground here fails. This set has
    been measured on while tuning since, so this is a regression check, no longer a figure on unseen text; the
    honest floor is held-out v6's (tests/test_crisis_heldout_v6.py)."""
    recall, false_alarms, counts = combined_screen_rates(_rows(HELDOUT_V3))
    assert recall >= 0.86 and false_alarms <= 0.10, counts
