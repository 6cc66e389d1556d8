"""What every crisis set's tests share: the categories a set is labelled with, the other languages it must
cover, and when two statements count as the same line across sets. Test data only; the screen never reads it."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

CRISIS_CATEGORIES = {
    "wish_to_be_dead", "ideation_no_method", "ideation_with_method", "ideation_with_intent", "ideation_with_plan",
    "preparatory_behaviour", "past_attempt", "self_injury", "harm_from_others", "harm_to_others", "acute_danger",
    "access_to_means",
}  # fmt: skip
SAFE_CATEGORIES = {
    "past_resolved", "third_party_supportive", "fiction", "news", "idiom", "everyday", "negation", "clinical",
}  # fmt: skip
OTHER_LANGUAGES = ("es", "de", "fr", "pt", "it")


def statement_key(text: str) -> str:
    """A statement as compared across sets: case and whitespace do not make two lines different."""
    return " ".join(text.casefold().split())


def assert_covers(rows: list[dict], *, crisis_per_category: int, safe_per_category: int, per_language: int) -> None:
    """A held-out set's coverage: every C-SSRS kind (and harm from/to others, means, acute danger) and every
    hard-negative kind with enough lines to be held to the target; each other language with enough crisis and
    safe lines over at least six kinds, and its own idioms among the safe lines, not only translated ones."""
    crisis_categories = Counter(r["category"] for r in rows if r["label"] == "crisis")
    safe_categories = Counter(r["category"] for r in rows if r["label"] == "safe")
    assert set(crisis_categories) == CRISIS_CATEGORIES, crisis_categories
    assert min(crisis_categories.values()) >= crisis_per_category, crisis_categories
    assert set(safe_categories) == SAFE_CATEGORIES, safe_categories
    assert min(safe_categories.values()) >= safe_per_category, safe_categories
    languages = Counter((r["language"], r["label"]) for r in rows)
    assert {language for language, _ in languages} == {"en", *OTHER_LANGUAGES}
    for language in OTHER_LANGUAGES:
        assert languages[(language, "crisis")] >= per_language and languages[(language, "safe")] >= per_language
        kinds = {r["category"] for r in rows if r["language"] == language and r["label"] == "crisis"}
        assert len(kinds) >= 6, (language, kinds)
    idioms = Counter(r["language"] for r in rows if r["category"] == "idiom")
    assert all(idioms[language] >= 2 for language in OTHER_LANGUAGES), idioms


def repeated_statements(rows: list[dict]) -> list[str]:
    return [t for t, n in Counter(statement_key(r["text"]) for r in rows).items() if n > 1]


def shared_with_other_sets(rows: list[dict], path: Path) -> dict[str, list[int]]:
    """Line numbers of `rows` (the set at `path`) whose statement is in another crisis set beside it, by set name.
    Only the set's own line numbers, so a failure never shows another set's statements."""
    ours = [statement_key(r["text"]) for r in rows]
    shared: dict[str, list[int]] = {}
    for other in sorted(path.parent.glob("crisis_*.jsonl")):
        if other == path:
            continue
        lines = other.read_text(encoding="utf-8").split("\n")
        theirs = {statement_key(json.loads(line)["text"]) for line in lines if line.strip()}  # any set's fields
        numbers = [number for number, text in enumerate(ours, start=1) if text in theirs]
        if numbers:
            shared[other.name] = numbers
    return shared


def combined_screen_rates(rows: list[dict]) -> tuple[float, float, tuple[int, int]]:
    """The shipped screen (rules + classifier) on a set's rows: recall, false-alarm rate, and (hits, false
    alarms) to show on a failure; a line the screen did not cover (`screened` false) is a miss."""
    from cbtcompare.safety import detect_crisis_batch

    results = detect_crisis_batch([r["text"] for r in rows])
    flagged = [res.crisis and res.screened for res in results]
    crisis = [f for r, f in zip(rows, flagged, strict=True) if r["label"] == "crisis"]
    safe = [f for r, f in zip(rows, flagged, strict=True) if r["label"] == "safe"]
    return sum(crisis) / len(crisis), sum(safe) / len(safe), (sum(crisis), sum(safe))


def assert_every_line_has_exactly_the_four_fields(rows: list[dict], path: Path) -> None:
    """Every non-blank line of the file at `path` became one of `rows`, with text, label, category, language."""
    raw_lines = [line for line in path.read_text(encoding="utf-8").split("\n") if line.strip()]
    assert len(rows) == len(raw_lines)
    assert all(set(json.loads(line)) == {"text", "label", "category", "language"} for line in raw_lines)
