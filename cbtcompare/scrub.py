"""Identity scrubbing: remove model and company names and AI self-descriptions from text shown blind.

The rules are data (cbtcompare/rating_scrub.yaml): names matched as whole words, case-sensitive names,
and self-description patterns whose `who` group is replaced. A loaded list carries a version (the
declared one plus a digest of the file) that is stored beside everything it produced, and can be
extended with study-specific terms (the therapists' own names). Scrubbing returns a new string; it
never changes the original, which the store keeps. This module never imports gradio or a model backend.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from functools import cache, cached_property
from pathlib import Path

import yaml
from pydantic import BaseModel, ConfigDict, Field, field_validator

from cbtcompare.paths import PACKAGE_ROOT

SCRUB_LIST_PATH = PACKAGE_ROOT / "rating_scrub.yaml"
# A name may carry a version or size suffix: "Qwen2.5-7B-Instruct", "Llama 3.1", "GPT-4o", "SmolLM2-135M".
_VERSION_SUFFIX = r"(?:[\s-]?v?\d+(?:\.\d+)*[a-zA-Z]?)?(?:-[A-Za-z0-9]+(?:\.[A-Za-z0-9]+)*)*"
# A case-sensitive name takes a suffix only when it starts with a digit ("Phi-3-mini", not "Meta-analysis").
_NUMERIC_SUFFIX = r"(?:[\s-]?\d+(?:\.\d+)*[a-zA-Z]?(?:-[A-Za-z0-9]+(?:\.[A-Za-z0-9]+)*)*)?"
# Study terms shorter than this, or plain words, are not scrubbed: they would blank ordinary text.
MIN_TERM_LENGTH = 4
COMMON_WORDS = frozenset(
    {"therapist", "patient", "model", "assistant", "base", "tuned", "prompted", "instruct", "chat", "unknown"}
)


class ScrubList(BaseModel):
    """A versioned set of scrub rules; `extra_terms` are literal names added for one study."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    version: str
    replacement: str = "[name removed]"
    names: tuple[str, ...] = ()
    case_sensitive_names: tuple[str, ...] = ()
    self_descriptions: tuple[str, ...] = ()
    extra_terms: tuple[str, ...] = Field((), description="study-specific literal terms, e.g. therapist names")

    @field_validator("self_descriptions")
    @classmethod
    def _patterns_compile(cls, patterns: tuple[str, ...]) -> tuple[str, ...]:
        for pattern in patterns:
            try:
                compiled = re.compile(pattern)
            except re.error as exc:
                raise ValueError(f"self-description pattern {pattern!r} does not compile: {exc}") from exc
            if "who" not in compiled.groupindex:
                raise ValueError(f"self-description pattern {pattern!r} needs a named group (?P<who>...)")
        return patterns

    def with_terms(self, terms: list[str] | tuple[str, ...]) -> ScrubList:
        """This list plus literal terms (kept when at least MIN_TERM_LENGTH long and not a common word)."""
        kept = sorted({t.strip() for t in terms if _worth_scrubbing(t)} | set(self.extra_terms), key=str.lower)
        return self.model_copy(update={"extra_terms": tuple(kept)})

    @cached_property
    def _name_pattern(self) -> re.Pattern[str]:
        loose = [_name_regex(name) + _VERSION_SUFFIX for name in self.names]
        literal = [re.escape(term) for term in sorted(self.extra_terms, key=len, reverse=True)]
        alternatives = sorted(literal, key=len, reverse=True) + sorted(loose, key=len, reverse=True)
        body = "|".join(alternatives) or r"(?!x)x"
        return re.compile(rf"(?<![\w-])(?:{body})(?![\w])", re.IGNORECASE)

    @cached_property
    def _exact_pattern(self) -> re.Pattern[str]:
        names = sorted((_name_regex(n) + _NUMERIC_SUFFIX for n in self.case_sensitive_names), key=len, reverse=True)
        return re.compile(rf"(?<![\w-])(?:{'|'.join(names) or '(?!x)x'})(?![\w-])")

    @cached_property
    def _self_patterns(self) -> tuple[re.Pattern[str], ...]:
        return tuple(re.compile(p) for p in self.self_descriptions)

    def scrub(self, text: str) -> ScrubResult:
        """The text with every identity hint replaced, and what was removed (in order of the rules)."""
        removed: list[str] = []

        def replace_who(match: re.Match[str]) -> str:
            start, end = match.span("who")
            removed.append(match.group("who"))
            whole_start = match.start()
            return match.group(0)[: start - whole_start] + self.replacement + match.group(0)[end - whole_start :]

        def replace_all(match: re.Match[str]) -> str:
            removed.append(match.group(0))
            return self.replacement

        for pattern in self._self_patterns:
            text = pattern.sub(replace_who, text)
        text = self._name_pattern.sub(replace_all, text)
        text = self._exact_pattern.sub(replace_all, text)
        return ScrubResult(text=text, removed=tuple(removed))

    def stored(self) -> dict[str, object]:
        """The list as stored beside a study (everything needed to redo the scrub)."""
        return self.model_dump(mode="json")


@dataclass(frozen=True)
class ScrubResult:
    text: str
    removed: tuple[str, ...]


def _name_regex(name: str) -> str:
    return r"\s*".join(re.escape(part) for part in name.split())


def _worth_scrubbing(term: str) -> bool:
    term = term.strip()
    return len(term) >= MIN_TERM_LENGTH and any(c.isalpha() for c in term) and term.lower() not in COMMON_WORDS


def load_scrub_list(path: str | Path | None = None) -> ScrubList:
    """The shipped scrub list, or any list file by path; its version is the declared one @ a file digest."""
    return _load(Path(path).resolve() if path else SCRUB_LIST_PATH)


@cache
def _load(path: Path) -> ScrubList:
    text = path.read_text(encoding="utf-8")
    document = yaml.safe_load(text)
    if not isinstance(document, dict) or not str(document.get("version", "")).strip():
        raise ValueError(f"{path}: a scrub list is a mapping with a 'version' and name lists")
    digest = hashlib.sha256(text.encode("utf-8")).hexdigest()[:12]
    return ScrubList.model_validate({**document, "version": f"{str(document['version']).strip()}@{digest}"})
