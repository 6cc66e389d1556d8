"""Crisis-language detection for people's turns, harm checks for models' replies, and the crisis resources.

What it is for: every patient turn (typed by a person or written by a simulated patient) goes through
`flag_turn`, which marks crisis language so the UI can show `crisis_panel_markdown` and the stored
transcript carries the flag; every therapist turn is checked for replies that encourage self-harm or give
methods.

What a hit says: its kinds, organised by the Columbia Suicide Severity Rating Scale (wish to be dead;
active ideation without method, with method, with intent, with plan; preparatory behaviour; past, aborted
or interrupted attempts; non-suicidal self-injury) plus harm from others, harm to others and acute danger
(KINDS), and the five broad categories flags have always stored (CATEGORIES), each kind mapping onto one or
two of them. Every piece of evidence names its rule, the words and the kind.

How a statement is screened (`detect_crisis`, `detect_crisis_batch`):
- Language (cbtcompare/safety_language.py, offline). English, Spanish, German, French, Portuguese and
  Italian have rules; a statement confidently in another language is `screened=False` (not read, not
  "safe"), and the panel shows the resources anyway.
- The rules (safety_data/crisis_rules.yaml for English, crisis_rules_intl.yaml for the other five) are
  deterministic, about a millisecond a statement: normalisation of slang and typos, patterns per kind,
  clause-scoped negation that does not cross out of an if-clause ("if things don't improve by Friday I'll
  ..."), and statement-level excuses for a past the speaker says is over, a third party's story, and
  discussion (news, research, fiction), in each language's own words (crisis_rules_intl.yaml's header).
- The classifier (cbtcompare/safety_classifier.py: all-MiniLM-L6-v2 embeddings, a logistic-regression head
  trained on the English dev sets only) reads English statements the rules did not flag; its threshold was
  set by cross-validation on dev, lower for statements closest to a high-risk kind (method, intent, plan,
  preparatory behaviour, acute danger) because a miss there is worse than a false alarm. A classifier-only
  hit takes the kind whose dev centroid is nearest.
- Negation veto, the one way the rules overrule the classifier: the clause of an explicit denial ("I'm not
  suicidal, just tired" -> "just tired") is not read by the classifier.
- No model at import: the embedding model loads on first use, once per process; when it cannot be had the
  rules screen alone and the result says so (`screened_by == "rules"`, `fallback_reason`). Simulated
  patients are screened by the rules alone, so runs reproduce exactly.
Known limits, measured on tests/data/crisis_heldout_v3.jsonl (written before the second pass, never tuned on;
benchmarks/crisis_eval.py; docs/crisis-screen.md has the table): recall 0.871, FPR 0.093, short of the 0.95 target;
harm to others, plans, attempts, access to means and passive wishes worded in new ways are missed most, and a
past the speaker says is over is the commonest false alarm; the other five languages have rules only. A third
pass (tests/data/crisis_dev_v4.jsonl, development data; docs/crisis-screen.md) added patterns for those kinds
and an anger-idiom excuse; its unseen figure is held-out v4's.

What it must never do: reach the network, call a generative model, block or rewrite what a person wrote,
or give advice of its own beyond pointing to people who can help (helplines, local emergency services). It
is a screening aid for a research tool, not a clinical risk assessment.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from functools import cache
from importlib import resources
from string import Template

import yaml

from cbtcompare import safety_classifier, safety_language
from cbtcompare.content_hash import content_version
from cbtcompare.transcript import Turn

CATEGORIES: tuple[str, ...] = ("suicidal_ideation", "self_harm", "intent_or_plan", "harm_to_others", "abuse")
KINDS: tuple[str, ...] = (
    "wish_to_be_dead",
    "ideation_no_method",
    "ideation_with_method",
    "ideation_with_intent",
    "ideation_with_plan",
    "preparatory_behaviour",
    "past_attempt",
    "self_injury",
    "harm_from_others",
    "harm_to_others",
    "acute_danger",
)
_DATA = resources.files("cbtcompare") / "safety_data"
_EVIDENCE_CHARS = 60
_ELLIPSIS_WORDS = 5
_MAIN_CLAUSE_NEGATION_WORDS = 2  # after an if-clause, a negation this close before a hit is the main clause's
_SURELY_NOT_ENGLISH = 0.9  # detector confidence above which a supported non-English statement skips the classifier


@dataclass(frozen=True)
class CrisisResult:
    """What `detect_crisis` found: the categories hit and, for each hit, `rule_id: "matched words"` (or
    `classifier...: p=...` for a hit the classifier alone made).

    The last three fields say how the verdict was reached and take no part in comparing results:
    `screened_by` is "rules+classifier" or "rules" (the classifier was off, missing or not asked for),
    `fallback_reason` says why it was "rules", `probability` is the classifier's P(crisis) when it scored.

    `kinds` are the C-SSRS-organised categories of the hits (KINDS; `categories` are the five broad ones they map
    to, kept for stored flags). `screened` is False when the statement is in a language the screen has no rules
    for: then `crisis` is False only because nothing could be read, and the resources are shown all the same.
    `language` is the detected ISO 639-1 code.
    """

    crisis: bool
    categories: tuple[str, ...] = ()
    matched: tuple[str, ...] = ()
    kinds: tuple[str, ...] = ()
    screened: bool = True
    language: str = field(default="en", compare=False)
    screened_by: str = field(default="rules", compare=False)
    fallback_reason: str | None = field(default=None, compare=False)
    probability: float | None = field(default=None, compare=False)


@dataclass(frozen=True)
class HarmResult:
    """What `check_model_reply` found in a model's reply."""

    harmful: bool
    matched: tuple[str, ...] = ()


