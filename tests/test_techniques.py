"""The CBT technique tagger on labelled synthetic therapist utterances, transcripts, and its rules file.

tests/data/technique_labelled.jsonl holds synthetic utterances, each with every tag it should carry (an empty
list for small talk, closed questions, generic advice and other near-misses), and a split:
- "dev": the examples the rules were written and refined against; the bar is per-tag precision and
  recall >= 0.85.
- "heldout": written after the last rule change and never tuned against; it measures how the rules
  generalise to new phrasings (high precision, much lower recall). Its floors guard against regressions.
  Do not tune the rules on it: add new examples to "dev" instead, and write a fresh held-out set.
"""

from __future__ import annotations

import hashlib
import json
import re
import time
from pathlib import Path

import pytest

from cbtcompare import techniques
from cbtcompare.techniques import (
    CBT_MOVES,
    RULES_PATH,
    RULES_VERSION,
    TECHNIQUE_IDS,
    RulesError,
    TechniqueTag,
    TechniqueTagger,
    cbt_move_rate,
    tag_transcript,
    tag_turn,
    technique_catalogue,
    technique_rates,
)
from cbtcompare.transcript import Transcript, Turn

LABELLED = Path(__file__).parent / "data" / "technique_labelled.jsonl"
EXPECTED_IDS = (
    "agenda_setting", "socratic_question", "reflection_empathy", "psychoeducation", "cognitive_restructuring",
    "behavioural_activation", "homework", "summary", "feedback_request",
)


def _labelled(split: str) -> list[tuple[str, set[str]]]:
    rows = [json.loads(line) for line in LABELLED.read_text(encoding="utf-8").splitlines() if line.strip()]
    return [(row["text"], set(row["tags"])) for row in rows if row["split"] == split]


def _counts(examples: list[tuple[str, set[str]]], tag_id: str) -> tuple[int, int, int]:
    tp = fp = fn = 0
    for text, gold in examples:
        predicted = {tag.id for tag in tag_turn(text)}
        tp += tag_id in gold and tag_id in predicted
        fp += tag_id not in gold and tag_id in predicted
        fn += tag_id in gold and tag_id not in predicted
    return tp, fp, fn


def _mistakes(examples: list[tuple[str, set[str]]], tag_id: str) -> list[str]:
    wrong = []
    for text, gold in examples:
        predicted = {tag.id for tag in tag_turn(text)}
        if (tag_id in gold) != (tag_id in predicted):
            wrong.append(f"{'missed' if tag_id in gold else 'false'}: {text}")
    return wrong


def test_the_rules_define_the_stable_tag_ids_with_labels_and_descriptions():
    assert TECHNIQUE_IDS == EXPECTED_IDS
    assert set(CBT_MOVES) < set(TECHNIQUE_IDS)
    for info in technique_catalogue():
        assert info.label and info.description


def test_the_labelled_set_has_enough_positives_per_tag_and_enough_negatives():
    dev = _labelled("dev")
    assert {tag for _, gold in dev for tag in gold} == set(EXPECTED_IDS)
    for tag_id in EXPECTED_IDS:
        assert sum(tag_id in gold for _, gold in dev) >= 10, tag_id
    assert sum(not gold for _, gold in dev) >= 40
    texts = [text for text, _ in dev + _labelled("heldout")]
    assert len(texts) == len(set(texts)), "an utterance is labelled twice"


@pytest.mark.parametrize("tag_id", EXPECTED_IDS)
def test_precision_and_recall_per_tag_on_the_labelled_set(tag_id):
    dev = _labelled("dev")
    tp, fp, fn = _counts(dev, tag_id)
    precision, recall = tp / (tp + fp), tp / (tp + fn)
    assert precision >= 0.85 and recall >= 0.85, (precision, recall, _mistakes(dev, tag_id))


def test_held_out_utterances_keep_high_precision_and_a_recall_floor():
    heldout = _labelled("heldout")
    assert len(heldout) >= 60 and sum(not gold for _, gold in heldout) >= 15
    totals = [_counts(heldout, tag_id) for tag_id in EXPECTED_IDS]
    tp, fp, fn = (sum(column) for column in zip(*totals, strict=True))
    assert tp / (tp + fp) >= 0.9
    assert tp / (tp + fn) >= 0.5
    assert all(not tag_turn(text) for text, gold in heldout if not gold), "a held-out near-miss was tagged"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("What would you like to put on our agenda today?", {"agenda_setting"}),
        ("Let's summarise what we covered", {"summary"}),
        ("For homework, could you fill in a thought record each evening?", {"homework"}),
        ("How did that session feel for you?", {"feedback_request"}),
        ("What makes you think that nobody at work respects you?", {"socratic_question"}),
        ("What would you tell a friend who said that about herself?", {"socratic_question"}),
        ("It sounds like this week has been really exhausting for you.", {"reflection_empathy"}),
        ("In CBT, we look at how thoughts, feelings and behaviours affect each other.", {"psychoeducation"}),
        ("Let's schedule a few pleasant activities into your week.", {"behavioural_activation"}),
        ("Let's look at the evidence for and against that thought.", {"cognitive_restructuring"}),
        ("Do you think that's true?", set()),
        ("Would you say that to a friend?", set()),
        ("You should try to drink more water.", set()),
        ("How was your weekend?", set()),
    ],
)
def test_exact_examples(text, expected):
    assert {tag.id for tag in tag_turn(text)} == expected


