"""Deterministic per-turn CBT technique tagger: which CBT moves a therapist turn makes, with the words that show it.

The tags (agenda setting, Socratic question, reflection/empathy, psychoeducation, cognitive restructuring,
behavioural activation, homework, summary, feedback request) and their patterns live in the data file
`techniques_rules.yaml` beside this module; `RULES_VERSION` (file name + sha256[:12]) names the exact rules
and is stored beside every result computed from them. Rules are compiled once; tagging is pure and fast.

This module must never call a model, read patient turns as therapist moves, or default a rate it cannot
compute: a set of turns with no therapist turn is an error, not a rate of 0.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from cbtcompare.config_errors import format_validation_error
from cbtcompare.content_hash import content_version
from cbtcompare.transcript import Transcript, Turn

RULES_PATH = Path(__file__).resolve().parent / "techniques_rules.yaml"

CBT_MOVES: tuple[str, ...] = ("agenda_setting", "socratic_question", "homework", "summary", "feedback_request")
"""The structural CBT moves counted by `cbt_move_rate` (and by benchmarks/adapter_effect.py)."""

# Curly quotes read as straight ones; one character for one, so match offsets stay valid in the original text.
_QUOTES = str.maketrans({"\u2019": "'", "\u2018": "'", "\u02bc": "'", "\u201c": '"', "\u201d": '"'})
_SENTENCE = re.compile(r"[^.!?\n]+[.!?]*")
_TRAILING_CLOSERS = " \t\"')]}*_"
# An open question: an interrogative word opening the sentence or a clause, before (or at) the matched words.
_OPEN_START = re.compile(
    r"(?:^|[,;:(]|\b(?:and|so|then|but|now|okay|ok|well)\b)\s*(?:in\s+)?(?:what|how|why|which|where|when|who|whose)\b",
    re.IGNORECASE,
)


class RulesError(ValueError):
    """The rules file is missing, malformed, or holds a pattern that does not compile."""


class PatternSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")

    phrase: str | None = Field(None, description="literal words; spaces match any whitespace")
    regex: str | None = Field(None, description="a Python regular expression")
    requires_question: bool | None = Field(None, description="overrides the tag's own setting for this pattern")
    requires_open_question: bool | None = Field(
        None, description="a question opened by what/how/why/which... before the match; overrides the tag's setting"
    )

    @model_validator(mode="after")
    def _exactly_one_kind(self) -> PatternSpec:
        if (self.phrase is None) == (self.regex is None):
            raise ValueError("a pattern needs exactly one of 'phrase' or 'regex'")
        if not (self.phrase or self.regex or "").strip():
            raise ValueError("a pattern must not be empty")
        return self

    def source(self) -> str:
        if self.regex is not None:
            return self.regex
        return r"\s+".join(re.escape(word) for word in (self.phrase or "").split())


class TagRule(BaseModel):
    model_config = ConfigDict(extra="forbid")

    id: str = Field(pattern=r"^[a-z][a-z0-9_]*$", description="stable tag id (lowercase, digits, _), stored with tags")
    label: str = Field(min_length=1, description="the short name shown beside a turn")
    description: str = Field(min_length=1, description="what the move is, shown as the tag's tooltip")
    requires_question: bool = Field(False, description="match only in a turn that asks a question")
    requires_open_question: bool = Field(
        False, description="match only after an open question (what/how/why/which...) in the same turn"
    )
    patterns: list[PatternSpec] = Field(min_length=1, description="any one of these tags the turn")
    exclude: list[PatternSpec] = Field(default_factory=list, description="none of these may match the turn")


class RulesFile(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    schema_version: int = Field(alias="schema", description="the rules file format (1)")
    tags: list[TagRule] = Field(min_length=1, description="the technique tags, each with its patterns")

    @model_validator(mode="after")
    def _unique_ids(self) -> RulesFile:
        ids = [tag.id for tag in self.tags]
        duplicates = sorted({i for i in ids if ids.count(i) > 1})
        if duplicates:
            raise ValueError(f"duplicate tag ids: {', '.join(duplicates)}")
        return self


@dataclass(frozen=True)
class TechniqueTag:
    """One technique found in one turn; `evidence` is the matched words, as written in the turn."""

    id: str
    label: str
    evidence: str


@dataclass(frozen=True)
class TechniqueInfo:
    id: str
    label: str
    description: str


def _compile(patterns: Sequence[PatternSpec], where: str) -> re.Pattern[str] | None:
    """One word-bounded, case-insensitive alternation; each piece is compiled alone first to name a bad one."""
    if not patterns:
        return None
    pieces = []
    for pattern in patterns:
        source = pattern.source()
        try:
            re.compile(source, re.IGNORECASE)
        except re.error as exc:
            raise RulesError(f"{where}: pattern {source!r} does not compile: {exc}") from exc
        pieces.append(f"(?:{source})")
    return re.compile(r"(?<!\w)(?:" + "|".join(pieces) + r")(?!\w)", re.IGNORECASE)


@dataclass(frozen=True)
class _CompiledRule:
    info: TechniqueInfo
    anywhere: re.Pattern[str] | None
    in_question: re.Pattern[str] | None
    in_open_question: re.Pattern[str] | None
    exclude: re.Pattern[str] | None


def _setting(own: bool | None, inherited: bool) -> bool:
    return inherited if own is None else own


def _is_question(sentence: str) -> bool:
    return sentence.rstrip(_TRAILING_CLOSERS).endswith("?")


@dataclass(frozen=True)
class _Sentence:
    start: int
    end: int
    is_question: bool
    open_from: int | None
    """Where an open question's interrogative ends (matches ending before it are not in the open question)."""


