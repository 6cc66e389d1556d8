"""The Rate tab end to end through the official gradio_client, against a real running app (`python app.py`).

Blinding: every byte the app sends to the client is recorded (at the httpx transport, below
gradio_client) and searched for the canary model names, adapter and weights names, system prompts,
transcript and group ids and unscrubbed identity sentences planted in the study's transcripts.
Load: 20 raters at once, 25 ratings each, must leave exactly 500 rows.
"""

from __future__ import annotations

import io
import os
import re
import subprocess
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest
from gradio_client import Client, handle_file
from sqlalchemy import func, select
from test_rating import ITEMS, LEAK_STRINGS, canary_pair, pairs_jsonl

from cbtcompare import rating
from cbtcompare.store import Store, ratings

pytestmark = pytest.mark.slow

SECRET = "rate-admin-secret-for-tests"
ADMIN_ENDPOINTS = {
    "/rate_admin_studies": [],
    "/rate_admin_progress": ["some-study"],
    "/rate_admin_report": ["some-study"],
    "/rate_admin_export_csv": ["some-study"],
    "/rate_admin_export_jsonl": ["some-study"],
    "/rate_admin_create": ["all", None, "paper", ["preference", "items"], 2, 0, 0, "x"],
}


@pytest.fixture(scope="module")
def rate_app(tmp_path_factory) -> Iterator[tuple[str, Store]]:
    """A real app with an admin secret, and its store (the same SQLite file, opened from the test)."""
    from fixtures_app import start_app

    data_dir = tmp_path_factory.mktemp("rate-app")
    # Reading time is not what these tests are about (test_rating_mode_app.py checks it): no wait here.
    process, url = start_app(data_dir, {"CBTCOMPARE_ADMIN_SECRET": SECRET, rating.READING_WPM_ENV: "1e9"})
    yield url, Store(f"sqlite:///{data_dir / 'cbtcompare.sqlite'}")
    process.terminate()
    try:
        process.wait(timeout=20)
    except subprocess.TimeoutExpired:
        process.kill()


class Recorder:
    """Every response byte httpx receives in this process while recording (thread-safe)."""

    def __init__(self) -> None:
        self.chunks: list[bytes] = []
        self.lock = threading.Lock()

    def add(self, chunk: bytes) -> None:
        with self.lock:
            self.chunks.append(chunk)

    def text(self) -> str:
        with self.lock:
            return b"".join(self.chunks).decode("utf-8", errors="replace")

    def clear(self) -> None:
        with self.lock:
            self.chunks.clear()


@contextmanager
def recording(monkeypatch: pytest.MonkeyPatch) -> Iterator[Recorder]:
    recorder = Recorder()
    original = httpx.HTTPTransport.handle_request

    class RecordedStream(httpx.SyncByteStream):
        def __init__(self, inner: httpx.SyncByteStream) -> None:
            self.inner = inner

        def __iter__(self) -> Iterator[bytes]:
            for chunk in self.inner:
                recorder.add(chunk)
                yield chunk

        def close(self) -> None:
            self.inner.close()

    def handle_request(self: httpx.HTTPTransport, request: httpx.Request) -> httpx.Response:
        request.headers["Accept-Encoding"] = "identity"  # record plain text, not a compressed body
        response = original(self, request)
        response.stream = RecordedStream(response.stream)
        return response

    monkeypatch.setattr(httpx.HTTPTransport, "handle_request", handle_request)
    yield recorder


def make_study(store: Store, n_pairs: int, raters: int, **spec: object) -> tuple[rating.CreatedStudy, list]:
    pairs = [canary_pair(f"app{i}-{os.urandom(3).hex()}") for i in range(n_pairs)]
    uploaded = rating.store_uploaded_pairs(store, io.StringIO(pairs_jsonl(pairs)))
    return rating.create_study(store, uploaded, rating.StudySpec(raters=raters, **spec), source="test"), pairs


