"""The store on a real PostgreSQL server: CBTCOMPARE_DB_URL selects it and everything works unchanged.

Each test gets a fresh, empty database on the session's throwaway cluster (tests/fixtures_postgres.py)
and a Store built from its postgresql+psycopg URL, exactly as the app builds one from CBTCOMPARE_DB_URL.
Transcripts, judge scores (cbtcompare.ctrs) and blind ratings (cbtcompare.rating) go through the same
public functions the app uses; all data is synthetic. Skipped, with the reason, when PostgreSQL is absent.
"""

from __future__ import annotations

import io
import json
import math
import os
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from sqlalchemy import func, inspect, select
from test_rating import canary_pair, full_answer, pairs_jsonl
from test_store import sample

from cbtcompare import rating
from cbtcompare.ctrs import load_pairwise, load_results, save_pairwise, save_results, scores_frame
from cbtcompare.ctrs.judge import EvidenceOut, ItemScore, JudgeResult
from cbtcompare.ctrs.pairwise import PairwiseAnswer, PairwiseItem, PairwiseResult
from cbtcompare.store import (
    MIGRATIONS,
    ImportFailed,
    Store,
    TranscriptConflict,
    metadata,
    ratings,
    schema_migrations,
)
from cbtcompare.transcript import Turn

NewStore = Callable[[], Store]


@pytest.fixture
def new_pg_store(postgres_server, monkeypatch) -> Iterator[NewStore]:  # type: ignore[no-untyped-def]
    """Make Stores on fresh PostgreSQL databases, built the way the app builds one: from CBTCOMPARE_DB_URL."""
    made: list[Store] = []

    def make() -> Store:
        monkeypatch.setenv("CBTCOMPARE_DB_URL", postgres_server.new_database())
        store = Store()
        made.append(store)
        return store

    yield make
    for store in made:
        store.engine.dispose()


@pytest.fixture
def pg_store(new_pg_store: NewStore) -> Store:
    return new_pg_store()


def test_migrations_apply_once_on_postgresql(pg_store: Store, postgres_server):
    assert pg_store.engine.dialect.name == "postgresql" and pg_store.engine.dialect.driver == "psycopg"
    assert pg_store.url == os.environ["CBTCOMPARE_DB_URL"]  # chosen by the environment, as in the app
    assert pg_store.schema_version() == len(MIGRATIONS)
    assert set(inspect(pg_store.engine).get_table_names()) == set(metadata.tables)
    assert pg_store.migrate() == len(MIGRATIONS)
    again = Store(pg_store.url)  # a second process opening the same database applies nothing
    try:
        with again.read() as conn:
            versions = conn.execute(select(schema_migrations.c.version).order_by(schema_migrations.c.version))
            assert list(versions.scalars()) == list(range(1, len(MIGRATIONS) + 1))
    finally:
        again.engine.dispose()
    assert "PostgreSQL" in postgres_server.version


def test_save_read_back_grow_and_never_replace(pg_store: Store):
    original = sample(1, group="g")
    pg_store.save_transcript(original)
    back = pg_store.get_transcript(original.id)
    assert back == original
    assert back.turns[1].text.endswith("«ünïcode»") and back.meta["score"] == 0.1 + 1 / 3
    original.turns.append(Turn(role="patient", text="More."))
    pg_store.save_transcript(original)  # a session in progress grows; its stored turns stay
    grown = pg_store.get_transcript(original.id)
    assert grown == original and len(grown.turns) == 3
    original.meta["note"] = "replaced"
    with pytest.raises(TranscriptConflict, match="different meta"):
        pg_store.save_transcript(original)
    assert pg_store.get_transcript(original.id) == grown
    [summary] = pg_store.list_transcripts(group_id="g")
    assert summary.turn_count == 3 and summary.therapist_name == "model-1"
    with pytest.raises(KeyError):
        pg_store.get_transcript("no-such-id")
    assert "***@" in pg_store.display_url and pg_store.url.split("@")[0] not in pg_store.display_url


def test_jsonl_round_trip_is_exact_across_databases(new_pg_store: NewStore, tmp_path: Path):
    source = new_pg_store()
    sqlite = Store(f"sqlite:///{tmp_path / 'same.sqlite'}")
    for n in range(3):
        transcript = sample(n)
        source.save_transcript(transcript)
        sqlite.save_transcript(transcript)
    first = io.StringIO()
    assert source.export_jsonl(first) == 3
    from_sqlite = io.StringIO()
    sqlite.export_jsonl(from_sqlite)
    assert from_sqlite.getvalue() == first.getvalue()  # the same data exports byte for byte the same
    for target in (new_pg_store(), Store(f"sqlite:///{tmp_path / 'other.sqlite'}")):
        target.import_jsonl(io.StringIO(first.getvalue()))
        second = io.StringIO()
        target.export_jsonl(second)
        assert second.getvalue() == first.getvalue()