def _sentences(text: str) -> list[_Sentence]:
    found = []
    for match in _SENTENCE.finditer(text):
        body = match.group()
        is_question = _is_question(body)
        open_from = None
        if is_question:
            stripped = body.lstrip()
            opener = _OPEN_START.search(stripped)
            if opener:
                open_from = match.start() + len(body) - len(stripped) + opener.end()
        found.append(_Sentence(match.start(), match.end(), is_question, open_from))
    return found


def _first_match_from(pattern: re.Pattern[str], text: str, sentence: _Sentence) -> re.Match[str] | None:
    if sentence.open_from is None:
        return None
    matches = pattern.finditer(text, sentence.start, sentence.end)
    return next((m for m in matches if m.end() >= sentence.open_from), None)


class TechniqueTagger:
    """Compiled rules; `tag_turn` is pure, so one tagger can serve every thread."""

    def __init__(self, rules: RulesFile, version: str) -> None:
        self.version = version
        compiled = []
        for tag in rules.tags:
            where = f"tag {tag.id!r}"
            plain: list[PatternSpec] = []
            asked: list[PatternSpec] = []
            asked_open: list[PatternSpec] = []
            for pattern in tag.patterns:
                needs_open = _setting(pattern.requires_open_question, tag.requires_open_question)
                needs_question = _setting(pattern.requires_question, tag.requires_question)
                (asked_open if needs_open else asked if needs_question else plain).append(pattern)
            compiled.append(
                _CompiledRule(
                    info=TechniqueInfo(tag.id, tag.label, " ".join(tag.description.split())),
                    anywhere=_compile(plain, where),
                    in_question=_compile(asked, where),
                    in_open_question=_compile(asked_open, where),
                    exclude=_compile(tag.exclude, f"{where} exclude"),
                )
            )
        self._rules: tuple[_CompiledRule, ...] = tuple(compiled)

    @classmethod
    def from_file(cls, path: Path) -> TechniqueTagger:
        try:
            raw = path.read_bytes()
        except OSError as exc:
            raise RulesError(f"cannot read technique rules {path}: {exc}") from exc
        try:
            data = yaml.safe_load(raw)
        except yaml.YAMLError as exc:
            raise RulesError(f"technique rules {path} are invalid YAML: {str(exc)[:300]}") from exc
        try:
            rules = RulesFile.model_validate(data)
        except ValidationError as exc:
            raise RulesError(format_validation_error(exc, f"technique rules {path}", data, whole="file")) from exc
        return cls(rules, version=content_version(path.name, raw))

    @property
    def techniques(self) -> tuple[TechniqueInfo, ...]:
        return tuple(rule.info for rule in self._rules)

    def tag_turn(self, text: str) -> tuple[TechniqueTag, ...]:
        """Tags in rules-file order, one per technique, each with its earliest evidence in the turn."""
        normalised = text.translate(_QUOTES)
        sentences = _sentences(normalised)
        found = []
        for rule in self._rules:
            for sentence in sentences:
                start, end = sentence.start, sentence.end
                if rule.exclude is not None and rule.exclude.search(normalised, start, end):
                    continue
                hits = [
                    m
                    for pattern in (rule.anywhere, rule.in_question if sentence.is_question else None)
                    if pattern is not None and (m := pattern.search(normalised, start, end))
                ]
                if rule.in_open_question is not None and (
                    opened := _first_match_from(rule.in_open_question, normalised, sentence)
                ):
                    hits.append(opened)
                if hits:
                    first = min(hits, key=lambda m: (m.start(), -m.end()))
                    found.append(TechniqueTag(rule.info.id, rule.info.label, text[first.start() : first.end()]))
                    break
        return tuple(found)


