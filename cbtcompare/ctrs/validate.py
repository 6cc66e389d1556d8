"""JSON schemas for judge answers and the validator every answer must pass, constrained or not.

The schema is what a backend can enforce (a llama.cpp grammar, OpenAI/Gemini structured output); the
validator is what we trust: the JSON parses, every requested item is present, each score is a whole
number on the rubric's scale (or "n/a" where the item allows it), and every quoted piece of evidence
really occurs in the turn it cites (compared case- and whitespace-insensitively). Anything else is an
error message the judge is shown on retry. This module never invents, clamps or defaults a score.
"""

from __future__ import annotations

import json
import re
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

from cbtcompare.ctrs.render import RATED_ROLE, citable_turns, evidence_allowed, neutralise
from cbtcompare.ctrs.rubric import Rubric
from cbtcompare.transcript import Turn

Choice = Literal["first", "second", "tie"]
PAIR_CHOICES: tuple[Choice, ...] = ("first", "second", "tie")
MIN_QUOTE_CHARS = 3
_FENCE = re.compile(r"^```(?:json)?\s*(.*?)\s*```$", re.DOTALL | re.IGNORECASE)
_ELLIPSIS = re.compile(r"\.\.\.|…")
_ROLE_PREFIX = re.compile(r"^\s*(?:\[turn\s*\d+\]\s*)?(?:patient|therapist)\s*:\s*", re.IGNORECASE)
_TRANSLATE = str.maketrans(
    {"‘": "'", "’": "'", "‛": "'", "“": '"', "”": '"', "–": "-", "—": "-", "‹": "<", "›": ">", "⟦": "[", "⟧": "]"}
)


@dataclass(frozen=True)
class EvidenceQuote:
    turn: int
    quote: str


@dataclass(frozen=True)
class ValidItem:
    """One item of an accepted answer: a score on the scale (None only for 'n/a') and its evidence."""

    score: int | None
    status: Literal["scored", "n/a"]
    justification: str
    evidence: tuple[EvidenceQuote, ...]


@dataclass
class Checked:
    """What a raw answer yielded: accepted items, and the reasons the others were rejected."""

    accepted: dict[str, object] = field(default_factory=dict)
    errors: dict[str, list[str]] = field(default_factory=dict)

    def reject_all(self, item_ids: Sequence[str], reason: str) -> Checked:
        for item_id in item_ids:
            self.errors.setdefault(item_id, []).append(reason)
        return self


# Schemas ------------------------------------------------------------------------------------------


QUOTE_CHOICE_LIMIT = 400  # most candidate quotes offered as an enum before quotes are left free
QUOTE_CHOICE_CHARS = 40_000  # most characters of candidate quotes offered as an enum
_SENTENCE_END = re.compile(r"(?<=[.!?…])\s+|\n+")


def quote_candidates(text: str, longest: int = 160) -> list[str]:
    """The sentences (or lines) of a turn, each cut to `longest` characters at a word boundary."""
    candidates: list[str] = []
    for piece in _SENTENCE_END.split(text):
        piece = " ".join(piece.split())
        if len(piece) > longest:
            piece = piece[:longest].rsplit(" ", 1)[0]
        if quote_is_checkable(piece) and piece not in candidates:
            candidates.append(piece)
    return candidates


def quote_is_checkable(quote: str) -> bool:
    """Long enough, once quotes, a role prefix and ellipses are dropped, to check against a turn."""
    return len(_ELLIPSIS.sub("", normalise_for_match(_clean_quote(quote))).strip()) >= MIN_QUOTE_CHARS


# Characters a quote offered as a grammar literal must not hold: with them, llama.cpp's grammar could be
# left with no token able to continue the literal, the sampler then picks end-of-generation and llama.cpp
# aborts the whole process (llama-grammar.cpp "fatal error"; found by the hypothesis test on text such as
# unassigned astral code points beside C1 controls). Such transcripts get free-text quotes instead.
_UNSAFE_IN_LITERAL = {"Cc", "Cf", "Co", "Cn", "Cs", "Zl", "Zp"}


def grammar_safe(text: str) -> bool:
    """True when every character is an assigned, printable Basic Multilingual Plane character."""
    return all(ord(ch) <= 0xFFFF and unicodedata.category(ch) not in _UNSAFE_IN_LITERAL for ch in text)


