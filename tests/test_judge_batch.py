"""Batch judging (ctrs.batch) with the real SmolLM2 judge: one loop for absolute and pairwise judging, a
rerun adds only what is missing, and an edited rubric adds new repeats without touching the old rows."""

from __future__ import annotations

from pathlib import Path

from test_store import sample

from cbtcompare.ctrs.batch import judge_stored, pairwise_stored
from cbtcompare.ctrs.judge import JudgeConfig
from cbtcompare.ctrs.results import load_pairwise, load_results, scores_frame
from cbtcompare.ctrs.rubric import load_rubric
from cbtcompare.stats import validate_scores
from cbtcompare.store import Store

RUBRIC = Path(__file__).parent / "data" / "ctrs_rubric_two_items.yaml"
CONFIG = JudgeConfig(retries=0, max_tokens=64, max_evidence=0, justification_chars=20)


def test_batch_judging_reruns_add_only_what_is_missing_and_never_duplicate_a_key(store: Store, registry, tmp_path):  # type: ignore[no-untyped-def]
    one, two = sample(1), sample(2)
    store.save_transcript(one)
    store.save_transcript(two)
    judge = registry.load("smollm2-instruct")
    rubric = load_rubric(RUBRIC)
    lines: list[str] = []

    first = judge_stored(
        store, [one.id], [judge], rubric, CONFIG, repeats=2, progress=lambda d, n, line: lines.append(line)
    )
    assert (first.planned, first.added, first.skipped) == (2, 2, 0)
    assert sorted(r.repeat for r in load_results(store)) == [0, 1]
    assert any(line.startswith(f"smollm2-instruct scored {one.id[:8]} r1: total") for line in lines), lines
    again = judge_stored(store, [one.id], [judge], rubric, CONFIG, repeats=2)
    assert (again.planned, again.added, again.skipped) == (2, 0, 2)

    edited_path = tmp_path / "edited.yaml"
    edited_path.write_text(RUBRIC.read_text().replace("A clear shared agenda.", "A clear, shared agenda."))
    edited = load_rubric(edited_path)
    assert (edited.id, edited.version != rubric.version) == (rubric.id, True)
    changed = judge_stored(store, [one.id], [judge], edited, CONFIG, repeats=1)
    assert (changed.added, changed.skipped) == (1, 0)
    stored = load_results(store)
    assert sorted((r.repeat, r.rubric_version == edited.version) for r in stored) == [(0, False), (1, False), (2, True)]
    assert judge_stored(store, [one.id], [judge], edited, CONFIG, repeats=1).added == 0
    validate_scores(scores_frame(store, rubric=rubric.id))  # one key per row: Results reads the store

    compared = pairwise_stored(store, [(one.id, two.id)], [judge], rubric, CONFIG, repeats=1)
    assert (compared.planned, compared.added) == (1, 1)
    assert [r.repeat for r in load_pairwise(store)] == [0]
    assert pairwise_stored(store, [(one.id, two.id)], [judge], rubric, CONFIG, repeats=1).skipped == 1
