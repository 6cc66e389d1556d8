"""Numbered schema migrations, each with its own frozen DDL (as simonw/llm's migrations.py keeps its own).

A migration builds its tables from copies of the definitions as they stood when it shipped, in a
MetaData of its own, never from the live Table objects in cbtcompare.store.schema: editing a live
table (a new column) must not change what an old migration creates, or a fresh install would skip the
migration that adds that column to an existing database and the two would drift apart. Index + 1 in
MIGRATIONS is the version. Append only; never edit one that has shipped.
This module never imports a model backend or gradio.
"""

from __future__ import annotations

from collections.abc import Callable

from sqlalchemy import (
    JSON,
    Column,
    Connection,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
    func,
    insert,
    select,
    update,
)

from cbtcompare.transcript import utc_now


def create_migrations_table(conn: Connection) -> Table:
    """The bookkeeping table (version 0), created when missing; returned for the version queries."""
    frozen = MetaData()
    table = Table(
        "schema_migrations",
        frozen,
        Column("version", Integer, primary_key=True),
        Column("applied_at", String(40), nullable=False),
    )
    table.create(conn, checkfirst=True)
    return table


def _on_transcript() -> ForeignKey:
    return ForeignKey("transcripts.id", ondelete="CASCADE")


def _create(conn: Connection, frozen: MetaData, *names: str) -> None:
    for name in names:
        frozen.tables[name].create(conn)


def migration_1_transcripts(conn: Connection) -> None:
    frozen = MetaData()
    Table(
        "transcripts",
        frozen,
        Column("id", String(64), primary_key=True),
        Column("group_id", String(64), index=True),
        Column("kind", String(32), nullable=False),
        Column("created_at", String(40), nullable=False),
        Column("therapist_name", String(200), nullable=False),
        Column("therapist", JSON, nullable=False),
        Column("system_prompt", Text),
        Column("sampling", JSON, nullable=False),
        Column("seed", Integer),
        Column("prompt_versions", JSON, nullable=False),
        Column("context_policy", String(20)),
        Column("meta", JSON, nullable=False),
    )
    Table(
        "turns",
        frozen,
        Column("transcript_id", String(64), ForeignKey("transcripts.id", ondelete="CASCADE"), primary_key=True),
        Column("idx", Integer, primary_key=True),
        Column("role", String(20), nullable=False),
        Column("text", Text, nullable=False),
        Column("flags", JSON, nullable=False),
        Column("tokens", Integer),
        Column("seconds", Float),
        Column("seed", Integer),
    )
    _create(conn, frozen, "transcripts", "turns")


def migration_2_scores(conn: Connection) -> None:
    """Judge scores: one row per transcript x judge x repeat x item; pairwise ones add an order (AB/BA)."""
    frozen = MetaData()
    Table("transcripts", frozen, Column("id", String(64), primary_key=True))  # referenced, not created here
    Table(
        "scores",
        frozen,
        Column("id", Integer, primary_key=True, autoincrement=True),
        Column("result_id", String(64), nullable=False, index=True),
        Column("transcript_id", String(64), _on_transcript(), nullable=False, index=True),
        Column("judge_name", String(200), nullable=False, index=True),
        Column("judge_info", JSON, nullable=False),
        Column("repeat", Integer, nullable=False),
        Column("rubric_id", String(100), nullable=False),
        Column("rubric_version", String(100), nullable=False),
        Column("prompt_version", String(400), nullable=False),
        Column("mode", String(20), nullable=False),
        Column("sampling", JSON, nullable=False),
        Column("item", String(64), nullable=False),
        Column("score", Integer),
        Column("status", String(16), nullable=False),
        Column("justification", Text, nullable=False),
        Column("evidence", JSON, nullable=False),
        Column("raw_output", Text, nullable=False),
        Column("reason", Text),
        Column("attempts", Integer, nullable=False),
        Column("created_at", String(40), nullable=False),
    )
    Table(
        "pairwise_scores",
        frozen,
        Column("id", Integer, primary_key=True, autoincrement=True),
        Column("result_id", String(64), nullable=False, index=True),
        Column("transcript_a", String(64), _on_transcript(), nullable=False, index=True),
        Column("transcript_b", String(64), _on_transcript(), nullable=False, index=True),
        Column("judge_name", String(200), nullable=False),
        Column("judge_info", JSON, nullable=False),
        Column("repeat", Integer, nullable=False),
        Column("rubric_id", String(100), nullable=False),
        Column("rubric_version", String(100), nullable=False),
        Column("prompt_version", String(400), nullable=False),
        Column("mode", String(20), nullable=False),
        Column("sampling", JSON, nullable=False),
        Column("item", String(64), nullable=False),
        Column("order", String(2), nullable=False),
        Column("side", String(8)),
        Column("outcome", String(16), nullable=False),
        Column("justification", Text, nullable=False),
        Column("raw_output", Text, nullable=False),
        Column("reason", Text),
        Column("attempts", Integer, nullable=False),
        Column("created_at", String(40), nullable=False),
    )
    _create(conn, frozen, "scores", "pairwise_scores")


