"""Blind rating core (cbtcompare.rating): pairs, studies, blinding, the rater's flow, export and the statistics.

Real SQLite stores, the real CLI, the real krippendorff package; all transcripts are synthetic.
Helpers here (canary transcripts, complete answers) are shared with the app and browser tests.
"""

from __future__ import annotations

import io
import json
import os
import re
import subprocess
import sys
import threading
from pathlib import Path

import krippendorff
import numpy as np
import pandas as pd
import pytest
from sqlalchemy import func, insert, select, update
from sqlalchemy.exc import IntegrityError

from cbtcompare import rating
from cbtcompare.cli import main
from cbtcompare.scrub import load_scrub_list
from cbtcompare.store import ImportFailed, Store, rating_assignments, rating_studies, ratings
from cbtcompare.transcript import Transcript, Turn

REPO = Path(__file__).resolve().parent.parent
ITEMS = [
    "agenda",
    "feedback",
    "understanding",
    "interpersonal_effectiveness",
    "collaboration",
    "pacing",
    "guided_discovery",
    "key_cognitions",
    "strategy_for_change",
    "cbt_techniques",
    "homework",
]

# Identifying strings planted in the metadata and text of the canary pair; none may reach a rater.
CANARY = {
    "name_a": "zorblat-therapist-7b",
    "adapter_a": "/adapters/zorblat-cbt-lora.gguf",
    "name_b": "quintex-therapist-8b",
    "weights_b": "/models/quintex-8b-instruct-q4.gguf",
    "system_a": "SYSPROMPT-CANARY-ALPHA: you are a warm CBT therapist.",
    "system_b": "SYSPROMPT-CANARY-BETA: you are a helpful assistant.",
}
LEAK_STRINGS = [
    "zorblat",
    "quintex",
    "SYSPROMPT-CANARY",
    "developed by OpenAI",
    "Qwen",
    "Alibaba",
]


def canary_pair(group: str, *, turns: int = 2, long: bool = False) -> tuple[Transcript, Transcript]:
    """Two transcripts of one matched pair whose metadata and text carry identity canaries."""
    filler = " ".join(["Let us look at that thought together and what evidence supports it."] * (12 if long else 1))
    a_turns = [Turn(role="patient", text=f"I failed my exam ({group}) and I keep thinking I'm useless.")]
    b_turns = list(a_turns)
    for i in range(turns):
        a_turns += [
            Turn(
                role="therapist",
                text=f"As an AI language model developed by OpenAI, I hear you. I am zorblat-therapist-7b. {filler}",
                tokens=40,
                seconds=0.5,
            ),
            Turn(role="patient", text=f"Okay, reply {i} from the patient."),
        ]
        b_turns += [
            Turn(role="therapist", text=f"I'm Qwen, created by Alibaba Cloud. Shall we set an agenda? {filler}"),
            Turn(role="patient", text=f"Sure, reply {i} from the patient."),
        ]
    a_turns.append(Turn(role="therapist", text=f"Homework A for {group}: a thought record."))
    b_turns.append(Turn(role="therapist", text=f"Homework B for {group}: an activity plan."))
    meta = {"profile_id": f"profile-{group}", "patient_model": "patient-sim", "session_index": 1}
    first = Transcript(
        group_id=f"grp-{group}",
        kind="simulation",
        therapist={"name": CANARY["name_a"], "adapter": CANARY["adapter_a"], "weights": "embedded:smollm2"},
        system_prompt=CANARY["system_a"],
        seed=7,
        meta={**meta, "family": "zorblat"},
        turns=a_turns,
    )
    second = Transcript(
        group_id=f"grp-{group}",
        kind="simulation",
        therapist={"name": CANARY["name_b"], "weights": CANARY["weights_b"]},
        system_prompt=CANARY["system_b"],
        seed=7,
        meta={**meta, "family": "quintex"},
        turns=b_turns,
    )
    return first, second


def pairs_jsonl(pairs: list[tuple[Transcript, Transcript]]) -> str:
    return "".join(json.dumps([a.model_dump(mode="json"), b.model_dump(mode="json")]) + "\n" for a, b in pairs)