def test_a_socratic_question_must_be_an_open_question():
    assert "socratic_question" in {t.id for t in tag_turn("What does it mean about you if she says no?")}
    # the same words in a closed question, and in a statement, are not Socratic questions
    assert "socratic_question" not in {t.id for t in tag_turn("Do you know what it means about you?")}
    assert "socratic_question" not in {t.id for t in tag_turn("I wonder what it means about you.")}
    # the question mark belongs to the sentence that holds the words, not to the turn
    turn = "What makes you think that is a long story. Shall we get started?"
    assert "socratic_question" not in {t.id for t in tag_turn(turn)}


def test_evidence_is_the_matched_span_as_written_and_patterns_are_word_bounded():
    turn = "That\u2019s hard. What\u2019s the evidence for that thought?"
    tags = {tag.id: tag for tag in tag_turn(turn)}
    expected = TechniqueTag("socratic_question", "Socratic question", "What\u2019s the evidence")
    assert tags["socratic_question"] == expected
    for tag in tags.values():
        assert tag.evidence in turn
    assert tag_turn("Our homeworking policy changed in March.") == ()
    assert tag_turn("") == ()
    assert [t.id for t in tag_turn("AGENDA FIRST, THEN HOMEWORK.")] == ["agenda_setting", "homework"]


def test_tagging_is_deterministic_and_independent_of_order():
    texts = [text for text, _ in _labelled("dev")]
    first = [tag_turn(text) for text in texts]
    fresh = TechniqueTagger.from_file(RULES_PATH)
    assert [fresh.tag_turn(text) for text in reversed(texts)] == first[::-1]
    assert [tag_turn(text) for text in texts] == first
    with pytest.raises(AttributeError):
        first[0][0].id = "changed"  # type: ignore[misc]


def test_tagging_is_fast_and_copes_with_a_20000_character_turn():
    texts = [text for text, _ in _labelled("dev") + _labelled("heldout")]
    started = time.perf_counter()
    for text in texts:
        tag_turn(text)
    assert time.perf_counter() - started < 2.0  # about 0.06 s here; generous for a busy shared machine
    started = time.perf_counter()
    assert tag_turn("what do you know " * 1200 + "?") == ()  # one 20,000-character non-question: no tag
    long_turn = "Okay. " * 3000 + "What evidence do you have that nobody likes you?"
    assert "socratic_question" in {t.id for t in tag_turn(long_turn)}  # a move at the end of a long turn
    assert {t.id for t in tag_turn(" ".join(texts)[:20000])} >= {"agenda_setting", "socratic_question"}
    assert time.perf_counter() - started < 2.0


def _session() -> Transcript:
    return Transcript(turns=[
        Turn(role="therapist", text="Welcome back. What would you like to put on our agenda today?"),
        Turn(role="patient", text="Can we summarise my homework? What's the evidence that I'm failing?"),
        Turn(role="therapist", text="It sounds like this week has been really exhausting for you."),
        Turn(role="patient", text="It has."),
        Turn(role="therapist", text="What makes you think that nobody at work respects you?"),
        Turn(role="therapist", text="Did you sleep well last night?"),
    ])


def test_tag_transcript_tags_therapist_turns_only():
    session = _session()
    tagged = tag_transcript(session)
    assert len(tagged) == len(session.turns)
    assert tagged[1] is None and tagged[3] is None  # patient turns are never tagged, whatever they say
    assert [t.id for t in tagged[0] or ()] == ["agenda_setting"]
    assert [t.id for t in tagged[2] or ()] == ["reflection_empathy"]
    assert [t.id for t in tagged[4] or ()] == ["socratic_question"]
    assert tagged[5] == ()
    assert tag_transcript(session.turns) == tagged


def test_technique_rates_and_cbt_move_rate_count_therapist_turns():
    session = _session()
    # 4 therapist turns: agenda, reflection, Socratic, nothing; the patient's CBT words do not count
    assert cbt_move_rate(session) == pytest.approx(2 / 4)
    rates = technique_rates([session])
    assert list(rates) == list(EXPECTED_IDS)
    assert rates["agenda_setting"] == rates["reflection_empathy"] == rates["socratic_question"] == pytest.approx(0.25)
    assert rates["summary"] == rates["homework"] == 0.0
    second = [Turn(role="therapist", text="Let's summarise what we covered today.")]
    pooled = technique_rates([session, second])
    assert pooled["summary"] == pytest.approx(1 / 5) and pooled["agenda_setting"] == pytest.approx(1 / 5)
    assert cbt_move_rate(second) == 1.0


