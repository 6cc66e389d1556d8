"""Judging a transcript again: a new repeat (or, when asked, a replacement), never a duplicate score key.

The bug (issue 14): a second Judge run with the same judge stored a second `repeat 0` set of rows, and
from then on Results and `report` refused the whole store ("duplicate score at row 44"). The store now
cannot hold two scores for one transcript x judge x rubric x repeat x item (pairwise: x order).
"""

from __future__ import annotations

import pytest
from test_store import sample
from test_store_postgres import _judge_result, new_pg_store, pg_store  # noqa: F401  (fixtures)

from cbtcompare.ctrs import load_pairwise, load_results, save_pairwise, save_results, scores_frame
from cbtcompare.ctrs.pairwise import PairwiseAnswer, PairwiseItem, PairwiseResult
from cbtcompare.stats import validate_scores
from cbtcompare.store import Store


def _judged_twice(store: Store) -> str:
    transcript = sample(1)
    store.save_transcript(transcript)
    save_results(store, [_judge_result(transcript.id, 0, 7)])
    save_results(store, [_judge_result(transcript.id, 0, 4)])  # the same judge, the same repeat number again
    return transcript.id


def _check_second_judgement_is_a_new_repeat(store: Store) -> None:
    transcript_id = _judged_twice(store)
    stored = load_results(store, transcript_ids=[transcript_id])
    assert [(r.repeat, r.items["agenda"].score) for r in stored] == [(0, 7), (1, 4)]
    frame = scores_frame(store, rubric="ctrs-paper-1-10")
    checked = validate_scores(frame)  # raised "duplicate score at row 3 ..." before the fix
    assert sorted(checked.loc[checked["item"] == "agenda", "score"]) == [4.0, 7.0]
    assert store.next_repeat(transcript_id, "judge-model", "ctrs-paper-1-10") == 2


def test_second_judgement_takes_the_next_repeat_sqlite(store: Store):
    _check_second_judgement_is_a_new_repeat(store)


def test_second_judgement_takes_the_next_repeat_postgresql(pg_store: Store):  # noqa: F811
    _check_second_judgement_is_a_new_repeat(pg_store)


def test_replace_swaps_the_old_judgement_in_one_transaction(store: Store):
    transcript = sample(1)
    store.save_transcript(transcript)
    first = _judge_result(transcript.id, 0, 7)
    save_results(store, [first])
    second = _judge_result(transcript.id, 0, 3)
    assert store.save_scores(_rows(second), replace=True) == 3
    [stored] = load_results(store, transcript_ids=[transcript.id])
    assert stored.id == second.id and stored.repeat == 0 and stored.items["agenda"].score == 3
    # A replacement that fails (a transcript not stored) leaves the old judgement in place.
    broken = _rows(_judge_result(transcript.id, 0, 9)) + _rows(_judge_result("not-stored", 0, 1))
    with pytest.raises(Exception, match="FOREIGN KEY|foreign key"):
        store.save_scores(broken, replace=True)
    [kept] = load_results(store, transcript_ids=[transcript.id])
    assert kept.id == second.id and kept.items["agenda"].score == 3


def test_one_save_with_two_results_on_the_same_repeat_stores_both(store: Store):
    transcript = sample(1)
    store.save_transcript(transcript)
    save_results(store, [_judge_result(transcript.id, 0, 2), _judge_result(transcript.id, 0, 5)])
    assert [(r.repeat, r.items["agenda"].score) for r in load_results(store)] == [(0, 2), (1, 5)]


def test_pairwise_rejudging_takes_the_next_repeat(store: Store):
    a, b = sample(1), sample(2)
    store.save_transcript(a)
    store.save_transcript(b)

    def judged(side: str) -> PairwiseResult:
        answers = [
            PairwiseAnswer(order="AB", side=side, justification="j", raw_output="r", attempts=1),
            PairwiseAnswer(order="BA", side=side, justification="j", raw_output="r", attempts=1),
        ]
        return PairwiseResult(
            transcript_a=a.id,
            transcript_b=b.id,
            judge="judge-model",
            rubric_id="ctrs-paper-1-10",
            rubric_version="1@abc",
            mode="per-item",
            items={"agenda": PairwiseItem(item="agenda", outcome=side, answers=answers)},
        )

    save_pairwise(store, judged("A"))
    save_pairwise(store, judged("B"))
    assert [(r.repeat, r.items["agenda"].outcome) for r in load_pairwise(store)] == [(0, "A"), (1, "B")]


def _rows(result) -> list[dict]:  # type: ignore[no-untyped-def]
    from cbtcompare.ctrs.results import result_rows

    return result_rows(result)


def test_judge_tab_request_run_twice_draws_a_new_repeat_with_a_new_seed(store: Store, registry):  # type: ignore[no-untyped-def]
    """The Judge tab's path (ctrs.request.run_request) with the real SmolLM2 judge: the second run is
    repeat 1, sampled with repeat 1's seed, and Results still reads the store."""
    from pathlib import Path

    from cbtcompare.ctrs.judge import JudgeConfig
    from cbtcompare.ctrs.request import CheckedRequest, run_request
    from cbtcompare.ctrs.rubric import load_rubric

    transcript = sample(1)
    store.save_transcript(transcript)
    request = CheckedRequest(
        stored=[transcript],
        uploaded=[],
        rubric=load_rubric(Path(__file__).parent / "data" / "ctrs_rubric_two_items.yaml"),
        judges=[registry.load("smollm2-instruct")],
        repeats=1,
        config=JudgeConfig(retries=0, max_tokens=64, max_evidence=0),
    )
    _, first = run_request(store, request)
    _, second = run_request(store, request)
    assert [first[0].repeat, second[0].repeat] == [0, 1]
    seeds = [next(iter(r.items.values())).sampling["seed"] for r in (first[0], second[0])]
    assert seeds == [0, 1000]  # JudgeConfig: repeat r uses seed + 1000 * r
    stored = load_results(store, transcript_ids=[transcript.id])
    assert [r.repeat for r in stored] == [0, 1]
    validate_scores(scores_frame(store, rubric=request.rubric.id))


def test_concurrent_rejudging_on_postgresql_never_collides(pg_store: Store):  # noqa: F811
    """Two judges' processes storing the same repeat number at once: the transcript's row lock makes the
    second wait and take the next repeat (READ COMMITTED alone would let both pick 1 and one fail)."""
    import threading

    transcript = sample(1)
    pg_store.save_transcript(transcript)
    save_results(pg_store, [_judge_result(transcript.id, 0, 1)])
    errors: list[BaseException] = []
    start = threading.Barrier(4)

    def judge_again(score: int) -> None:
        try:
            start.wait()
            save_results(pg_store, [_judge_result(transcript.id, 0, score)])
        except BaseException as exc:  # collected: the assertion below names it
            errors.append(exc)

    threads = [threading.Thread(target=judge_again, args=(score,)) for score in (2, 3, 4, 5)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert errors == []
    stored = load_results(pg_store, transcript_ids=[transcript.id])
    assert sorted(r.repeat for r in stored) == [0, 1, 2, 3, 4]
    assert sorted(r.items["agenda"].score for r in stored) == [1, 2, 3, 4, 5]


def test_storing_scores_for_a_missing_transcript_never_shows_the_database_password(pg_store: Store, postgres_server):  # noqa: F811
    # The error named `store.url`, password included (seen in a test failure); it must name the masked URL.
    with pytest.raises(ValueError) as info:
        save_results(pg_store, [_judge_result("not-stored", 0, 7)])
    assert postgres_server.password and postgres_server.password not in str(info.value)
    assert "not-stored" in str(info.value)
