"""Crisis-language detection for people's turns, harm checks for models' replies, and the crisis resources.

What it is for: every patient turn (typed by a person or written by a simulated patient) goes through
`flag_turn`, which marks crisis language (suicidal ideation, passive included; self-harm; intent or plan;
harm to others; abuse) so the UI can show `crisis_panel_markdown` and the stored transcript carries the
flag; every therapist turn is checked for replies that encourage self-harm or give methods.

How a statement is screened (`detect_crisis`, `detect_crisis_batch`): crisis = the rules hit OR the
semantic classifier's probability >= its threshold.
- The rules in `safety_data/crisis_rules.yaml` (normalisation of slang and typos, regex patterns per
  category, clause-scoped negation, per-rule exceptions) are deterministic, take about a millisecond a
  statement, and every flag names the rule and words that fired. Their known limit: they catch the
  phrasings they were written for; on passive ideation worded in ways not seen before (tests/data/
  crisis_fresh4.jsonl) they recall 0.30.
- The classifier (cbtcompare/safety_classifier.py: all-MiniLM-L6-v2 embeddings of the normalised text, a
  logistic-regression head trained on the development set only, threshold chosen by cross-validation)
  catches some paraphrases the rules miss (rules OR classifier: 0.70 on that set, FPR 0.033) at the cost
  of some false alarms (held-out FPR 0.078, where the rules alone have none). A classifier-only hit is
  labelled suicidal_ideation, with evidence `classifier: p=...`; categories come from the rules whenever
  they hit.
- Negation veto, the one way the rules overrule the classifier: when a crisis rule's words matched but
  the rules' negation logic discarded them (an explicit denial: "I'd never hurt myself", "I'm not
  suicidal", "I don't want to die"), the clause holding that denial is taken out of what the classifier
  reads; the rest of the statement is still scored ("I'm not suicidal, just tired" -> "just tired"). A
  statement that is all denial is not scored. Nothing else vetoes a classifier hit.
- No model at import: the embedding model loads on first use, once per process. When it cannot be had
  (package missing, CBTCOMPARE_CRISIS_CLASSIFIER=off) screening falls back to the rules and the result
  says so (`screened_by == "rules"`, `fallback_reason`). Tuned for recall: a false alarm costs a panel of
  phone numbers, a miss costs far more. Figures are in tests/test_safety.py and test_safety_classifier.py.

What it must never do: reach the network, call a generative model, block or rewrite what a person wrote,
or give advice of its own beyond pointing to people who can help (988, findahelpline.com, local
emergency services). It is a screening aid for a research tool, not a clinical risk assessment.
"""

from __future__ import annotations

import hashlib
import re
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from functools import cache
from importlib import resources
from string import Template

import yaml

from cbtcompare import safety_classifier
from cbtcompare.transcript import Turn

CATEGORIES: tuple[str, ...] = ("suicidal_ideation", "self_harm", "intent_or_plan", "harm_to_others", "abuse")
_DATA = resources.files("cbtcompare") / "safety_data"
_EVIDENCE_CHARS = 60


@dataclass(frozen=True)
class CrisisResult:
    """What `detect_crisis` found: the categories hit and, for each hit, `rule_id: "matched words"` (or
    `classifier...: p=...` for a hit the classifier alone made).

    The last three fields say how the verdict was reached and take no part in comparing results:
    `screened_by` is "rules+classifier" or "rules" (the classifier was off, missing or not asked for),
    `fallback_reason` says why it was "rules", `probability` is the classifier's P(crisis) when it scored.
    """

    crisis: bool
    categories: tuple[str, ...] = ()
    matched: tuple[str, ...] = ()
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
    categories: tuple[str, ...]
    patterns: tuple[re.Pattern[str], ...]
    negatable: bool
    unless: re.Pattern[str] | None


@dataclass(frozen=True)
class _Negation:
    window_words: int
    clause_breaks: re.Pattern[str]
    cues: re.Pattern[str]
    pseudo: re.Pattern[str]


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