def migration_3_batch_runs(conn: Connection) -> None:
    """Simulation batches: which run keys are finished, so a rerun resumes (cbtcompare.simulate.run_batch)."""
    frozen = MetaData()
    Table("transcripts", frozen, Column("id", String(64), primary_key=True))  # referenced, not created here
    Table(
        "batch_runs",
        frozen,
        Column("run_key", String(400), primary_key=True),
        Column("batch_id", String(200), nullable=False, index=True),
        Column("transcript_id", String(64), ForeignKey("transcripts.id", ondelete="SET NULL")),
        Column("status", String(20), nullable=False),
        Column("error", Text),
        Column("created_at", String(40), nullable=False),
    )
    _create(conn, frozen, "batch_runs")


def migration_4_rating(conn: Connection) -> None:
    """Blind rating: studies, pairs, raters, assignments (side mapping) and ratings (one per rater and pair)."""
    frozen = MetaData()
    Table("transcripts", frozen, Column("id", String(64), primary_key=True))  # referenced, not created here
    Table(
        "rating_studies",
        frozen,
        Column("id", String(64), primary_key=True),
        Column("name", String(200), nullable=False),
        Column("created_at", String(40), nullable=False),
        Column("seed", Integer, nullable=False),
        Column("raters_per_pair", Integer, nullable=False),
        Column("choices", JSON, nullable=False),
        Column("rubric", JSON),
        Column("scrub", JSON, nullable=False),
        Column("source", Text, nullable=False),
    )
    Table(
        "rating_pairs",
        frozen,
        Column("id", String(64), primary_key=True),
        Column("study_id", String(64), ForeignKey("rating_studies.id", ondelete="CASCADE"), nullable=False, index=True),
        Column("position", Integer, nullable=False),
        Column("transcript_1", String(64), ForeignKey("transcripts.id"), nullable=False),
        Column("transcript_2", String(64), ForeignKey("transcripts.id"), nullable=False),
        Column("display", JSON, nullable=False),
        UniqueConstraint("study_id", "transcript_1", "transcript_2"),
    )
    Table(
        "rating_raters",
        frozen,
        Column("id", String(64), primary_key=True),
        Column("study_id", String(64), ForeignKey("rating_studies.id", ondelete="CASCADE"), nullable=False, index=True),
        Column("code", String(64), nullable=False, unique=True),
        Column("label", String(100), nullable=False),
        Column("created_at", String(40), nullable=False),
    )
    Table(
        "rating_assignments",
        frozen,
        Column("id", String(64), primary_key=True),
        Column("study_id", String(64), ForeignKey("rating_studies.id", ondelete="CASCADE"), nullable=False, index=True),
        Column("pair_id", String(64), ForeignKey("rating_pairs.id", ondelete="CASCADE"), nullable=False, index=True),
        Column("rater_id", String(64), ForeignKey("rating_raters.id", ondelete="CASCADE"), nullable=False, index=True),
        Column("position", Integer, nullable=False),
        Column("a_transcript_id", String(64), nullable=False),
        Column("b_transcript_id", String(64), nullable=False),
        UniqueConstraint("rater_id", "pair_id"),
    )
    Table(
        "ratings",
        frozen,
        Column("id", Integer, primary_key=True, autoincrement=True),
        Column("study_id", String(64), ForeignKey("rating_studies.id", ondelete="CASCADE"), nullable=False, index=True),
        Column("assignment_id", String(64), ForeignKey("rating_assignments.id", ondelete="CASCADE"), nullable=False),
        Column("rater_id", String(64), ForeignKey("rating_raters.id", ondelete="CASCADE"), nullable=False, index=True),
        Column("pair_id", String(64), ForeignKey("rating_pairs.id", ondelete="CASCADE"), nullable=False, index=True),
        Column("a_transcript_id", String(64), nullable=False),
        Column("b_transcript_id", String(64), nullable=False),
        Column("preference", String(8)),
        Column("preferred_transcript_id", String(64)),
        Column("confidence", Integer),
        Column("scores", JSON, nullable=False),
        Column("comment", Text, nullable=False),
        Column("read_both", Integer, nullable=False),
        Column("shown_at", String(40)),
        Column("submitted_at", String(40), nullable=False),
        UniqueConstraint("rater_id", "pair_id"),
        UniqueConstraint("assignment_id"),
    )
    _create(conn, frozen, "rating_studies", "rating_pairs", "rating_raters", "rating_assignments", "ratings")