def full_answer(a: int = 7, b: int = 5, preference: str = "A", confidence: int = 4, comment: str = "") -> dict:
    """Every field of a paper-rubric study, as keyword arguments of RatingAnswer."""
    return {
        "preference": preference,
        "confidence": confidence,
        "scores": {"A": dict.fromkeys(ITEMS, a), "B": dict.fromkeys(ITEMS, b)},
        "comment": comment,
    }


@pytest.fixture
def store(tmp_path: Path) -> Store:
    return Store(f"sqlite:///{tmp_path / 'rating.sqlite'}")


@pytest.fixture(autouse=True)
def instant_reading(monkeypatch: pytest.MonkeyPatch) -> None:
    """The tests here are not about the minimum reading time (test_rating_reading_time.py is): no wait."""
    monkeypatch.setenv(rating.READING_WPM_ENV, "1e9")


def study_with(store: Store, n_pairs: int, raters: int, **spec: object) -> rating.CreatedStudy:
    pairs = [canary_pair(f"g{i}") for i in range(n_pairs)]
    uploaded = rating.store_uploaded_pairs(store, io.StringIO(pairs_jsonl(pairs)))
    return rating.create_study(store, uploaded, rating.StudySpec(raters=raters, **spec), source="test")


def rate_all(store: Store, code: str, answer_for) -> int:  # type: ignore[no-untyped-def]
    """Rate every pair of a rater; answer_for(view) gives the RatingAnswer kwargs. Returns how many."""
    session = rating.join(store, code)
    count = 0
    while (view := rating.next_pair(store, session)) is not None:
        rating.submit(store, session, rating.RatingAnswer(**answer_for(view)), read_flag=f"{view.view_token}:a,b")
        count += 1
    return count


# Scrubbing ----------------------------------------------------------------------------------------------


def test_scrub_removes_identity_hints_and_keeps_ordinary_words():
    scrub = load_scrub_list().with_terms(["zorblat-therapist-7b", "base", "cbt"])
    cases = {
        "As an AI language model developed by OpenAI, I cannot diagnose.": "developed by [name removed],",
        "I'm an assistant created by Zephyrion Labs. Let's begin.": "created by [name removed]. Let's",
        "I am Qwen, created by Alibaba Cloud.": "I am [name removed], created by [name removed].",
        "Built on Llama-3.1-8B-Instruct and Qwen2.5-7B, not GPT-4o.": "on [name removed] and [name removed], not",
        "Try the Hugging Face or HuggingFace hub, SmolLM2-135M.": "the [name removed] or [name removed] hub, [name",
        "A meta-analysis of Meta AI and Phi-3-mini.": "A meta-analysis of [name removed] and [name removed].",
        "I am zorblat-therapist-7b.": "I am [name removed].",
    }
    for text, expected in cases.items():
        assert expected in scrub.scrub(text).text, text
    plain = "The base of your worry: a CBT plan made by Sarah, your model of coping. Google it later? No."
    result = scrub.scrub(plain)
    assert "base of your worry" in result.text and "made by Sarah" in result.text and "model of coping" in result.text
    assert result.removed == ("Google",)


def test_scrub_list_version_is_stored_and_originals_kept(store):
    created = study_with(store, 1, 1)
    with store.read() as conn:
        stored = conn.execute(
            select(rating_studies.c.scrub).where(rating_studies.c.id == created.study_id)
        ).scalar_one()
    base = load_scrub_list()
    assert stored["version"] == base.version and "@" in base.version
    assert "zorblat-therapist-7b" in stored["extra_terms"] and "OpenAI" in stored["names"]
    session = rating.join(store, created.invite_codes[0])
    view = rating.next_pair(store, session)
    shown = " ".join(t.text for t in view.a + view.b)
    assert "[name removed]" in shown and "OpenAI" not in shown and "zorblat" not in shown
    originals = [store.get_transcript(s.id) for s in store.list_transcripts()]
    assert any("developed by OpenAI" in t.turns[1].text for t in originals)


# Choosing pairs -----------------------------------------------------------------------------------------


