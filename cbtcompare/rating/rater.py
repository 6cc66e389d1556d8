"""The rater's side of a study: join with an invite code, get the next unrated pair, submit one rating.

What a rater is shown is built here and only here: the stored, scrubbed turn texts (role and text), the
pair's place in their queue, and a random view token. Transcript ids, model names, adapters, system
prompts, sampling, timings and any other metadata never leave this module on the rater's side.
A rating is validated whole (every field the study asks for, the read-to-the-end flag) and stored in
one transaction; the database's unique constraint makes a second rating of the same pair impossible.
This module never imports gradio.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import and_, exists, func, insert, select
from sqlalchemy.exc import IntegrityError

from cbtcompare.rating.study import CONFIDENCE_LEVELS, Study, get_study, normalise_code
from cbtcompare.store import Store, rating_assignments, rating_pairs, rating_raters, ratings
from cbtcompare.transcript import utc_now

Side = Literal["A", "B"]
MAX_COMMENT = 5000


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


@dataclass
class RaterSession:
    """One rater's place in a study, kept per browser session (never sent to the browser)."""

    rater_id: str
    study_id: str
    label: str
    assignment_id: str | None = None
    view_token: str | None = None
    shown_at: str | None = None


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

    preference: Literal["A", "B", "tie"] | None = None
    confidence: int | None = None
    scores: dict[Side, dict[str, int | None]] = Field(default_factory=dict)
    comment: str = Field("", max_length=MAX_COMMENT)


def join(store: Store, code: str) -> RaterSession:
    """The rater behind an invite code; UnknownCode when no study has that code."""
    wanted = normalise_code(code or "")
    with store.read() as conn:
        row = conn.execute(select(rating_raters).where(rating_raters.c.code == wanted)).mappings().first()
    if row is None:
        raise UnknownCode("That invite code is not known. Check it (letters and digits, e.g. ABCD-EFGH-JKMN).")
    return RaterSession(rater_id=row["id"], study_id=row["study_id"], label=row["label"])


def progress(store: Store, rater_id: str) -> Progress:
    with store.read() as conn:
        total = conn.execute(
            select(func.count()).select_from(rating_assignments).where(rating_assignments.c.rater_id == rater_id)
        ).scalar_one()
        done = conn.execute(
            select(func.count()).select_from(ratings).where(ratings.c.rater_id == rater_id)
        ).scalar_one()
    return Progress(done=done, total=total)


def next_pair(store: Store, session: RaterSession) -> PairView | None:
    """The rater's next unrated pair (None when all are rated); records it in the session with a new token."""
    unrated = ~exists().where(ratings.c.assignment_id == rating_assignments.c.id)
    statement = (
        select(rating_assignments, rating_pairs.c.transcript_1, rating_pairs.c.display)
        .join(rating_pairs, rating_pairs.c.id == rating_assignments.c.pair_id)
        .where(and_(rating_assignments.c.rater_id == session.rater_id, unrated))
        .order_by(rating_assignments.c.position)
        .limit(1)
    )
    with store.read() as conn:
        row = conn.execute(statement).mappings().first()
    status = progress(store, session.rater_id)
    if row is None:
        session.assignment_id = session.view_token = session.shown_at = None
        return None
    a_key = "1" if row["transcript_1"] == row["a_transcript_id"] else "2"
    b_key = "2" if a_key == "1" else "1"
    session.assignment_id = row["id"]
    session.view_token = secrets.token_hex(8)
    session.shown_at = utc_now()
    display = row["display"]
    return PairView(
        position=status.done + 1,
        total=status.total,
        done=status.done,
        a=[DisplayTurn(t["role"], t["text"]) for t in display[a_key]],
        b=[DisplayTurn(t["role"], t["text"]) for t in display[b_key]],
        view_token=session.view_token,
    )


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
        problems.append("your overall preference (A, B or tie)")
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
    database's unique constraint when two submissions race), NotReadToEnd without the read flag, and
    IncompleteRating when a field the study asks for is missing.
    """
    if session.assignment_id is None:
        raise RatingError("No pair is open. Enter your invite code to continue where you left off.")
    with store.read() as conn:
        assignment = (
            conn.execute(
                select(rating_assignments, rating_pairs.c.transcript_1)
                .join(rating_pairs, rating_pairs.c.id == rating_assignments.c.pair_id)
                .where(rating_assignments.c.id == session.assignment_id)
            )
            .mappings()
            .first()
        )
        if assignment is None or assignment["rater_id"] != session.rater_id:
            raise RatingError("This pair is not assigned to you. Enter your invite code again.")
    if _rated(store, session.rater_id, assignment["pair_id"]):
        raise AlreadyRated(_ALREADY)
    if not read_flag_ok(session, read_flag):
        raise NotReadToEnd("Please scroll both transcripts to the end before submitting. Nothing was saved.")
    study = get_study(store, session.study_id)
    clean = check_answer(study, answer)
    preferred = None
    if clean.preference == "A":
        preferred = assignment["a_transcript_id"]
    elif clean.preference == "B":
        preferred = assignment["b_transcript_id"]
    row = {
        "study_id": session.study_id,
        "assignment_id": assignment["id"],
        "rater_id": session.rater_id,
        "pair_id": assignment["pair_id"],
        "a_transcript_id": assignment["a_transcript_id"],
        "b_transcript_id": assignment["b_transcript_id"],
        "preference": clean.preference,
        "preferred_transcript_id": preferred,
        "confidence": clean.confidence,
        "scores": clean.scores,
        "comment": clean.comment,
        "read_both": 1,
        "shown_at": session.shown_at,
        "submitted_at": utc_now(),
    }
    try:
        with store.write() as conn:
            rating_id = conn.execute(insert(ratings).values(**row)).inserted_primary_key[0]
    except IntegrityError as exc:
        if _rated(store, session.rater_id, assignment["pair_id"]):
            raise AlreadyRated(_ALREADY) from exc
        raise
    session.assignment_id = session.view_token = session.shown_at = None
    return int(rating_id)


def _rated(store: Store, rater_id: str, pair_id: str) -> bool:
    with store.read() as conn:
        query = select(ratings.c.id).where((ratings.c.rater_id == rater_id) & (ratings.c.pair_id == pair_id))
        return conn.execute(query).first() is not None


_ALREADY = "You have already rated this pair; your first rating is kept. Press Start / resume for the next pair."