# The columns that say which judgement a score row belongs to (everything but repeat and what the row
# scores), and those that say what it scores within a judgement: migration 5 makes
# (judgement, repeat, slot) unique.
SCORE_JUDGEMENT = ("transcript_id", "judge_name", "rubric_id")
SCORE_SLOT = ("item",)
PAIRWISE_JUDGEMENT = ("transcript_a", "transcript_b", "judge_name", "rubric_id")
PAIRWISE_SLOT = ("item", "order")


def migration_5_unique_judgements(conn: Connection) -> None:
    """One score per transcript x judge x rubric x repeat x item (pairwise: x order), enforced by unique indexes.

    A store judged twice before this migration may hold two judgements under one repeat number (the
    second Judge run wrote `repeat 0` again). Those rows are kept, never deleted: every judgement (a
    result_id) after the first that collides is moved, whole, to the next free repeat number of its
    transcript, judge and rubric, in the order the rows were stored. Only `repeat` changes; the rows'
    sampling still records the seed that produced them.
    """
    frozen = MetaData()
    score_columns = [Column(name, String(400)) for name in ("result_id", *SCORE_JUDGEMENT, *SCORE_SLOT)]
    scores = Table("scores", frozen, Column("id", Integer, primary_key=True), Column("repeat", Integer), *score_columns)
    pairwise_columns = [Column(name, String(400)) for name in ("result_id", *PAIRWISE_JUDGEMENT, *PAIRWISE_SLOT)]
    pairwise = Table(
        "pairwise_scores", frozen, Column("id", Integer, primary_key=True), Column("repeat", Integer), *pairwise_columns
    )
    renumber_duplicate_judgements(conn, scores, SCORE_JUDGEMENT, SCORE_SLOT)
    renumber_duplicate_judgements(conn, pairwise, PAIRWISE_JUDGEMENT, PAIRWISE_SLOT)
    Index("uq_scores_judgement", *(scores.c[n] for n in (*SCORE_JUDGEMENT, "repeat", *SCORE_SLOT)), unique=True).create(
        conn
    )
    Index(
        "uq_pairwise_judgement", *(pairwise.c[n] for n in (*PAIRWISE_JUDGEMENT, "repeat", *PAIRWISE_SLOT)), unique=True
    ).create(conn)


def renumber_duplicate_judgements(
    conn: Connection, table: Table, judgement: tuple[str, ...], slot: tuple[str, ...]
) -> int:
    """Move colliding judgements to new repeat numbers (see migration 5); returns how many rows moved."""
    rows = conn.execute(select(table).order_by(table.c.id)).mappings().all()
    by_result: dict[str, list] = {}
    for row in rows:
        by_result.setdefault(row["result_id"], []).append(row)
    claimed: set[tuple] = set()
    highest: dict[tuple, int] = {}
    for row in rows:
        key = tuple(row[n] for n in judgement)
        highest[key] = max(highest.get(key, -1), row["repeat"])
    moved = 0
    for result_rows in by_result.values():
        key = tuple(result_rows[0][n] for n in judgement)
        slots = [(tuple(r[n] for n in judgement), r["repeat"], *(r[n] for n in slot)) for r in result_rows]
        if not any(s in claimed for s in slots) and len(set(slots)) == len(slots):
            claimed.update(slots)
            continue
        highest[key] += 1
        for row, (row_key, _, *row_slot) in zip(result_rows, slots, strict=True):
            repeat = highest[key] if row_key == key else highest[row_key] + 1
            while (row_key, repeat, *row_slot) in claimed:  # a row duplicated within one judgement
                repeat += 1
            highest[row_key] = max(highest[row_key], repeat)
            conn.execute(update(table).where(table.c.id == row["id"]).values(repeat=repeat))
            claimed.add((row_key, repeat, *row_slot))
            moved += 1
    return moved


# Index + 1 is the version. Append only; never edit one that has shipped.
MIGRATIONS: list[Callable[[Connection], None]] = [
    migration_1_transcripts,
    migration_2_scores,
    migration_3_batch_runs,
    migration_4_rating,
    migration_5_unique_judgements,
]


def apply_migrations(conn: Connection, upto: int | None = None) -> int:
    """Apply the pending migrations (up to version `upto`, default all) on `conn`; returns the version reached.

    The caller holds the transaction: all of them apply, or none."""
    target = len(MIGRATIONS) if upto is None else upto
    versions = create_migrations_table(conn)
    current = conn.execute(select(func.coalesce(func.max(versions.c.version), 0))).scalar_one()
    for version, migration in enumerate(MIGRATIONS[:target], start=1):
        if version > current:
            migration(conn)
            conn.execute(insert(versions).values(version=version, applied_at=utc_now()))
    return max(current, target)