def test_bad_import_names_the_line_and_stores_nothing(pg_store: Store):
    good = sample(1).to_json_line()
    with pytest.raises(ImportFailed, match="line 2: not valid JSON"):
        pg_store.import_jsonl(io.StringIO(good + "\n{oops\n"))
    bad_role = sample(2).model_dump(mode="json")
    bad_role["turns"][0]["role"] = "doctor"
    with pytest.raises(ImportFailed, match=r"line 2: field 'turns.0.role'"):
        pg_store.import_jsonl(io.StringIO(good + "\n" + json.dumps(bad_role) + "\n"))
    assert pg_store.list_transcripts() == []


def _in_threads(work: Callable[[int], None], count: int) -> list[Exception]:
    errors: list[Exception] = []

    def run(worker: int) -> None:
        try:
            work(worker)
        except Exception as exc:  # collected and asserted by the caller
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(w,)) for w in range(count)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return errors


def test_concurrent_writers_lose_nothing(pg_store: Store):
    def writer(worker: int) -> None:
        for n in range(10):
            pg_store.save_transcript(sample(worker * 100 + n))

    assert _in_threads(writer, 8) == []
    assert len(pg_store.list_transcripts(limit=1000)) == 80


def test_concurrent_saves_of_one_transcript_one_version_wins_whole(pg_store: Store):
    """Writers racing to create the same new transcript (or batch run key): on SQLite BEGIN IMMEDIATE
    serialises them; on PostgreSQL the losers must not fail on the primary key. Identical copies all
    succeed; different versions: exactly one is stored, whole, and every other writer gets a conflict."""
    for round_ in range(4):
        base = sample(round_)
        assert _in_threads(lambda worker, b=base: pg_store.save_transcript(b.model_copy(deep=True)), 8) == []
        assert pg_store.get_transcript(base.id) == base
        rival = sample(10 + round_)
        versions = []
        for worker in range(8):
            version = rival.model_copy(deep=True)
            version.turns = [Turn(role="patient", text=f"writer {worker} turn {i}") for i in range(2)]
            versions.append(version)
        errors = _in_threads(lambda worker, v=versions: pg_store.save_transcripts([v[worker]]), 8)
        assert len(errors) == 7 and all(isinstance(e, TranscriptConflict) for e in errors), errors
        assert pg_store.get_transcript(rival.id) in versions  # one writer's version, whole: never a mix of turns
        key = f"b/run-{round_}"
        errors = _in_threads(lambda worker, k=key: pg_store.save_batch_run(k, "b", None, f"failed-{worker}"), 8)
        assert errors == []
        assert pg_store.batch_runs("b")[key].status in {f"failed-{w}" for w in range(8)}
    assert len(pg_store.list_transcripts()) == 8 and len(pg_store.batch_runs("b")) == 4


def test_batch_runs_record_and_resume(pg_store: Store):
    done = sample(3)
    pg_store.save_batch_run("batch-1/run-a", "batch-1", done, "done")
    pg_store.save_batch_run("batch-1/run-b", "batch-1", None, "failed", error="model timed out")
    pg_store.save_batch_run("batch-1/run-b", "batch-1", sample(4), "done")
    runs = pg_store.batch_runs("batch-1")
    assert set(runs) == {"batch-1/run-a", "batch-1/run-b"}
    assert runs["batch-1/run-a"].transcript_id == done.id and runs["batch-1/run-b"].status == "done"
    assert runs["batch-1/run-b"].error is None and pg_store.batch_runs("other") == {}
    assert pg_store.get_transcript(done.id) == done


def _judge_result(transcript_id: str, repeat: int, agenda: int) -> JudgeResult:
    sampling = {"temperature": 0.0, "top_p": 1.0, "max_tokens": 300, "seed": 1000 * repeat}
    return JudgeResult(
        transcript_id=transcript_id,
        judge="judge-model",
        judge_info={"name": "judge-model", "weights_sha256": "cd" * 32, "adapter": None},
        repeat=repeat,
        rubric_id="ctrs-paper-1-10",
        rubric_version="1@abc",
        mode="all",
        items={
            "agenda": ItemScore(
                item="agenda",
                status="scored",
                score=agenda,
                justification="Set a clear «agenda».",
                evidence=[EvidenceOut(turn=1, quote="What does stuck feel like?")],
                raw_output=json.dumps({"agenda": {"score": agenda}}),
                attempts=1,
                prompt_version="judge_all@0123",
                sampling=sampling,
            ),
            "homework": ItemScore(
                item="homework", status="n/a", justification="No homework yet.", attempts=1, sampling=sampling
            ),
            "pacing": ItemScore(
                item="pacing", status="unscored", reason="invalid JSON", raw_output="{oops", attempts=3
            ),
        },
    )


