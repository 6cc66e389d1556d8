"""The Judge and Results tabs through gradio_client on the running app, with the real default model as judge."""

from __future__ import annotations

from pathlib import Path

import pytest
from gradio_client import Client, handle_file

pytestmark = pytest.mark.slow

DATA = Path(__file__).resolve().parent / "data"


def test_judge_an_uploaded_transcript_then_see_it_in_results(app_url, app_data_dir):
    client = Client(app_url, verbose=False)
    summary, table, _evidence, _radar = client.predict(
        [], handle_file(str(DATA / "ctrs_session_short.txt")), "classic", ["smollm2-instruct"], 1, "all",
        "clinic-gpt", "prompted", "Llama-3", api_name="/judge",
    )  # fmt: skip
    assert "Judged 1 transcript(s) with 1 judge(s)" in summary
    # the upload keeps what the person said about it (before: therapist "unknown", variant "base")
    from cbtcompare.provenance import of_record
    from cbtcompare.store import Store

    store = Store(f"sqlite:///{app_data_dir / 'cbtcompare.sqlite'}")
    uploaded = store.get_transcript(next(s.id for s in store.list_transcripts() if s.therapist_name == "clinic-gpt"))
    assert of_record(uploaded.therapist, uploaded.meta) == ("prompted", "Llama-3")
    rows = table["data"]
    items = [row[2] for row in rows]
    assert items[-1] == "TOTAL" and len(items) == 12
    for row in rows[:-1]:
        status, score = row[4], row[3]
        assert status in {"scored", "unscored", "n/a"}
        assert (score is not None) == (status == "scored"), "an unscored item carried a number"
        if status == "scored":
            assert 0 <= int(score) <= 6

    from cbtcompare.ctrs import scores_frame

    frame = scores_frame(Store(f"sqlite:///{app_data_dir / 'cbtcompare.sqlite'}"))
    assert len(frame) >= 11 and set(frame["judge"]) == {"smollm2-instruct"}

    outputs = client.predict("The store", None, "rubric_id=" + frame["rubric_id"].iloc[0], api_name="/results")
    notes, paper_table = outputs[0], outputs[1]
    assert "transcripts" in notes
    assert paper_table["data"], "the paper's table is empty"


def test_results_explain_what_is_missing(app_url):
    client = Client(app_url, verbose=False)
    with pytest.raises(Exception, match="upload a scores CSV"):
        client.predict("Upload a CSV", None, "", api_name="/results")
    with pytest.raises(Exception, match="column=value"):
        client.predict("The store", None, "nonsense", api_name="/results")