def view_token(result: tuple) -> str:
    match = re.search(r'data-view="(\w+)"', result[2])
    assert match, f"no pair shown: {result[0]}"
    return match.group(1)


def submit(client: Client, flag: str, a: int = 7, b: int = 5, preference: str | None = "A", **kw) -> tuple:
    scores_a = kw.get("scores_a", [a] * len(ITEMS))
    scores_b = kw.get("scores_b", [b] * len(ITEMS))
    return client.predict(flag, preference, 4, "a comment", *scores_a, *scores_b, api_name="/rate_submit")


def stored_count(store: Store, study_id: str) -> int:
    with store.read() as conn:
        query = select(func.count()).select_from(ratings).where(ratings.c.study_id == study_id)
        return conn.execute(query).scalar_one()


def identifying(pairs: list) -> list[str]:
    """What must never reach a rater: the canaries plus every id and group id of the study's transcripts."""
    return [*LEAK_STRINGS, *[t.id for pair in pairs for t in pair], *[t.group_id for pair in pairs for t in pair]]


def test_rater_never_receives_identifying_data(rate_app, monkeypatch):
    url, store = rate_app
    created, pairs = make_study(store, 2, 2)
    secrets_ = identifying(pairs)
    with recording(monkeypatch) as recorder:
        client = Client(url, verbose=False)
        first = client.predict(created.invite_codes[0], api_name="/rate_start")
        with pytest.raises(Exception, match="scroll both transcripts"):
            submit(client, "")
        for step in range(2):
            received = recorder.text()
            assert stored_count(store, created.study_id) == step
            leaked = [s for s in secrets_ if s in received]
            assert not leaked, f"sent to the rater before rating pair {step + 1}: {leaked}"
            # Positive control: the pair itself did arrive, scrubbed.
            assert "Homework A for" in received and "Homework B for" in received and "[name removed]" in received
            result = submit(client, f"{view_token(first)}:a,b")
            first = result
        assert "All your pairs are rated" in result[0]
        assert not [s for s in secrets_ if s in recorder.text()]
        # The recorder does catch identifying data when the app sends it: the admin's unblinding report.
        recorder.clear()
        Client(url, verbose=False).predict(SECRET, created.study_id, api_name="/rate_admin_report")
        assert "zorblat-therapist-7b" in recorder.text()
        # Two raters' worth of statistics over one rating each: undefined ones arrive as null, never NaN.
        assert not re.search(r"\bNaN\b|\bInfinity\b", recorder.text())


def test_server_refuses_unread_or_incomplete_ratings(rate_app):
    url, store = rate_app
    created, _ = make_study(store, 1, 1)
    client = Client(url, verbose=False)
    shown = client.predict(created.invite_codes[0], api_name="/rate_start")
    token = view_token(shown)
    assert "Pair 1 of 1" in shown[0] and "0 of 1 pairs rated" in shown[1]
    for flag in ("", f"{token}:a", "0123456789abcdef:a,b"):
        with pytest.raises(Exception, match="scroll both transcripts to the end"):
            submit(client, flag)
    with pytest.raises(Exception, match="Please complete: your overall preference"):
        submit(client, f"{token}:a,b", preference=None)
    with pytest.raises(Exception, match="transcript B: Agenda"):
        submit(client, f"{token}:a,b", scores_b=[None] + [5] * (len(ITEMS) - 1))
    assert stored_count(store, created.study_id) == 0
    done = submit(client, f"{token}:a,b")
    assert stored_count(store, created.study_id) == 1 and "1 of 1 pairs rated" in done[1]
    with pytest.raises(Exception, match="Enter your invite code"):
        Client(url, verbose=False).predict(f"{token}:a,b", "A", 4, "", *[5] * 22, api_name="/rate_submit")
    with pytest.raises(Exception, match="invite code is not known"):
        client.predict("ZZZZ-ZZZZ-ZZZZ", api_name="/rate_start")


