"""The rating repository: every query blind rating (cbtcompare.rating) makes, behind one typed API.

cbtcompare.rating decides what a study is and what a rater may see; this module only reads and writes
the rating tables, mapping each row to a pydantic model (`model_validate`), so no SQL lives outside the
store. Writes are single transactions: a study with its pairs, raters, assignments and uploaded
transcripts is stored whole or not at all; a rating is one insert, and the database's unique constraint
makes a second rating of one pair by one rater a RatingExists.
This module never imports a model backend or gradio, and knows nothing of blinding.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING

from pydantic import BaseModel, ConfigDict
from sqlalchemy import and_, exists, func, insert, select
from sqlalchemy.exc import IntegrityError

from cbtcompare.store.schema import (
    rating_assignments,
    rating_pairs,
    rating_raters,
    rating_studies,
    ratings,
    transcripts,
)
from cbtcompare.transcript import Transcript

if TYPE_CHECKING:
    from cbtcompare.store import Store


class _Row(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)


class StudyRow(_Row):
    id: str
    name: str
    created_at: str
    seed: int
    raters_per_pair: int
    choices: dict
    rubric: dict | None = None
    scrub: dict
    source: str


class PairRow(_Row):
    id: str
    study_id: str
    position: int
    transcript_1: str
    transcript_2: str
    display: dict


class RaterRow(_Row):
    id: str
    study_id: str
    code: str
    label: str
    created_at: str


class AssignmentRow(_Row):
    id: str
    study_id: str
    pair_id: str
    rater_id: str
    position: int
    a_transcript_id: str
    b_transcript_id: str


class ServedAssignment(AssignmentRow):
    """An assignment with what serving it needs from its pair: which transcript is "1", and the scrubbed text."""

    transcript_1: str
    display: dict


class RatingRow(_Row):
    id: int | None = None  # given by the database on insert
    study_id: str
    assignment_id: str
    rater_id: str
    pair_id: str
    a_transcript_id: str
    b_transcript_id: str
    preference: str | None = None
    preferred_transcript_id: str | None = None
    confidence: int | None = None
    scores: dict
    comment: str
    read_both: int
    shown_at: str | None = None
    submitted_at: str


class ExportedRating(RatingRow):
    """A stored rating with its rater's label and its pair's and assignment's positions (the export's order)."""

    id: int
    rater_label: str
    pair_position: int
    assignment_position: int


class StudyCounts(_Row):
    id: str
    name: str
    created_at: str
    pairs: int
    raters: int
    assignments: int
    ratings: int


class PairCandidate(_Row):
    """What choosing matched pairs reads of a stored transcript."""

    id: str
    group_id: str | None = None
    kind: str
    created_at: str
    therapist_name: str
    seed: int | None = None
    meta: dict


class RatingExists(ValueError):
    """This rater has already rated this pair (the unique constraint refused the second rating)."""


class RatingRepository:
    def __init__(self, store: Store):
        self.store = store

    # Studies -----------------------------------------------------------------------------------------

    def create_study(
        self,
        study: StudyRow,
        pairs: Sequence[PairRow],
        raters: Sequence[RaterRow],
        assignments: Sequence[AssignmentRow],
        uploaded: Sequence[Transcript] = (),
    ) -> None:
        """The uploaded transcripts and the study with all its rows, in one transaction.

        A stored transcript is never changed: identical content is kept as it is, different content with
        the same id is refused (TranscriptConflict) and the whole study rolls back."""
        from cbtcompare.store import check_storable

        checked = [check_storable(t) for t in uploaded]
        with self.store.write() as conn:
            for transcript in checked:
                self.store._write_transcript(conn, transcript, allow_growth=False)
            conn.execute(insert(rating_studies).values(**study.model_dump()))
            for table, rows in ((rating_pairs, pairs), (rating_raters, raters), (rating_assignments, assignments)):
                if rows:
                    conn.execute(insert(table), [row.model_dump() for row in rows])

    def study(self, study_id: str) -> StudyRow | None:
        with self.store.read() as conn:
            row = conn.execute(select(rating_studies).where(rating_studies.c.id == study_id)).mappings().first()
        return None if row is None else StudyRow.model_validate(dict(row))

    def studies(self) -> list[StudyCounts]:
        """Every study, newest first, with its counts."""

        def count(table, column):  # type: ignore[no-untyped-def]
            return select(func.count()).select_from(table).where(column == rating_studies.c.id).scalar_subquery()

        statement = select(
            rating_studies.c.id,
            rating_studies.c.name,
            rating_studies.c.created_at,
            count(rating_pairs, rating_pairs.c.study_id).label("pairs"),
            count(rating_raters, rating_raters.c.study_id).label("raters"),
            count(rating_assignments, rating_assignments.c.study_id).label("assignments"),
            count(ratings, ratings.c.study_id).label("ratings"),
        ).order_by(rating_studies.c.created_at.desc())
        with self.store.read() as conn:
            return [StudyCounts.model_validate(dict(r)) for r in conn.execute(statement).mappings()]

    def pairs(self, study_id: str) -> list[PairRow]:
        """A study's pairs in their order."""
        statement = select(rating_pairs).where(rating_pairs.c.study_id == study_id).order_by(rating_pairs.c.position)
        with self.store.read() as conn:
            return [PairRow.model_validate(dict(r)) for r in conn.execute(statement).mappings()]

    def raters(self, study_id: str) -> list[RaterRow]:
        """A study's raters, in the order they were made."""
        statement = (
            select(rating_raters)
            .where(rating_raters.c.study_id == study_id)
            .order_by(rating_raters.c.created_at, rating_raters.c.label)
        )
        with self.store.read() as conn:
            return [RaterRow.model_validate(dict(r)) for r in conn.execute(statement).mappings()]

    def assignments(self, study_id: str) -> list[AssignmentRow]:
        statement = select(rating_assignments).where(rating_assignments.c.study_id == study_id)
        with self.store.read() as conn:
            return [AssignmentRow.model_validate(dict(r)) for r in conn.execute(statement).mappings()]

    def ratings(self, study_id: str) -> list[RatingRow]:
        """A study's ratings, oldest first."""
        statement = select(ratings).where(ratings.c.study_id == study_id).order_by(ratings.c.id)
        with self.store.read() as conn:
            return [RatingRow.model_validate(dict(r)) for r in conn.execute(statement).mappings()]

    def exported_ratings(self, study_id: str) -> list[ExportedRating]:
        """A study's ratings, oldest first, each with its rater label and positions."""
        statement = (
            select(
                ratings,
                rating_raters.c.label.label("rater_label"),
                rating_pairs.c.position.label("pair_position"),
                rating_assignments.c.position.label("assignment_position"),
            )
            .join(rating_raters, rating_raters.c.id == ratings.c.rater_id)
            .join(rating_pairs, rating_pairs.c.id == ratings.c.pair_id)
            .join(rating_assignments, rating_assignments.c.id == ratings.c.assignment_id)
            .where(ratings.c.study_id == study_id)
            .order_by(ratings.c.id)
        )
        with self.store.read() as conn:
            return [ExportedRating.model_validate(dict(r)) for r in conn.execute(statement).mappings()]

    def taken_codes(self) -> set[str]:
        """Every invite code in use, in any study."""
        with self.store.read() as conn:
            return set(conn.execute(select(rating_raters.c.code)).scalars())

    # Raters ------------------------------------------------------------------------------------------

    def rater_by_code(self, code: str) -> RaterRow | None:
        with self.store.read() as conn:
            row = conn.execute(select(rating_raters).where(rating_raters.c.code == code)).mappings().first()
        return None if row is None else RaterRow.model_validate(dict(row))

    def rater_counts(self, rater_id: str) -> tuple[int, int]:
        """(rated, assigned) for one rater."""
        with self.store.read() as conn:
            assigned = conn.execute(
                select(func.count()).select_from(rating_assignments).where(rating_assignments.c.rater_id == rater_id)
            ).scalar_one()
            rated = conn.execute(
                select(func.count()).select_from(ratings).where(ratings.c.rater_id == rater_id)
            ).scalar_one()
        return int(rated), int(assigned)

    def next_unrated(self, rater_id: str) -> ServedAssignment | None:
        """The rater's first assignment (in their order) without a rating; None when all are rated."""
        unrated = ~exists().where(ratings.c.assignment_id == rating_assignments.c.id)
        return self._served(and_(rating_assignments.c.rater_id == rater_id, unrated))

    def assignment(self, assignment_id: str) -> ServedAssignment | None:
        return self._served(rating_assignments.c.id == assignment_id)

    def _served(self, condition) -> ServedAssignment | None:  # type: ignore[no-untyped-def]
        statement = (
            select(rating_assignments, rating_pairs.c.transcript_1, rating_pairs.c.display)
            .join(rating_pairs, rating_pairs.c.id == rating_assignments.c.pair_id)
            .where(condition)
            .order_by(rating_assignments.c.position)
            .limit(1)
        )
        with self.store.read() as conn:
            row = conn.execute(statement).mappings().first()
        return None if row is None else ServedAssignment.model_validate(dict(row))

    def has_rated(self, rater_id: str, pair_id: str) -> bool:
        query = select(ratings.c.id).where((ratings.c.rater_id == rater_id) & (ratings.c.pair_id == pair_id))
        with self.store.read() as conn:
            return conn.execute(query.limit(1)).first() is not None

    def add_rating(self, rating: RatingRow) -> int:
        """Store one rating; returns its id. RatingExists when this rater has rated this pair already."""
        try:
            with self.store.write() as conn:
                new_id = conn.execute(insert(ratings).values(**rating.model_dump(exclude={"id"}))).inserted_primary_key
        except IntegrityError as exc:
            if self.has_rated(rating.rater_id, rating.pair_id):
                raise RatingExists(f"rater {rating.rater_id} has already rated pair {rating.pair_id}") from exc
            raise
        return int(new_id[0])

    # Transcripts, as rating reads them ---------------------------------------------------------------

    def therapist_names(self, ids: Iterable[str]) -> dict[str, str]:
        wanted = sorted(set(ids))
        if not wanted:
            return {}
        statement = select(transcripts.c.id, transcripts.c.therapist_name).where(transcripts.c.id.in_(wanted))
        with self.store.read() as conn:
            return {r[0]: r[1] for r in conn.execute(statement)}

    def pair_candidates(self, *, kind: str | None = None, groups: Iterable[str] | None = None) -> list[PairCandidate]:
        """Stored transcripts (oldest first), optionally one kind or some group ids, as matched pairs read them."""
        columns = [transcripts.c[n] for n in PairCandidate.model_fields]
        statement = select(*columns).order_by(transcripts.c.created_at, transcripts.c.id)
        if kind:
            statement = statement.where(transcripts.c.kind == kind)
        if groups is not None:
            statement = statement.where(transcripts.c.group_id.in_(sorted(groups)))
        with self.store.read() as conn:
            return [PairCandidate.model_validate(dict(r)) for r in conn.execute(statement).mappings()]
