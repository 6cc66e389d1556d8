"""Persistence: one store for transcripts (and, through later migrations, scores, ratings and jobs).

SQLite in WAL mode through SQLAlchemy Core by default; CBTCOMPARE_DB_URL selects another database, and
a PostgreSQL URL works unchanged (only portable types and statements are used). The schema evolves by
numbered migrations, each applied once, in order, inside one transaction. Writes on SQLite take the
write lock up front (BEGIN IMMEDIATE) so concurrent writers wait instead of failing.

A stored transcript is never changed: saving one whose id is already stored is a no-op when the content
(every field but created_at) is identical and a TranscriptConflict otherwise (the stored turns, and
every score attached to them, stay exactly as they were). The one exception is a session still in
progress: `save_transcript` may append turns to a transcript that nothing has judged or put in a
rating study yet; the turns already stored are never touched. Database failures (a read-only folder,
a server that is down) surface as StoreUnavailable with a message a person can act on, and never
with the URL's password.
This module never imports a model backend or gradio.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from pydantic import ValidationError
from sqlalchemy import (
    Column,
    Connection,
    Engine,
    Table,
    create_engine,
    event,
    func,
    insert,
    make_url,
    select,
    update,
)
from sqlalchemy.exc import IntegrityError, OperationalError

from cbtcompare.limits import DEFAULT_LIMITS, describe_bytes, first_offset_too_deep
from cbtcompare.paths import data_dir
from cbtcompare.redact import redact, redact_url
from cbtcompare.store.judgements import next_free_repeat, store_judgements
from cbtcompare.store.migrations import MIGRATIONS, apply_migrations
from cbtcompare.store.rating import RatingRepository
from cbtcompare.store.schema import (
    batch_runs,
    metadata,
    pairwise_scores,
    rating_assignments,
    rating_pairs,
    rating_raters,
    rating_studies,
    ratings,
    schema_migrations,
    scores,
    transcripts,
    turns,
)
from cbtcompare.transcript import Transcript, Turn, utc_now

__all__ = [
    "MIGRATIONS",
    "RatingRepository",
    "BatchRun",
    "ImportFailed",
    "SaveReport",
    "Store",
    "StoreUnavailable",
    "TranscriptConflict",
    "TranscriptSummary",
    "batch_runs",
    "check_storable",
    "default_url",
    "field_problem",
    "metadata",
    "pairwise_scores",
    "parse_transcripts_jsonl",
    "rating_assignments",
    "rating_pairs",
    "rating_raters",
    "rating_studies",
    "ratings",
    "schema_migrations",
    "scores",
    "transcripts",
    "turns",
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


class TranscriptConflict(ImportFailed):
    """A transcript with this id is already stored with different content; nothing was written."""

    def __init__(self, transcript_id: str, message: str):
        self.transcript_id = transcript_id
        super().__init__(message)


class StoreUnavailable(ValueError):
    """The database cannot be opened or written (read-only folder, server down, disk full)."""


@dataclass(frozen=True)
class SaveReport:
    """What `save_transcripts` did: ids written now, and ids already stored with identical content."""

    stored: list[str]
    unchanged: list[str]

    @property
    def ids(self) -> list[str]:
        return [*self.stored, *self.unchanged]


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


THERAPIST_NAME_CHARS = 200  # the width of transcripts.therapist_name


class Store:
    def __init__(self, url: str | None = None):
        try:
            self.url = url or default_url()
        except OSError as exc:  # the data folder could not be created
            raise StoreUnavailable(
                f"cannot create the data folder {exc.filename} ({exc.strerror}); make it writable, or point "
                "CBTCOMPARE_DATA_DIR or CBTCOMPARE_DB_URL at a writable place"
            ) from None
        self.display_url = redact_url(self.url)  # safe to show: the password is masked
        if self.url.startswith("sqlite"):
            database = make_url(self.url).database or ""
            if database and database != ":memory:":
                folder = Path(database.removeprefix("file:")).parent
                try:
                    folder.mkdir(parents=True, exist_ok=True)
                except OSError as exc:
                    raise StoreUnavailable(
                        f"cannot create the data folder {folder} ({exc.strerror}); make it writable, or point "
                        "CBTCOMPARE_DATA_DIR or CBTCOMPARE_DB_URL at a writable place"
                    ) from None
            self.engine = _sqlite_engine(self.url)
        else:
            self.engine = create_engine(self.url, pool_pre_ping=True)
        self.migrate()

    @property
    def rating(self) -> RatingRepository:
        """Blind rating's queries (studies, pairs, raters, assignments, ratings): cbtcompare.store.rating."""
        return RatingRepository(self)

    @contextmanager
    def write(self) -> Iterator[Connection]:
        """One write transaction: committed whole or not at all."""
        with self._database_errors("write to"), self.engine.connect() as conn:
            conn.execution_options(write=True)
            with conn.begin():
                yield conn

    @contextmanager
    def read(self) -> Iterator[Connection]:
        with self._database_errors("read"), self.engine.connect() as conn, conn.begin():
            yield conn

    @contextmanager
    def _database_errors(self, action: str) -> Iterator[None]:
        """Operational failures (read-only file, locked, server down) become StoreUnavailable."""
        try:
            yield
        except OperationalError as exc:
            reason = redact(str(exc.orig) if exc.orig is not None else str(exc)).strip()
            hint = (
                "make the database file and its folder writable, or point CBTCOMPARE_DATA_DIR or "
                "CBTCOMPARE_DB_URL at a writable place"
                if self.url.startswith("sqlite")
                else "check that the database server is running and CBTCOMPARE_DB_URL is right"
            )
            raise StoreUnavailable(f"cannot {action} the database {self.display_url}: {reason}; {hint}") from None

    def schema_version(self) -> int:
        with self.read() as conn:
            return conn.execute(select(func.coalesce(func.max(schema_migrations.c.version), 0))).scalar_one()

    def migrate(self) -> int:
        """Apply pending migrations; returns the schema version reached."""
        with self.write() as conn:
            return apply_migrations(conn)

    # Transcripts -------------------------------------------------------------------------------------

    def save_transcript(self, transcript: Transcript) -> str:
        """Store a new transcript, or append the new turns of a session still in progress, atomically.

        Identical content already stored is a no-op. Anything else that would change a stored transcript
        (a changed turn or field, or new turns on one already judged or in a rating study) raises
        TranscriptConflict and writes nothing.
        """
        checked = check_storable(transcript)
        with self.write() as conn:
            self._write_transcript(conn, checked, allow_growth=True)
        return checked.id

    def save_transcripts(self, transcripts: Sequence[Transcript]) -> SaveReport:
        """Store new transcripts in one transaction, after validating all of them; never changes a stored one.

        A transcript already stored with identical content is left alone and reported as unchanged; one
        stored with different content raises TranscriptConflict, and then nothing at all is written.
        """
        checked = [check_storable(t) for t in transcripts]
        unique: dict[str, Transcript] = {}
        for transcript in checked:
            seen = unique.setdefault(transcript.id, transcript)
            if seen is not transcript and _canonical(seen) != _canonical(transcript):
                raise TranscriptConflict(
                    transcript.id, f"two different transcripts have the id {transcript.id!r}; give each its own id"
                )
        stored: list[str] = []
        unchanged: list[str] = []
        with self.write() as conn:
            for transcript in unique.values():
                outcome = self._write_transcript(conn, transcript, allow_growth=False)
                (unchanged if outcome == "unchanged" else stored).append(transcript.id)
        return SaveReport(stored=stored, unchanged=unchanged)

    def _write_transcript(self, conn: Connection, transcript: Transcript, *, allow_growth: bool) -> str:
        """Insert `transcript` unless its id is stored; returns "stored", "unchanged" or "grown"."""
        if _insert_unless_present(conn, transcripts, transcripts.c.id, transcript.id, _transcript_row(transcript)):
            self._insert_turns(conn, transcript.id, transcript.turns, start=0)
            return "stored"
        existing = _read_transcript(conn, transcript.id)
        if existing is None:  # deleted between the two statements: cannot happen inside one transaction
            raise StoreUnavailable(f"transcript {transcript.id!r} vanished during the write; try again")
        if _canonical(existing) == _canonical(transcript):
            return "unchanged"
        difference = _difference(existing, transcript)
        if allow_growth and difference is None:
            if self._is_referenced(conn, transcript.id):
                raise TranscriptConflict(
                    transcript.id,
                    f"transcript {transcript.id!r} is already judged or in a rating study, so its stored turns "
                    "are final; save the longer session as a new transcript (a new id)",
                )
            self._insert_turns(conn, transcript.id, transcript.turns[len(existing.turns) :], start=len(existing.turns))
            return "grown"
        raise TranscriptConflict(
            transcript.id,
            f"transcript {transcript.id!r} is already stored with different content "
            f"({difference or 'new turns after the stored ones'}); a stored transcript is never changed. "
            'Remove its "id" (or give it a new one) to store it as a separate transcript',
        )

    @staticmethod
    def _insert_turns(conn: Connection, transcript_id: str, new_turns: Sequence[Turn], *, start: int) -> None:
        if new_turns:
            conn.execute(
                insert(turns),
                [
                    {"transcript_id": transcript_id, "idx": start + i, **turn.model_dump(mode="json")}
                    for i, turn in enumerate(new_turns)
                ],
            )

    @staticmethod
    def _is_referenced(conn: Connection, transcript_id: str) -> bool:
        probes = [
            select(scores.c.id).where(scores.c.transcript_id == transcript_id),
            select(pairwise_scores.c.id).where(
                (pairwise_scores.c.transcript_a == transcript_id) | (pairwise_scores.c.transcript_b == transcript_id)
            ),
            select(rating_pairs.c.id).where(
                (rating_pairs.c.transcript_1 == transcript_id) | (rating_pairs.c.transcript_2 == transcript_id)
            ),
        ]
        return any(conn.execute(probe.limit(1)).first() for probe in probes)

    def get_transcript(self, transcript_id: str) -> Transcript:
        with self.read() as conn:
            transcript = _read_transcript(conn, transcript_id)
        if transcript is None:
            raise KeyError(f"no transcript with id {transcript_id!r} in {self.display_url}")
        return transcript

    def iter_transcripts(self) -> Iterator[Transcript]:
        """Every stored transcript, oldest first (ties by id): the order exports use."""
        with self.read() as conn:
            query = select(transcripts.c.id).order_by(transcripts.c.created_at, transcripts.c.id)
            all_ids = [r[0] for r in conn.execute(query)]
        for transcript_id in all_ids:
            yield self.get_transcript(transcript_id)

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
        return [TranscriptSummary(**{name: r[name] for name in TranscriptSummary.__dataclass_fields__}) for r in rows]

    # Simulation batches ------------------------------------------------------------------------------

    def save_batch_run(
        self, run_key: str, batch_id: str, transcript: Transcript | None, status: str, *, error: str | None = None
    ) -> None:
        """Record one batch run (and store its transcript) in one transaction, so a kill never half-records it."""
        with self.write() as conn:
            if transcript is not None:
                self._write_transcript(conn, check_storable(transcript), allow_growth=True)
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
        chosen = None if ids is None else set(ids)
        count = 0
        for transcript in self.iter_transcripts():
            if chosen is None or transcript.id in chosen:
                out.write(transcript.to_json_line() + "\n")
                count += 1
        return count

    def import_jsonl(self, source: IO[str]) -> list[str]:
        """Validate every line first, then store all of them in one transaction; nothing half-imported.

        Same rules as `save_transcripts`: identical transcripts already stored are left alone, a different
        one under a stored id is refused. Returns every id in the file.
        """
        return self.save_transcripts(parse_transcripts_jsonl(source)).ids

    # Scores (rows built and read by cbtcompare.ctrs.results) -------------------------------------------

    def save_scores(self, rows: list[dict], pairwise: bool = False, *, replace: bool = False) -> int:
        """Insert judge score rows (or pairwise rows) in one transaction; returns how many.

        A judgement (the rows of one result_id) whose repeat number is already taken for its transcript,
        judge and rubric is stored under the next free repeat number (the rows are updated in place), so
        judging again adds a sample and never a duplicate key. With `replace=True` it replaces the stored
        judgement under that repeat instead. Either way all of it is written, or none.
        """
        if rows:
            with self.write() as conn:
                store_judgements(conn, rows, pairwise=pairwise, replace=replace)
        return len(rows)

    def next_repeat(self, transcript_id: str, judge: str, rubric_id: str) -> int:
        """The repeat number a new judgement of this transcript by this judge on this rubric gets."""
        with self.read() as conn:
            return next_free_repeat(conn, scores, (transcript_id, judge, rubric_id))

    def next_pairwise_repeat(self, transcript_a: str, transcript_b: str, judge: str, rubric_id: str) -> int:
        """The repeat number a new pairwise judgement of (A, B) in this order by this judge on this rubric gets."""
        with self.read() as conn:
            return next_free_repeat(conn, pairwise_scores, (transcript_a, transcript_b, judge, rubric_id))

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
    """Our own JSONL (one Transcript per line), as `export_jsonl` writes it."""
    parsed: list[Transcript] = []
    read = 0
    for number, line in enumerate(source, start=1):
        read += len(line)  # characters: never more than the bytes they came from
        if read > DEFAULT_LIMITS.max_bytes:
            raise ImportFailed(
                f"line {number}: the input is over the import limit of {describe_bytes(DEFAULT_LIMITS.max_bytes)}; "
                "split it into smaller files"
            )
        if not line.strip():
            continue
        if first_offset_too_deep(line, DEFAULT_LIMITS.max_json_depth) is not None:
            raise ImportFailed(f"line {number}: JSON nested deeper than {DEFAULT_LIMITS.max_json_depth} levels")
        try:
            parsed.append(Transcript.model_validate(json.loads(line, parse_constant=_refuse_constant)))
        except json.JSONDecodeError as exc:
            raise ImportFailed(f"line {number}: not valid JSON ({exc.msg} at column {exc.colno})") from None
        except ValidationError as exc:
            raise ImportFailed(f"line {number}: {field_problem(exc)}") from None
        except ValueError as exc:  # NaN/Infinity, or an integer too long to convert
            raise ImportFailed(f"line {number}: {exc}") from None
    if not parsed:
        raise ImportFailed("the file holds no transcripts")
    return parsed


