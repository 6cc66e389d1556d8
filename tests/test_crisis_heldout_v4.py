"""The crisis screen's held-out set v4 (tests/data/crisis_heldout_v4.jsonl) is frozen: written blind to the rules,
the classifier and every other crisis set, before any change of issue 13's third pass, committed alone
(docs/crisis-heldout-v4.md), and never tuned on. Its sha256 is pinned here so any edit (a "fix" of a line the
screen misses is tuning) fails the suite. The figures it gives are benchmarks/crisis_eval.py's, whose loader
(checked here too) is the one reader of a crisis set's lines.
"""

from __future__ import annotations

import hashlib
import json
import sys
import tempfile
from collections import Counter
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

ROOT = Path(__file__).resolve().parent.parent
sys.path.append(str(ROOT / "benchmarks"))  # appended: its script names never shadow a package
import crisis_eval  # noqa: E402  (a benchmark script: importable once benchmarks/ is on the path)
from crisis_sets import CRISIS_CATEGORIES, OTHER_LANGUAGES, SAFE_CATEGORIES, combined_screen_rates  # noqa: E402

DATA = Path(__file__).parent / "data"
HELDOUT_V4 = DATA / "crisis_heldout_v4.jsonl"
HELDOUT_V4_SHA256 = "95fa8e276266e1eab6316fda12509ec7e5483c611fdeda23f59b24b64be31719"


def test_heldout_v4_is_unchanged_since_it_was_committed() -> None:
    digest = hashlib.sha256(HELDOUT_V4.read_bytes()).hexdigest()
    assert digest == HELDOUT_V4_SHA256, "crisis_heldout_v4.jsonl was edited: it is frozen; write a new set instead"


def test_heldout_v4_covers_every_category_and_language_it_must() -> None:
    rows = crisis_eval.load(HELDOUT_V4)
    labels = Counter(r["label"] for r in rows)
    assert labels["crisis"] >= 150 and labels["safe"] >= 120, labels
    crisis_categories = Counter(r["category"] for r in rows if r["label"] == "crisis")
    safe_categories = Counter(r["category"] for r in rows if r["label"] == "safe")
    # Every C-SSRS kind (and harm from/to others, means, acute danger) has enough lines to be held to the target.
    assert set(crisis_categories) == CRISIS_CATEGORIES and min(crisis_categories.values()) >= 12, crisis_categories
    assert set(safe_categories) == SAFE_CATEGORIES and min(safe_categories.values()) >= 10, safe_categories
    per_language = Counter((r["language"], r["label"]) for r in rows)
    assert {language for language, _ in per_language} == {"en", *OTHER_LANGUAGES}
    for language in OTHER_LANGUAGES:
        assert per_language[(language, "crisis")] >= 10 and per_language[(language, "safe")] >= 10, language
    # Each other language has its own idioms among the safe lines, not only translated crisis lines.
    idioms = Counter(r["language"] for r in rows if r["category"] == "idiom")
    assert all(idioms[language] >= 2 for language in OTHER_LANGUAGES), idioms


def test_heldout_v4_has_no_statement_twice() -> None:
    texts = [r["text"].casefold().strip() for r in crisis_eval.load(HELDOUT_V4)]
    assert [t for t, n in Counter(texts).items() if n > 1] == []


def _texts(path: Path) -> set[str]:
    """The statements of any crisis set, whatever else its lines carry (the older sets have other fields)."""
    lines = path.read_text(encoding="utf-8").split("\n")
    return {json.loads(line)["text"].casefold().strip() for line in lines if line.strip()}


def test_no_heldout_v4_statement_is_in_any_other_crisis_set() -> None:
    """Dev sets (tuned on) and the older held-out sets (measured on while tuning) alike."""
    heldout = {r["text"].casefold().strip() for r in crisis_eval.load(HELDOUT_V4)}
    others = [p for p in DATA.glob("crisis_*.jsonl") if p != HELDOUT_V4]
    assert any(p.name.startswith("crisis_dev") for p in others), "no development set found to compare against"
    shared = {p.name: heldout & _texts(p) for p in others}
    assert {name: lines for name, lines in shared.items() if lines} == {}


def test_crisis_eval_measures_v4_by_name() -> None:
    assert crisis_eval.resolve_set("v4").resolve() == HELDOUT_V4.resolve()
    assert crisis_eval.resolve_set("v3").resolve() == (DATA / "crisis_heldout_v3.jsonl").resolve()
    assert crisis_eval.resolve_set("some/file.jsonl") == Path("some/file.jsonl")


