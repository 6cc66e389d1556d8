"""Identity scrubbing: remove model, author and training descriptions from text shown blind.

The rules are data (cbtcompare/rating_scrub.yaml): training descriptions ("fine-tuned on ... by ..."),
self-descriptions whose `who` group is replaced ("an AI developed by X"), identifiers (HF repo ids,
weights files, sizes, versions, quantisation tags, handles), names matched as whole words with an
optional version suffix, and case-sensitive names. A loaded list carries a version (the declared one plus
a digest of the file) that is stored beside everything it produced, and can be extended with
study-specific terms (the therapists' own names). Scrubbing returns a new string; it never changes the
original, which the store keeps. It is idempotent: the rules run until nothing more matches, and no rule
matches a replacement. This module never imports gradio or a model backend.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import cache, cached_property
from pathlib import Path

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from cbtcompare.config_errors import format_validation_error
from cbtcompare.content_hash import content_version
from cbtcompare.paths import PACKAGE_ROOT

SCRUB_LIST_PATH = PACKAGE_ROOT / "rating_scrub.yaml"
# A name may carry a version or size suffix: "Qwen2.5-7B-Instruct", "Llama 3.1", "GPT-4o", "SmolLM2-135M",
# "Mixtral 8x7B", "Gemma 2 9B".
_VERSION_SUFFIX = (
    r"(?:[\s-]?v?\d+(?:\.\d+)*(?:x\d+)?[a-zA-Z]?)?(?:-[A-Za-z0-9]+(?:\.[A-Za-z0-9]+)*)*"
    r"(?:[\s-]\d+(?:\.\d+)?(?:x\d+)?[BbMm](?![\w]))?"
)
# A case-sensitive name takes a suffix only when it starts with a digit ("Phi-3-mini", not "Meta-analysis").
_NUMERIC_SUFFIX = r"(?:[\s-]?\d+(?:\.\d+)*[a-zA-Z]?(?:-[A-Za-z0-9]+(?:\.[A-Za-z0-9]+)*)*)?"
# Study terms shorter than this, or plain words, are not scrubbed: they would blank ordinary text.
MIN_TERM_LENGTH = 4
COMMON_WORDS = frozenset(
    {"therapist", "patient", "model", "assistant", "base", "tuned", "prompted", "instruct", "chat", "unknown"}
)
# Each pass removes characters of the original text (no rule matches a replacement), so a fixpoint comes
# within a few passes; the bound only guards against a rule file that breaks that promise.
MAX_PASSES = 8
_NEVER = r"(?!x)x"


def _compiled(patterns: tuple[str, ...], *, who: bool) -> tuple[str, ...]:
    for pattern in patterns:
        try:
            compiled = re.compile(pattern)
        except re.error as exc:
            raise ValueError(f"scrub pattern {pattern!r} does not compile: {exc}") from exc
        if who and "who" not in compiled.groupindex:
            raise ValueError(f"self-description pattern {pattern!r} needs a named group (?P<who>...)")
    return patterns


class ScrubList(BaseModel):
    """A versioned set of scrub rules; `extra_terms` are literal names added for one study."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    version: str = Field(description="the declared version; stored as <version>@<file digest> with each study")
    replacement: str = Field("[name removed]", description="what a removed name or identifier becomes")
    details_replacement: str = Field("[details removed]", description="what a removed training description becomes")
    names: tuple[str, ...] = Field((), description="model and vendor names, matched whole-word, any case")
    case_sensitive_names: tuple[str, ...] = Field((), description="names that are ordinary words too, as written")
    training_descriptions: tuple[str, ...] = Field((), description="regexes; the whole match is replaced")
    self_descriptions: tuple[str, ...] = Field((), description="regexes; their (?P<who>...) group is replaced")
    identifiers: tuple[str, ...] = Field((), description="regexes tried before names; the whole match is replaced")
    markers: tuple[str, ...] = Field((), description="regexes tried after names; the whole match is replaced")
    extra_terms: tuple[str, ...] = Field((), description="study-specific literal terms, e.g. therapist names")

    @field_validator("training_descriptions", "identifiers", "markers")
    @classmethod
    def _patterns_compile(cls, patterns: tuple[str, ...]) -> tuple[str, ...]:
        return _compiled(patterns, who=False)

    @field_validator("self_descriptions")
    @classmethod
    def _who_patterns_compile(cls, patterns: tuple[str, ...]) -> tuple[str, ...]:
        return _compiled(patterns, who=True)

    def with_terms(self, terms: list[str] | tuple[str, ...]) -> ScrubList:
        """This list plus literal terms (kept when at least MIN_TERM_LENGTH long and not a common word)."""
        kept = sorted({t.strip() for t in terms if _worth_scrubbing(t)} | set(self.extra_terms), key=str.lower)
        # A new model, not model_copy: a copy would carry this list's compiled patterns, without the terms.
        return ScrubList.model_validate({**self.model_dump(), "extra_terms": tuple(kept)})

    @cached_property
    def _training_pattern(self) -> re.Pattern[str]:
        return re.compile("|".join(f"(?:{p})" for p in self.training_descriptions) or _NEVER)

    @cached_property
    def _self_patterns(self) -> tuple[re.Pattern[str], ...]:
        return tuple(re.compile(p) for p in self.self_descriptions)

    @cached_property
    def _name_pattern(self) -> re.Pattern[str]:
        """Identifiers, study terms, names, case-sensitive names, then markers: one alternation, so at any
        position the earlier kind wins (a repo id is removed whole before a name inside it is seen)."""
        identifiers = [f"(?:{p})" for p in self.identifiers]
        literal = [re.escape(term) for term in sorted(self.extra_terms, key=len, reverse=True)]
        loose = sorted((_name_regex(name) + _VERSION_SUFFIX for name in self.names), key=len, reverse=True)
        exact = sorted((_name_regex(n) + _NUMERIC_SUFFIX for n in self.case_sensitive_names), key=len, reverse=True)
        words = []
        if literal or loose:
            words.append(rf"(?<![\w-])(?i:{'|'.join(literal + loose)})(?![\w])")
        if exact:
            words.append(rf"(?<![\w-])(?:{'|'.join(exact)})(?![\w-])")
        markers = [f"(?:{p})" for p in self.markers]
        return re.compile("|".join(identifiers + words + markers) or _NEVER)

    def scrub(self, text: str) -> ScrubResult:
        """The text with every identity hint replaced, and what was removed (in the order found)."""
        removed: list[str] = []

        def replace_who(match: re.Match[str]) -> str:
            start, end = match.span("who")
            if start == end:
                return match.group(0)
            removed.append(match.group("who"))
            offset = match.start()
            return match.group(0)[: start - offset] + self.replacement + match.group(0)[end - offset :]

        def replace_with(replacement: str):  # type: ignore[no-untyped-def]
            def replace(match: re.Match[str]) -> str:
                if not match.group(0):
                    return ""
                removed.append(match.group(0))
                return replacement

            return replace

        for _ in range(MAX_PASSES):
            before = text
            text = self._training_pattern.sub(replace_with(self.details_replacement), text)
            text = self._name_pattern.sub(replace_with(self.replacement), text)
            for pattern in self._self_patterns:
                text = pattern.sub(replace_who, text)
            if text == before:
                break
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
    version = content_version(str(document["version"]).strip(), text)
    try:
        return ScrubList.model_validate({**document, "version": version})
    except ValidationError as exc:
        raise ValueError(format_validation_error(exc, str(path), document, whole="file")) from exc
