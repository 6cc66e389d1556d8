"""Migrations freeze their own DDL: a fresh install, an upgrade from every old version, and old duplicates.

Before, migrations called `.create()` on the live Table objects, so the first column added by editing
a table went into fresh installs through migration 1 and the migration that adds it to existing
stores would then fail on them (the column already there).
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from sqlalchemy import create_engine, insert, inspect, select, text
from test_store import sample
from test_store_postgres import new_pg_store, pg_store  # noqa: F401  (fixtures)

from cbtcompare.ctrs import load_pairwise, load_results, scores_frame
from cbtcompare.stats import validate_scores
from cbtcompare.store import MIGRATIONS, Store, metadata
from cbtcompare.store.migrations import apply_migrations
from cbtcompare.store.schema import pairwise_scores, rating_studies, scores

REPO = Path(__file__).resolve().parents[1]


def schema_of(engine) -> dict:  # type: ignore[no-untyped-def]
    """Every table's columns, keys and indexes as the database reports them (not as the code declares them)."""
    found = inspect(engine)
    described = {}
    for table in sorted(found.get_table_names()):
        described[table] = {
            "columns": [
                (c["name"], str(c["type"]), c["nullable"], bool(c.get("primary_key"))) for c in found.get_columns(table)
            ],
            "primary_key": sorted(found.get_pk_constraint(table)["constrained_columns"]),
            "foreign_keys": sorted(
                (
                    tuple(f["constrained_columns"]),
                    f["referred_table"],
                    tuple(f["referred_columns"]),
                    f["options"].get("ondelete"),
                )
                for f in found.get_foreign_keys(table)
            ),
            "indexes": sorted(
                (i["name"], tuple(i["column_names"]), bool(i["unique"])) for i in found.get_indexes(table)
            ),
            "unique": sorted(tuple(u["column_names"]) for u in found.get_unique_constraints(table)),
        }
    return described


def test_a_fresh_install_builds_exactly_the_live_schema(tmp_path: Path):
    migrated = Store(f"sqlite:///{tmp_path / 'migrated.sqlite'}")
    declared = create_engine(f"sqlite:///{tmp_path / 'declared.sqlite'}")
    metadata.create_all(declared)
    assert schema_of(migrated.engine) == schema_of(declared)
    assert "uq_scores_judgement" in {
        name for name, _, unique in schema_of(migrated.engine)["scores"]["indexes"] if unique
    }


def test_a_fresh_install_builds_exactly_the_live_schema_postgresql(pg_store: Store):  # noqa: F811
    declared = create_engine(pg_store.url)
    with declared.begin() as conn:
        conn.execute(text("CREATE SCHEMA declared"))
    declared_engine = create_engine(pg_store.url, execution_options={"schema_translate_map": {None: "declared"}})
    metadata.create_all(declared_engine)
    mine = schema_of(pg_store.engine)
    theirs = {}
    found = inspect(declared)
    for table in found.get_table_names(schema="declared"):
        theirs[table] = sorted(
            (i["name"], tuple(i["column_names"]), bool(i["unique"]))
            for i in found.get_indexes(table, schema="declared")
        )
    assert {t: d["indexes"] for t, d in mine.items()} == theirs
    declared_engine.dispose()
    declared.dispose()


def test_editing_a_live_table_leaves_what_old_migrations_create_unchanged(tmp_path: Path):
    """Add a column to the live `transcripts` Table (as a developer would), then install fresh: the new
    column must come only from a new migration, never from migration 1."""
    url = f"sqlite:///{tmp_path / 'fresh.sqlite'}"
    script = textwrap.dedent(
        f"""
        import json
        from sqlalchemy import Column, Text, inspect
        import cbtcompare.store as store_module
        store_module.transcripts.append_column(Column("added_later", Text))  # the live table, edited
        store = store_module.Store({url!r})
        print(json.dumps([c["name"] for c in inspect(store.engine).get_columns("transcripts")]))
        """
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=REPO, timeout=300)
    assert done.returncode == 0, done.stderr
    columns = json.loads(done.stdout.strip().splitlines()[-1])
    assert "added_later" not in columns
    assert columns[:3] == ["id", "group_id", "kind"]


def _fill(conn, version: int, transcript) -> None:  # type: ignore[no-untyped-def]
    """Rows a store at `version` could hold (one transcript from version 1 on, a score from 2, ...)."""
    if version >= 1:
        from cbtcompare.store import _transcript_row

        conn.execute(insert(metadata.tables["transcripts"]).values(**_transcript_row(transcript)))
        conn.execute(
            insert(metadata.tables["turns"]).values(
                transcript_id=transcript.id, idx=0, role="patient", text="I feel stuck.", flags={}
            )
        )
    if version >= 2:
        conn.execute(insert(scores).values(**_score_row(transcript.id, "r1", 0, "agenda", 6)))
    if version >= 4:
        conn.execute(
            insert(rating_studies).values(
                id="s1",
                name="study",
                created_at="2026-01-01",
                seed=1,
                raters_per_pair=1,
                choices=[],
                scrub={},
                source="test",
            )
        )