def _rules(raw: list[dict], where: str, categorised: bool) -> tuple[_Rule, ...]:
    rules = []
    for item in raw:
        rule_id = item["id"]
        categories = tuple(item.get("categories", ()))
        if categorised and (not categories or set(categories) - set(CATEGORIES)):
            raise ValueError(f"crisis_rules.yaml: rule {rule_id} has categories {categories}; known: {CATEGORIES}")
        patterns = tuple(_compile(p, f"{where}.{rule_id}") for p in item["patterns"])
        unless = _compile(item["unless"], f"{where}.{rule_id}.unless") if item.get("unless") else None
        rules.append(_Rule(rule_id, categories, patterns, bool(item.get("negatable", True)), unless))
    ids = [r.id for r in rules]
    if len(ids) != len(set(ids)):
        raise ValueError(f"crisis_rules.yaml: duplicate rule ids in {where}")
    return tuple(rules)


@cache
def load_rules() -> _RuleSet:
    """Parse and compile safety_data/crisis_rules.yaml once; a bad file raises ValueError naming the rule."""
    text = (_DATA / "crisis_rules.yaml").read_text(encoding="utf-8")
    raw = yaml.safe_load(text)
    labels = dict(raw["categories"])
    if tuple(labels) != CATEGORIES:
        raise ValueError(f"crisis_rules.yaml: categories must be {CATEGORIES}, got {tuple(labels)}")
    norm = raw["normalise"]
    words = {str(k): str(v) for k, v in norm["words"].items()}
    words_re = re.compile(
        r"(?<![\w'])(" + "|".join(map(re.escape, sorted(words, key=len, reverse=True))) + r")(?![\w'])"
    )
    phrases = tuple((_compile(p["from"], "normalise.phrases"), p["to"].strip()) for p in norm["phrases"])
    return _RuleSet(
        version="crisis_rules@" + hashlib.sha256(text.encode("utf-8")).hexdigest()[:12],
        category_labels=labels,
        words=words,
        words_re=words_re,
        phrases=phrases,
        fuzzy=tuple(norm["fuzzy"]),
        negation=_negation(raw["negation"], "negation"),
        intent_markers=_compile(raw["intent_markers"], "intent_markers"),
        crisis_rules=_rules(raw["crisis_rules"], "crisis_rules", categorised=True),
        reply_negation=_negation(raw["reply_negation"], "reply_negation"),
        reply_rules=_rules(raw["reply_rules"], "reply_rules", categorised=False),
    )


def rules_version() -> str:
    """`crisis_rules@<sha256 prefix>`: stored beside every flag so a flag names the exact rules that made it."""
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


def _negated(text: str, start: int, end: int, negation: _Negation) -> bool:
    clause_start = _clause_start(text, start, negation.clause_breaks)
    before = text[clause_start:start].split()
    window = " ".join(before[-negation.window_words :]) + " " + text[start:end]
    window = negation.pseudo.sub(" ", window)
    return bool(negation.cues.search(window))


def _sentence(text: str, start: int, end: int) -> str:
    left = max(text.rfind(ch, 0, start) for ch in ".!?;\n")
    rights = [i for i in (text.find(ch, end) for ch in ".!?;\n") if i != -1]
    return text[left + 1 : min(rights) if rights else len(text)]


def _hits(text: str, rules: tuple[_Rule, ...], negation: _Negation) -> list[tuple[_Rule, str]]:
    """Each rule's first surviving match (not negated, not excused by its `unless`)."""
    found = []
    for rule in rules:
        for pattern in rule.patterns:
            hit = None
            for match in pattern.finditer(text):
                if rule.negatable and _negated(text, match.start(), match.end(), negation):
                    continue
                if rule.unless and rule.unless.search(_sentence(text, match.start(), match.end())):
                    continue
                hit = match
                break
            if hit:
                found.append((rule, hit.group(0).strip()[:_EVIDENCE_CHARS]))
                break
    return found


def _negated_clauses(text: str, rules: tuple[_Rule, ...], negation: _Negation) -> list[tuple[int, int]]:
    """Spans of the clauses in which a negatable rule's words matched and the negation logic discarded them."""
    spans = []
    for rule in rules:
        if not rule.negatable:
            continue
        for pattern in rule.patterns:
            for match in pattern.finditer(text):
                if _negated(text, match.start(), match.end(), negation):
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
    return (norm if re.search(r"\w", norm) else ""), bool(spans)


