"""The live schema: the Table objects every store query is written against (SQLAlchemy Core).

Editing a table here never changes an existing database, nor a fresh one: the DDL that builds a
database lives, frozen, in cbtcompare.store.migrations. A change here needs a new migration there
that makes the same change; tests/test_migrations.py checks the two agree.
This module never imports a model backend or gradio.
"""

from __future__ import annotations

from sqlalchemy import JSON, Column, Float, ForeignKey, Index, Integer, MetaData, String, Table, Text, UniqueConstraint

metadata = MetaData()

schema_migrations = Table(
    "schema_migrations",
    metadata,
    Column("version", Integer, primary_key=True),
    Column("applied_at", String(40), nullable=False),
)

transcripts = Table(
    "transcripts",
    metadata,
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

turns = Table(
    "turns",
    metadata,
    Column("transcript_id", String(64), ForeignKey("transcripts.id", ondelete="CASCADE"), primary_key=True),
    Column("idx", Integer, primary_key=True),
    Column("role", String(20), nullable=False),
    Column("text", Text, nullable=False),
    Column("flags", JSON, nullable=False),
    Column("tokens", Integer),
    Column("seconds", Float),
    Column("seed", Integer),
)


# One row per transcript x judge x rubric x repeat x item (cbtcompare.ctrs); result_id groups one judge run.
# The unique index (migration 5) is what keeps a second judgement from duplicating a key: Store.save_scores
# gives it the next repeat number instead.
scores = Table(
    "scores",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("result_id", String(64), nullable=False, index=True),
    Column("transcript_id", String(64), ForeignKey("transcripts.id", ondelete="CASCADE"), nullable=False, index=True),
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
    Index("uq_scores_judgement", "transcript_id", "judge_name", "rubric_id", "repeat", "item", unique=True),
)

# Pairwise judging of two transcripts: one row per judge x repeat x item x order ("AB" or "BA").
pairwise_scores = Table(
    "pairwise_scores",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("result_id", String(64), nullable=False, index=True),
    Column("transcript_a", String(64), ForeignKey("transcripts.id", ondelete="CASCADE"), nullable=False, index=True),
    Column("transcript_b", String(64), ForeignKey("transcripts.id", ondelete="CASCADE"), nullable=False, index=True),
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
    Index(
        "uq_pairwise_judgement",
        "transcript_a",
        "transcript_b",
        "judge_name",
        "rubric_id",
        "repeat",
        "item",
        "order",
        unique=True,
    ),
)


batch_runs = Table(
    "batch_runs",
    metadata,
    Column("run_key", String(400), primary_key=True),
    Column("batch_id", String(200), nullable=False, index=True),
    Column("transcript_id", String(64), ForeignKey("transcripts.id", ondelete="SET NULL")),
    Column("status", String(20), nullable=False),
    Column("error", Text),
    Column("created_at", String(40), nullable=False),
)


# Blind human rating (cbtcompare.rating): studies, their pairs, raters (invite codes), per-rater assignments
# with the side mapping, and ratings. No IP address or other network data is stored.
rating_studies = Table(
    "rating_studies",
    metadata,
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

rating_pairs = Table(
    "rating_pairs",
    metadata,
    Column("id", String(64), primary_key=True),
    Column("study_id", String(64), ForeignKey("rating_studies.id", ondelete="CASCADE"), nullable=False, index=True),
    Column("position", Integer, nullable=False),
    Column("transcript_1", String(64), ForeignKey("transcripts.id"), nullable=False),
    Column("transcript_2", String(64), ForeignKey("transcripts.id"), nullable=False),
    Column("display", JSON, nullable=False),
    UniqueConstraint("study_id", "transcript_1", "transcript_2"),
)

rating_raters = Table(
    "rating_raters",
    metadata,
    Column("id", String(64), primary_key=True),
    Column("study_id", String(64), ForeignKey("rating_studies.id", ondelete="CASCADE"), nullable=False, index=True),
    Column("code", String(64), nullable=False, unique=True),
    Column("label", String(100), nullable=False),
    Column("created_at", String(40), nullable=False),
)

rating_assignments = Table(
    "rating_assignments",
    metadata,
    Column("id", String(64), primary_key=True),
    Column("study_id", String(64), ForeignKey("rating_studies.id", ondelete="CASCADE"), nullable=False, index=True),
    Column("pair_id", String(64), ForeignKey("rating_pairs.id", ondelete="CASCADE"), nullable=False, index=True),
    Column("rater_id", String(64), ForeignKey("rating_raters.id", ondelete="CASCADE"), nullable=False, index=True),
    Column("position", Integer, nullable=False),
    Column("a_transcript_id", String(64), nullable=False),
    Column("b_transcript_id", String(64), nullable=False),
    UniqueConstraint("rater_id", "pair_id"),
)

ratings = Table(
    "ratings",
    metadata,
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