@cache
def default_tagger() -> TechniqueTagger:
    tagger = TechniqueTagger.from_file(RULES_PATH)
    missing = set(CBT_MOVES) - {info.id for info in tagger.techniques}
    if missing:
        raise RulesError(f"{RULES_PATH.name} lacks the CBT move tags {sorted(missing)}")
    return tagger


RULES_VERSION: str = default_tagger().version
"""`techniques_rules.yaml@<sha256[:12]>`: store it beside any tag or rate computed here."""

TECHNIQUE_IDS: tuple[str, ...] = tuple(info.id for info in default_tagger().techniques)


def technique_catalogue() -> tuple[TechniqueInfo, ...]:
    """Every technique the rules know, in display order, with its label and description."""
    return default_tagger().techniques


def tag_turn(text: str) -> tuple[TechniqueTag, ...]:
    """The techniques one therapist utterance shows, with the matched words as evidence."""
    return default_tagger().tag_turn(text)


def _turns_of(turns: Transcript | Sequence[Turn]) -> Sequence[Turn]:
    return turns.turns if isinstance(turns, Transcript) else turns


def tag_transcript(turns: Transcript | Sequence[Turn]) -> list[tuple[TechniqueTag, ...] | None]:
    """One entry per turn, in order: the tags of a therapist turn, None for a patient turn (never tagged)."""
    tagger = default_tagger()
    return [tagger.tag_turn(turn.text) if turn.role == "therapist" else None for turn in _turns_of(turns)]


def _therapist_tag_sets(transcripts: Iterable[Transcript | Sequence[Turn]]) -> list[set[str]]:
    tagger = default_tagger()
    return [
        {tag.id for tag in tagger.tag_turn(turn.text)}
        for turns in transcripts
        for turn in _turns_of(turns)
        if turn.role == "therapist"
    ]


def technique_rates(transcripts: Iterable[Transcript | Sequence[Turn]]) -> dict[str, float]:
    """Share of all therapist turns (pooled over the transcripts) that carry each technique, for every technique.

    Raises ValueError when there is no therapist turn at all: a rate over nothing is unknown, not 0.
    """
    tag_sets = _therapist_tag_sets(transcripts)
    if not tag_sets:
        raise ValueError("no therapist turns to rate")
    return {tag_id: sum(tag_id in tags for tags in tag_sets) / len(tag_sets) for tag_id in TECHNIQUE_IDS}


def cbt_move_rate(turns: Transcript | Sequence[Turn]) -> float:
    """Share of therapist turns carrying at least one of CBT_MOVES. Raises ValueError with no therapist turn."""
    tag_sets = _therapist_tag_sets([turns])
    if not tag_sets:
        raise ValueError("no therapist turns to rate")
    return sum(bool(tags.intersection(CBT_MOVES)) for tags in tag_sets) / len(tag_sets)
