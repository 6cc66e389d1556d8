"""The judge's prompts: the transcript rendered as delimited data, and the messages for each judge call.

The transcript is data, never instructions. It is enclosed in tags that carry a fresh random nonce per
call, so text inside a turn cannot close or forge them, and each turn's text is neutralised first:
tag-like text (`<transcript...>`, `</...>`), chat-template control markers (`<|im_end|>`, `[INST]`,
`<start_of_turn>`, DeepSeek's fullwidth `<｜User｜>`...) and anything that could pass for a `[turn N]`
header are defused, and every line break Python knows (U+2028, U+2029, U+0085, \v, \f... as well as \n
and \r) starts an indented continuation line. This module never calls a model; the prompt wording lives
in cbtcompare/prompts/judge_*.txt.
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Sequence
from dataclasses import dataclass

from cbtcompare.ctrs.rubric import Rubric
from cbtcompare.models.base import Message
from cbtcompare.prompts import load_prompt
from cbtcompare.transcript import Turn

ROLE_LABELS = {"patient": "Patient", "therapist": "Therapist"}
CONTINUATION_INDENT = "    "
# The CTRS rates the therapist: evidence for any of its items must be the therapist's own words.
RATED_ROLE = "therapist"

# The ASCII signs and the fullwidth/small forms that NFKC folds into them (DeepSeek's special tokens
# are `<｜...｜>` with U+FF5C; a model that normalises its input reads `＜` as `<`).
_LT, _GT, _BAR, _OPEN, _CLOSE = "<＜﹤", ">＞﹥", r"|｜", r"\[［", r"\]］"
# `<` or `</` followed by a tag-like word: could open/close our delimiters or a template's tags.
_TAG_LIKE = re.compile(rf"[{_LT}](\s*/?\s*[A-Za-z_][\w\-:.]*)")
# Chat-template control markers of common families (ChatML, Llama 3, Gemma, Mistral, Phi, DeepSeek).
_CONTROL_MARKERS = re.compile(
    rf"[{_LT}][{_BAR}]|[{_BAR}][{_GT}]|[{_OPEN}]\s*/?\s*(?:INST|SYS)\s*[{_CLOSE}]|[{_LT}]{{2}}\s*/?\s*SYS\s*[{_GT}]{{2}}",
    re.IGNORECASE,
)
# Something that reads as a turn header, `[turn 3]`, wherever it is in the text.
_TURN_HEADER_LIKE = re.compile(rf"[{_OPEN}](\s*turn)", re.IGNORECASE)
_DEFUSED = str.maketrans({**dict.fromkeys(_LT, "‹"), **dict.fromkeys(_GT, "›"), "[": "⟦", "［": "⟦"})
_DEFUSED_CLOSE = str.maketrans({"]": "⟧", "］": "⟧"})


def neutralise(text: str) -> str:
    """Defuse text that could pass for a delimiter, a chat-template marker or a turn header.

    `<tag` becomes `‹tag` (U+2039), control markers lose their angle or square brackets and `[turn`
    becomes `⟦turn`, so the words stay readable to a judge but can no longer be parsed as structure.
    Quotes are checked against both this text and the original, so evidence stays verifiable.
    """
    text = _CONTROL_MARKERS.sub(lambda m: m.group(0).translate(_DEFUSED).translate(_DEFUSED_CLOSE), text)
    text = _TURN_HEADER_LIKE.sub(lambda m: "⟦" + m.group(1), text)
    return _TAG_LIKE.sub(lambda m: "‹" + m.group(1), text)


def render_turn(index: int, turn: Turn) -> str:
    """`[turn N] Role: text`, every continuation line indented, whatever character broke the line."""
    lines = neutralise(turn.text.strip()).splitlines()
    body = ("\n" + CONTINUATION_INDENT).join(lines)
    return f"[turn {index}] {ROLE_LABELS.get(turn.role, turn.role.title())}: {body}"


def render_turns(turns: Sequence[Turn]) -> str:
    return "\n".join(render_turn(i, t) for i, t in enumerate(turns))


def new_tag(prefix: str = "transcript") -> str:
    """A delimiter name no transcript can guess: the prefix plus 16 random hex digits."""
    return f"{prefix}-{secrets.token_hex(8)}"


def citable_turns(turns: Sequence[Turn]) -> list[int]:
    """The indices of the turns evidence may cite: the rated speaker's."""
    return [i for i, t in enumerate(turns) if t.role == RATED_ROLE]


