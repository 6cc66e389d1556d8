"""The Simulate tab through gradio_client on the running app, with the real default models."""

from __future__ import annotations

import time

import pytest
from gradio_client import Client

pytestmark = pytest.mark.slow

THERAPISTS = ["smollm2-instruct", "smollm2-cbt-prompted"]


def text_of(message: dict) -> str:
    content = message["content"]
    return content if isinstance(content, str) else "".join(p.get("text", "") for p in content)


def value_of(output: object) -> object:
    """A component's value, whether sent plainly or inside a gr.update (which also renames the pane)."""
    return output.get("value") if isinstance(output, dict) and "__type__" in output else output


def first_profile_id() -> str:
    from cbtcompare.patients import list_profiles

    return list_profiles()[0].id


def test_a_matched_session_fills_both_panes_and_saves(app_url, app_data_dir):
    client = Client(app_url, verbose=False)
    status, *panes = client.predict(first_profile_id(), 3, "smollm2-instruct", THERAPISTS, 2, 32, api_name="/simulate")
    pane_a, pane_b, pane_c = (value_of(p) for p in panes)
    assert status.startswith("Done")
    for pane in (pane_a, pane_b):
        assert pane and pane[0]["role"] == "user"
        assert any("techniques:" in text_of(m) for m in pane if m["role"] == "assistant")
    assert text_of(pane_a[0]) == text_of(pane_b[0]), "the two therapists did not meet the same opening"
    assert pane_c == []
    saved = client.predict(api_name="/simulate_save")
    assert saved.startswith("Saved 2 transcripts")

    from cbtcompare.store import Store

    store = Store(f"sqlite:///{app_data_dir / 'cbtcompare.sqlite'}")
    group = saved.rsplit("group ", 1)[1].rstrip(").")
    stored = [store.get_transcript(s.id) for s in store.list_transcripts(group_id=group)]
    assert sorted(t.therapist_name for t in stored) == sorted(THERAPISTS)
    assert all(t.kind == "simulation" and t.meta["profile_id"] == first_profile_id() for t in stored)


def test_one_therapist_is_refused(app_url):
    client = Client(app_url, verbose=False)
    with pytest.raises(Exception, match="two or three"):
        client.predict(first_profile_id(), 0, "smollm2-instruct", THERAPISTS[:1], 1, 16, api_name="/simulate")


def test_a_batch_runs_and_resumes(app_url):
    client = Client(app_url, verbose=False)
    args = ("ui-test-batch", [first_profile_id()], "smollm2-instruct", THERAPISTS, 1, 1, 5, 24)
    first = client.predict(*args, api_name="/simulate_batch")
    assert "2 done" in first and "0 failed" in first
    again = client.predict(*args, api_name="/simulate_batch")
    assert "0 done, 2 already stored" in again


def test_stop_ends_a_running_batch_and_keeps_the_finished_sessions(app_url, app_data_dir):
    """Stop used to do nothing to a batch (its stop event never reached the button): it ran to the end."""
    from cbtcompare.patients import curated_profiles
    from cbtcompare.store import Store

    client = Client(app_url, verbose=False)
    replicates = 3
    total = len(curated_profiles()) * replicates * len(THERAPISTS)
    job = client.submit("ui-stop-batch", [], "smollm2-instruct", THERAPISTS, 1, replicates, 6, 24,
                        api_name="/simulate_batch")  # fmt: skip
    store = Store(f"sqlite:///{app_data_dir / 'cbtcompare.sqlite'}")
    while not job.outputs() and not job.done():
        time.sleep(0.2)
    assert job.outputs(), f"the batch ended before it said it was running: {job.result()}"
    batch_id = job.outputs()[0].split("`")[1]
    while not store.batch_runs(batch_id):
        assert not job.done(), f"the batch finished before a run was stored: {job.result()}"
        time.sleep(0.2)
    client.predict(api_name="/simulate_stop")
    at_stop = len(store.batch_runs(batch_id))
    message = job.result(timeout=600)
    runs = store.batch_runs(batch_id)
    assert "stopped" in message, message
    assert len(runs) <= at_stop + 1 < total, "the batch went on after Stop (one run at a time: at most the running one)"
    assert {row.status for row in runs.values()} == {"done"}
    assert f"{len(runs)} done" in message and f"of {total} sessions" in message
    for row in runs.values():
        assert store.get_transcript(row.transcript_id).meta["batch_id"] == batch_id