@dataclass(frozen=True)
class _Rule:
    id: str
    kind: str
    categories: tuple[str, ...]
    patterns: tuple[re.Pattern[str], ...]
    negatable: bool
    unless: re.Pattern[str] | None


@dataclass(frozen=True)
class _Kind:
    label: str
    categories: tuple[str, ...]
    resolvable: bool
    third_party_excusable: bool


@dataclass(frozen=True)
class _Excuses:
    """Statement-level reasons a rule's words are not a crisis (see crisis_rules.yaml's header)."""

    conditional_opens: re.Pattern[str]
    main_subject: re.Pattern[str]
    resolved_past: re.Pattern[str]
    resolved_over: re.Pattern[str]
    resolved_now: re.Pattern[str]
    third_party: re.Pattern[str]
    first_person: re.Pattern[str]
    discussion: re.Pattern[str]
    anger_idiom: re.Pattern[str]
    anger_serious: re.Pattern[str]


@dataclass(frozen=True)
class _Negation:
    window_words: int
    clause_breaks: re.Pattern[str]
    cues: re.Pattern[str]
    pseudo: re.Pattern[str]


@dataclass(frozen=True)
class _LanguageRules:
    """One non-English language's rules and the statement-level readings it has of its own: a conditional
    clause (its negation does not reach the main clause), a past the speaker says is over (unless a sign of now
    says it is back), someone else's story, and discussion (news, fiction, a class)."""

    negation: _Negation
    rules: tuple[_Rule, ...]
    conditional: re.Pattern[str] | None = None
    resolved_past: re.Pattern[str] | None = None
    resolved_over: re.Pattern[str] | None = None
    resolved_now: re.Pattern[str] | None = None
    third_party: re.Pattern[str] | None = None
    first_person: re.Pattern[str] | None = None
    discussion: re.Pattern[str] | None = None


@dataclass(frozen=True)
class _RuleSet:
    version: str
    category_labels: dict[str, str]
    words: dict[str, str]
    words_re: re.Pattern[str]
    phrases: tuple[tuple[re.Pattern[str], str], ...]
    fuzzy: tuple[str, ...]
    negation: _Negation
    intent_markers: re.Pattern[str]
    crisis_rules: tuple[_Rule, ...]
    reply_negation: _Negation
    reply_rules: tuple[_Rule, ...]
    kinds: dict[str, _Kind]
    excuses: _Excuses
    languages: dict[str, _LanguageRules]


def _compile(pattern: str, where: str) -> re.Pattern[str]:
    try:
        return re.compile(pattern.strip())
    except re.error as exc:
        raise ValueError(f"crisis_rules.yaml: bad regex in {where}: {exc}") from exc


def _negation(raw: dict, where: str) -> _Negation:
    return _Negation(
        window_words=int(raw["window_words"]),
        clause_breaks=_compile(raw["clause_breaks"], f"{where}.clause_breaks"),
        cues=_compile(raw["cues"], f"{where}.cues"),
        pseudo=_compile(raw["pseudo"], f"{where}.pseudo"),
    )