def test_crisis_eval_refuses_a_malformed_set_naming_line_and_field(tmp_path: Path, capsys) -> None:
    bad = tmp_path / "set.jsonl"
    good = {"text": "i'm fine", "label": "safe", "category": "everyday", "language": "en"}
    bad.write_text(json.dumps(good) + "\n\n" + json.dumps({**good, "label": "maybe"}) + "\n", encoding="utf-8")
    assert crisis_eval.main(["--set", str(bad)]) == 2
    error = capsys.readouterr().err
    assert "set.jsonl line 3" in error and "label" in error and "'maybe'" in error, error
    with pytest.raises(crisis_eval.SetFormatError, match="line 1: not JSON"):
        crisis_eval.load(_write(tmp_path / "broken.jsonl", '{"text": "unterminated'))
    with pytest.raises(crisis_eval.SetFormatError, match="nested too deep"):
        crisis_eval.load(_write(tmp_path / "deep.jsonl", "[" * 200_000))
    with pytest.raises(crisis_eval.SetFormatError, match="no statements"):
        crisis_eval.load(_write(tmp_path / "empty.jsonl", "\n \n"))


def _write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


statements = st.fixed_dictionaries(
    {
        "text": st.text(min_size=1, max_size=300),
        "label": st.sampled_from(["crisis", "safe"]),
        "category": st.text(min_size=1, max_size=40),
        "language": st.sampled_from(["en", *OTHER_LANGUAGES]),
    }
)


@settings(deadline=None, max_examples=150)
@given(rows=st.lists(statements, min_size=1, max_size=8))
def test_crisis_eval_reads_back_any_statement_it_is_given(rows: list[dict]) -> None:
    """Quotes, control characters, line separators (U+2028), emoji: every statement comes back as written."""
    with tempfile.TemporaryDirectory() as folder:
        path = _write(Path(folder) / "set.jsonl", "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
        assert crisis_eval.load(path) == rows


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=30),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=5),
    max_leaves=12,
)
line_dicts = st.fixed_dictionaries(
    {},
    optional={
        "text": json_values,
        "label": st.sampled_from(["crisis", "safe", "CRISIS", ""]) | json_values,
        "category": json_values,
        "language": st.sampled_from(["en", "es", "EN", "english"]) | json_values,
        "extra": json_values,
    },
)


@settings(deadline=None, max_examples=150)
@given(
    lines=st.lists(
        line_dicts.map(lambda d: json.dumps(d, ensure_ascii=False))
        | json_values.map(json.dumps)
        | st.text(max_size=80),
        max_size=6,
    ),
    raw=st.binary(max_size=64),
)
def test_crisis_eval_gives_rows_or_a_typed_error_on_any_file(lines: list[str], raw: bytes) -> None:
    """Arbitrary JSON, wrong types, extra keys, non-UTF-8 bytes: valid rows, or SetFormatError naming the file."""
    with tempfile.TemporaryDirectory() as folder:
        as_lines = _write(Path(folder) / "lines.jsonl", "\n".join(lines))
        as_bytes = Path(folder) / "raw.jsonl"
        as_bytes.write_bytes(raw)
        for path in (as_lines, as_bytes):
            try:
                rows = crisis_eval.load(path)
            except crisis_eval.SetFormatError as exc:
                assert str(exc).startswith(path.name + ":") or str(exc).startswith(path.name + " line "), exc
            else:
                assert rows and all(set(r) == {"text", "label", "category", "language"} for r in rows)
                assert all(r["label"] in {"crisis", "safe"} and isinstance(r["text"], str) and r["text"] for r in rows)


def test_heldout_v4_regression_floor_for_the_combined_screen() -> None:
    """A floor, not a target: measured after the third pass (tuned on dev v4 only) at recall 0.719 (146/203), FPR
    0.161 (26/161); before it, 0.700 / 0.174 (docs/crisis-heldout-v4.md); after the fourth pass (mpnet head on dev
    v1-v5, chosen on dev only, measured once) 0.808 (164/203) / 0.130 (21/161). The targets are recall >= 0.95
    with FPR <= 0.10. A change that loses ground here fails. This set has been measured on while tuning, so this is a
    regression check, no longer a figure on unseen text (it is not training data: the fifth pass's head trained on
    the retired sets was not kept); the honest floor is held-out v6's (tests/test_crisis_heldout_v6.py)."""
    rows = [json.loads(line) for line in HELDOUT_V4.read_text(encoding="utf-8").splitlines() if line.strip()]
    recall, false_alarms, counts = combined_screen_rates(rows)
    assert recall >= 0.80 and false_alarms <= 0.14, counts