def field_problem(exc: ValidationError) -> str:
    """`field 'turns.1.role': <pydantic's message>`: the first problem of a transcript that does not validate.

    Data errors (an import line, a transcript) name the field this way; configuration files use
    cbtcompare.config_errors, which also names the file and entry."""
    first = exc.errors()[0]
    where = ".".join(str(p) for p in first["loc"])
    return f"field {where!r}: {first['msg']}"


def _refuse_constant(name: str) -> float:
    raise ValueError(f"{name} is not a JSON number; write null or a finite number")


def check_storable(transcript: Transcript) -> Transcript:
    """Validate again (fields may have been assigned after construction) and check it stores losslessly.

    Returns the validated copy; ImportFailed says which field to fix. Every save goes through this."""
    try:
        checked = Transcript.model_validate(transcript.model_dump())
    except ValidationError as exc:
        raise ImportFailed(f"transcript {transcript.id!r}: {field_problem(exc)}") from None
    if len(checked.therapist_name) > THERAPIST_NAME_CHARS:
        raise ImportFailed(
            f"transcript {transcript.id!r}: the therapist name is {len(checked.therapist_name)} characters; "
            f"the most is {THERAPIST_NAME_CHARS}"
        )
    problem = _unstorable_value(checked.model_dump()) if _may_be_unstorable(checked) else None
    if problem:
        raise ImportFailed(f"transcript {transcript.id!r}: {problem}")
    return checked