def _score_row(transcript_id: str, result_id: str, repeat: int, item: str, score: int) -> dict:
    return {
        "result_id": result_id, "transcript_id": transcript_id, "judge_name": "judge-model", "judge_info": {},
        "repeat": repeat, "rubric_id": "ctrs-paper-1-10", "rubric_version": "1@abc", "prompt_version": "p@1",
        "mode": "all", "sampling": {}, "item": item, "score": score, "status": "scored", "justification": "j",
        "evidence": [], "raw_output": "{}", "reason": None, "attempts": 1, "created_at": "2026-01-01",
    }  # fmt: skip


@pytest.mark.parametrize("version", range(len(MIGRATIONS)))
def test_a_store_at_every_old_version_upgrades_and_keeps_its_rows(tmp_path: Path, version: int):
    url = f"sqlite:///{tmp_path / 'old.sqlite'}"
    transcript = sample(1)
    old = create_engine(url)
    with old.begin() as conn:
        assert apply_migrations(conn, upto=version) == version
        _fill(conn, version, transcript)
    old.dispose()
    upgraded = Store(url)
    assert upgraded.schema_version() == len(MIGRATIONS)
    fresh = Store(f"sqlite:///{tmp_path / 'fresh.sqlite'}")
    assert schema_of(upgraded.engine) == schema_of(fresh.engine)
    if version >= 1:
        assert upgraded.get_transcript(transcript.id).turns[0].text == "I feel stuck."
    if version >= 2:
        assert [(r.repeat, r.items["agenda"].score) for r in load_results(upgraded)] == [(0, 6)]
    with upgraded.read() as conn:
        assert conn.execute(select(rating_studies.c.id)).scalars().all() == (["s1"] if version >= 4 else [])


def test_migration_5_renumbers_duplicate_judgements_and_loses_nothing(tmp_path: Path):
    """A store judged twice before the unique index existed: the later judgements move to new repeats."""
    _check_renumbering(f"sqlite:///{tmp_path / 'judged-twice.sqlite'}")


def test_migration_5_renumbers_duplicate_judgements_on_postgresql(postgres_server):  # type: ignore[no-untyped-def]
    _check_renumbering(postgres_server.new_database())


def _check_renumbering(url: str) -> None:
    one, two = sample(1), sample(2)
    old = create_engine(url)
    with old.begin() as conn:
        apply_migrations(conn, upto=4)
        _fill(conn, 1, one)
        _fill(conn, 1, two)
        rows = [
            _score_row(one.id, "first", 0, "agenda", 7),
            _score_row(one.id, "first", 0, "pacing", 5),
            _score_row(one.id, "second", 0, "agenda", 4),  # the duplicate: Judge run again, repeat 0 again
            _score_row(one.id, "second", 0, "pacing", 3),
            _score_row(one.id, "third", 1, "agenda", 2),  # a proper repeat 1, which the renumbering must skip
            _score_row(one.id, "fourth", 0, "agenda", 1),  # and a third judgement at 0
            _score_row(two.id, "other", 0, "agenda", 9),  # another transcript's repeat 0 is no duplicate
        ]
        conn.execute(insert(scores), rows)
        pair = {
            "result_id": "p1", "transcript_a": one.id, "transcript_b": two.id, "judge_name": "judge-model",
            "judge_info": {}, "repeat": 0, "rubric_id": "ctrs-paper-1-10", "rubric_version": "1@abc",
            "prompt_version": "p@1", "mode": "all", "sampling": {}, "item": "agenda", "order": "AB", "side": "A",
            "outcome": "A", "justification": "j", "raw_output": "{}", "reason": None, "attempts": 1,
            "created_at": "2026-01-01",
        }  # fmt: skip
        conn.execute(insert(pairwise_scores), [pair, {**pair, "result_id": "p2", "side": "B", "outcome": "B"}])
    old.dispose()
    upgraded = Store(url)
    judged = {r.id: (r.repeat, {i: s.score for i, s in r.items.items()}) for r in load_results(upgraded)}
    assert judged == {
        "first": (0, {"agenda": 7, "pacing": 5}),
        "second": (2, {"agenda": 4, "pacing": 3}),
        "third": (1, {"agenda": 2}),
        "fourth": (3, {"agenda": 1}),
        "other": (0, {"agenda": 9}),
    }
    assert [(r.id, r.repeat) for r in load_pairwise(upgraded)] == [("p1", 0), ("p2", 1)]
    validate_scores(scores_frame(upgraded, rubric="ctrs-paper-1-10"))  # Results reads the store again
    upgraded.engine.dispose()