def _rules(raw: list[dict], where: str, kinds: dict[str, _Kind] | None) -> tuple[_Rule, ...]:
    """Compile a list of rules; with `kinds`, each must name a known kind and takes its broad categories."""
    rules = []
    for item in raw:
        rule_id = item["id"]
        kind = str(item.get("kind", ""))
        categories: tuple[str, ...] = ()
        if kinds is not None:
            if kind not in kinds:
                raise ValueError(f"crisis rules: rule {rule_id} has kind {kind!r}; known: {tuple(kinds)}")
            categories = kinds[kind].categories
        patterns = tuple(_compile(p, f"{where}.{rule_id}") for p in item["patterns"])
        unless = _compile(item["unless"], f"{where}.{rule_id}.unless") if item.get("unless") else None
        rules.append(_Rule(rule_id, kind, categories, patterns, bool(item.get("negatable", True)), unless))
    ids = [r.id for r in rules]
    if len(ids) != len(set(ids)):
        raise ValueError(f"crisis_rules.yaml: duplicate rule ids in {where}")
    return tuple(rules)


def _kinds(raw: dict) -> dict[str, _Kind]:
    if tuple(raw) != KINDS:
        raise ValueError(f"crisis_rules.yaml: kinds must be {KINDS}, got {tuple(raw)}")
    kinds = {}
    for name, item in raw.items():
        categories = tuple(item["categories"])
        if not categories or set(categories) - set(CATEGORIES):
            raise ValueError(f"crisis_rules.yaml: kind {name} has categories {categories}; known: {CATEGORIES}")
        kinds[name] = _Kind(
            str(item["label"]), categories, bool(item["resolvable"]), bool(item["third_party_excusable"])
        )
    return kinds


def _excuses(raw: dict) -> _Excuses:
    return _Excuses(
        conditional_opens=_compile(raw["conditional"]["opens"], "conditional.opens"),
        main_subject=_compile(raw["conditional"]["main_subject"], "conditional.main_subject"),
        resolved_past=_compile(raw["resolved"]["past"], "resolved.past"),
        resolved_over=_compile(raw["resolved"]["over"], "resolved.over"),
        resolved_now=_compile(raw["resolved"]["now"], "resolved.now"),
        third_party=_compile(raw["third_party"], "third_party"),
        first_person=_compile(raw["first_person"], "first_person"),
        discussion=_compile(raw["discussion"], "discussion"),
        anger_idiom=_compile(raw["anger_idiom"]["marker"], "anger_idiom.marker"),
        anger_serious=_compile(raw["anger_idiom"]["serious"], "anger_idiom.serious"),
    )


def _languages(raw: dict, kinds: dict[str, _Kind]) -> dict[str, _LanguageRules]:
    languages = {}
    for code, item in raw["languages"].items():
        where = f"languages.{code}"
        resolved = item.get("resolved") or {}
        optional = {
            name: _compile(pattern, f"{where}.{name}") if pattern else None
            for name, pattern in (
                ("conditional", item.get("conditional")),
                ("resolved_past", resolved.get("past")),
                ("resolved_over", resolved.get("over")),
                ("resolved_now", resolved.get("now")),
                ("third_party", item.get("third_party")),
                ("first_person", item.get("first_person")),
                ("discussion", item.get("discussion")),
            )
        }
        negation = _negation({**item["negation"]}, f"{where}.negation")
        languages[code] = _LanguageRules(negation, _rules(item["rules"], where, kinds), **optional)
    missing = set(safety_language.SUPPORTED) - {"en"} - set(languages)
    if missing:
        raise ValueError(f"crisis_rules_intl.yaml: no rules for supported languages {sorted(missing)}")
    return languages