def _may_be_unstorable(transcript: Transcript) -> bool:
    """A fast screen (one serialisation) before the slower walk that says which field is the problem."""
    try:
        dumped = json.dumps(transcript.model_dump(), ensure_ascii=False, allow_nan=False, default=str)
        dumped.encode("utf-8")
    except (ValueError, UnicodeEncodeError):  # NaN/infinity, or an unpaired surrogate
        return True
    return "\\u0000" in dumped


def _unstorable_value(document: object) -> str | None:
    """The first value no database stores faithfully: NaN or infinity (JSON has neither), a NUL character
    or an unpaired surrogate in a string or key."""
    stack: list[tuple[str, object]] = [("", document)]
    while stack:  # iterative: deeply nested meta must not recurse
        where, value = stack.pop()
        if isinstance(value, dict):
            stack.extend((f"{where}.{key}" if where else str(key), item) for key, item in value.items())
            stack.extend((f"{where} (a key)", key) for key in value if isinstance(key, str))
        elif isinstance(value, list | tuple):
            stack.extend((f"{where}.{index}", item) for index, item in enumerate(value))
        elif isinstance(value, float) and not math.isfinite(value):
            return f"field {where!r} is {value}, which JSON cannot hold; use null or a finite number"
        elif isinstance(value, str):
            if "\x00" in value:
                return f"field {where!r} contains a NUL character (U+0000), which databases cannot store; remove it"
            try:
                value.encode("utf-8")
            except UnicodeEncodeError as exc:
                return (
                    f"field {where!r} contains an unpaired surrogate (U+{ord(value[exc.start]):04X}), which is "
                    "not text; fix the \\u escape that produced it"
                )
    return None