def test_matched_pairs_by_group_and_by_profile_seed(store):
    a, b = canary_pair("one")
    c = Transcript(group_id="grp-one", therapist={"name": "third-model"}, turns=[Turn(role="therapist", text="hi")])
    lonely = Transcript(group_id="grp-alone", therapist={"name": "only-one"}, turns=[Turn(role="therapist", text="x")])
    meta = {"profile_id": "p9", "patient_model": "sim", "session_index": 2}
    x = Transcript(therapist={"name": "m1"}, seed=3, meta=meta, turns=[Turn(role="therapist", text="x")])
    y = Transcript(therapist={"name": "m2"}, seed=3, meta=meta, turns=[Turn(role="therapist", text="y")])
    other_seed = Transcript(therapist={"name": "m3"}, seed=4, meta=meta, turns=[Turn(role="therapist", text="z")])
    # a later transcript of the same therapist and key: the earliest one per therapist is paired
    same_model = Transcript(
        therapist={"name": "m1"},
        seed=3,
        meta=meta,
        turns=[Turn(role="therapist", text="w")],
        created_at="2999-01-01T00:00:00.000+00:00",
    )
    for t in (a, b, c, lonely, x, y, other_seed, same_model):
        store.save_transcript(t)
    everything = rating.matched_pairs(store, "all")
    as_sets = {frozenset((p.first, p.second)) for p in everything}
    assert as_sets == {
        frozenset((a.id, b.id)),
        frozenset((a.id, c.id)),
        frozenset((b.id, c.id)),
        frozenset((x.id, y.id)),
    }
    assert len(rating.matched_pairs(store, "group:grp-one")) == 3
    assert rating.matched_pairs(store, "group:grp-alone") == []
    assert len(rating.matched_pairs(store, "kind:simulation")) == 1
    with pytest.raises(ValueError, match="unknown pair query"):
        rating.matched_pairs(store, "everything")


def test_uploaded_pairs_are_checked_whole_before_anything_is_stored(store):
    good = canary_pair("u1")
    bad_line = json.dumps([good[0].model_dump(mode="json"), {"turns": [{"role": "robot", "text": "x"}]}])
    with pytest.raises(ImportFailed, match="line 2, transcript b"):
        rating.store_uploaded_pairs(store, io.StringIO(pairs_jsonl([good]) + bad_line + "\n"))
    assert store.list_transcripts() == []
    keyed = json.dumps({"a": good[0].model_dump(mode="json"), "b": good[1].model_dump(mode="json")})
    pairs = rating.store_uploaded_pairs(store, io.StringIO(keyed + "\n"))
    assert [(p.first, p.second) for p in pairs] == [(good[0].id, good[1].id)]
    with pytest.raises(ImportFailed, match="exactly two"):
        rating.store_uploaded_pairs(store, io.StringIO(json.dumps([good[0].model_dump(mode="json")]) + "\n"))


# Creating a study -------------------------------------------------------------------------------------


def test_sides_and_order_come_from_the_seed_are_stored_and_balanced(tmp_path):
    def mapping(seed: int, folder: str) -> tuple[list, rating.CreatedStudy, Store]:
        store = Store(f"sqlite:///{tmp_path / folder / 'db.sqlite'}")
        created = study_with(store, 8, 3, seed=seed)
        with store.read() as conn:
            rows = (
                conn.execute(
                    select(rating_assignments).order_by(rating_assignments.c.rater_id, rating_assignments.c.position)
                )
                .mappings()
                .all()
            )
        pairs = {p.first: i for i, p in enumerate(rating.matched_pairs(store, "all"))}
        codes = {}
        for row in rows:
            codes.setdefault(row["rater_id"], []).append(
                (pairs.get(row["a_transcript_id"], pairs.get(row["b_transcript_id"])), row["a_transcript_id"] in pairs)
            )
        return sorted(codes.values()), created, store

    first, created, store = mapping(11, "one")
    again, _, _ = mapping(11, "two")
    other, _, _ = mapping(12, "three")
    assert created.assignments == 24 and len(set(created.invite_codes)) == 3
    assert all(len(code) == 14 and code[4] == "-" for code in created.invite_codes)
    assert len(first) == 3 and all(len(rows) == 8 for rows in first)
    # Every rater: all 8 pairs, 4 shown first-transcript-as-A and 4 flipped; orders differ between raters.
    assert all(sorted(p for p, _ in rows) == list(range(8)) for rows in first)
    assert all(sum(flag for _, flag in rows) == 4 for rows in first)
    assert len({tuple(p for p, _ in rows) for rows in first}) == 3
    # The same seed reproduces order and sides; another seed does not.
    assert first == again and first != other