@cache
def load_rules() -> _RuleSet:
    """Parse and compile safety_data/crisis_rules.yaml and crisis_rules_intl.yaml once; a bad file raises
    ValueError naming the rule."""
    text = (_DATA / "crisis_rules.yaml").read_text(encoding="utf-8")
    intl_text = (_DATA / "crisis_rules_intl.yaml").read_text(encoding="utf-8")
    raw = yaml.safe_load(text)
    labels = dict(raw["categories"])
    if tuple(labels) != CATEGORIES:
        raise ValueError(f"crisis_rules.yaml: categories must be {CATEGORIES}, got {tuple(labels)}")
    kinds = _kinds(raw["kinds"])
    norm = raw["normalise"]
    words = {str(k): str(v) for k, v in norm["words"].items()}
    words_re = re.compile(
        r"(?<![\w'])(" + "|".join(map(re.escape, sorted(words, key=len, reverse=True))) + r")(?![\w'])"
    )
    phrases = tuple((_compile(p["from"], "normalise.phrases"), p["to"].strip()) for p in norm["phrases"])
    return _RuleSet(
        version=content_version("crisis_rules", text + intl_text),
        category_labels=labels,
        words=words,
        words_re=words_re,
        phrases=phrases,
        fuzzy=tuple(norm["fuzzy"]),
        negation=_negation(raw["negation"], "negation"),
        intent_markers=_compile(raw["intent_markers"], "intent_markers"),
        crisis_rules=_rules(raw["crisis_rules"], "crisis_rules", kinds),
        reply_negation=_negation(raw["reply_negation"], "reply_negation"),
        reply_rules=_rules(raw["reply_rules"], "reply_rules", None),
        kinds=kinds,
        excuses=_excuses(raw),
        languages=_languages(yaml.safe_load(intl_text), kinds),
    )


def rules_version() -> str:
    """`crisis_rules@<sha256 prefix>` of both rule files: stored beside every flag so a flag names the exact rules
    that made it."""
    return load_rules().version


def _one_edit_apart(a: str, b: str) -> bool:
    """True when a and b differ by one insertion, deletion, substitution or swap of neighbours."""
    if a == b or abs(len(a) - len(b)) > 1:
        return False
    if len(a) == len(b):
        diffs = [i for i in range(len(a)) if a[i] != b[i]]
        if len(diffs) == 1:
            return True
        return (
            len(diffs) == 2 and diffs[1] == diffs[0] + 1 and a[diffs[0]] == b[diffs[1]] and a[diffs[1]] == b[diffs[0]]
        )
    short, long_ = (a, b) if len(a) < len(b) else (b, a)
    i = 0
    while i < len(short) and short[i] == long_[i]:
        i += 1
    return short[i:] == long_[i + 1 :]


def normalise(text: str) -> str:
    """Lower-case, straighten quotes, squeeze repeats, and map texting spellings, slang spellings and typos."""
    rules = load_rules()
    text = unicodedata.normalize("NFKC", text).lower()
    text = re.sub(r"[\u2018\u2019\u02bc`\u00b4]", "'", text)
    text = re.sub(r"[^\w\s'.,!?;:\-]", " ", text)
    text = re.sub(r"([a-z])\1{2,}", r"\1", text)
    text = re.sub(r"[ \t]+", " ", text).strip()
    text = rules.words_re.sub(lambda m: rules.words[m.group(1)], text)
    for pattern, replacement in rules.phrases:
        text = pattern.sub(replacement, text)

    def fix_typo(match: re.Match[str]) -> str:
        word = match.group(0)
        if len(word) >= 5:
            for target in rules.fuzzy:
                if word[0] == target[0] and _one_edit_apart(word, target):
                    return target
        return word

    return re.sub(r"[a-z]+", fix_typo, text)


def _clause_start(text: str, position: int, breaks: re.Pattern[str]) -> int:
    start = 0
    for brk in breaks.finditer(text, 0, position):
        start = brk.end()
    return start


def _main_clause(before: str, excuses: _Excuses) -> str:
    """The words before a hit less a conditional clause that opened before them, so that a negation in the
    if-clause does not reach the main clause: "if things don't improve by friday i'm going to" -> "i'm going to".
    The subject right after the opener ("if i don't ...") is the if-clause's own, not the main clause's."""
    opens = list(excuses.conditional_opens.finditer(before))
    if not opens:
        return before
    opener_end = opens[-1].end()
    subjects = [m for m in excuses.main_subject.finditer(before, opener_end) if m.start() > opener_end + 1]
    return before[subjects[-1].start() :] if subjects else before