def evidence_schema(turns: Sequence[Turn], *, quote_choices: bool, quote_chars: int | None = None) -> dict:
    """One piece of evidence: the index of a therapist turn and a quote.

    With `quote_choices` (and a transcript small enough), the quote must be one of the cited turn's own
    sentences, so a constrained judge cannot cite words that are not there; otherwise the quote is free
    text. Either way the validator checks it. (With no therapist turn at all, score_schema asks for no
    evidence.)
    """
    citable = citable_turns(turns)
    if quote_choices:
        # Offered as the judge sees them (neutralised), so no candidate holds a chat-template marker.
        per_turn = [(i, quote_candidates(neutralise(turns[i].text))) for i in citable]
        per_turn = [(i, c) for i, c in per_turn if c]
        if any(not grammar_safe(q) for _, c in per_turn for q in c):
            per_turn = []  # free text below, validated just the same
        count = sum(len(c) for _, c in per_turn)
        size = sum(len(q) for _, c in per_turn for q in c)
        if per_turn and count <= QUOTE_CHOICE_LIMIT and size <= QUOTE_CHOICE_CHARS:
            return {
                "anyOf": [
                    {
                        "type": "object",
                        "properties": {
                            "turn": {"type": "integer", "enum": [i]},
                            "quote": {"type": "string", "enum": candidates},
                        },
                        "required": ["turn", "quote"],
                        "additionalProperties": False,
                    }
                    for i, candidates in per_turn
                ]
            }
    quote: dict = {"type": "string", "minLength": MIN_QUOTE_CHARS}
    if quote_chars:
        quote["maxLength"] = quote_chars
    return {
        "type": "object",
        "properties": {
            "turn": {"type": "integer", "enum": citable} if citable else {"type": "integer"},
            "quote": quote,
        },
        "required": ["turn", "quote"],
        "additionalProperties": False,
    }


def score_value_schema(rubric: Rubric, item_id: str) -> dict:
    levels = {"type": "integer", "enum": rubric.scale.levels}
    if rubric.item(item_id).allow_na:
        return {"anyOf": [levels, {"type": "string", "enum": ["n/a"]}]}
    return levels


def item_schema(rubric: Rubric, item_id: str, *, max_evidence: int, justification_chars: int | None = None) -> dict:
    """Evidence first, then the justification, then the score: the judge grounds before it decides.

    Evidence entries refer to `#/$defs/evidence` (see score_schema). With `max_evidence` 0 the item has
    no evidence property at all: an empty array would still cost the judge tokens, and some servers
    refuse `"maxItems": 0`. Length caps are optional: a llama.cpp grammar with a long maxLength slows
    decoding several-fold, and the reply budget (max_tokens) already bounds the answer.
    """
    justification: dict = {"type": "string", "minLength": 1}
    if justification_chars:
        justification["maxLength"] = justification_chars
    properties: dict = {}
    if max_evidence > 0:
        properties["evidence"] = {"type": "array", "items": {"$ref": "#/$defs/evidence"}, "maxItems": max_evidence}
    properties |= {"justification": justification, "score": score_value_schema(rubric, item_id)}
    return {
        "type": "object",
        "properties": properties,
        "required": list(properties),
        "additionalProperties": False,
    }


def score_schema(
    rubric: Rubric,
    item_ids: Sequence[str],
    turns: Sequence[Turn],
    *,
    per_item: bool,
    max_evidence: int = 3,
    quote_choices: bool = True,
    justification_chars: int | None = None,
    quote_chars: int | None = None,
) -> dict:
    """The answer's schema: one item's object (per-item mode), or an object keyed by every item id.

    Evidence is asked for only when some may be given (evidence_allowed); otherwise neither the items nor
    `$defs` mention it."""
    allowed = evidence_allowed(turns, max_evidence)
    defs = {"$defs": {"evidence": evidence_schema(turns, quote_choices=quote_choices, quote_chars=quote_chars)}}
    limits = {"max_evidence": allowed, "justification_chars": justification_chars}
    if per_item:
        (item_id,) = item_ids
        return {**(defs if allowed else {}), **item_schema(rubric, item_id, **limits)}
    return {
        **(defs if allowed else {}),
        "type": "object",
        "properties": {i: item_schema(rubric, i, **limits) for i in item_ids},
        "required": list(item_ids),
        "additionalProperties": False,
    }


def pairwise_schema(item_ids: Sequence[str], *, justification_chars: int | None = None) -> dict:
    justification: dict = {"type": "string", "minLength": 1}
    if justification_chars:
        justification["maxLength"] = justification_chars
    choice = {
        "type": "object",
        "properties": {
            "justification": justification,
            "better": {"enum": list(PAIR_CHOICES)},
        },
        "required": ["justification", "better"],
        "additionalProperties": False,
    }
    return {
        "type": "object",
        "properties": {i: choice for i in item_ids},
        "required": list(item_ids),
        "additionalProperties": False,
    }


# Parsing and checking -------------------------------------------------------------------------------