def test_raters_per_pair_spreads_the_load(store):
    created = study_with(store, 6, 4, raters_per_pair=2)
    with store.read() as conn:
        rows = conn.execute(select(rating_assignments.c.rater_id, rating_assignments.c.pair_id)).all()
    per_pair = pd.Series([r[1] for r in rows]).value_counts()
    per_rater = pd.Series([r[0] for r in rows]).value_counts()
    assert created.assignments == 12 and set(per_pair) == {2} and set(per_rater) == {3}


def test_study_choices_are_checked(store):
    with pytest.raises(ValueError, match="need a rubric"):
        study_with(store, 1, 1, rubric="none")
    with pytest.raises(ValueError, match="no pairs"):
        rating.create_study(store, [], rating.StudySpec(raters=1))


# The rater's flow ---------------------------------------------------------------------------------------


def test_rater_view_holds_only_scrubbed_text(store):
    created = study_with(store, 2, 1)
    session = rating.join(store, created.invite_codes[0].lower().replace("-", " "))
    view = rating.next_pair(store, session)
    assert (view.position, view.total, view.done) == (1, 2, 0)
    shown = repr(view)
    stored = store.list_transcripts()
    assert len(stored) == 4
    for secret in [*LEAK_STRINGS, *[t.id for t in stored], *[t.group_id for t in stored]]:
        assert secret not in shown
    assert "Homework A for" in shown and "Homework B for" in shown
    with pytest.raises(rating.UnknownCode):
        rating.join(store, "AAAA-BBBB-CCCC")


def test_unfinished_or_unread_ratings_are_not_stored(store):
    created = study_with(store, 1, 1)
    session = rating.join(store, created.invite_codes[0])
    view = rating.next_pair(store, session)
    partial = full_answer()
    del partial["scores"]["B"]["homework"]
    partial["preference"] = None
    with pytest.raises(rating.IncompleteRating) as refused:
        rating.submit(store, session, rating.RatingAnswer(**partial), read_flag=f"{view.view_token}:a,b")
    assert "overall preference" in str(refused.value) and "transcript B: Homework" in str(refused.value)
    for flag in ["", f"{view.view_token}:a", "stale-token:a,b"]:
        with pytest.raises(rating.NotReadToEnd):
            rating.submit(store, session, rating.RatingAnswer(**full_answer()), read_flag=flag)
    out_of_range = full_answer(a=11)
    with pytest.raises(rating.IncompleteRating):
        rating.submit(store, session, rating.RatingAnswer(**out_of_range), read_flag=f"{view.view_token}:a,b")
    with store.read() as conn:
        assert conn.execute(select(func.count()).select_from(ratings)).scalar_one() == 0
    rating.submit(store, session, rating.RatingAnswer(**full_answer()), read_flag=f"{view.view_token}:a,b")
    with store.read() as conn:
        assert conn.execute(select(func.count()).select_from(ratings)).scalar_one() == 1