def _canonical(transcript: Transcript) -> dict:
    """What "the same transcript" means: every field as the database stores it (JSON types), except
    created_at, which a file without timestamps gets anew each time it is read."""
    document = json.loads(transcript.to_json_line())
    document.pop("created_at")
    return document


def _difference(stored: Transcript, new: Transcript) -> str | None:
    """What differs between a stored transcript and a new one with its id; None when `new` only adds turns."""
    old_fields, new_fields = _canonical(stored), _canonical(new)
    keys = (old_fields.keys() | new_fields.keys()) - {"turns"}
    changed = sorted(k for k in keys if old_fields.get(k) != new_fields.get(k))
    if changed:
        return "different " + ", ".join(changed)
    old_turns, new_turns = old_fields["turns"], new_fields["turns"]
    for index, (old_turn, new_turn) in enumerate(zip(old_turns, new_turns, strict=False)):
        if old_turn != new_turn:
            return f"turn {index + 1} differs"
    if len(new_turns) < len(old_turns):
        return f"{len(new_turns)} turns where {len(old_turns)} are stored"
    return None


def _transcript_row(transcript: Transcript) -> dict:
    return {
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


def _read_transcript(conn: Connection, transcript_id: str) -> Transcript | None:
    row = conn.execute(select(transcripts).where(transcripts.c.id == transcript_id)).mappings().first()
    if row is None:
        return None
    turn_query = select(turns).where(turns.c.transcript_id == transcript_id).order_by(turns.c.idx)
    turn_rows = conn.execute(turn_query).mappings()
    return _transcript_from_rows(row, turn_rows)


def _transcript_from_rows(row, turn_rows) -> Transcript:  # type: ignore[no-untyped-def]
    """A stored transcript, validated as it is read (the row's columns are the model's fields)."""
    fields = {name: row[name] for name in Transcript.model_fields if name != "turns"}
    turn_list = [{name: t[name] for name in Turn.model_fields} for t in turn_rows]
    return Transcript.model_validate({**fields, "turns": turn_list})
