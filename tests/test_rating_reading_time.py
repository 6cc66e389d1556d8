"""The minimum reading time: counted on the server from when it served the pair, whatever the page reports.

The read flag ("<view token>:a,b") is in the page and can be sent at once; before this rule a rating was
stored 0.175 s after its pair was shown. Here a submission with a valid flag, sent straight away, must be
refused with the time left, and accepted once the pair's words at the configured pace have been given.
"""

from __future__ import annotations

import io
import time

import pytest
from sqlalchemy import func, select
from test_rating import canary_pair, full_answer, pairs_jsonl

from cbtcompare import rating
from cbtcompare.store import Store, ratings


@pytest.fixture
def store(tmp_path) -> Store:
    return Store(f"sqlite:///{tmp_path / 'reading.sqlite'}")


def one_pair_study(store: Store, **pair: object) -> rating.CreatedStudy:
    uploaded = rating.store_uploaded_pairs(store, io.StringIO(pairs_jsonl([canary_pair("read", **pair)])))
    return rating.create_study(store, uploaded, rating.StudySpec(raters=1), source="test")


def count(store: Store) -> int:
    with store.read() as conn:
        return conn.execute(select(func.count()).select_from(ratings)).scalar_one()


def shown_words(view: rating.PairView) -> int:
    return sum(len(t.text.split()) for t in view.a + view.b)


def test_a_forged_read_flag_sent_at_once_is_refused_with_the_time_left(store, monkeypatch):
    monkeypatch.setenv(rating.READING_WPM_ENV, "300")
    created = one_pair_study(store, turns=4, long=True)
    session = rating.join(store, created.invite_codes[0])
    view = rating.next_pair(store, session)
    words = shown_words(view)
    assert words > 500  # a long pair: at 300 words a minute, well over a minute and a half
    assert view.min_reading_seconds == pytest.approx(words * 60 / 300)
    started = time.monotonic()
    with pytest.raises(rating.ReadTooFast) as refused:
        rating.submit(store, session, rating.RatingAnswer(**full_answer()), read_flag=f"{view.view_token}:a,b")
    message = str(refused.value)
    assert "Nothing was saved" in message
    left = int(message.split("submitted in ")[1].split(" s")[0])
    assert words * 60 / 300 - (time.monotonic() - started) - 1 <= left <= words * 60 / 300 + 1
    assert count(store) == 0
    # The refusal leaves the pair open: the same rater can still submit it once the time has passed.
    assert session.assignment_id is not None and rating.reading_seconds_left(session) > 0


def test_a_rating_is_accepted_once_the_pairs_reading_time_has_passed(store):
    created = one_pair_study(store)
    session = rating.join(store, created.invite_codes[0])
    probe = rating.next_pair(store, rating.join(store, created.invite_codes[0]), rating.ReadingPace())
    # A pace at which this pair takes 0.6 s to read.
    pace = rating.ReadingPace(words_per_minute=shown_words(probe) * 60 / 0.6)
    view = rating.next_pair(store, session, pace)
    assert view.min_reading_seconds == pytest.approx(0.6)
    flag = f"{view.view_token}:a,b"
    with pytest.raises(rating.ReadTooFast):
        rating.submit(store, session, rating.RatingAnswer(**full_answer()), read_flag=flag)
    time.sleep(max(0.0, rating.reading_seconds_left(session)) + 0.05)
    rating.submit(store, session, rating.RatingAnswer(**full_answer()), read_flag=flag)
    assert count(store) == 1
    seconds = rating.export_records(store, created.study_id)[0]["seconds_to_rate"]
    assert seconds >= 0.6


def test_a_new_pair_restarts_the_clock_and_a_stale_session_cannot_borrow_time(store, monkeypatch):
    monkeypatch.setenv(rating.READING_WPM_ENV, "200")
    created = one_pair_study(store)
    first_tab = rating.join(store, created.invite_codes[0])
    rating.next_pair(store, first_tab)
    # Opening the pair again (a reload, a second tab) serves it anew: its clock starts again, on the server.
    second_tab = rating.join(store, created.invite_codes[0])
    view = rating.next_pair(store, second_tab)
    with pytest.raises(rating.ReadTooFast):
        rating.submit(store, second_tab, rating.RatingAnswer(**full_answer()), read_flag=f"{view.view_token}:a,b")
    assert count(store) == 0


@pytest.mark.parametrize("raw", ["fast", "0", "-5", "nan"])
def test_a_bad_reading_pace_setting_says_what_to_set(monkeypatch, raw):
    monkeypatch.setenv(rating.READING_WPM_ENV, raw)
    with pytest.raises(ValueError, match=rating.READING_WPM_ENV):
        rating.ReadingPace.from_env()
