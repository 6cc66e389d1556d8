"""A judging request as the Judge tab sends it, checked in full before anything is written (headless).

Gradio's widgets already refuse some values; a caller without them (the API, a script) gets the same
refusals from check_request, each with a message that says what to fix, and the store stays untouched.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from cbtcompare.ctrs.request import check_request
from cbtcompare.importers import import_file
from cbtcompare.models.base import ModelError
from cbtcompare.models.registry import Registry

DATA = Path(__file__).parent / "data"


@pytest.fixture(scope="module")
def shipped_registry() -> Registry:
    return Registry.from_files()


def upload(tmp_path: Path) -> str:
    path = tmp_path / "upload.jsonl"
    turns = [{"role": "therapist", "text": 'You said "never".'}, {"role": "patient", "text": "Yes."}]
    path.write_text(json.dumps({"id": "uploaded-once", "kind": "import", "turns": turns}) + "\n")
    return str(path)


GOOD = {"rubric_name": "classic", "judge_names": ["smollm2-instruct"], "repeats": 1, "mode": "all"}


@pytest.mark.parametrize(
    ("change", "fragment"),
    [
        ({"rubric_name": "/etc/hostname"}, "unknown rubric '/etc/hostname'; choose one of classic, paper"),
        ({"rubric_name": str(DATA / "ctrs_rubric_two_items.yaml")}, "unknown rubric"),
        ({"judge_names": []}, "pick at least one judge model"),
        ({"judge_names": ["no-such-judge"]}, "no model named 'no-such-judge'"),
        ({"repeats": 0}, "whole number from 1 to 10, not 0"),
        ({"repeats": 11}, "whole number from 1 to 10"),
        ({"repeats": 2.5}, "whole number from 1 to 10"),
        ({"repeats": float("nan")}, "whole number from 1 to 10"),
        ({"repeats": float("inf")}, "whole number from 1 to 10"),
        ({"repeats": "many"}, "whole number from 1 to 10"),
        ({"mode": "everything"}, "mode must be one of all, per-item"),
        ({"stored_ids": ["no-such-transcript"]}, "no stored transcript with id 'no-such-transcript'"),
    ],
)
def test_every_part_of_a_request_is_checked_before_anything_is_stored(
    shipped_registry, store, tmp_path, change, fragment
):
    request = {**GOOD, "stored_ids": [], "upload": upload(tmp_path), **change}
    with pytest.raises((ValueError, ModelError), match=fragment):
        check_request(shipped_registry, store, **request)
    assert store.list_transcripts() == []


def test_a_request_with_nothing_to_judge_is_refused(shipped_registry, store):
    with pytest.raises(ValueError, match="pick stored transcripts or upload a file first"):
        check_request(shipped_registry, store, stored_ids=[], upload=None, **GOOD)


def test_upload_labels_given_with_the_request_are_recorded_or_left_to_the_caller(shipped_registry, store, tmp_path):
    """Labels passed with the request reach the importer (one place decides an upload's variant); without
    them the uploads carry no variant mark, so the tab's own labels (default unassigned) still apply."""
    labelled = check_request(
        shipped_registry, store, stored_ids=[], upload=upload(tmp_path), **GOOD,
        upload_therapist="clinic-gpt", upload_variant="prompted", upload_family="llama-3",
    )  # fmt: skip
    (transcript,) = labelled.uploaded
    assert (transcript.therapist_name, transcript.meta["variant"], transcript.meta["family"]) == (
        "clinic-gpt", "prompted", "llama-3",
    )  # fmt: skip
    plain = tmp_path / "plain.txt"
    plain.write_text("Patient: hello\nTherapist: hi", encoding="utf-8")  # built by the importer, no id of its own
    unlabelled = check_request(shipped_registry, store, stored_ids=[], upload=str(plain), **GOOD)
    assert "variant" not in unlabelled.uploaded[0].meta
    (marked,) = import_file(plain)  # the same file through the plain importer: unassigned
    assert marked.meta["variant"] == "unassigned"
    with pytest.raises(ValueError, match="import options: variant"):
        check_request(shipped_registry, store, stored_ids=[], upload=upload(tmp_path), **GOOD, upload_variant="best")
    assert store.list_transcripts() == []
