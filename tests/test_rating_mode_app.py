"""An app served for raters (CBTCOMPARE_MODE=rating), through the official gradio_client and plain HTTP.

It must carry no admin panel at all: no admin endpoint is listed, none answers, and the page config names
none, even with an admin secret configured. Its minimum reading time holds against a rater who sends the
read flag at once: the submit is refused with the time left, and accepted once that time has passed.
"""

from __future__ import annotations

import io
import os
import re
import subprocess
import time
from collections.abc import Iterator

import httpx
import pytest
from gradio_client import Client
from sqlalchemy import func, select
from test_rate_app import ADMIN_ENDPOINTS, SECRET, submit, view_token
from test_rating import canary_pair, pairs_jsonl

from cbtcompare import rating
from cbtcompare.store import Store, ratings

pytestmark = pytest.mark.slow
READING_WPM = 3000


@pytest.fixture(scope="module")
def rating_app(tmp_path_factory) -> Iterator[tuple[str, Store]]:
    from fixtures_app import start_app

    data_dir = tmp_path_factory.mktemp("rating-mode-app")
    env = {"CBTCOMPARE_MODE": "rating", "CBTCOMPARE_ADMIN_SECRET": SECRET, rating.READING_WPM_ENV: str(READING_WPM)}
    process, url = start_app(data_dir, env)
    yield url, Store(f"sqlite:///{data_dir / 'cbtcompare.sqlite'}")
    process.terminate()
    try:
        process.wait(timeout=20)
    except subprocess.TimeoutExpired:
        process.kill()


def study(store: Store, **pair: object) -> rating.CreatedStudy:
    uploaded = rating.store_uploaded_pairs(
        store, io.StringIO(pairs_jsonl([canary_pair(f"mode-{os.urandom(3).hex()}", **pair)]))
    )
    return rating.create_study(store, uploaded, rating.StudySpec(raters=1), source="test")


def stored(store: Store, study_id: str) -> int:
    with store.read() as conn:
        query = select(func.count()).select_from(ratings).where(ratings.c.study_id == study_id)
        return conn.execute(query).scalar_one()


def test_no_admin_endpoint_exists_or_answers_in_rating_mode(rating_app):
    url, _ = rating_app
    client = Client(url, verbose=False)
    api = client.view_api(return_format="dict", print_info=False)
    names = set(api["named_endpoints"]) | set(api["unnamed_endpoints"])
    assert "/rate_start" in names and "/rate_submit" in names  # the rater's side is served
    assert not [n for n in names if "admin" in str(n)]
    for endpoint, args in ADMIN_ENDPOINTS.items():
        with pytest.raises(Exception, match="Cannot find a function"):
            client.predict(SECRET, *args, api_name=endpoint)
        # Not through the HTTP API either, with the right secret.
        answer = httpx.post(f"{url}gradio_api/call{endpoint}", json={"data": [SECRET, *args]}, timeout=30)
        assert answer.status_code >= 400 or "event_id" not in answer.text, (endpoint, answer.text[:200])
    config = httpx.get(f"{url}config", timeout=30).text
    assert "rate_admin" not in config and "rate-admin" not in config and "Admin secret" not in config


def test_a_read_flag_sent_at_once_is_refused_until_the_reading_time_has_passed(rating_app):
    url, store = rating_app
    long_pair = study(store, turns=4, long=True)
    client = Client(url, verbose=False)
    shown = client.predict(long_pair.invite_codes[0], api_name="/rate_start")
    seconds = int(re.search(r"after about (\d+) s of reading", shown[0]).group(1))
    assert seconds >= 10
    started = time.monotonic()
    with pytest.raises(Exception, match=r"can be submitted in \d+ s") as refused:
        submit(client, f"{view_token(shown)}:a,b")
    left = int(re.search(r"submitted in (\d+) s", str(refused.value)).group(1))
    assert seconds - (time.monotonic() - started) - 2 <= left <= seconds
    assert stored(store, long_pair.study_id) == 0
    # A short pair (about a second of reading at this pace): accepted once its time has passed.
    short_pair = study(store, turns=1)
    rater = Client(url, verbose=False)
    shown = rater.predict(short_pair.invite_codes[0], api_name="/rate_start")
    wait = int(re.search(r"after about (\d+) s of reading", shown[0]).group(1))
    assert wait <= 3
    time.sleep(wait + 0.2)
    done = submit(rater, f"{view_token(shown)}:a,b")
    assert "All your pairs are rated" in done[0] and stored(store, short_pair.study_id) == 1