def evidence_allowed(turns: Sequence[Turn], max_evidence: int) -> int:
    """The most evidence entries an item's answer may hold: `max_evidence`, or 0 with no turn to cite.
    The one decision behind both the answer's schema and the prompt's wording."""
    return max(0, max_evidence) if citable_turns(turns) else 0


@dataclass(frozen=True)
class RenderedPrompt:
    """The messages for one judge call, the delimiter used, and the prompt versions behind them."""

    messages: list[Message]
    tag: str
    prompt_version: str


NA_RULE = (
    ' Only for an item that lists "n/a" you may give the score "n/a", and only when the session gave no'
    " opportunity for it at all."
)


def build_score_prompt(
    rubric: Rubric,
    turns: Sequence[Turn],
    item_ids: Sequence[str],
    *,
    per_item: bool,
    anchors: bool,
    max_evidence: int,
    errors: Sequence[str] = (),
    tag: str | None = None,
) -> RenderedPrompt:
    """System + user messages asking for `item_ids`; `errors` (from a rejected answer) are appended."""
    tag = tag or new_tag()
    system = load_prompt("judge_system")
    task = load_prompt("judge_one_item" if per_item else "judge_all_items")
    na = any(rubric.item(i).allow_na for i in item_ids)
    rules, rule_versions = _evidence_rules(evidence_allowed(turns, max_evidence))
    user = task.render(
        rubric_name=rubric.name,
        min=rubric.scale.min,
        max=rubric.scale.max,
        scale=rubric.scale_text(),
        items=rubric.items_text(list(item_ids), anchors=anchors),
        tag=tag,
        transcript=render_turns(turns),
        item_ids=", ".join(item_ids),
        evidence_rule=rules["evidence_rule"],
        na_rule=NA_RULE if na else "",
    )
    versions = [system.version, task.version, *rule_versions]
    if errors:
        retry = load_prompt("judge_retry")
        user += "\n\n" + retry.render(errors="\n".join(f"- {e}" for e in errors), item_ids=", ".join(item_ids))
    versions.append(load_prompt("judge_retry").version)
    detail = "anchors" if anchors else "brief"
    return RenderedPrompt(
        messages=[Message("system", system.render(tag=tag, cite_rule=rules["cite_rule"])), Message("user", user)],
        tag=tag,
        prompt_version="+".join(versions) + f";detail={detail}",
    )


def _evidence_rules(allowed: int) -> tuple[dict[str, str], list[str]]:
    """The prompt's evidence clauses and their versions; none when the answer's schema asks for no evidence
    (max_evidence 0, or no turn to cite), so the judge is not told to give what it cannot."""
    if allowed <= 0:
        return {"evidence_rule": "", "cite_rule": ""}, []
    evidence, cite = load_prompt("judge_evidence_rule"), load_prompt("judge_cite_rule")
    rules = {"evidence_rule": evidence.render(max_evidence=allowed) + " ", "cite_rule": cite.text + " "}
    return rules, [evidence.version, cite.version]


@dataclass(frozen=True)
class RenderedPairPrompt:
    messages: list[Message]
    tags: tuple[str, str]
    prompt_version: str


def build_pairwise_prompt(
    rubric: Rubric,
    first: Sequence[Turn],
    second: Sequence[Turn],
    item_ids: Sequence[str],
    *,
    anchors: bool,
    errors: Sequence[str] = (),
) -> RenderedPairPrompt:
    """Both transcripts, each in its own nonce-tagged block; asks which is better per item."""
    first_tag, second_tag = new_tag("first"), new_tag("second")
    system = load_prompt("judge_pairwise_system")
    task = load_prompt("judge_pairwise")
    user = task.render(
        rubric_name=rubric.name,
        items=rubric.items_text(list(item_ids), anchors=anchors),
        first_tag=first_tag,
        second_tag=second_tag,
        first=render_turns(first),
        second=render_turns(second),
        item_ids=", ".join(item_ids),
    )
    retry = load_prompt("judge_retry")
    if errors:
        user += "\n\n" + retry.render(errors="\n".join(f"- {e}" for e in errors), item_ids=", ".join(item_ids))
    return RenderedPairPrompt(
        messages=[Message("system", system.render(first_tag=first_tag, second_tag=second_tag)), Message("user", user)],
        tags=(first_tag, second_tag),
        prompt_version="+".join([system.version, task.version, retry.version])
        + f";detail={'anchors' if anchors else 'brief'}",
    )
