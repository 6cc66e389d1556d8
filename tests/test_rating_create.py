"""Creating a study from an uploaded pairs file: validated whole first, then written in one transaction.

A refused study must leave nothing behind (no transcripts, no study rows), and hostile pairs files (deep
nesting, NaN, huge numbers, arbitrary text) end in a typed error whose message says what to fix.
Real SQLite stores and the real CLI.
"""

from __future__ import annotations

import io
import json

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import func, select
from test_rating import canary_pair, pairs_jsonl

from cbtcompare import rating
from cbtcompare.cli import main
from cbtcompare.store import ImportFailed, Store, rating_pairs, rating_studies, transcripts


@pytest.fixture
def store(tmp_path) -> Store:
    return Store(f"sqlite:///{tmp_path / 'create.sqlite'}")


def counts(store: Store) -> tuple[int, int, int]:
    with store.read() as conn:
        return tuple(
            conn.execute(select(func.count()).select_from(table)).scalar_one()
            for table in (transcripts, rating_studies, rating_pairs)
        )


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (["--rubric", "none"], "item scores need a rubric"),
        (["--no-preference", "--no-items"], "must ask for a preference, item scores, or both"),
    ],
)
def test_a_refused_study_leaves_no_transcripts_behind(store, tmp_path, monkeypatch, capsys, options, message):
    pairs_file = tmp_path / "pairs.jsonl"
    pairs_file.write_text(pairs_jsonl([canary_pair("refused")]))
    monkeypatch.setenv("CBTCOMPARE_DB_URL", store.url)
    assert main(["rating", "create", "--pairs", str(pairs_file), "--raters", "2", *options]) == 2
    assert message in capsys.readouterr().err
    assert counts(store) == (0, 0, 0)
    # The same file with valid options makes the study, its transcripts stored with it.
    assert main(["rating", "create", "--pairs", str(pairs_file), "--raters", "2", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["pairs"] == 1
    assert counts(store) == (2, 1, 1)


def test_a_failure_while_writing_the_study_rolls_back_its_transcripts(store):
    resolved = rating.uploaded_pairs(io.StringIO(pairs_jsonl([canary_pair("rollback")])), "upload:test")
    assert counts(store) == (0, 0, 0) and len(resolved.uploaded) == 2
    spec = rating.StudySpec(raters=1)
    rating.create_study(store, resolved.pairs, spec, source=resolved.description, uploaded=resolved.uploaded)
    # Uploading the same transcripts again with different content: refused, and nothing new is written.
    first, second = canary_pair("rollback")
    changed = first.model_copy(update={"id": resolved.uploaded[0].id, "system_prompt": "changed"})
    again = rating.uploaded_pairs(io.StringIO(pairs_jsonl([(changed, second)])), "upload:again")
    before = counts(store)
    with pytest.raises(ImportFailed, match="already stored with different content"):
        rating.create_study(store, again.pairs, spec, source=again.description, uploaded=again.uploaded)
    assert counts(store) == before


def nested(depth: int) -> object:
    value: object = 0
    for _ in range(depth):
        value = [value]
    return value


def test_three_thousand_deep_json_in_a_pairs_upload_is_a_typed_error(store):
    first, second = (t.model_dump(mode="json") for t in canary_pair("deep"))
    first["meta"]["deep"] = "PLACEHOLDER"
    line = json.dumps([first, second]).replace('"PLACEHOLDER"', "[" * 3000 + "]" * 3000)
    with pytest.raises(ImportFailed, match="line 1: JSON nested deeper than"):
        rating.uploaded_pairs(io.StringIO(line + "\n"), "upload:deep")
    with pytest.raises(ImportFailed, match="line 2: JSON nested deeper than"):
        rating.uploaded_pairs(io.StringIO("\n" + "[" * 3000 + "]" * 3000 + "\n"), "upload:deep")
    assert counts(store) == (0, 0, 0)


hostile_line = st.one_of(
    st.text(max_size=200),
    st.recursive(
        st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
        lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3),
        max_leaves=15,
    ).map(json.dumps),
    st.integers(min_value=1, max_value=5000).map(lambda n: "[" * n + "]" * n),
    st.just(json.dumps([{"turns": [{"role": "therapist", "text": "x" * 10}], "seed": 2**70}, {"turns": []}])),
)


@settings(deadline=None, max_examples=80, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(hostile_line, min_size=1, max_size=4).map("\n".join))
def test_any_pairs_upload_is_a_study_or_a_typed_error_never_a_crash_or_a_half_write(store, upload):
    before = counts(store)
    try:
        resolved = rating.uploaded_pairs(io.StringIO(upload), "upload:hypothesis")
        rating.create_study(
            store, resolved.pairs, rating.StudySpec(raters=1), source=resolved.description, uploaded=resolved.uploaded
        )
    except ImportFailed as exc:
        assert str(exc)
        assert counts(store) == before
