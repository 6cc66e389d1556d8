"""The store: WAL SQLite, migrations, atomic saves, exact JSONL round trips, refusing bad imports."""

from __future__ import annotations

import io
import threading

import pytest
from sqlalchemy import text

from cbtcompare.store import MIGRATIONS, ImportFailed, Store
from cbtcompare.transcript import Transcript, Turn


def sample(n: int = 0, group: str | None = None) -> Transcript:
    return Transcript(
        group_id=group,
        therapist={"name": f"model-{n}", "weights_sha256": "ab" * 32, "adapter_sha256": None},
        system_prompt="Be kind.",
        sampling={"temperature": 0.7, "top_p": 0.95, "max_tokens": 64, "seed": n},
        seed=n,
        prompt_versions={"system": "therapist_basic@0123456789ab"},
        context_policy="refuse",
        meta={"profile_id": "p1", "score": 0.1 + n / 3},
        turns=[
            Turn(role="patient", text="I feel stuck.", flags={"crisis": []}),
            Turn(role="therapist", text="What does stuck feel like? «ünïcode»", tokens=9, seconds=0.25, seed=42),
        ],
    )


def test_sqlite_runs_in_wal_mode_with_all_migrations(store):
    with store.engine.connect() as conn:
        assert conn.execute(text("PRAGMA journal_mode")).scalar() == "wal"
    assert store.schema_version() == len(MIGRATIONS)
    assert store.migrate() == len(MIGRATIONS)  # idempotent


def test_save_and_read_back(store):
    original = sample(1, group="g")
    store.save_transcript(original)
    assert store.get_transcript(original.id) == original
    original.turns.append(Turn(role="patient", text="More."))
    store.save_transcript(original)
    assert len(store.get_transcript(original.id).turns) == 3
    [summary] = store.list_transcripts(group_id="g")
    assert summary.turn_count == 3 and summary.therapist_name == "model-1"


def test_jsonl_export_import_round_trip_is_exact(store, tmp_path):
    for n in range(3):
        store.save_transcript(sample(n))
    first = io.StringIO()
    assert store.export_jsonl(first) == 3
    other = Store(f"sqlite:///{tmp_path / 'other.sqlite'}")
    other.import_jsonl(io.StringIO(first.getvalue()))
    second = io.StringIO()
    other.export_jsonl(second)
    assert second.getvalue() == first.getvalue()


def test_bad_import_names_the_line_and_stores_nothing(store):
    good = sample(1).to_json_line()
    with pytest.raises(ImportFailed, match="line 2: not valid JSON"):
        store.import_jsonl(io.StringIO(good + "\n{oops\n"))
    bad_role = sample(2).model_dump(mode="json")
    bad_role["turns"][0]["role"] = "doctor"
    import json

    with pytest.raises(ImportFailed, match=r"line 2: field 'turns.0.role'"):
        store.import_jsonl(io.StringIO(good + "\n" + json.dumps(bad_role) + "\n"))
    assert store.list_transcripts() == []


def test_concurrent_writers_lose_nothing(store):
    errors: list[Exception] = []

    def writer(worker: int) -> None:
        try:
            for n in range(10):
                store.save_transcript(sample(worker * 100 + n))
        except Exception as exc:  # collected and asserted below
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(w,)) for w in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert len(store.list_transcripts(limit=1000)) == 80