def _negated(
    text: str,
    start: int,
    end: int,
    negation: _Negation,
    excuses: _Excuses | None = None,
    conditional: re.Pattern[str] | None = None,
) -> bool:
    clause_start = _clause_start(text, start, negation.clause_breaks)
    before_text = text[clause_start:start]
    if conditional is not None and conditional.search(before_text):
        # The if-clause runs up to the main clause, unmarked: "si no consigo el trabajo me voy a matar". Only a
        # negation right before the hit belongs to the main clause ("si me deja no me voy a matar").
        before_text = " ".join(before_text.split()[-_MAIN_CLAUSE_NEGATION_WORDS:])
    if excuses is not None:
        before_text = _main_clause(before_text, excuses)
        if excuses.main_subject.match(text, start) and excuses.conditional_opens.search(before_text):
            before_text = ""  # the hit opens the main clause itself: "if it isn't good on monday | i'll ..."
    before = before_text.split()
    window = " ".join(before[-negation.window_words :]) + " " + text[start:end]
    window = negation.pseudo.sub(" ", window)
    return bool(negation.cues.search(window))


def _sentence(text: str, start: int, end: int) -> str:
    left = max(text.rfind(ch, 0, start) for ch in ".!?;\n")
    rights = [i for i in (text.find(ch, end) for ch in ".!?;\n") if i != -1]
    return text[left + 1 : min(rights) if rights else len(text)]


def _sentence_start(text: str, position: int) -> int:
    return max(text.rfind(ch, 0, position) for ch in ".!?;\n") + 1


def _risk_now(text: str, excuses: _Excuses, breaks: re.Pattern[str]) -> bool:
    """A sign of now in a clause that does not itself say things are better: "these days" in "i'm happy these
    days" is the recovery's, in "these days i think about it again" the risk's."""
    for match in excuses.resolved_now.finditer(text):
        start = _clause_start(text, match.start(), breaks)
        brk = breaks.search(text, match.end())
        if not excuses.resolved_over.search(text[start : brk.start() if brk else len(text)]):
            return True
    return False


def _excused(text: str, start: int, end: int, rule: _Rule) -> bool:
    """True when the statement says the risk is over, is about someone else, discusses the subject, or is an
    anger idiom (see crisis_rules.yaml's header); English rules only."""
    rules = load_rules()
    kind, excuses = rules.kinds[rule.kind], rules.excuses
    hit = text[start:end]
    if (
        kind.resolvable
        and excuses.resolved_past.search(text)
        and excuses.resolved_over.search(text)
        and not _risk_now(text, excuses, rules.negation.clause_breaks)
    ):
        return True
    if (
        rule.kind in ("harm_to_others", "harm_from_others")
        and excuses.anger_idiom.search(_sentence(text, start, end))
        and not excuses.anger_serious.search(text)
    ):
        return True
    left = text[_sentence_start(text, start) : start]
    if kind.third_party_excusable and not excuses.first_person.search(hit):
        others = list(excuses.third_party.finditer(left))
        if others and not excuses.first_person.search(left[others[-1].end() :]):
            return True
    if rule.kind != "acute_danger" and excuses.discussion.search(_sentence(text, start, end)):
        near = " ".join(left.split()[-4:])
        if not excuses.first_person.search(hit) and not excuses.first_person.search(near):
            return True
    return False


def _resolved_in_language(text: str, rule: _Rule, language: _LanguageRules) -> bool:
    """A non-English statement that says the risk is over: a past marker and a resolution marker."""
    if language.resolved_past is None or language.resolved_over is None:
        return False
    return (
        load_rules().kinds[rule.kind].resolvable
        and bool(language.resolved_past.search(text))
        and bool(language.resolved_over.search(text))
        and not (language.resolved_now is not None and language.resolved_now.search(text))
    )


def _excused_in_language(text: str, start: int, end: int, rule: _Rule, language: _LanguageRules) -> bool:
    """A non-English hit about someone else (a person named before it in the sentence, no first-person word
    between them or in the hit) or in a statement that discusses the subject (no first-person word in or just
    before the hit: "... suizidversuch? für meine hausarbeit")."""
    left = text[_sentence_start(text, start) : start]
    mine = language.first_person
    if language.third_party is not None and load_rules().kinds[rule.kind].third_party_excusable:
        others = list(language.third_party.finditer(left))
        if others and not (mine is not None and mine.search(left[others[-1].end() :] + " " + text[start:end])):
            return True
    discussed = language.discussion is not None and language.discussion.search(text)
    if rule.kind != "acute_danger" and discussed:
        near = " ".join(left.split()[-4:]) + " " + text[start:end]
        return not (mine is not None and mine.search(near))
    return False


