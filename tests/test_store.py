"""The store: WAL SQLite, migrations, atomic saves, exact JSONL round trips, refusing bad imports."""

from __future__ import annotations

import io
import os
import re
import threading

import pytest
from sqlalchemy import text

from cbtcompare.ctrs import load_results, save_results
from cbtcompare.ctrs.judge import EvidenceOut, ItemScore, JudgeResult
from cbtcompare.limits import DEFAULT_LIMITS
from cbtcompare.store import (
    MIGRATIONS,
    ImportFailed,
    SaveReport,
    Store,
    StoreUnavailable,
    TranscriptConflict,
)
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
    store.save_transcript(original)  # a session still in progress may grow: the stored turns stay as they were
    assert len(store.get_transcript(original.id).turns) == 3
    [summary] = store.list_transcripts(group_id="g")
    assert summary.turn_count == 3 and summary.therapist_name == "model-1"


def _judge_result(transcript_id: str) -> JudgeResult:
    return JudgeResult(
        transcript_id=transcript_id,
        judge="judge-model",
        judge_info={"name": "judge-model"},
        repeat=0,
        rubric_id="ctrs-paper-1-10",
        rubric_version="1@abc",
        mode="all",
        items={
            "agenda": ItemScore(
                item="agenda",
                status="scored",
                score=7,
                justification="Set an agenda.",
                evidence=[EvidenceOut(turn=1, quote="What does stuck feel like?")],
                raw_output="{}",
                attempts=1,
                prompt_version="judge_all@0123",
            )
        },
    )


def test_a_stored_transcript_is_never_changed_and_its_scores_keep_their_turns(store):
    """The silent overwrite: saving different content under a stored id replaced the turns, and the
    scores stayed attached to text they never judged."""
    original = sample(1)
    store.save_transcript(original)
    save_results(store, [_judge_result(original.id)])
    forged = original.model_copy(deep=True)
    forged.turns[1].text = "Something the judge never saw."
    for attempt in (lambda: store.save_transcript(forged), lambda: store.save_transcripts([forged])):
        with pytest.raises(TranscriptConflict, match=r"already stored with different content \(turn 2 differs\)"):
            attempt()
    assert store.get_transcript(original.id) == original
    grown = original.model_copy(deep=True)
    grown.turns.append(Turn(role="patient", text="And more."))
    with pytest.raises(TranscriptConflict, match="already judged"):
        store.save_transcript(grown)  # judged: even appending would change what the scores describe
    relabelled = original.model_copy(deep=True, update={"therapist": {"name": "someone-else"}})
    with pytest.raises(TranscriptConflict, match="different therapist"):
        store.save_transcript(relabelled)
    assert store.get_transcript(original.id) == original
    assert [r.transcript_id for r in load_results(store)] == [original.id]


def test_save_transcripts_identical_content_is_a_no_op(store):
    one, two = sample(1), sample(2)
    assert store.save_transcripts([one]) == SaveReport(stored=[one.id], unchanged=[])
    report = store.save_transcripts([one.model_copy(deep=True), two])
    assert report == SaveReport(stored=[two.id], unchanged=[one.id]) and report.ids == [two.id, one.id]
    assert store.get_transcript(one.id) == one and len(store.list_transcripts()) == 2


def test_save_transcripts_validates_everything_before_writing_anything(store):
    stored = sample(0)
    store.save_transcript(stored)
    good, conflicting = sample(1), stored.model_copy(deep=True)
    conflicting.turns.pop()
    with pytest.raises(TranscriptConflict, match="1 turns where 2 are stored"):
        store.save_transcripts([good, conflicting])
    bad = sample(2)
    bad.seed = 2**63  # assigned after construction, so only the store's own check can catch it
    with pytest.raises(ImportFailed, match=r"field 'seed': Input should be less than or equal to 9223372036854775807"):
        store.save_transcripts([good, bad])
    twin = good.model_copy(deep=True)
    twin.turns[0].text = "A different first turn."
    with pytest.raises(TranscriptConflict, match="two different transcripts have the id"):
        store.save_transcripts([good, twin])
    assert [s.id for s in store.list_transcripts()] == [stored.id]  # nothing half-written


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda t: setattr(t, "seed", 2**64), "less than or equal to 9223372036854775807"),
        (lambda t: setattr(t.turns[1], "tokens", -(2**63) - 1), "greater than or equal to -9223372036854775808"),
        (lambda t: t.meta.update(score=float("nan")), "field 'meta.score' is nan, which JSON cannot hold"),
        (lambda t: setattr(t.turns[1], "seconds", float("inf")), "field 'turns.1.seconds': Input should be a finite"),
        (lambda t: setattr(t.turns[0], "text", "nul \x00 here"), "'turns.0.text' contains a NUL character"),
        (lambda t: t.meta.update(note="half \ud800 a pair"), "'meta.note' contains an unpaired surrogate"),
        (lambda t: setattr(t, "id", "x" * 65), "field 'id': String should have at most 64 characters"),
        (lambda t: setattr(t, "therapist", {"name": "n" * 201}), "the therapist name is 201 characters"),
    ],
)
def test_values_a_database_cannot_store_are_refused_by_name(store, change, message):
    transcript = sample(1)
    change(transcript)
    with pytest.raises(ImportFailed, match=re.escape(message)):
        store.save_transcript(transcript)
    assert store.list_transcripts() == []


