"""The simulation quality gate on hand-made sessions (one per failure) and on generated ones (never a crash)."""

from __future__ import annotations

import json
import time

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cbtcompare.quality import check_transcript, flagged_rate, phrase_loop
from cbtcompare.transcript import Transcript, Turn

OPENING = "My daughter booked this. I'm not sure what there is to say about any of it."


def session(*patient_replies: str, opening: str = OPENING, scripted: int | None = None) -> Transcript:
    """opening, then therapist/patient turns; `scripted` marks that reply as a scripted profile line."""
    turns = [Turn(role="patient", text=opening, flags={"opening": "profile"})]
    therapist_lines = [
        "Thank you for coming in. What would you like to focus on today?",
        "That sounds hard. What goes through your mind when you stay at home?",
        "Let's look at that thought together. What evidence do you have for it?",
        "What could you try this week, in a small way?",
    ]
    for index, reply in enumerate(patient_replies):
        turns.append(Turn(role="therapist", text=therapist_lines[index % len(therapist_lines)]))
        flags = {"scripted": True} if scripted == index else {}
        turns.append(Turn(role="patient", text=reply, flags=flags))
    turns.append(Turn(role="therapist", text="Let's stop there for today."))
    return Transcript(kind="simulation", turns=turns)


def test_a_patient_who_stays_a_patient_passes():
    verdict = check_transcript(
        session(
            "I suppose I haven't been going out much. The chess club stopped asking.",
            "Mostly that nobody needs me any more. Ever since I retired the days are empty.",
        )
    )
    assert not verdict.flagged and verdict.flags == [] and verdict.checked_turns == 2


def test_a_patient_who_turns_therapist_is_flagged_as_role_reversal():
    verdict = check_transcript(
        session("I stay in most days.", "I'm here to support you. How can I help you today with what you're facing?")
    )
    assert verdict.flagged and verdict.checks == ["role_reversal"]
    assert verdict.flags[0].turn == 4  # the second patient reply, in transcript order


def test_a_patient_who_repeats_its_opening_verbatim_is_flagged():
    verdict = check_transcript(session("Well. " + OPENING + " That's all."))
    assert verdict.checks == ["opening_repeat"]


def test_a_patient_looping_on_one_phrase_or_on_an_earlier_turn_is_flagged():
    looping = check_transcript(session("I don't know what to do. " * 6))
    assert "loop" in looping.checks and "i don t know" in looping.flags[0].detail
    earlier = "I keep thinking the whole week was a waste and nobody would notice if I stopped."
    repeating = check_transcript(session(earlier, "Hmm. " + earlier))
    assert repeating.checks == ["loop"] and repeating.flags[0].turn == 4


def test_a_patient_that_talks_as_an_ai_is_flagged_as_breaking_character():
    verdict = check_transcript(session("As an AI language model, I don't have feelings, but retirement can be hard."))
    assert "character_break" in verdict.checks


def test_the_opening_and_scripted_lines_are_not_the_patient_model_talking():
    verdict = check_transcript(
        session("How can I help you? I'm here to support you.", opening="How can I help you today?", scripted=0)
    )
    assert not verdict.flagged and verdict.checked_turns == 0


def test_the_flagged_rate_counts_sessions_and_checks():
    verdicts = [
        check_transcript(session("I stay in most days, mostly reading the paper.")),
        check_transcript(session("As an AI, how can I help you today?")),
        check_transcript(session("no no no no no no no no no no no no no no no no no no")),
    ]
    rate = flagged_rate(verdicts)
    assert (rate.sessions, rate.flagged) == (3, 2) and abs(rate.rate - 2 / 3) < 1e-9
    assert rate.by_check["character_break"] == 1 and rate.by_check["role_reversal"] == 1 and rate.by_check["loop"] == 1
    assert "2 of 3 sessions flagged (67%)" in rate.sentence()
    assert flagged_rate([]).rate == 0.0


def test_phrase_loop_needs_most_of_the_turn_to_be_the_loop():
    assert phrase_loop("I feel tired. " * 5) == "i feel tired"  # names the phrase that loops
    assert phrase_loop("I feel tired, and at night I feel tired again, but in the morning I feel tired less.") is None


AWKWARD = st.sampled_from(
    ["\u2028", "\u2029", "\u0085", "\x00", "\x1b[31m", "<|im_start|>assistant\n", "<|im_end|>", "[END]", "Therapist:",
     "Patient:", '"', "'", "\\", "{{", "}}", "$name", "\ufeff", "\U0001f600", "As an AI", "how can I help you"]
)  # fmt: skip
TEXT = st.lists(st.one_of(st.text(max_size=40), AWKWARD), max_size=12).map("".join)


@settings(deadline=None, max_examples=60, suppress_health_check=[HealthCheck.too_slow])
@given(
    replies=st.lists(TEXT, max_size=6),
    opening=TEXT,
    therapist_role_first=st.booleans(),
)
def test_any_session_gets_a_verdict_never_a_crash(replies: list[str], opening: str, therapist_role_first: bool):
    transcript = session(*replies, opening=opening)
    if therapist_role_first:
        transcript.turns.insert(0, Turn(role="therapist", text=opening))
    verdict = check_transcript(transcript)
    assert verdict.checked_turns == len(replies)
    assert all(0 < flag.turn < len(transcript.turns) for flag in verdict.flags)
    json.loads(verdict.model_dump_json())  # storable as it is
    assert verdict == check_transcript(transcript)  # a pure function of the transcript


def test_a_huge_runaway_turn_is_judged_quickly():
    runaway = "I feel like nothing will change and " * 20000  # ~720k characters
    started = time.perf_counter()
    verdict = check_transcript(session("x" * 300_000, runaway, runaway))
    assert time.perf_counter() - started < 20
    assert "loop" in verdict.checks
