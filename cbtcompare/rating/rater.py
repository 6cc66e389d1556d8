"""The rater's side of a study: join with an invite code, get the next unrated pair, submit one rating.

What a rater is shown is built here and only here: the stored, scrubbed turn texts (role and text), the
pair's place in their queue, and a random view token. Transcript ids, model names, adapters, system
prompts, sampling, timings and any other metadata never leave this module on the rater's side.
A rating is validated whole (every field the study asks for, the read-to-the-end flag, the minimum
reading time) and stored in one transaction; the database's unique constraint makes a second rating of
the same pair impossible. The read flag comes from the page and can be forged, so the server also keeps
its own clock: a pair's minimum reading time (its words at CBTCOMPARE_READING_WPM words per minute) runs
from the moment the server served it to this rater, and an earlier submission is refused.
This module never imports gradio.
"""

from __future__ import annotations

import math
import os
import secrets
import time
from dataclasses import dataclass
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from cbtcompare.rating.study import CONFIDENCE_LEVELS, Study, get_study, normalise_code
from cbtcompare.store import Store
from cbtcompare.store.rating import RatingExists, RatingRow
from cbtcompare.transcript import utc_now

Side = Literal["A", "B"]
MAX_COMMENT = 5000
READING_WPM_ENV = "CBTCOMPARE_READING_WPM"
# A fast reader's pace: a careful rater stays well under it, a submission forged from the page's token cannot.
DEFAULT_READING_WPM = 400.0


class RatingError(ValueError):
    """A rating action was refused; the message tells the rater what to do."""


class UnknownCode(RatingError):
    pass


class AlreadyRated(RatingError):
    pass


class IncompleteRating(RatingError):
    pass


class NotReadToEnd(RatingError):
    pass


class ReadTooFast(NotReadToEnd):
    """Submitted before the pair's minimum reading time (counted by the server) had passed."""


class ReadingPace(BaseModel):
    """How fast a rater can at most read: the minimum time a pair stays open is its words at this pace."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    words_per_minute: float = Field(DEFAULT_READING_WPM, gt=0, le=1e12, description=f"set by {READING_WPM_ENV}")

    @classmethod
    def from_env(cls) -> ReadingPace:
        raw = os.environ.get(READING_WPM_ENV, "").strip()
        if not raw:
            return cls()
        try:
            return cls(words_per_minute=float(raw))
        except ValueError as exc:
            raise ValueError(
                f"{READING_WPM_ENV}={raw!r} is not a reading pace: give words per minute as a positive number "
                f"(default {DEFAULT_READING_WPM:g})"
            ) from exc

    def seconds_for(self, words: int) -> float:
        return words * 60.0 / self.words_per_minute


def word_count(turns: list[dict[str, str]] | list[DisplayTurn]) -> int:
    return sum(len((t["text"] if isinstance(t, dict) else t.text).split()) for t in turns)


@dataclass
class RaterSession:
    """One rater's place in a study, kept per browser session (never sent to the browser)."""

    rater_id: str
    study_id: str
    label: str
    assignment_id: str | None = None
    view_token: str | None = None
    shown_at: str | None = None
    # The server's own clock (time.monotonic) when the pair was served, and how long it must stay open.
    served_clock: float | None = None
    min_reading_seconds: float = 0.0

    def close_pair(self) -> None:
        self.assignment_id = self.view_token = self.shown_at = self.served_clock = None
        self.min_reading_seconds = 0.0


@dataclass(frozen=True)
class DisplayTurn:
    role: str
    text: str


@dataclass(frozen=True)
class PairView:
    """Everything a rater sees of one pair: scrubbed turns for sides A and B, and progress."""

    position: int
    total: int
    done: int
    a: list[DisplayTurn]
    b: list[DisplayTurn]
    view_token: str
    min_reading_seconds: float = 0.0


@dataclass(frozen=True)
class Progress:
    done: int
    total: int

    @property
    def finished(self) -> bool:
        return self.done >= self.total


class RatingAnswer(BaseModel):
    """One rating as the rater gives it, on the sides as shown (A, B)."""

    model_config = ConfigDict(extra="forbid")

    preference: Literal["A", "B", "tie", "both_bad"] | None = None  # both_bad: a tie where neither helps
    confidence: int | None = None
    scores: dict[Side, dict[str, int | None]] = Field(default_factory=dict)
    comment: str = Field("", max_length=MAX_COMMENT)


def join(store: Store, code: str) -> RaterSession:
    """The rater behind an invite code; UnknownCode when no study has that code."""
    row = store.rating.rater_by_code(normalise_code(code or ""))
    if row is None:
        raise UnknownCode("That invite code is not known. Check it (letters and digits, e.g. ABCD-EFGH-JKMN).")
    return RaterSession(rater_id=row.id, study_id=row.study_id, label=row.label)


def progress(store: Store, rater_id: str) -> Progress:
    done, total = store.rating.rater_counts(rater_id)
    return Progress(done=done, total=total)