def load_json_answer(raw: str) -> object:
    """The answer as JSON (a ```json fence around it is tolerated); ValueError says what is wrong."""
    text = raw.strip()
    fenced = _FENCE.match(text)
    if fenced:
        text = fenced.group(1)
    if not text:
        raise ValueError("the answer was empty")
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValueError(f"the answer is not valid JSON ({exc.msg} at line {exc.lineno} column {exc.colno})") from exc


def complete_members(raw: str) -> dict[str, object]:
    """The complete top-level members of a JSON object whose text was cut off (e.g. by the reply budget).

    Each member kept parsed in full on its own; the first incomplete one and everything after it are
    dropped. Returns {} when the text does not start as a JSON object.
    """
    text = raw.strip()
    fenced = re.match(r"^```(?:json)?\s*", text, re.IGNORECASE)
    if fenced:
        text = text[fenced.end() :]
    if not text.startswith("{"):
        return {}
    decoder = json.JSONDecoder()
    members: dict[str, object] = {}
    index = 1
    while True:
        index = _skip_space(text, index)
        try:
            key, index = decoder.raw_decode(text, index)
            index = _skip_space(text, index)
            if not isinstance(key, str) or text[index : index + 1] != ":":
                break
            value, index = decoder.raw_decode(text, _skip_space(text, index + 1))
        except json.JSONDecodeError:
            break
        members[key] = value
        index = _skip_space(text, index)
        if text[index : index + 1] != ",":
            break
        index += 1
    return members


def _skip_space(text: str, index: int) -> int:
    while index < len(text) and text[index] in " \t\r\n":
        index += 1
    return index


def _answer_object(raw: str, item_ids: Sequence[str], checked: Checked) -> tuple[dict | None, str]:
    """The answer as an object keyed by item id, or None (then every item is rejected on `checked`).

    An answer cut off part-way keeps its complete items (each still fully validated); the items after
    the cut are reported missing, so a retry asks only for them.
    """
    try:
        answer = load_json_answer(raw)
    except ValueError as exc:
        members = complete_members(raw)
        if not members:
            checked.reject_all(item_ids, str(exc))
            return None, ""
        return members, f" (the answer was cut off after {len(members)} complete item(s): {exc})"
    if not isinstance(answer, dict):
        checked.reject_all(item_ids, f"the answer must be a JSON object keyed by item id, not {_kind(answer)}")
        return None, ""
    return answer, ""


def normalise_for_match(text: str) -> str:
    """Case-, width-, typographic-quote- and whitespace-insensitive form used to match quotes."""
    text = unicodedata.normalize("NFKC", text).translate(_TRANSLATE).casefold()
    return " ".join(text.split())


def quote_occurs(quote: str, turn_text: str) -> bool:
    """Does the quote occur in the turn? Fragments split by an ellipsis must occur in order."""
    target = normalise_for_match(turn_text)
    position = 0
    fragments = [f.strip(" \"'") for f in _ELLIPSIS.split(normalise_for_match(_clean_quote(quote)))]
    fragments = [f for f in fragments if f]
    if not fragments:
        return False
    for fragment in fragments:
        found = target.find(fragment, position)
        if found < 0:
            return False
        position = found + len(fragment)
    return True


def _clean_quote(quote: str) -> str:
    return _ROLE_PREFIX.sub("", quote.strip().strip("\"'“”‘’").strip())


def check_score_answer(
    raw: str, rubric: Rubric, item_ids: Sequence[str], turns: Sequence[Turn], *, per_item: bool
) -> Checked:
    """Validate a score answer; accepted items are ValidItem, every other requested item gets its errors."""
    checked = Checked()
    if per_item:
        (item_id,) = item_ids
        try:
            single = load_json_answer(raw)
        except ValueError as exc:
            return checked.reject_all(item_ids, str(exc))
        if isinstance(single, dict) and set(single) == {item_id} and isinstance(single[item_id], dict):
            single = single[item_id]  # {"agenda": {...}} for a one-item request: the same answer, wrapped
        answer: dict | None = {item_id: single}
        cut = ""
    else:
        answer, cut = _answer_object(raw, item_ids, checked)
        if answer is None:
            return checked
    for item_id in item_ids:
        if item_id not in answer:
            checked.errors[item_id] = [f"item {item_id} is missing from the answer{cut}"]
            continue
        problems, item = _check_item(item_id, answer[item_id], rubric, turns)
        if problems:
            checked.errors[item_id] = problems
        else:
            checked.accepted[item_id] = item
    return checked