def test_a_pair_cannot_be_rated_twice(store):
    created = study_with(store, 2, 1)
    first_tab = rating.join(store, created.invite_codes[0])
    second_tab = rating.join(store, created.invite_codes[0])
    view_1 = rating.next_pair(store, first_tab)
    view_2 = rating.next_pair(store, second_tab)
    assert first_tab.assignment_id == second_tab.assignment_id
    rating.submit(store, first_tab, rating.RatingAnswer(**full_answer()), read_flag=f"{view_1.view_token}:a,b")
    with pytest.raises(rating.AlreadyRated, match="already rated this pair"):
        rating.submit(store, second_tab, rating.RatingAnswer(**full_answer()), read_flag=f"{view_2.view_token}:a,b")
    # Two racing submissions of the same pair: exactly one is stored, the other told why.
    tabs = [rating.join(store, created.invite_codes[0]) for _ in range(4)]
    views = [rating.next_pair(store, tab) for tab in tabs]
    outcomes: list[str] = []

    def go(tab, view) -> None:  # type: ignore[no-untyped-def]
        try:
            rating.submit(store, tab, rating.RatingAnswer(**full_answer()), read_flag=f"{view.view_token}:a,b")
            outcomes.append("stored")
        except rating.AlreadyRated:
            outcomes.append("refused")

    threads = [threading.Thread(target=go, args=pair) for pair in zip(tabs, views, strict=True)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(outcomes) == ["refused", "refused", "refused", "stored"]
    with store.read() as conn:
        assert conn.execute(select(func.count()).select_from(ratings)).scalar_one() == 2
        row = dict(conn.execute(select(ratings).limit(1)).mappings().one())
    # The database itself refuses a duplicate, whatever the code above it does.
    row.pop("id")
    row["assignment_id"] = "another-assignment"
    with pytest.raises(IntegrityError), store.write() as conn:
        conn.execute(insert(ratings).values(**row))


def test_resume_continues_where_the_rater_stopped(store):
    created = study_with(store, 4, 2)
    session = rating.join(store, created.invite_codes[1])
    seen = []
    for _ in range(2):
        view = rating.next_pair(store, session)
        seen.append(session.assignment_id)
        rating.submit(store, session, rating.RatingAnswer(**full_answer()), read_flag=f"{view.view_token}:a,b")
    later = rating.join(store, created.invite_codes[1])
    view = rating.next_pair(store, later)
    with store.read() as conn:
        order = (
            conn.execute(
                select(rating_assignments.c.id)
                .where(rating_assignments.c.rater_id == later.rater_id)
                .order_by(rating_assignments.c.position)
            )
            .scalars()
            .all()
        )
    assert order[:2] == seen and later.assignment_id == order[2]
    assert (view.position, view.done, view.total) == (3, 2, 4)
    assert rating.progress(store, later.rater_id) == rating.rater.Progress(done=2, total=4)
    assert rate_all(store, created.invite_codes[1], lambda v: full_answer()) == 2
    assert rating.next_pair(store, rating.join(store, created.invite_codes[1])) is None


# Export, unblinding, reliability ------------------------------------------------------------------------


def prefers_zorblat(view: rating.PairView) -> dict:
    """A rater who always prefers (and scores higher) the transcript that says 'Homework A'."""
    zorblat_is_a = any("Homework A" in t.text for t in view.a)
    return full_answer(a=8 if zorblat_is_a else 4, b=4 if zorblat_is_a else 8, preference="A" if zorblat_is_a else "B")


def test_unblinding_undoes_the_sides(store):
    created = study_with(store, 6, 2)
    for code in created.invite_codes:
        assert rate_all(store, code, prefers_zorblat) == 6
    report = rating.unblinding_report(store, created.study_id)
    table = report.preference.set_index("therapist")
    assert table.loc[CANARY["name_a"], "wins"] == 12 and table.loc[CANARY["name_a"], "win_rate"] == 1.0
    assert table.loc[CANARY["name_b"], "losses"] == 12 and table.loc[CANARY["name_b"], "win_rate"] == 0.0
    assert report.shown_a_rate == 0.5  # balanced sides: the winner was shown as A exactly half the time
    items = report.items.set_index(["therapist", "item"])
    assert items.loc[(CANARY["name_a"], "agenda"), "mean"] == 8.0
    assert items.loc[(CANARY["name_b"], "total"), "mean"] == 44.0
    assert report.head_to_head.iloc[0].to_dict()["ties"] == 0


def test_both_bad_is_its_own_verdict_counted_as_a_tie(store):
    # The arena's fourth button: stored as "both_bad", a tie for win rates and Bradley-Terry, counted apart.
    from cbtcompare.arena import preferences_from_study

    created = study_with(store, 3, 2)
    rate_all(store, created.invite_codes[0], lambda v: full_answer(preference="both_bad"))
    rate_all(store, created.invite_codes[1], prefers_zorblat)
    table = rating.unblinding_report(store, created.study_id).preference.set_index("therapist")
    assert table.loc[CANARY["name_a"], "ties"] == 3 and table.loc[CANARY["name_a"], "both_bad"] == 3
    assert table.loc[CANARY["name_a"], "win_rate"] == pytest.approx((3 + 0.5 * 3) / 6)
    votes, skipped = preferences_from_study(store, created.study_id)
    assert skipped == 0 and len(votes) == 6 and votes["winner"].tolist().count("tie") == 3


@pytest.mark.parametrize("fmt", ["csv", "jsonl"])
def test_export_round_trip(store, fmt):
    created = study_with(store, 3, 2)
    rate_all(store, created.invite_codes[0], lambda v: full_answer(comment='said "fine", then, left\nearly'))
    rate_all(store, created.invite_codes[1], lambda v: full_answer(a=2, b=9, preference="tie", confidence=1))
    out = io.StringIO()
    assert rating.write_export(store, created.study_id, out, fmt) == 6
    back = rating.read_export(io.StringIO(out.getvalue()), fmt)
    assert back == rating.export_records(store, created.study_id)
    assert {r["preference"] for r in back} == {"A", "tie"}
    assert {r["preferred_transcript_id"] is None for r in back if r["preference"] == "tie"} == {True}
    assert back[0]["A_homework"] == 7 and back[0]["comment"] == 'said "fine", then, left\nearly'
    assert all(r["a_therapist"] in (CANARY["name_a"], CANARY["name_b"]) for r in back)


def test_icc_2_1_matches_shrout_and_fleiss():
    # Shrout & Fleiss (1979), Table 2: 6 targets x 4 judges; ICC(2,1) = 0.29.
    data = np.array([[9, 2, 5, 8], [6, 1, 3, 2], [8, 4, 6, 8], [7, 1, 2, 6], [10, 5, 6, 9], [6, 2, 4, 7]])
    assert rating.icc_2_1(data) == pytest.approx(0.2898, abs=5e-4)
    assert rating.icc_2_1(np.array([[1, 1], [5, 5], [3, 3]])) == pytest.approx(1.0)
    assert np.isnan(rating.icc_2_1(np.array([[1, 2, 3]])))


def test_reliability_matches_the_krippendorff_package_on_hand_made_data(store):
    created = study_with(store, 4, 3)
    # Hand-made scores per rater (index in invite order) and per pair group: (score for zorblat, for quintex).
    hand = {
        0: {"g0": (8, 3), "g1": (6, 6), "g2": (9, 2), "g3": (4, 5)},
        1: {"g0": (7, 3), "g1": (6, 5), "g2": (9, 4), "g3": (3, 5)},
        2: {"g0": (8, 2), "g1": (5, 7), "g2": (7, 2), "g3": (4, 6)},
    }

    def scorer(rater: int):  # type: ignore[no-untyped-def]
        def answer(view: rating.PairView) -> dict:
            group = re.search(r"Homework A for (g\d+)", " ".join(t.text for t in view.a + view.b)).group(1)
            zorblat, quintex = hand[rater][group]
            zorblat_is_a = any("Homework A" in t.text for t in view.a)
            a, b = (zorblat, quintex) if zorblat_is_a else (quintex, zorblat)
            return {**full_answer(a=a, b=b), "scores": {"A": dict.fromkeys(ITEMS, a), "B": dict.fromkeys(ITEMS, b)}}

        return answer

    for index, code in enumerate(created.invite_codes):
        rate_all(store, code, scorer(index))
    report = rating.reliability(store, created.study_id)
    # The same data laid out by hand: coders = raters, units = 4 pairs x 2 transcripts.
    matrix = np.array([[v for g in ("g0", "g1", "g2", "g3") for v in hand[r][g]] for r in range(3)], dtype=float)
    expected = krippendorff.alpha(reliability_data=matrix, level_of_measurement="ordinal")
    assert report.items["alpha"].tolist() == pytest.approx([expected] * 11)
    assert set(report.items["n_units"]) == {8} and set(report.items["n_raters"]) == {3}
    assert report.icc_total == pytest.approx(rating.icc_2_1(matrix.T * 11))
    assert (report.icc_units, report.icc_raters) == (8, 3)
    assert 0.5 < expected < 1.0
    # Krippendorff's (2011) worked example through the same call: ordinal alpha 0.815.
    example = np.array(
        [
            [1, 2, 3, 3, 2, 1, 4, 1, 2, np.nan, np.nan, np.nan],
            [1, 2, 3, 3, 2, 2, 4, 1, 2, 5, np.nan, 3],
            [np.nan, 3, 3, 3, 2, 3, 4, 2, 2, 5, 1, np.nan],
            [1, 2, 3, 3, 2, 4, 4, 1, 2, 5, 1, np.nan],
        ]
    )
    assert rating.krippendorff_alpha(example, "ordinal") == pytest.approx(0.815, abs=1e-3)


def test_judge_agreement_reads_stored_judge_scores(store):
    created = study_with(store, 4, 2)
    for code in created.invite_codes:
        rate_all(store, code, prefers_zorblat)
    human = rating.human_scores(store, created.study_id)
    assert rating.judge_agreement(store, created.study_id).empty
    study = rating.get_study(store, created.study_id)
    medians = human.groupby(["transcript_id", "item"])["score"].median()
    rows = []
    for (transcript_id, item), score in medians.items():
        for judge, value in (("judge-same", score), ("judge-reversed", 12 - score)):
            rows.append(
                {
                    "result_id": f"{judge}-{transcript_id}",
                    "transcript_id": transcript_id,
                    "judge_name": judge,
                    "judge_info": {},
                    "repeat": 0,
                    "rubric_id": study.rubric["id"],
                    "rubric_version": study.rubric["version"],
                    "prompt_version": "test",
                    "mode": "all_items",
                    "sampling": {},
                    "item": item,
                    "score": int(value),
                    "status": "scored",
                    "justification": "",
                    "evidence": [],
                    "raw_output": "",
                    "reason": None,
                    "attempts": 1,
                    "created_at": "2025-01-01T00:00:00",
                }
            )
    store.save_scores(rows)
    table = rating.judge_agreement(store, created.study_id).set_index(["judge", "item"])
    assert table.loc[("judge-same", "agenda"), "spearman_rho"] == pytest.approx(1.0)
    assert table.loc[("judge-same", "agenda"), "alpha"] == pytest.approx(1.0)
    assert table.loc[("judge-reversed", "homework"), "spearman_rho"] == pytest.approx(-1.0)
    assert table.loc[("judge-reversed", "homework"), "alpha"] < 0
    assert table.loc[("judge-same", "agenda"), "n"] == 8


def test_progress_tables(store):
    created = study_with(store, 3, 2)
    rate_all(store, created.invite_codes[0], lambda v: full_answer())
    per_rater, per_pair = rating.progress_tables(store, created.study_id)
    assert per_rater[["rater", "rated", "remaining"]].values.tolist() == [["rater 1", 3, 0], ["rater 2", 0, 3]]
    assert per_pair["rated"].tolist() == [1, 1, 1] and per_pair["assigned"].tolist() == [2, 2, 2]


# Admin secret and CLI -----------------------------------------------------------------------------------


def test_admin_secret_is_required(monkeypatch):
    monkeypatch.delenv(rating.ADMIN_SECRET_ENV, raising=False)
    with pytest.raises(rating.AdminRefused, match="disabled"):
        rating.require_admin("anything")
    monkeypatch.setenv(rating.ADMIN_SECRET_ENV, "s3cret-value-of-some-length")
    for wrong in (None, "", "s3cret", "s3cret-value-of-some-length-2"):
        with pytest.raises(rating.AdminRefused, match="Wrong admin secret"):
            rating.require_admin(wrong, client="test_rating")
    rating.require_admin("s3cret-value-of-some-length", client="test_rating")


@pytest.mark.slow
def test_cli_create_and_export(tmp_path, monkeypatch, capsys):
    pairs_file = tmp_path / "pairs.jsonl"
    pairs_file.write_text(pairs_jsonl([canary_pair("c1"), canary_pair("c2")]))
    env = {**os.environ, "CBTCOMPARE_DATA_DIR": str(tmp_path), "CBTCOMPARE_DB_URL": ""}

    def cli(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [sys.executable, "-m", "cbtcompare", "rating", *args], cwd=REPO, env=env, capture_output=True, text=True
        )

    made = cli("create", "--pairs", str(pairs_file), "--raters", "3", "--json")
    assert made.returncode == 0, made.stderr
    created = json.loads(made.stdout)
    assert len(created["invite_codes"]) == 3 and created["pairs"] == 2
    store = Store(f"sqlite:///{tmp_path / 'cbtcompare.sqlite'}")
    rate_all(store, created["invite_codes"][0], lambda v: full_answer())
    exported = cli("export", "--study", created["study_id"], "--format", "csv")
    assert exported.returncode == 0, exported.stderr
    assert rating.read_export(io.StringIO(exported.stdout), "csv") == rating.export_records(store, created["study_id"])
    # The same commands in-process: a query over stored pairs, JSONL to a file, an unknown study.
    monkeypatch.setenv("CBTCOMPARE_DATA_DIR", str(tmp_path))
    monkeypatch.delenv("CBTCOMPARE_DB_URL", raising=False)
    assert main(["rating", "create", "--pairs", "all", "--raters", "1", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["pairs"] == 2
    out = tmp_path / "ratings.jsonl"
    assert main(["rating", "export", "--study", created["study_id"], "--format", "jsonl", "--out", str(out)]) == 0
    with out.open() as handle:
        assert rating.read_export(handle, "jsonl") == rating.export_records(store, created["study_id"])
    assert main(["rating", "export", "--study", "no-such-study", "--format", "jsonl"]) == 2
    assert "no rating study" in capsys.readouterr().err
    assert main(["rating", "report", "--study", created["study_id"], "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["ratings"] == 2 and {r["therapist"] for r in report["preference"]} == {
        CANARY["name_a"],
        CANARY["name_b"],
    }
    assert len(report["reliability"]["items"]) == 11 and report["judge_agreement"] == []
    assert main(["rating", "progress", "--study", created["study_id"], "--json"]) == 0
    assert [r["rated"] for r in json.loads(capsys.readouterr().out)["raters"]] == [2, 0, 0]
    assert main(["rating", "export", "--study", created["study_id"], "--format", "long"]) == 0
    long = pd.read_csv(io.StringIO(capsys.readouterr().out))
    assert len(long) == 2 * 2 * 11 and {"transcript_id", "item", "score"} <= set(long.columns)


def test_rating_code_runs_no_sql_of_its_own():
    """Persistence has one home: cbtcompare/rating/* reaches the database only through store.rating."""
    import ast

    folder = Path(rating.__file__).parent
    offenders = []
    for module in sorted(folder.glob("*.py")):
        tree = ast.parse(module.read_text())
        for node in ast.walk(tree):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else []
            if isinstance(node, ast.ImportFrom):
                names = [node.module or ""] + [f"{node.module}.{a.name}" for a in node.names]
            bad = [n for n in names if n.startswith("sqlalchemy") or n.startswith("cbtcompare.store.schema")]
            bad += [n for n in names if n.startswith("cbtcompare.store.") and n.split(".")[-1] in _TABLES]
            if bad:
                offenders.append(f"{module.name}: {', '.join(bad)}")
            direct = isinstance(node, ast.Attribute) and node.attr in {"read", "write"}
            if direct and isinstance(node.value, ast.Name) and node.value.id == "store":
                offenders.append(f"{module.name}:{node.lineno}: store.{node.attr}()")
    assert offenders == []


_TABLES = {"transcripts", "turns", "rating_studies", "rating_pairs", "rating_raters", "rating_assignments", "ratings"}


def test_the_repository_maps_rows_to_typed_models_and_refuses_a_malformed_one(store):
    """A row the database hands back in a shape the code does not expect is a ValidationError naming the
    field, not a KeyError deep inside the rater's page."""
    from pydantic import ValidationError

    from cbtcompare.store.rating import StudyRow

    pairs = [canary_pair(f"m{i}") for i in range(2)]
    uploaded = rating.store_uploaded_pairs(store, io.StringIO(pairs_jsonl(pairs)))
    created = rating.create_study(store, uploaded, rating.StudySpec(raters=2, seed=3), source="test")
    row = store.rating.study(created.study_id)
    assert isinstance(row, StudyRow) and row.raters_per_pair == 2 and row.source == "test"
    assert [p.position for p in store.rating.pairs(created.study_id)] == [1, 2]
    with store.write() as conn:
        conn.execute(update(rating_studies).where(rating_studies.c.id == created.study_id).values(choices=["oops"]))
    with pytest.raises(ValidationError, match="choices"):
        store.rating.study(created.study_id)