def next_pair(store: Store, session: RaterSession, pace: ReadingPace | None = None) -> PairView | None:
    """The rater's next unrated pair (None when all are rated); records it in the session with a new token,
    the server time it was served and its minimum reading time at `pace` (default: from the environment)."""
    pace = pace or ReadingPace.from_env()
    row = store.rating.next_unrated(session.rater_id)
    status = progress(store, session.rater_id)
    if row is None:
        session.close_pair()
        return None
    a_key = "1" if row.transcript_1 == row.a_transcript_id else "2"
    b_key = "2" if a_key == "1" else "1"
    display = row.display
    session.assignment_id = row.id
    session.view_token = secrets.token_hex(8)
    session.shown_at = utc_now()
    session.served_clock = time.monotonic()
    session.min_reading_seconds = pace.seconds_for(word_count(display[a_key]) + word_count(display[b_key]))
    return PairView(
        position=status.done + 1,
        total=status.total,
        done=status.done,
        a=[DisplayTurn(t["role"], t["text"]) for t in display[a_key]],
        b=[DisplayTurn(t["role"], t["text"]) for t in display[b_key]],
        view_token=session.view_token,
        min_reading_seconds=session.min_reading_seconds,
    )


def reading_seconds_left(session: RaterSession) -> float:
    """Seconds until the pair now shown may be submitted (0 when it may be now)."""
    if session.served_clock is None:
        return 0.0
    return max(0.0, session.min_reading_seconds - (time.monotonic() - session.served_clock))


def read_flag_ok(session: RaterSession, flag: str | None) -> bool:
    """True when the page reported both transcripts scrolled to the end for the pair now shown.

    The page reports `<view token>:a,b`; a flag for an earlier pair (another token) does not count.
    """
    if not flag or not session.view_token:
        return False
    token, _, sides = flag.partition(":")
    return secrets.compare_digest(token, session.view_token) and {"a", "b"} <= set(sides.split(","))


def check_answer(study: Study, answer: RatingAnswer) -> RatingAnswer:
    """The answer with only what the study asks for; IncompleteRating naming every missing field."""
    problems: list[str] = []
    choices = study.choices
    if choices.preference and answer.preference is None:
        problems.append("your overall preference (A, B, tie or both bad)")
    if choices.confidence and answer.confidence not in CONFIDENCE_LEVELS:
        problems.append(f"your confidence ({CONFIDENCE_LEVELS[0]}-{CONFIDENCE_LEVELS[-1]})")
    scores: dict[Side, dict[str, int]] = {}
    if choices.items:
        levels = set(study.levels)
        names = {item["id"]: item["name"] for item in (study.rubric or {}).get("items", [])}
        for side in ("A", "B"):
            given = answer.scores.get(side, {})
            missing = [names[i] for i in study.item_ids if given.get(i) not in levels]
            if missing:
                problems.append(f"transcript {side}: {', '.join(missing)}")
            scores[side] = {i: int(given[i]) for i in study.item_ids if given.get(i) in levels}
    if problems:
        raise IncompleteRating("Nothing was saved. Please complete: " + "; ".join(problems) + ".")
    return RatingAnswer(
        preference=answer.preference if choices.preference else None,
        confidence=answer.confidence if choices.confidence else None,
        scores=scores,
        comment=answer.comment.strip() if choices.comment else "",
    )


def submit(store: Store, session: RaterSession, answer: RatingAnswer, *, read_flag: str | None) -> int:
    """Store the rating of the pair now shown to this rater, whole or not at all; returns the rating id.

    Refused with AlreadyRated when this rater has rated this pair (checked first, and enforced by the
    database's unique constraint when two submissions race), NotReadToEnd without the read flag,
    IncompleteRating when a field the study asks for is missing, and ReadTooFast (saying how long is
    left) before the pair's minimum reading time has passed on the server's clock.
    """
    if session.assignment_id is None:
        raise RatingError("No pair is open. Enter your invite code to continue where you left off.")
    assignment = store.rating.assignment(session.assignment_id)
    if assignment is None or assignment.rater_id != session.rater_id:
        raise RatingError("This pair is not assigned to you. Enter your invite code again.")
    if store.rating.has_rated(session.rater_id, assignment.pair_id):
        raise AlreadyRated(_ALREADY)
    if not read_flag_ok(session, read_flag):
        raise NotReadToEnd("Please scroll both transcripts to the end before submitting. Nothing was saved.")
    study = get_study(store, session.study_id)
    clean = check_answer(study, answer)
    left = reading_seconds_left(session)
    if left > 0:
        raise ReadTooFast(
            f"Please take your time with both transcripts: this pair can be submitted in {math.ceil(left)} s "
            f"(at least {math.ceil(session.min_reading_seconds)} s of reading for its length). Nothing was saved; "
            "your answers are still on the page."
        )
    preferred = None
    if clean.preference == "A":
        preferred = assignment.a_transcript_id
    elif clean.preference == "B":
        preferred = assignment.b_transcript_id
    rating = RatingRow(
        study_id=session.study_id,
        assignment_id=assignment.id,
        rater_id=session.rater_id,
        pair_id=assignment.pair_id,
        a_transcript_id=assignment.a_transcript_id,
        b_transcript_id=assignment.b_transcript_id,
        preference=clean.preference,
        preferred_transcript_id=preferred,
        confidence=clean.confidence,
        scores=clean.scores,
        comment=clean.comment,
        read_both=1,
        shown_at=session.shown_at,
        submitted_at=utc_now(),
    )
    try:
        rating_id = store.rating.add_rating(rating)
    except RatingExists as exc:
        raise AlreadyRated(_ALREADY) from exc
    session.close_pair()
    return int(rating_id)


_ALREADY = "You have already rated this pair; your first rating is kept. Press Start / resume for the next pair."
