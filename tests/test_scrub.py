"""The identity scrubber (cbtcompare.scrub) on a held-out set and on input nobody wrote by hand.

tests/data/scrub_heldout.jsonl was written (and committed) before the version-2 rules: identity-leak
sentences, each with the substrings that must not survive, and clean sentences that must come back
unchanged. Recall and the false-scrub rate on it are printed (pytest -s) and held to a floor.
"""

from __future__ import annotations

import json
import re
import time
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cbtcompare.scrub import ScrubList, load_scrub_list

HELDOUT = Path(__file__).parent / "data" / "scrub_heldout.jsonl"
SCRUB = load_scrub_list()

# Chat-template tokens, separators and other characters hostile text is made of.
HOSTILE = [
    "<|im_start|>",
    "<|im_end|>",
    "<｜end▁of▁sentence｜>",
    "[INST]",
    "</s>",
    "\u2028",
    "\u2029",
    "\u0085",
    "\x00",
    "\r\n",
    "\t",
    '"',
    "'",
    "\\",
    "/",
    "-",
    "@",
    "by ",
    "fine-tuned on ",
    "developed by ",
    "As an AI ",
    "[name removed]",
    "[details removed]",
]
text = st.lists(st.one_of(st.text(max_size=40), st.sampled_from(HOSTILE)), max_size=25).map("".join)
# Identities a rater must never see, as a therapist model might write them.
PLANTED = [
    ("fine-tuned on CBT transcripts by TTahir", ["TTahir", "fine-tuned"]),
    ("an AI developed by Acme Labs", ["Acme"]),
    ("HuggingFaceTB/SmolLM2-135M-Instruct", ["SmolLM2", "HuggingFaceTB"]),
    ("ttahir/cbt-llama-8b", ["ttahir", "cbt-llama"]),
    ("Qwen2.5-7B-Instruct", ["Qwen"]),
    ("Llama 3.1", ["Llama"]),
    ("GPT-4o", ["GPT"]),
    ("adapter cbt-lora-r16.gguf", ["cbt-lora"]),
    ("trained on a dataset of therapy sessions", ["trained on a dataset"]),
    ("version 2.1.3", ["2.1.3"]),
    ("Mixtral 8x7B", ["Mixtral", "8x7B"]),
    ("checkpoint-1200", ["checkpoint-1200"]),
    ("Q4_K_M", ["Q4_K_M"]),
]


def heldout() -> list[dict]:
    return [json.loads(line) for line in HELDOUT.read_text(encoding="utf-8").splitlines() if line.strip()]


def test_heldout_recall_and_false_scrub_rate():
    rows = heldout()
    leaks = [r for r in rows if r["leaks"]]
    clean = [r for r in rows if not r["leaks"]]
    assert len(leaks) >= 50 and len(clean) >= 50
    missed = []
    for row in leaks:
        shown = SCRUB.scrub(row["text"]).text.lower()
        if any(leak.lower() in shown for leak in row["leaks"]):
            missed.append(shown)
    changed = [SCRUB.scrub(r["text"]).text for r in clean if SCRUB.scrub(r["text"]).text != r["text"]]
    recall = 1 - len(missed) / len(leaks)
    false_rate = len(changed) / len(clean)
    print(
        f"\nscrub {SCRUB.version}: recall {recall:.3f} ({len(leaks) - len(missed)}/{len(leaks)}), "
        f"false-scrub rate {false_rate:.3f} ({len(changed)}/{len(clean)})"
    )
    # Version 1 of the list measured recall 0.382 (21/55) and a false-scrub rate of 0.018 (1/55) here.
    assert recall >= 0.95, missed
    assert false_rate <= 0.05, changed


def test_the_reported_leak_and_training_descriptions_are_removed():
    cases = {
        "I was fine-tuned on CBT transcripts by TTahir, so let's begin.": ["TTahir", "fine-tuned", "CBT transcripts"],
        "As an AI developed by Orbitron Systems, I can help.": ["Orbitron"],
        "I'm the CBT-tuned variant of the model.": ["tuned"],
        "Weights: HuggingFaceTB/SmolLM2-135M-Instruct with adapter smollm2-135m-cbt.": ["SmolLM", "smollm2"],
        "This adapter (cbt_lora_v2, rank 8) was trained for 3 epochs on synthetic sessions.": ["cbt_lora", "epochs"],
    }
    for sentence, gone in cases.items():
        shown = SCRUB.scrub(sentence).text
        assert not [g for g in gone if g.lower() in shown.lower()], shown
    # Ordinary speech about training and tuning stays as written.
    for sentence in ("My coach trained me on the weekends.", "Let's fine-tune your homework plan together."):
        assert SCRUB.scrub(sentence).text == sentence