def _excused_as(folded: str, norm: str, rule: _Rule, language: _LanguageRules) -> bool:
    """An English rule's hit on a statement whose likeliest language is `language`: excused when that language's
    words say the past is over ("em 2013 ... hoje estou bem"), or discuss the subject ("o telejornal falou de
    overdoses") with no first-person word in either language."""
    if _resolved_in_language(folded, rule, language):
        return True
    return (
        rule.kind != "acute_danger"
        and language.discussion is not None
        and bool(language.discussion.search(folded))
        and not (language.first_person is not None and language.first_person.search(folded))
        and not load_rules().excuses.first_person.search(norm)
    )


def _hits(
    text: str,
    rules: tuple[_Rule, ...],
    negation: _Negation,
    excuses: _Excuses | None = None,
    language: _LanguageRules | None = None,
) -> list[tuple[_Rule, str]]:
    """Each rule's first surviving match (not negated, not excused by its `unless` or, given `excuses` or a
    `language`, by the statement-level excuses)."""
    found = []
    conditional = language.conditional if language is not None else None
    for rule in rules:
        if language is not None and _resolved_in_language(text, rule, language):
            continue
        for pattern in rule.patterns:
            hit = None
            for match in pattern.finditer(text):
                if rule.negatable and _negated(text, match.start(), match.end(), negation, excuses, conditional):
                    continue
                if rule.unless and rule.unless.search(_sentence(text, match.start(), match.end())):
                    continue
                if excuses is not None and _excused(text, match.start(), match.end(), rule):
                    continue
                if language is not None and _excused_in_language(text, match.start(), match.end(), rule, language):
                    continue
                hit = match
                break
            if hit:
                found.append((rule, hit.group(0).strip()[:_EVIDENCE_CHARS]))
                break
    return found


def _negated_clauses(text: str, rules: tuple[_Rule, ...], negation: _Negation) -> list[tuple[int, int]]:
    """Spans of the clauses in which a negatable rule's words matched and the negation logic discarded them."""
    if not negation.cues.search(text):
        return []  # nothing can be negated without a cue; saves a second scan of every rule on long text
    spans = []
    for rule in rules:
        if not rule.negatable:
            continue
        for pattern in rule.patterns:
            for match in pattern.finditer(text):
                if _negated(text, match.start(), match.end(), negation, load_rules().excuses):
                    start = _clause_start(text, match.start(), negation.clause_breaks)
                    brk = negation.clause_breaks.search(text, match.end())
                    spans.append((start, brk.start() if brk else len(text)))
    return spans


def _classifier_reading(text: str) -> tuple[str, bool]:
    rules = load_rules()
    norm = normalise(text)
    spans = _negated_clauses(norm, rules.crisis_rules, rules.negation)
    for start, end in spans:
        norm = norm[:start] + " " * (end - start) + norm[end:]
    norm = re.sub(r"\s+", " ", norm).strip(" .,!?;:-")
    if spans and _is_elliptical_denial(norm, rules.negation):
        norm = ""  # "I haven't self-harmed and I don't want to": the rest only repeats the denial
    return (norm if re.search(r"\w", norm) else ""), bool(spans)


def _is_elliptical_denial(rest: str, negation: _Negation) -> bool:
    """A short negated remainder with nothing of its own to read ("and i don't want to", "and i won't")."""
    rest = re.sub(r"^(?:and|but|so|or)\s+", "", rest)
    return (
        len(rest.split()) <= _ELLIPSIS_WORDS
        and bool(negation.cues.search(rest))
        and bool(re.search(r"(?:\bto|\bwill|'ll|\bwon't|\bdo|\bdon't|\bam|\bi'm not)$", rest))
    )


def classifier_input(text: str) -> str:
    """What the classifier reads: the normalised text less the clauses of explicit denials (the negation veto);
    empty when nothing is left to read."""
    return _classifier_reading(text)[0]


def fold_accents(text: str) -> str:
    """What the Spanish, German, French, Portuguese and Italian rules read: lower case, accents removed, sharp s
    as ss, straight apostrophes, single spaces."""
    text = unicodedata.normalize("NFKC", text).lower().replace("\u00df", "ss")
    text = re.sub(r"[\u2018\u2019\u02bc`\u00b4]", "'", text)
    text = "".join(ch for ch in unicodedata.normalize("NFKD", text) if not unicodedata.combining(ch))
    return re.sub(r"\s+", " ", text).strip()