def test_double_submit_is_refused_and_a_rater_can_resume(rate_app):
    url, store = rate_app
    created, _ = make_study(store, 3, 1)
    code = created.invite_codes[0]
    tab_1, tab_2 = Client(url, verbose=False), Client(url, verbose=False)
    token_1 = view_token(tab_1.predict(code, api_name="/rate_start"))
    token_2 = view_token(tab_2.predict(code.lower(), api_name="/rate_start"))
    submit(tab_1, f"{token_1}:a,b")
    with pytest.raises(Exception, match="already rated this pair"):
        submit(tab_2, f"{token_2}:a,b")
    assert stored_count(store, created.study_id) == 1
    later = Client(url, verbose=False).predict(code, api_name="/rate_start")
    assert "Pair 2 of 3" in later[0] and "1 of 3 pairs rated" in later[1]
    # Resuming in the second tab continues with pair 2 as well.
    resumed = tab_2.predict(code, api_name="/rate_start")
    assert "Pair 2 of 3" in resumed[0]
    submit(tab_2, f"{view_token(resumed)}:a,b")
    assert stored_count(store, created.study_id) == 2


def test_twenty_raters_at_once_store_exactly_500_ratings(rate_app):
    url, store = rate_app
    created, _ = make_study(store, 25, 20)
    failures: list[str] = []
    counts: dict[str, int] = {}

    def rater(code: str) -> None:
        try:
            client = Client(url, verbose=False)
            shown = client.predict(code, api_name="/rate_start")
            done = 0
            while "All your pairs are rated" not in shown[0]:
                shown = submit(client, f"{view_token(shown)}:a,b", a=done % 10 + 1, b=(done * 3) % 10 + 1)
                done += 1
            counts[code] = done
        except Exception as exc:  # noqa: BLE001 - reported below with the code that failed
            failures.append(f"{code}: {exc!r}")

    threads = [threading.Thread(target=rater, args=(code,)) for code in created.invite_codes]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=600)
    assert not failures, failures[:3]
    assert sorted(counts.values()) == [25] * 20
    with store.read() as conn:
        rows = conn.execute(select(ratings.c.rater_id, ratings.c.pair_id).where(ratings.c.study_id == created.study_id))
        keys = [tuple(r) for r in rows]
    assert len(keys) == 500 and len(set(keys)) == 500
    per_rater, per_pair = rating.progress_tables(store, created.study_id)
    assert set(per_rater["rated"]) == {25} and set(per_pair["rated"]) == {20}


def test_admin_is_refused_without_the_secret(rate_app):
    url, _ = rate_app
    client = Client(url, verbose=False)
    for endpoint, args in ADMIN_ENDPOINTS.items():
        for wrong in ("", "not-the-secret"):
            with pytest.raises(Exception, match="Wrong admin secret"):
                client.predict(wrong, *args, api_name=endpoint)


def test_admin_area_is_closed_when_no_secret_is_set(app_url):
    assert not os.environ.get(rating.ADMIN_SECRET_ENV), "the shared app must run without an admin secret"
    client = Client(app_url, verbose=False)
    for endpoint, args in ADMIN_ENDPOINTS.items():
        with pytest.raises(Exception, match="admin area is disabled"):
            client.predict("anything", *args, api_name=endpoint)


