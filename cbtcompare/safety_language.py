"""Which language a statement is in, for crisis screening: does the screen have rules for it?

What it is for: cbtcompare.safety screens English, Spanish, German, French, Portuguese and Italian with rules of
their own. A statement confidently in any other language (or in a non-Latin script) gets `supported=False`, so
the result can say it was not screened and the resources are shown anyway. Detection is py3langid's offline
naive-Bayes model (shipped inside the wheel, about 0.1 ms a statement, deterministic). Short or ambiguous
text ("ok", "kms", "Mon mari me bat") is often given an odd language at low confidence; then the best of the
supported languages is taken, because calling every "ok" unscreened would put a crisis panel on every greeting.

What it must never do: reach the network, or raise on any input (an empty or letterless text is English).
"""

from __future__ import annotations

import threading
import unicodedata
from dataclasses import dataclass
from functools import cache

SUPPORTED: tuple[str, ...] = ("en", "es", "de", "fr", "pt", "it")
DEFAULT = "en"
# An unsupported language is believed only at or above this confidence; below it, short and mixed texts were
# misread (dev set: every wrong call on a supported-language line was under 0.55; real nl/pl/sv/tr >= 0.97).
CONFIDENT = 0.8
# Among the supported languages, a guess under this is no better than English ("hello" read as Italian at 0.38).
_GUESSING = 0.5
_MAX_CHARS = 2000  # the language of a message is clear from its first couple of thousand characters
_LOCK = threading.Lock()


@dataclass(frozen=True)
class LanguageGuess:
    """`language` is an ISO 639-1 code; `supported` says whether the crisis screen has rules for it."""

    language: str
    confidence: float
    supported: bool


@cache
def _identifiers():  # noqa: ANN202 - py3langid has no type hints
    from py3langid.langid import _load_identifier

    everything = _load_identifier(norm_probs=True)
    supported_only = _load_identifier(norm_probs=True, langs=list(SUPPORTED))
    return everything, supported_only


def _latin_share(text: str) -> float:
    letters = [ch for ch in text if ch.isalpha()]
    if not letters:
        return 1.0
    latin = sum(1 for ch in letters if unicodedata.name(ch, "").startswith("LATIN"))
    return latin / len(letters)


def detect_language(text: str) -> LanguageGuess:
    """The statement's language and whether the crisis screen covers it."""
    sample = text[:_MAX_CHARS]
    if not any(ch.isalpha() for ch in sample):
        return LanguageGuess(DEFAULT, 0.0, True)
    everything, supported_only = _identifiers()
    with _LOCK:
        language, confidence = everything.classify(sample)
        if language not in SUPPORTED:
            if confidence >= CONFIDENT or _latin_share(sample) < 0.5:
                return LanguageGuess(str(language), float(confidence), False)
            language, confidence = supported_only.classify(sample)
            if confidence < _GUESSING:
                return LanguageGuess(DEFAULT, float(confidence), True)
    return LanguageGuess(str(language), float(confidence), True)