def test_a_read_only_database_is_a_message_not_a_traceback(tmp_path):
    path = tmp_path / "cbt.sqlite"
    Store(f"sqlite:///{path}").save_transcript(sample(1))
    read_only = Store(f"sqlite:///file:{path}?mode=ro&uri=true")  # read-only even for root
    assert len(read_only.list_transcripts()) == 1  # reading still works
    with pytest.raises(StoreUnavailable, match="attempt to write a readonly database; make the database file"):
        read_only.save_transcript(sample(2))
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    with pytest.raises(StoreUnavailable, match="cannot create the data folder .*a-file/sub"):
        Store(f"sqlite:///{blocker / 'sub' / 'cbt.sqlite'}")


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes through read-only permissions")
def test_a_read_only_data_folder_is_a_message_not_a_traceback(tmp_path):
    folder = tmp_path / "data"
    folder.mkdir()
    Store(f"sqlite:///{folder / 'cbt.sqlite'}").save_transcript(sample(1))
    folder.chmod(0o555)
    (folder / "cbt.sqlite").chmod(0o444)
    try:
        with pytest.raises(StoreUnavailable, match="make the database file and its folder writable"):
            Store(f"sqlite:///{folder / 'cbt.sqlite'}")
        with pytest.raises(StoreUnavailable, match="make the database file and its folder writable"):
            Store(f"sqlite:///{folder / 'fresh.sqlite'}")
        with pytest.raises(StoreUnavailable, match="cannot create the data folder"):
            Store(f"sqlite:///{folder / 'sub' / 'cbt.sqlite'}")
    finally:
        folder.chmod(0o755)


def test_database_errors_never_show_the_password(tmp_path):
    secret = "s3cret-Passw0rd"
    with pytest.raises(StoreUnavailable) as caught:
        Store(f"postgresql+psycopg://cbt:{secret}@127.0.0.1:1/cbt?connect_timeout=2")
    assert secret not in str(caught.value) and "***@127.0.0.1:1/cbt" in str(caught.value)
    store = Store(f"sqlite:///{tmp_path / 'db.sqlite'}")
    with pytest.raises(KeyError) as missing:
        store.get_transcript("nope")
    assert str(tmp_path) in str(missing.value)


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
    with pytest.raises(ImportFailed, match="line 2: JSON nested deeper than 64 levels"):
        store.import_jsonl(io.StringIO(good + "\n" + "[" * 3000 + "]" * 3000 + "\n"))
    with pytest.raises(ImportFailed, match="line 2: NaN is not a JSON number"):
        store.import_jsonl(io.StringIO(good + "\n" + '{"turns": [], "meta": {"x": NaN}}' + "\n"))
    assert store.list_transcripts() == []


def test_an_oversized_jsonl_stream_is_refused_while_reading(store):
    padding = " " * (1024 * 1024) + "\n"  # blank lines: only the byte count can refuse them
    lines = iter([sample(1).to_json_line() + "\n"] + [padding] * (DEFAULT_LIMITS.max_bytes // len(padding) + 2))
    with pytest.raises(ImportFailed, match=r"over the import limit of 16 MiB"):
        store.import_jsonl(lines)  # type: ignore[arg-type]
    assert next(lines) == padding  # refused at the limit: the rest of the stream was never read
    assert store.list_transcripts() == []


def test_importing_the_same_export_twice_changes_nothing(store):
    for n in range(2):
        store.save_transcript(sample(n))
    exported = io.StringIO()
    store.export_jsonl(exported)
    assert store.import_jsonl(io.StringIO(exported.getvalue())) == [t.id for t in store.iter_transcripts()]
    again = io.StringIO()
    store.export_jsonl(again)
    assert again.getvalue() == exported.getvalue()


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