def _check_item(
    item_id: str, value: object, rubric: Rubric, turns: Sequence[Turn]
) -> tuple[list[str], ValidItem | None]:
    if not isinstance(value, dict):
        return [f"item {item_id}: expected an object with evidence, justification and score, not {_kind(value)}"], None
    problems: list[str] = []
    scale = rubric.scale
    score = value.get("score")
    status: Literal["scored", "n/a"] = "scored"
    if "score" not in value or score is None:
        problems.append(f"item {item_id}: the score is missing")
    elif isinstance(score, str) and score.strip().lower() in {"n/a", "na", "not applicable"}:
        if rubric.item(item_id).allow_na:
            status, score = "n/a", None
        else:
            problems.append(
                f"item {item_id}: 'n/a' is not allowed for this item; give a whole number {scale.min}-{scale.max}"
            )
    elif isinstance(score, bool) or not isinstance(score, int):
        problems.append(
            f"item {item_id}: the score must be a whole number {scale.min}-{scale.max}, not {score!r}"[:200]
        )
    elif not scale.min <= score <= scale.max:
        problems.append(f"item {item_id}: the score {score} is outside the scale {scale.min}-{scale.max}")
    justification = value.get("justification")
    if not isinstance(justification, str) or not justification.strip():
        problems.append(f"item {item_id}: the justification must be a non-empty string")
    evidence, evidence_problems = _check_evidence(item_id, value.get("evidence", []), turns)
    problems += evidence_problems
    if problems:
        return problems, None
    return [], ValidItem(score=score, status=status, justification=str(justification).strip(), evidence=evidence)


def _check_evidence(item_id: str, value: object, turns: Sequence[Turn]) -> tuple[tuple[EvidenceQuote, ...], list[str]]:
    if not isinstance(value, list):
        return (), [f"item {item_id}: evidence must be a list of {{turn, quote}} objects"]
    problems: list[str] = []
    quotes: list[EvidenceQuote] = []
    for n, entry in enumerate(value, start=1):
        where = f"item {item_id}: evidence {n}"
        if not isinstance(entry, dict) or not isinstance(entry.get("quote"), str):
            problems.append(f'{where}: expected {{"turn": N, "quote": "..."}}')
            continue
        turn, quote = entry.get("turn"), entry["quote"]
        if isinstance(turn, bool) or not isinstance(turn, int) or not 0 <= turn < len(turns):
            problems.append(f"{where}: turn {turn!r} does not exist (turns are 0-{len(turns) - 1})"[:200])
            continue
        if not quote_is_checkable(quote):
            problems.append(f"{where}: the quote is too short to check")
            continue
        if turns[turn].role != RATED_ROLE:
            citable = ", ".join(map(str, citable_turns(turns)[:20])) or "none"
            problems.append(
                f"{where}: turn {turn} is the {turns[turn].role}'s; evidence must quote a {RATED_ROLE} turn "
                f"(turns {citable})"
            )
            continue
        if not _quote_in_turn(quote, turns[turn]):
            elsewhere = [i for i, t in enumerate(turns) if t.role == RATED_ROLE and _quote_in_turn(quote, t)]
            hint = f" (it is in turn {elsewhere[0]})" if elsewhere else ""
            problems.append(f"{where}: {_short(quote)!r} does not occur in turn {turn}{hint}")
            continue
        quotes.append(EvidenceQuote(turn=turn, quote=_clean_quote(quote)))
    return tuple(quotes), problems


def _quote_in_turn(quote: str, turn: Turn) -> bool:
    return quote_occurs(quote, turn.text) or quote_occurs(quote, neutralise(turn.text))


def check_pairwise_answer(raw: str, item_ids: Sequence[str]) -> Checked:
    """Validate a pairwise answer; accepted items are (choice, justification) tuples."""
    checked = Checked()
    answer, cut = _answer_object(raw, item_ids, checked)
    if answer is None:
        return checked
    for item_id in item_ids:
        value = answer.get(item_id)
        if not isinstance(value, dict):
            checked.errors[item_id] = [f"item {item_id} is missing or not an object with justification and better{cut}"]
            continue
        better, justification = value.get("better"), value.get("justification")
        problems = []
        if better not in PAIR_CHOICES:
            problems.append(f"item {item_id}: 'better' must be one of first, second, tie, not {better!r}"[:200])
        if not isinstance(justification, str) or not justification.strip():
            problems.append(f"item {item_id}: the justification must be a non-empty string")
        if problems:
            checked.errors[item_id] = problems
        else:
            checked.accepted[item_id] = (better, str(justification).strip())
    return checked


def _kind(value: object) -> str:
    return {dict: "an object", list: "a list", str: "a string", bool: "a boolean", type(None): "null"}.get(
        type(value), "a number"
    )


def _short(text: str, limit: int = 60) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"