def test_study_terms_are_scrubbed_even_after_the_base_list_has_been_used():
    base = load_scrub_list()
    assert base.scrub("I am zorblat-therapist-7b.").text == "I am zorblat-therapist-7b."
    study = base.with_terms(["zorblat-therapist-7b"])
    assert study.scrub("I am zorblat-therapist-7b.").text == f"I am {study.replacement}."


def test_a_bad_rule_is_refused_with_the_pattern_named():
    with pytest.raises(ValueError, match=r"does not compile"):
        ScrubList(version="x", markers=("(unclosed",))
    with pytest.raises(ValueError, match=r"needs a named group"):
        ScrubList(version="x", self_descriptions=("developed by (\\w+)",))


@settings(deadline=None, max_examples=150, suppress_health_check=[HealthCheck.too_slow])
@given(text)
def test_scrubbing_any_text_never_crashes_is_idempotent_and_stays_bounded(sample):
    once = SCRUB.scrub(sample)
    assert isinstance(once.text, str)
    assert SCRUB.scrub(once.text).text == once.text
    # Each removal is at least two characters of the input; each replacement is one short, fixed string.
    assert len(once.text) <= len(sample) + len(SCRUB.details_replacement) * len(once.removed)
    assert len(once.removed) <= len(sample) // 2 + 1


@settings(deadline=None, max_examples=120, suppress_health_check=[HealthCheck.too_slow])
@given(text, st.sampled_from(PLANTED), text)
def test_a_planted_identity_is_always_removed(before, planted, after):
    phrase, markers = planted
    shown = SCRUB.scrub(f"{before} {phrase} {after}").text
    around = f"{before} {after}"
    for marker in markers:
        # What the surrounding random text itself contains may survive; the planted copy may not.
        assert shown.count(marker) <= around.count(marker), (phrase, shown)


def test_huge_and_repetitive_input_is_scrubbed_in_linear_time():
    pieces = ["a-" * 50_000, "x/" * 50_000, "by " * 40_000, "As an AI " * 20_000, "fine-tuned on " * 20_000]
    for piece in pieces:
        started = time.perf_counter()
        SCRUB.scrub(piece)
        small = time.perf_counter() - started
        started = time.perf_counter()
        SCRUB.scrub(piece * 4)
        large = time.perf_counter() - started
        assert large < 10 * max(small, 0.05), (piece[:12], small, large)


def test_the_versioned_rules_are_stored_with_everything_needed_to_redo_the_scrub():
    stored = SCRUB.stored()
    assert re.fullmatch(r"\d+@[0-9a-f]{12}", stored["version"])
    again = ScrubList.model_validate(stored)
    sample = heldout()[0]["text"]
    assert again.scrub(sample) == SCRUB.scrub(sample)


def test_the_yaml_rule_sets_are_pydantic_models_with_every_field_described(tmp_path):
    """techniques_rules.yaml and rating_scrub.yaml load through models whose fields carry help text, and a
    bad value is refused naming the file, the entry and the field."""
    from cbtcompare.scrub import ScrubList, load_scrub_list
    from cbtcompare.techniques import PatternSpec, RulesFile, TagRule

    undescribed = [
        f"{model.__name__}.{name}"
        for model in (ScrubList, RulesFile, TagRule, PatternSpec)
        for name, info in model.model_fields.items()
        if not (info.description or "").strip()
    ]
    assert undescribed == []
    bad = tmp_path / "scrub.yaml"
    bad.write_text('version: "9"\nnames: [GPT]\nmarkers: 7\n', encoding="utf-8")
    with pytest.raises(ValueError) as caught:
        load_scrub_list(bad)
    message = str(caught.value)
    assert message.startswith(f"{bad}: markers: ") and "(got 7)" in message, message
