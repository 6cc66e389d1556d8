"""Persistence: one store for transcripts (and, through later migrations, scores, ratings and jobs).

SQLite in WAL mode through SQLAlchemy Core by default; CBTCOMPARE_DB_URL selects another database, and
a PostgreSQL URL works unchanged (only portable types and statements are used). The schema evolves by
numbered migrations, each applied once, in order, inside one transaction. Writes on SQLite take the
write lock up front (BEGIN IMMEDIATE) so concurrent writers wait instead of failing.
This module never imports a model backend or gradio.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from pydantic import ValidationError
from sqlalchemy import (
    JSON,
    Column,
    Connection,
    Engine,
    Float,
    ForeignKey,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
    create_engine,
    delete,
    event,
    func,
    insert,
    select,
    update,
)
from sqlalchemy.exc import IntegrityError

from cbtcompare.paths import data_dir
from cbtcompare.transcript import Transcript, Turn, utc_now

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


def _migration_1_transcripts(conn: Connection) -> None:
    transcripts.create(conn)
    turns.create(conn)


# One row per transcript x judge x repeat x rubric item (cbtcompare.ctrs); result_id groups one judge run.
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
)


def _migration_2_scores(conn: Connection) -> None:
    scores.create(conn)
    pairwise_scores.create(conn)


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


def _migration_3_batch_runs(conn: Connection) -> None:
    """Simulation batches: which run keys are finished, so a rerun resumes (cbtcompare.simulate.run_batch)."""
    batch_runs.create(conn)


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


def _migration_4_rating(conn: Connection) -> None:
    """Blind rating: studies, pairs, raters, assignments (side mapping) and ratings (one per rater and pair)."""
    for table in (rating_studies, rating_pairs, rating_raters, rating_assignments, ratings):
        table.create(conn)


# Numbered migrations: index + 1 is the version. Append only; never edit one that has shipped.
MIGRATIONS: list[Callable[[Connection], None]] = [
    _migration_1_transcripts,
    _migration_2_scores,
    _migration_3_batch_runs,
    _migration_4_rating,
]


@dataclass(frozen=True)
class BatchRun:
    run_key: str
    batch_id: str
    transcript_id: str | None
    status: str
    error: str | None
    created_at: str


class ImportFailed(ValueError):
    """An import was refused as a whole; the message names the line and the problem."""


@dataclass(frozen=True)
class TranscriptSummary:
    id: str
    group_id: str | None
    kind: str
    created_at: str
    therapist_name: str
    turn_count: int


def default_url() -> str:
    return os.environ.get("CBTCOMPARE_DB_URL") or f"sqlite:///{data_dir() / 'cbtcompare.sqlite'}"


def _sqlite_engine(url: str) -> Engine:
    engine = create_engine(url, connect_args={"timeout": 60, "check_same_thread": False})

    @event.listens_for(engine, "connect")
    def _configure(dbapi_connection, _record) -> None:  # type: ignore[no-untyped-def]
        dbapi_connection.isolation_level = None  # transactions are begun below, not by the driver
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA busy_timeout=60000")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _begin(conn: Connection) -> None:
        conn.exec_driver_sql("BEGIN IMMEDIATE" if conn.get_execution_options().get("write") else "BEGIN")

    return engine


class Store:
    def __init__(self, url: str | None = None):
        self.url = url or default_url()
        if self.url.startswith("sqlite"):
            Path(self.url.split("///", 1)[-1]).parent.mkdir(parents=True, exist_ok=True)
            self.engine = _sqlite_engine(self.url)
        else:
            self.engine = create_engine(self.url, pool_pre_ping=True)
        self.migrate()

    @contextmanager
    def write(self) -> Iterator[Connection]:
        """One write transaction: committed whole or not at all."""
        with self.engine.connect() as conn:
            conn.execution_options(write=True)
            with conn.begin():
                yield conn

    @contextmanager
    def read(self) -> Iterator[Connection]:
        with self.engine.connect() as conn, conn.begin():
            yield conn

    def schema_version(self) -> int:
        with self.read() as conn:
            return conn.execute(select(func.coalesce(func.max(schema_migrations.c.version), 0))).scalar_one()

    def migrate(self) -> int:
        """Apply pending migrations; returns the schema version reached."""
        with self.write() as conn:
            schema_migrations.create(conn, checkfirst=True)
            current = conn.execute(select(func.coalesce(func.max(schema_migrations.c.version), 0))).scalar_one()
            for version, migration in enumerate(MIGRATIONS, start=1):
                if version > current:
                    migration(conn)
                    conn.execute(insert(schema_migrations).values(version=version, applied_at=utc_now()))
        return len(MIGRATIONS)

    # Transcripts -------------------------------------------------------------------------------------

    def save_transcript(self, transcript: Transcript) -> str:
        """Insert or replace a transcript and all its turns, atomically."""
        with self.write() as conn:
            self._save_transcript(conn, transcript)
        return transcript.id

    def _save_transcript(self, conn: Connection, transcript: Transcript) -> None:
        row = {
            "id": transcript.id,
            "group_id": transcript.group_id,
            "kind": transcript.kind,
            "created_at": transcript.created_at,
            "therapist_name": transcript.therapist_name,
            "therapist": transcript.therapist,
            "system_prompt": transcript.system_prompt,
            "sampling": transcript.sampling,
            "seed": transcript.seed,
            "prompt_versions": transcript.prompt_versions,
            "context_policy": transcript.context_policy,
            "meta": transcript.meta,
        }
        if not _insert_unless_present(conn, transcripts, transcripts.c.id, transcript.id, row):
            conn.execute(update(transcripts).where(transcripts.c.id == transcript.id).values(**row))
            conn.execute(delete(turns).where(turns.c.transcript_id == transcript.id))
        if transcript.turns:
            conn.execute(
                insert(turns),
                [
                    {"transcript_id": transcript.id, "idx": i, **turn.model_dump(mode="json")}
                    for i, turn in enumerate(transcript.turns)
                ],
            )

    def get_transcript(self, transcript_id: str) -> Transcript:
        with self.read() as conn:
            row = conn.execute(select(transcripts).where(transcripts.c.id == transcript_id)).mappings().first()
            if row is None:
                raise KeyError(f"no transcript with id {transcript_id!r} in {self.url}")
            turn_rows = conn.execute(
                select(turns).where(turns.c.transcript_id == transcript_id).order_by(turns.c.idx)
            ).mappings()
            return _transcript_from_rows(row, turn_rows)

    def list_transcripts(
        self, *, kind: str | None = None, group_id: str | None = None, limit: int = 500
    ) -> list[TranscriptSummary]:
        count = (
            select(func.count()).select_from(turns).where(turns.c.transcript_id == transcripts.c.id).scalar_subquery()
        )
        query = select(transcripts, count.label("turn_count")).order_by(transcripts.c.created_at.desc())
        if kind:
            query = query.where(transcripts.c.kind == kind)
        if group_id:
            query = query.where(transcripts.c.group_id == group_id)
        with self.read() as conn:
            rows = conn.execute(query.limit(limit)).mappings().all()
        return [
            TranscriptSummary(
                id=r["id"],
                group_id=r["group_id"],
                kind=r["kind"],
                created_at=r["created_at"],
                therapist_name=r["therapist_name"],
                turn_count=r["turn_count"],
            )
            for r in rows
        ]

    # Simulation batches ------------------------------------------------------------------------------

    def save_batch_run(
        self, run_key: str, batch_id: str, transcript: Transcript | None, status: str, *, error: str | None = None
    ) -> None:
        """Record one batch run (and store its transcript) in one transaction, so a kill never half-records it."""
        with self.write() as conn:
            if transcript is not None:
                self._save_transcript(conn, transcript)
            row = {
                "batch_id": batch_id,
                "transcript_id": transcript.id if transcript is not None else None,
                "status": status,
                "error": error,
                "created_at": utc_now(),
            }
            if not _insert_unless_present(conn, batch_runs, batch_runs.c.run_key, run_key, {"run_key": run_key, **row}):
                conn.execute(update(batch_runs).where(batch_runs.c.run_key == run_key).values(**row))

    def batch_runs(self, batch_id: str) -> dict[str, BatchRun]:
        """The recorded runs of one batch, by run key."""
        with self.read() as conn:
            rows = conn.execute(select(batch_runs).where(batch_runs.c.batch_id == batch_id)).mappings().all()
        return {r["run_key"]: BatchRun(**r) for r in rows}

    def export_jsonl(self, out: IO[str], ids: Iterable[str] | None = None) -> int:
        """Write one transcript per line (oldest first); returns how many were written."""
        with self.read() as conn:
            query = select(transcripts.c.id).order_by(transcripts.c.created_at, transcripts.c.id)
            all_ids = [r[0] for r in conn.execute(query)]
        chosen = all_ids if ids is None else [i for i in all_ids if i in set(ids)]
        for transcript_id in chosen:
            out.write(self.get_transcript(transcript_id).to_json_line() + "\n")
        return len(chosen)

    def import_jsonl(self, source: IO[str]) -> list[str]:
        """Validate every line first, then store all of them in one transaction; nothing half-imported."""
        parsed = parse_transcripts_jsonl(source)
        with self.write() as conn:
            for transcript in parsed:
                self._save_transcript(conn, transcript)
        return [t.id for t in parsed]

    # Scores (rows built and read by cbtcompare.ctrs.results) -------------------------------------------

    def save_scores(self, rows: list[dict], pairwise: bool = False) -> int:
        """Insert judge score rows (or pairwise rows) in one transaction; returns how many."""
        if rows:
            with self.write() as conn:
                conn.execute(insert(pairwise_scores if pairwise else scores), rows)
        return len(rows)

    def list_scores(
        self, *, transcript_ids: Iterable[str] | None = None, judge: str | None = None, rubric_id: str | None = None
    ) -> list[dict]:
        """Score rows in insertion order, optionally only some transcripts, one judge, one rubric."""
        query = select(scores).order_by(scores.c.id)
        if transcript_ids is not None:
            query = query.where(scores.c.transcript_id.in_(list(transcript_ids)))
        if judge:
            query = query.where(scores.c.judge_name == judge)
        if rubric_id:
            query = query.where(scores.c.rubric_id == rubric_id)
        with self.read() as conn:
            return [dict(r) for r in conn.execute(query).mappings()]

    def list_pairwise_scores(self, *, transcript_id: str | None = None, judge: str | None = None) -> list[dict]:
        """Pairwise rows in insertion order; `transcript_id` matches either side of a pair."""
        query = select(pairwise_scores).order_by(pairwise_scores.c.id)
        if transcript_id:
            query = query.where(
                (pairwise_scores.c.transcript_a == transcript_id) | (pairwise_scores.c.transcript_b == transcript_id)
            )
        if judge:
            query = query.where(pairwise_scores.c.judge_name == judge)
        with self.read() as conn:
            return [dict(r) for r in conn.execute(query).mappings()]


def _insert_unless_present(conn: Connection, table: Table, key: Column, value: str, row: dict) -> bool:
    """Insert `row` unless a row with this key exists; True when inserted, False when it was already there.

    Under PostgreSQL's READ COMMITTED two writers can both see "absent" and both insert; the second then
    fails on the primary key once the first commits. The insert runs in a savepoint so that writer falls
    back to updating instead (SQLite never gets there: BEGIN IMMEDIATE serialises its writers).
    """
    if conn.execute(select(key).where(key == value)).first():
        return False
    try:
        with conn.begin_nested():
            conn.execute(insert(table).values(**row))
    except IntegrityError:
        if not conn.execute(select(key).where(key == value)).first():
            raise  # not a concurrent insert of the same key: a real integrity problem
        return False
    return True


def parse_transcripts_jsonl(source: IO[str]) -> list[Transcript]:
    parsed: list[Transcript] = []
    for number, line in enumerate(source, start=1):
        if not line.strip():
            continue
        try:
            parsed.append(Transcript.model_validate(json.loads(line)))
        except json.JSONDecodeError as exc:
            raise ImportFailed(f"line {number}: not valid JSON ({exc.msg} at column {exc.colno})") from exc
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(p) for p in first["loc"])
            raise ImportFailed(f"line {number}: field {where!r}: {first['msg']}") from exc
    if not parsed:
        raise ImportFailed("the file holds no transcripts")
    return parsed


def _transcript_from_rows(row, turn_rows) -> Transcript:  # type: ignore[no-untyped-def]
    return Transcript(
        id=row["id"],
        group_id=row["group_id"],
        kind=row["kind"],
        created_at=row["created_at"],
        therapist=row["therapist"],
        system_prompt=row["system_prompt"],
        sampling=row["sampling"],
        seed=row["seed"],
        prompt_versions=row["prompt_versions"],
        context_policy=row["context_policy"],
        meta=row["meta"],
        turns=[
            Turn(
                role=t["role"],
                text=t["text"],
                flags=t["flags"],
                tokens=t["tokens"],
                seconds=t["seconds"],
                seed=t["seed"],
            )
            for t in turn_rows
        ],
    )