def test_judge_scores_saved_and_read_through_ctrs(pg_store: Store):
    one, two = sample(1), sample(2)
    pg_store.save_transcript(one)
    pg_store.save_transcript(two)
    results = [_judge_result(one.id, 0, 7), _judge_result(one.id, 1, 8), _judge_result(two.id, 0, 3)]
    assert save_results(pg_store, results) == 9
    assert load_results(pg_store) == results
    assert load_results(pg_store, transcript_ids=[two.id], judge="judge-model", rubric_id="ctrs-paper-1-10") == [
        results[2]
    ]
    frame = scores_frame(pg_store, rubric="ctrs-paper-1-10")
    assert len(frame) == 9
    agenda = frame[frame["item"] == "agenda"].set_index(["transcript_id", "repeat"])["score"]
    assert agenda.to_dict() == {(one.id, 0): 7.0, (one.id, 1): 8.0, (two.id, 0): 3.0}
    assert frame[frame["item"] != "agenda"]["score"].map(math.isnan).all()
    assert set(frame["therapist"]) == {"model-1", "model-2"}
    with pytest.raises(ValueError, match="not all in"):
        save_results(pg_store, [_judge_result("not-stored", 0, 5)])  # the foreign key holds on PostgreSQL too
    assert len(load_results(pg_store)) == 3


def test_pairwise_scores_with_the_order_column(pg_store: Store):
    a, b = sample(1), sample(2)
    pg_store.save_transcript(a)
    pg_store.save_transcript(b)
    answers = [
        PairwiseAnswer(order="AB", side="A", justification="A sets an agenda.", raw_output="first", attempts=1),
        PairwiseAnswer(order="BA", side="A", justification="Still A.", raw_output="second", attempts=1),
    ]
    result = PairwiseResult(
        transcript_a=a.id,
        transcript_b=b.id,
        judge="judge-model",
        rubric_id="ctrs-paper-1-10",
        rubric_version="1@abc",
        mode="per-item",
        items={"agenda": PairwiseItem(item="agenda", outcome="A", answers=answers)},
    )
    assert save_pairwise(pg_store, result) == 2
    assert load_pairwise(pg_store, transcript_id=b.id) == [result]


def test_rating_study_and_ratings_through_the_rating_api(pg_store: Store, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv(rating.READING_WPM_ENV, "1e9")  # the minimum reading time is tested elsewhere
    pairs = [canary_pair(f"pg{i}") for i in range(2)]
    uploaded = rating.store_uploaded_pairs(pg_store, io.StringIO(pairs_jsonl(pairs)))
    created = rating.create_study(pg_store, uploaded, rating.StudySpec(raters=2, seed=3), source="test")
    assert (created.pairs, created.assignments) == (2, 4)
    study = rating.get_study(pg_store, created.study_id)
    assert study.rubric is not None and study.rubric["scale"]["labels"][1]  # integer label keys come back
    [summary] = rating.list_studies(pg_store)
    assert (summary.pairs, summary.raters, summary.assignments, summary.ratings) == (2, 2, 4, 0)

    session = rating.join(pg_store, created.invite_codes[0])
    view = rating.next_pair(pg_store, session)
    assert (view.position, view.total) == (1, 2) and "zorblat" not in repr(view)
    answer = rating.RatingAnswer(**full_answer(comment="clear «agenda»"))
    rating_id = rating.submit(pg_store, session, answer, read_flag=f"{view.view_token}:a,b")
    assert isinstance(rating_id, int)
    [record] = rating.export_records(pg_store, created.study_id)
    assert record["rating_id"] == rating_id and record["A_agenda"] == 7 and record["B_homework"] == 5
    assert record["comment"] == "clear «agenda»" and record["preference"] == "A"

    # Racing tabs of the other rater on one pair: the unique constraint lets exactly one rating in.
    tabs = [rating.join(pg_store, created.invite_codes[1]) for _ in range(4)]
    views = [rating.next_pair(pg_store, tab) for tab in tabs]
    outcomes: list[str] = []

    def submit(worker: int) -> None:
        try:
            flag = f"{views[worker].view_token}:a,b"
            rating.submit(pg_store, tabs[worker], rating.RatingAnswer(**full_answer()), read_flag=flag)
            outcomes.append("stored")
        except rating.AlreadyRated:
            outcomes.append("refused")

    assert _in_threads(submit, 4) == []
    assert sorted(outcomes) == ["refused", "refused", "refused", "stored"]
    with pg_store.read() as conn:
        assert conn.execute(select(func.count()).select_from(ratings)).scalar_one() == 2
    per_rater, _ = rating.progress_tables(pg_store, created.study_id)
    assert per_rater["rated"].tolist() == [1, 1]
