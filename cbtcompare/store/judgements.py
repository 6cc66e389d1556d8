"""Writing judge scores: a judgement (the rows of one result_id) never shares a repeat number with another.

The store's unique indexes (migration 5) refuse a second score for one transcript x judge x rubric x
repeat x item (pairwise: x order). Here a judgement that would collide takes the next free repeat
number, or, when the caller asks for `replace`, removes the stored judgement under that number first.
The judged transcripts' rows are locked first (SELECT ... FOR UPDATE on PostgreSQL; SQLite's BEGIN
IMMEDIATE already serialises writers), so two concurrent judges never pick the same number.
This module never imports a model backend or gradio.
"""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import Connection, Table, and_, delete, func, insert, select

from cbtcompare.store.migrations import PAIRWISE_JUDGEMENT, PAIRWISE_SLOT, SCORE_JUDGEMENT, SCORE_SLOT
from cbtcompare.store.schema import pairwise_scores, scores, transcripts


def next_free_repeat(conn: Connection, table: Table, key: Sequence[object]) -> int:
    """One more than the highest stored repeat of this judgement key (0 when there is none)."""
    names = PAIRWISE_JUDGEMENT if table is pairwise_scores else SCORE_JUDGEMENT
    query = select(func.max(table.c.repeat)).where(_matches(table, names, key))
    highest = conn.execute(query).scalar_one_or_none()
    return 0 if highest is None else highest + 1


def store_judgements(conn: Connection, rows: list[dict], *, pairwise: bool, replace: bool) -> None:
    """Insert score rows inside the caller's transaction, renumbering (or replacing) colliding judgements.

    Rows are changed in place when they take a new repeat number, so the caller sees what was stored."""
    table = pairwise_scores if pairwise else scores
    names, slot = (PAIRWISE_JUDGEMENT, PAIRWISE_SLOT) if pairwise else (SCORE_JUDGEMENT, SCORE_SLOT)
    _lock_transcripts(conn, rows, ("transcript_a", "transcript_b") if pairwise else ("transcript_id",))
    judgements: dict[str, list[dict]] = {}
    for row in rows:
        judgements.setdefault(row["result_id"], []).append(row)
    taken: dict[tuple, set[int]] = {}  # repeats claimed by earlier judgements in this same call
    for group in judgements.values():
        key = tuple(group[0][n] for n in names)
        wanted = group[0]["repeat"]
        claimed = taken.setdefault(key, set())
        stored = _stored_repeat_exists(conn, table, names, key, wanted)
        if replace and wanted not in claimed:
            if stored:
                conn.execute(delete(table).where(_matches(table, names, key), table.c.repeat == wanted))
        elif stored or wanted in claimed:
            wanted = max(next_free_repeat(conn, table, key), max(claimed, default=-1) + 1)
        claimed.add(wanted)
        for row in group:
            row["repeat"] = wanted
        duplicated = len({tuple(r[n] for n in slot) for r in group}) < len(group)
        if duplicated:
            raise ValueError(f"judgement {group[0]['result_id']} scores one {' and '.join(slot)} more than once")
    conn.execute(insert(table), rows)


def _stored_repeat_exists(conn: Connection, table: Table, names: Sequence[str], key: tuple, repeat: int) -> bool:
    query = select(table.c.id).where(_matches(table, names, key), table.c.repeat == repeat).limit(1)
    return conn.execute(query).first() is not None


def _matches(table: Table, names: Sequence[str], key: Sequence[object]):  # type: ignore[no-untyped-def]
    return and_(*(table.c[name] == value for name, value in zip(names, key, strict=True)))


def _lock_transcripts(conn: Connection, rows: list[dict], columns: Sequence[str]) -> None:
    ids = sorted({row[c] for row in rows for c in columns})  # one order for everyone: no lock-order deadlock
    conn.execute(select(transcripts.c.id).where(transcripts.c.id.in_(ids)).order_by(transcripts.c.id).with_for_update())
