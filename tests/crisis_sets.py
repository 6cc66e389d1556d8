"""What every crisis set's tests share: the categories a set is labelled with, the other languages it must
cover, and when two statements count as the same line across sets. Test data only; the screen never reads it."""

from __future__ import annotations

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