def test_admin_creates_a_study_then_exports_and_unblinds_it(rate_app, tmp_path):
    url, store = rate_app
    first, second = canary_pair(f"admin-{os.urandom(3).hex()}")
    store.save_transcript(first)
    store.save_transcript(second)
    admin = Client(url, verbose=False)
    text, studies = admin.predict(
        SECRET,
        f"group:{first.group_id}",
        None,
        "classic",
        ["preference", "confidence", "items"],
        2,
        0,
        5,
        "admin",
        api_name="/rate_admin_create",
    )
    study_id = re.search(r"study (\w+):", text).group(1)
    codes = re.findall(r"rater \d: (\S+)", text)
    assert "1 pairs, 2 assignments" in text and len(codes) == 2 and studies["value"] == study_id
    for n, code in enumerate(codes):
        rater = Client(url, verbose=False)
        shown = rater.predict(code, api_name="/rate_start")
        assert shown[4]["choices"][0] == ["0", 0] and shown[28].get("visible") is False  # classic 0-6, no comment
        submit(rater, f"{view_token(shown)}:a,b", a=6 - n, b=n)
    raters_table, pairs_table = admin.predict(SECRET, study_id, api_name="/rate_admin_progress")
    assert [row[3] for row in raters_table["data"]] == [1, 1]
    report = admin.predict(SECRET, study_id, api_name="/rate_admin_report")
    assert "2 ratings" in report[0]
    preference = {row[0]: row for row in report[1]["data"]}
    assert set(preference) == {"zorblat-therapist-7b", "quintex-therapist-8b"}
    for fmt, endpoint in (("csv", "/rate_admin_export_csv"), ("jsonl", "/rate_admin_export_jsonl")):
        path = admin.predict(SECRET, study_id, api_name=endpoint)
        with Path(path).open(encoding="utf-8") as handle:
            assert rating.read_export(handle, fmt) == rating.export_records(store, study_id)
    # An uploaded pairs file makes a study too; a broken one is refused with the line that is wrong.
    upload = tmp_path / "pairs.jsonl"
    upload.write_text(pairs_jsonl([canary_pair(f"upload-{os.urandom(3).hex()}")]))
    text, _ = admin.predict(
        SECRET,
        "all",
        handle_file(str(upload)),
        "paper",
        ["preference"],
        1,
        0,
        0,
        "upload",
        api_name="/rate_admin_create",
    )
    assert "1 pairs, 1 assignments" in text
    upload.write_text("[1, 2, 3]\n")
    with pytest.raises(Exception, match="line 1: a pair holds exactly two transcripts"):
        admin.predict(
            SECRET, "all", handle_file(str(upload)), "paper", ["preference"], 1, 0, 0, "", api_name="/rate_admin_create"
        )


def verdict(client: Client, which: str, flag: str, confidence: int | None = 4, comment: str = "", **kw) -> tuple:
    """One click on a verdict button (a, b, tie, bad) with whatever else the form holds."""
    scores_a = kw.get("scores_a", [7] * len(ITEMS))
    scores_b = kw.get("scores_b", [5] * len(ITEMS))
    return client.predict(flag, confidence, comment, *scores_a, *scores_b, api_name=f"/rate_verdict_{which}")


def test_a_verdict_click_saves_the_pair_and_says_so_or_says_why_not_in_place(rate_app):
    url, store = rate_app
    created, _ = make_study(store, 3, 1)
    client = Client(url, verbose=False)
    shown = client.predict(created.invite_codes[0], api_name="/rate_start")
    flag = f"{view_token(shown)}:a,b"
    # Unread, or missing what the study asks: nothing stored, the reason shown under the pair (no toast).
    unread = verdict(client, "b", "")
    assert stored_count(store, created.study_id) == 0
    assert any(isinstance(v, str) and "scroll both transcripts" in v for v in unread)
    incomplete = verdict(client, "b", flag, confidence=None)
    assert any(isinstance(v, str) and "Please complete: your confidence" in v for v in incomplete)
    assert stored_count(store, created.study_id) == 0
    done = verdict(client, "b", flag, comment="clearer agenda")
    assert stored_count(store, created.study_id) == 1
    assert any(isinstance(v, str) and "Saved** pair 1 of 3: B is better" in v for v in done)
    assert "Pair 2 of 3" in done[0]
    both_bad = verdict(client, "bad", f"{view_token(done)}:a,b", comment="neither set an agenda")
    assert any(isinstance(v, str) and "pair 2 of 3: both bad" in v for v in both_bad)
    first, second = sorted(rating.export_records(store, created.study_id), key=lambda r: r["submitted_at"])
    assert first["preference"] == "B" and first["comment"] == "clearer agenda"
    # "Both bad" is its own stored value, with the rater's comment as written.
    assert second["preference"] == "both_bad" and second["comment"] == "neither set an agenda"