def test_rates_over_no_therapist_turn_are_an_error_not_zero():
    with pytest.raises(ValueError, match="no therapist turns"):
        cbt_move_rate([Turn(role="patient", text="Hello?")])
    with pytest.raises(ValueError, match="no therapist turns"):
        technique_rates([])


def test_rules_version_names_the_file_and_its_content():
    digest = hashlib.sha256(RULES_PATH.read_bytes()).hexdigest()[:12]
    assert RULES_VERSION.endswith(f"@{digest}")
    assert re.fullmatch(r"techniques_rules\.yaml@[0-9a-f]{12}", RULES_VERSION)
    assert techniques.default_tagger().version == RULES_VERSION


def test_an_edited_rules_file_gets_a_new_version_and_new_behaviour(tmp_path):
    edited = tmp_path / "techniques_rules.yaml"
    text = RULES_PATH.read_text(encoding="utf-8")
    edited.write_text(text.replace("      - phrase: agenda\n", "      - phrase: game plan\n", 1), encoding="utf-8")
    tagger = TechniqueTagger.from_file(edited)
    assert tagger.version != RULES_VERSION and tagger.version.startswith("techniques_rules.yaml@")
    assert [t.id for t in tagger.tag_turn("What's our game plan?")] == ["agenda_setting"]
    assert tag_turn("What's our game plan?") == ()


@pytest.mark.parametrize(
    ("rules", "message"),
    [
        ("schema: 1\ntags:\n  - {id: x, label: X, description: d, patterns: [{regex: '(unclosed'}]}\n",
         "tag 'x': pattern '\\(unclosed' does not compile"),
        ("schema: 1\ntags:\n  - {id: x, label: X, description: d, patterns: [{}]}\n", "exactly one of"),
        ("schema: 1\ntags:\n  - {id: x, label: X, description: d, patterns: [{phrase: a}]}\n"
         "  - {id: x, label: Y, description: d, patterns: [{phrase: b}]}\n", "duplicate tag ids: x"),
        ("schema: 1\ntags:\n  - {id: x, label: X, description: d, patterns: [{phrase: a, colour: red}]}\n", "colour"),
        ("tags: [unclosed\n", "invalid"),
    ],
)
def test_a_broken_rules_file_is_refused_with_a_readable_reason(tmp_path, rules, message):
    path = tmp_path / "rules.yaml"
    path.write_text(rules, encoding="utf-8")
    with pytest.raises(RulesError, match=message):
        TechniqueTagger.from_file(path)


def test_a_missing_rules_file_is_refused(tmp_path):
    with pytest.raises(RulesError, match="cannot read"):
        TechniqueTagger.from_file(tmp_path / "nope.yaml")


def test_stored_version_strings_stay_byte_identical_through_the_shared_hash_helper():
    """Prompts, rubrics, the scrub list and the technique rules now take their versions from
    cbtcompare.content_hash; each must still equal the string the old inline formula stored
    (`<name>@` + the first 12 hex digits of the sha256 of the file's text; a prompt's text is stripped), or
    stored results would stop matching the files that made them."""
    import yaml

    from cbtcompare.ctrs.rubric import RUBRICS_DIR, load_rubric
    from cbtcompare.paths import PACKAGE_ROOT
    from cbtcompare.prompts import load_prompt
    from cbtcompare.scrub import SCRUB_LIST_PATH, load_scrub_list
    from cbtcompare.techniques import RULES_PATH, RULES_VERSION

    def old(name: str, data: bytes) -> str:
        return f"{name}@{hashlib.sha256(data).hexdigest()[:12]}"

    prompt_text = (PACKAGE_ROOT / "prompts" / "judge_all_items.txt").read_text(encoding="utf-8").strip()
    assert load_prompt("judge_all_items").version == old("judge_all_items", prompt_text.encode("utf-8"))
    rubric_path = RUBRICS_DIR / "paper_1_10.yaml"
    declared = str(yaml.safe_load(rubric_path.read_text())["version"]).strip()
    assert load_rubric("paper").version == old(declared, rubric_path.read_bytes())
    scrub_declared = str(yaml.safe_load(SCRUB_LIST_PATH.read_text())["version"]).strip()
    assert load_scrub_list().version == old(scrub_declared, SCRUB_LIST_PATH.read_bytes())
    assert old(RULES_PATH.name, RULES_PATH.read_bytes()) == RULES_VERSION
