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
    create_engine,
    delete,
    event,
    func,
    insert,
    select,
    update,
)

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


# Numbered migrations: index + 1 is the version. Append only; never edit one that has shipped.
MIGRATIONS: list[Callable[[Connection], None]] = [
    _migration_1_transcripts,
]


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
        exists = conn.execute(select(transcripts.c.id).where(transcripts.c.id == transcript.id)).first()
        if exists:
            conn.execute(update(transcripts).where(transcripts.c.id == transcript.id).values(**row))
            conn.execute(delete(turns).where(turns.c.transcript_id == transcript.id))
        else:
            conn.execute(insert(transcripts).values(**row))
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
            select(func.count())
            .select_from(turns)
            .where(turns.c.transcript_id == transcripts.c.id)
            .scalar_subquery()
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
