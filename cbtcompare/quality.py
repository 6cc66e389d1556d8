"""The simulation quality gate: flag sessions whose simulated patient failed at being a patient.

A session is flagged (and a study quarantines it: stored, but not judged) when a generated patient turn
- takes the therapist's role (asks how it can help, sets the agenda, assigns homework, or echoes the
  therapist's previous turn),
- repeats the patient's opening verbatim,
- loops (repeats one of its own earlier turns, or one phrase over and over inside a turn), or
- breaks character ("as an AI...", "I am a language model").
The checks reuse the simulator's own per-turn fidelity rules (cbtcompare/simulation_rules.yaml through
cbtcompare.patients), so the gate and the simulator never disagree on what a failure is. Verdicts are a
pure function of the transcript and the rules file: they are recomputed, never stored into a transcript.
This module never calls a model, never writes anywhere and never raises on odd text.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable, Sequence
from typing import Literal

from pydantic import BaseModel, Field

from cbtcompare.patients import patient_turn_problems, rules
from cbtcompare.transcript import Transcript, Turn

Check = Literal["role_reversal", "opening_repeat", "loop", "character_break"]
CHECKS: tuple[Check, ...] = ("role_reversal", "opening_repeat", "loop", "character_break")
# Text compared per turn: difflib is quadratic, so a runaway turn is judged on its head (enough to see a loop).
COMPARED_CHARS = 4000
# A phrase of LOOP_MIN_WORDS+ words said LOOP_MIN_REPEATS+ times, covering LOOP_MIN_SHARE of a turn, is a loop.
LOOP_MIN_WORDS = 3
LOOP_MAX_WORDS = 8
LOOP_MIN_REPEATS = 3
LOOP_MIN_SHARE = 0.6
FIDELITY_TO_CHECK: dict[str, Check] = {
    "therapist_voice": "role_reversal",
    "echo": "role_reversal",
    "repetition": "loop",
    "ai_talk": "character_break",
}
WORD = re.compile(r"\w+", re.UNICODE)


class QualityFlag(BaseModel):
    check: Check
    turn: int = Field(description="index of the patient turn in the transcript")
    detail: str


class QualityVerdict(BaseModel):
    """One session's verdict; `flagged` sessions are quarantined from judging."""

    transcript_id: str
    flagged: bool
    flags: list[QualityFlag] = Field(default_factory=list)
    checked_turns: int = Field(description="generated patient turns checked (the opening and scripted lines excluded)")
    rules: str = Field(description="the rules file version the verdict was made under")

    @property
    def checks(self) -> list[Check]:
        return list(dict.fromkeys(flag.check for flag in self.flags))


def _normalised(text: str) -> str:
    return " ".join(WORD.findall(text.lower()))


def _opening_index(turns: Sequence[Turn]) -> int | None:
    """The patient's opening: its first turn (a profile line, a carried-over summary or one generated line)."""
    return next((index for index, turn in enumerate(turns) if turn.role == "patient"), None)


def _generated_patient_turns(turns: Sequence[Turn]) -> list[int]:
    """Indexes of the patient turns a patient model wrote in reply: not the opening, not a scripted line."""
    opening = _opening_index(turns)
    return [
        index
        for index, turn in enumerate(turns)
        if index != opening and turn.role == "patient" and not turn.flags.get("scripted")
    ]


def phrase_loop(text: str) -> str | None:
    """The phrase a turn loops on (said LOOP_MIN_REPEATS+ times, covering most of the turn), else None."""
    words = WORD.findall(text[:COMPARED_CHARS].lower())
    if len(words) < LOOP_MIN_WORDS * LOOP_MIN_REPEATS:
        return None
    for size in range(LOOP_MIN_WORDS, LOOP_MAX_WORDS + 1):
        counts = Counter(tuple(words[i : i + size]) for i in range(len(words) - size + 1))
        phrase, count = counts.most_common(1)[0]
        if count >= LOOP_MIN_REPEATS and count * size >= LOOP_MIN_SHARE * len(words):
            return " ".join(phrase)
    return None


def check_transcript(transcript: Transcript) -> QualityVerdict:
    """Run every check over the generated patient turns of one session."""
    turns = list(transcript.turns)
    flags: list[QualityFlag] = []
    opening_index = _opening_index(turns)
    opening = "" if opening_index is None else _normalised(turns[opening_index].text[:COMPARED_CHARS])
    min_chars = rules().min_chars_compared
    checked = _generated_patient_turns(turns)
    for index in checked:
        text = turns[index].text[:COMPARED_CHARS]
        previous_therapist = next(
            (t.text[:COMPARED_CHARS] for t in reversed(turns[:index]) if t.role == "therapist"), None
        )
        earlier = [turns[i].text[:COMPARED_CHARS] for i in checked if i < index]
        found: dict[Check, str] = {}
        for problem in patient_turn_problems(text, previous_therapist=previous_therapist, earlier_patient=earlier):
            check = FIDELITY_TO_CHECK.get(problem)
            if check is not None:
                found.setdefault(check, problem)
        if opening and len(opening) >= min_chars and opening in _normalised(text):
            found.setdefault("opening_repeat", "repeats the opening verbatim")
        loop = phrase_loop(text)
        if loop is not None:
            found.setdefault("loop", f"loops on {loop[:60]!r}")
        flags.extend(QualityFlag(check=check, turn=index, detail=detail) for check, detail in found.items())
    return QualityVerdict(
        transcript_id=transcript.id,
        flagged=bool(flags),
        flags=flags,
        checked_turns=len(checked),
        rules=f"simulation_rules@{rules().digest}",
    )


class QualityRate(BaseModel):
    """The flagged rate over a set of sessions, reported beside every result built from them."""

    sessions: int
    flagged: int
    rate: float = Field(description="flagged / sessions (0 when there are none)")
    by_check: dict[str, int] = Field(description="sessions flagged by each check (one session can hit several)")

    def sentence(self) -> str:
        checks = ", ".join(f"{name} {count}" for name, count in self.by_check.items() if count) or "none"
        return (
            f"Simulation quality gate: {self.flagged} of {self.sessions} sessions flagged ({self.rate:.0%}) and "
            f"quarantined from judging; by check: {checks}"
        )


def flagged_rate(verdicts: Iterable[QualityVerdict]) -> QualityRate:
    verdicts = list(verdicts)
    flagged = sum(v.flagged for v in verdicts)
    return QualityRate(
        sessions=len(verdicts),
        flagged=flagged,
        rate=flagged / len(verdicts) if verdicts else 0.0,
        by_check={check: sum(check in v.checks for v in verdicts) for check in CHECKS},
    )