def classifier_input(text: str) -> str:
    """What the classifier reads: the normalised text less the clauses of explicit denials (the negation veto);
    empty when nothing is left to read."""
    return _classifier_reading(text)[0]


def _rules_verdict(text: str) -> CrisisResult:
    rules = load_rules()
    norm = normalise(text)
    if not norm:
        return CrisisResult(crisis=False)
    hits = _hits(norm, rules.crisis_rules, rules.negation)
    if not hits:
        return CrisisResult(crisis=False)
    found = {c for rule, _ in hits for c in rule.categories}
    matched = [f'{rule.id}: "{words}"' for rule, words in hits]
    if found & {"suicidal_ideation", "self_harm"} and "intent_or_plan" not in found:
        for marker in rules.intent_markers.finditer(norm):
            if not _negated(norm, marker.start(), marker.end(), rules.negation):
                found.add("intent_or_plan")
                matched.append(f'intent_marker: "{marker.group(0)}"')
                break
    return CrisisResult(crisis=True, categories=tuple(c for c in CATEGORIES if c in found), matched=tuple(matched))


def detect_crisis_batch(texts: Sequence[str], *, use_classifier: bool = True) -> list[CrisisResult]:
    """Screen statements by people (or simulated patients) for crisis language: the rules, then the classifier
    on all of them in one batch. Never raises for want of the classifier; it falls back to the rules."""
    verdicts = [_rules_verdict(text) for text in texts]
    if not use_classifier:
        return [replace(v, fallback_reason="classifier not requested") for v in verdicts]
    readings = [_classifier_reading(text) for text in texts]
    try:
        probabilities = safety_classifier.crisis_probabilities([read for read, _ in readings])
        threshold = safety_classifier.load_head().threshold
    except safety_classifier.ClassifierUnavailable as exc:
        return [replace(v, fallback_reason=str(exc)) for v in verdicts]
    results = []
    for verdict, (read, denied), p in zip(verdicts, readings, probabilities.tolist(), strict=True):
        if not verdict.crisis and read and p >= threshold:
            how = "classifier (denied clauses set aside)" if denied else "classifier"
            verdict = CrisisResult(
                crisis=True, categories=("suicidal_ideation",), matched=(f"{how}: p={p:.2f} >= {threshold:.2f}",)
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


def crisis_panel_markdown(result: CrisisResult) -> str:
    """The panel the UI shows when a person's turn hits; an empty string when it did not."""
    if not result.crisis:
        return ""
    labels = load_rules().category_labels
    concerns = "; ".join(labels[c] for c in result.categories)
    return Template(_read("panel.md")).substitute(concerns=concerns, resources=CRISIS_RESOURCES) + "\n"


def flag_turn(turn: Turn, *, use_classifier: bool = True) -> Turn:
    """Return a copy of the turn with its safety flags set from its text: the one place turns are checked.

    Patient turns get flags["crisis"] = [categories] and therapist turns flags["harmful_reply"] = True when
    they hit, with the evidence and the rules version beside them (and the classifier version when it took
    part in screening); stale safety flags are dropped. `use_classifier=False` screens with the rules alone.
    """
    keys = ("crisis", "crisis_evidence", "harmful_reply", "harmful_evidence", "safety_rules", "safety_classifier")
    flags = {k: v for k, v in turn.flags.items() if k not in keys}
    if turn.role == "patient":
        result = detect_crisis(turn.text, use_classifier=use_classifier)
        if result.crisis:
            flags.update(crisis=list(result.categories), crisis_evidence=list(result.matched))
            flags["safety_rules"] = rules_version()
            if result.screened_by == "rules+classifier":
                flags["safety_classifier"] = safety_classifier.classifier_version()
    else:
        harm = check_model_reply(turn.text)
        if harm.harmful:
            flags.update(harmful_reply=True, harmful_evidence=list(harm.matched))
            flags["safety_rules"] = rules_version()
    return turn.model_copy(update={"flags": flags})