def _rules_verdict(text: str, language: safety_language.LanguageGuess | None = None) -> CrisisResult:
    """The deterministic screen: the English rules, then every other supported language's; `screened` is False
    when nothing hit and the language is one the screen has no rules for."""
    rules = load_rules()
    language = language or safety_language.detect_language(text)
    norm = normalise(text)
    # A statement surely in one language is read by that language's rules alone (the English typo fixer would
    # read Portuguese "suicidas" as "suicidal"); short or ambiguous ones, or unsupported ones, by all of them.
    sure = language.supported and language.confidence >= _SURELY_NOT_ENGLISH
    hits = []
    folded = fold_accents(text)
    if norm and (language.language == "en" or not sure):
        hits = _hits(norm, rules.crisis_rules, rules.negation, rules.excuses)
        read_as = rules.languages.get(language.language)
        if read_as is not None:  # unsure, but likeliest another language: its words for "over now" or news count
            hits = [(rule, words) for rule, words in hits if not _excused_as(folded, norm, rule, read_as)]
    for code, language_rules in rules.languages.items():
        if code == language.language or not sure:
            hits.extend(_hits(folded, language_rules.rules, language_rules.negation, language=language_rules))
    if not hits:
        return CrisisResult(crisis=False, screened=language.supported, language=language.language)
    kinds = {rule.kind for rule, _ in hits}
    matched = [f'{rule.id}: "{words}" [{rule.kind}]' for rule, words in hits]
    found = {c for kind in kinds for c in rules.kinds[kind].categories}
    # Timing or resolve is intent even beside a plan ("i'm going to kill myself tonight": plan and intent).
    if found & {"suicidal_ideation", "self_harm"} and "ideation_with_intent" not in kinds:
        for marker in rules.intent_markers.finditer(norm):
            if not _negated(norm, marker.start(), marker.end(), rules.negation, rules.excuses):
                kinds.add("ideation_with_intent")
                found.add("intent_or_plan")
                matched.append(f'intent_marker: "{marker.group(0)}" [ideation_with_intent]')
                break
    return CrisisResult(
        crisis=True,
        categories=tuple(c for c in CATEGORIES if c in found),
        matched=tuple(matched),
        kinds=tuple(k for k in KINDS if k in kinds),
        language=language.language,
    )


def detect_crisis_batch(texts: Sequence[str], *, use_classifier: bool = True) -> list[CrisisResult]:
    """Screen statements by people (or simulated patients) for crisis language: language detection and the
    rules, then the classifier on the English ones in one batch. Never raises for want of the classifier; it
    falls back to the rules. A classifier-only hit takes the kind its head finds closest."""
    guesses = [safety_language.detect_language(text) for text in texts]
    verdicts = [_rules_verdict(text, guess) for text, guess in zip(texts, guesses, strict=True)]
    if not use_classifier:
        return [replace(v, fallback_reason="classifier not requested") for v in verdicts]
    # Short English is often read as a neighbouring language at low confidence ("i wanna die so bad rn": de 0.68).
    english = [g.language == "en" or (g.supported and g.confidence < _SURELY_NOT_ENGLISH) for g in guesses]
    readings = [_classifier_reading(t) if en else ("", False) for t, en in zip(texts, english, strict=True)]
    try:
        probabilities, kinds = safety_classifier.crisis_scores([read for read, _ in readings])
        head = safety_classifier.load_head()
    except safety_classifier.ClassifierUnavailable as exc:
        return [replace(v, fallback_reason=str(exc)) for v in verdicts]
    labels = load_rules().kinds
    results = []
    for verdict, (read, denied), p, kind, en in zip(
        verdicts, readings, probabilities.tolist(), kinds, english, strict=True
    ):
        if not en:
            reason = f"the classifier reads English only; this statement reads as {verdict.language!r}"
            results.append(replace(verdict, fallback_reason=reason))
            continue
        threshold = head.threshold_for(kind)
        if not verdict.crisis and read and p >= threshold:
            how = "classifier (denied clauses set aside)" if denied else "classifier"
            verdict = replace(
                verdict,
                crisis=True,
                screened=True,
                categories=labels[kind].categories,
                kinds=(kind,),
                matched=(f"{how}: p={p:.2f} >= {threshold:.2f} [{kind}]",),
            )
        results.append(replace(verdict, screened_by="rules+classifier", probability=p))
    return results


def detect_crisis(text: str, *, use_classifier: bool = True) -> CrisisResult:
    """Screen one statement for crisis language (see `detect_crisis_batch`); batch many for speed."""
    return detect_crisis_batch([text], use_classifier=use_classifier)[0]


def check_model_reply(text: str) -> HarmResult:
    """Flag a model's reply that encourages self-harm or suicide, agrees it is the answer, or gives methods."""
    rules = load_rules()
    hits = _hits(normalise(text), rules.reply_rules, rules.reply_negation)
    return HarmResult(harmful=bool(hits), matched=tuple(f'{rule.id}: "{words}"' for rule, words in hits))


def _read(name: str) -> str:
    return (_DATA / name).read_text(encoding="utf-8").strip()


CRISIS_RESOURCES: str = _read("resources.md")
"""Markdown: 988 Suicide & Crisis Lifeline (US), findahelpline.com, local emergency numbers."""


@cache
def _helplines() -> dict[str, str]:
    return {str(k): str(v).strip() for k, v in yaml.safe_load(_read("helplines.yaml")).items()}


def crisis_resources(language: str = "en") -> str:
    """The resources for a message in `language`: its local helplines (Spanish, German, French, Portuguese,
    Italian) above the general ones."""
    local = _helplines().get(language)
    return f"{local}\n{CRISIS_RESOURCES}" if local else CRISIS_RESOURCES


def crisis_panel_markdown(result: CrisisResult) -> str:
    """The panel the UI shows when a person's turn hits, or was in a language the screen cannot read (the
    resources are shown then too); an empty string when it was screened and did not hit."""
    resources = crisis_resources(result.language)
    if result.crisis:
        rules = load_rules()
        labels = [rules.kinds[k].label for k in result.kinds if k in rules.kinds]
        if not labels:
            labels = [rules.category_labels[c] for c in result.categories]
        concerns = "; ".join(dict.fromkeys(labels))
        return Template(_read("panel.md")).substitute(concerns=concerns, resources=resources) + "\n"
    if not result.screened:
        return Template(_read("panel_unscreened.md")).substitute(language=result.language, resources=resources) + "\n"
    return ""


def crisis_result_from_flags(flags: dict) -> CrisisResult | None:
    """The finding a flagged turn stores (see `flag_turn`), for a panel: None when the turn was screened and
    did not hit. Reads flags written before kinds and languages existed too."""
    categories = flags.get("crisis")
    language = str(flags.get("crisis_language", "en"))
    if categories:
        return CrisisResult(
            True,
            tuple(categories),
            tuple(flags.get("crisis_evidence", ())),
            kinds=tuple(flags.get("crisis_kinds", ())),
            language=language,
        )
    if flags.get("crisis_screened") is False:
        return CrisisResult(False, screened=False, language=language)
    return None


def flag_turn(turn: Turn, *, use_classifier: bool = True) -> Turn:
    """Return a copy of the turn with its safety flags set from its text: the one place turns are checked.

    Patient turns get flags["crisis"] = [broad categories] (the shape stored since the first version),
    flags["crisis_kinds"] = [C-SSRS-organised kinds] and flags["crisis_language"] when they hit, or
    flags["crisis_screened"] = False with the language when the screen could not read them; therapist turns
    get flags["harmful_reply"] = True when they hit; the evidence and the rules version go beside them (and the
    classifier version when it took part in screening); stale safety flags are dropped.
    `use_classifier=False` screens with the rules alone.
    """
    keys = (
        "crisis",
        "crisis_kinds",
        "crisis_evidence",
        "crisis_screened",
        "crisis_language",
        "harmful_reply",
        "harmful_evidence",
        "safety_rules",
        "safety_classifier",
    )
    flags = {k: v for k, v in turn.flags.items() if k not in keys}
    if turn.role == "patient":
        result = detect_crisis(turn.text, use_classifier=use_classifier)
        if result.crisis:
            flags.update(crisis=list(result.categories), crisis_kinds=list(result.kinds))
            flags.update(crisis_evidence=list(result.matched), crisis_language=result.language)
        elif not result.screened:
            flags.update(crisis_screened=False, crisis_language=result.language)
        if result.crisis or not result.screened:
            flags["safety_rules"] = rules_version()
            if result.screened_by == "rules+classifier":
                flags["safety_classifier"] = safety_classifier.classifier_version()
    else:
        harm = check_model_reply(turn.text)
        if harm.harmful:
            flags.update(harmful_reply=True, harmful_evidence=list(harm.matched))
            flags["safety_rules"] = rules_version()
    return turn.model_copy(update={"flags": flags})
