"""Property tests over the importers (plain text, JSON, JSONL): on input nobody wrote by hand, every
import ends in valid Transcripts that the store keeps exactly, or in ImportFailed with a message naming
the source and line; never another exception, and a failed import leaves the store byte-for-byte as it was."""

from __future__ import annotations

import io
import json
import re
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cbtcompare.importers import import_file
from cbtcompare.limits import ImportLimits
from cbtcompare.store import ImportFailed, Store
from cbtcompare.transcript import Transcript, Turn

SETTINGS = settings(deadline=None, max_examples=60, suppress_health_check=[HealthCheck.function_scoped_fixture])
SMALL_LIMITS = ImportLimits(max_bytes=256 * 1024, max_turns=40, max_turn_chars=2_000, max_transcripts=20)

SPECIAL = [
    '"',
    "\\",
    "'",
    "\u2028",
    "\u2029",
    "\x85",
    "\x00",
    "\r",
    "\n",
    "\t",
    "\x0b",
    "\x1e",
    "\ufeff",
    "<|im_start|>",
    "<|im_end|>",
    "<｜User｜>",
    "<｜Assistant｜>",
    "[INST]",
    "</s>",
    "Therapist:",
    "Patient:",
    "**Client:**",
    "{",
    "}",
    "[",
    "]",
    "NaN",
    "Infinity",
    "\\u0000",
    "\\ud800",
]
tricky_text = st.lists(st.one_of(st.text(max_size=12), st.sampled_from(SPECIAL)), max_size=12).map("".join)
huge_int = st.one_of(st.integers(), st.integers(min_value=2**63 - 2, max_value=2**70), st.just(-(2**64)))
json_scalar = st.one_of(
    st.none(), st.booleans(), huge_int, st.floats(allow_nan=False, allow_infinity=False), tricky_text
)
json_value = st.recursive(
    json_scalar,
    lambda inner: st.one_of(st.lists(inner, max_size=4), st.dictionaries(tricky_text, inner, max_size=4)),
    max_leaves=20,
)
role = st.sampled_from(["patient", "therapist", "user", "assistant", "system", "client", "robot", 7, None])


@st.composite
def message_lists(draw) -> list:
    return draw(
        st.lists(st.fixed_dictionaries({"role": role, "content": st.one_of(tricky_text, json_value)}), max_size=8)
    )


@st.composite
def transcript_records(draw) -> dict:
    record: dict = {
        "turns": draw(
            st.lists(
                st.fixed_dictionaries(
                    {"role": role, "text": tricky_text},
                    optional={"tokens": huge_int, "seed": huge_int, "flags": st.dictionaries(tricky_text, json_value)},
                ),
                max_size=6,
            )
        )
    }
    if draw(st.booleans()):
        record["id"] = draw(st.one_of(st.text(min_size=1, max_size=70), st.just("fixed-id")))
    for key, strategy in (("seed", huge_int), ("meta", st.dictionaries(tricky_text, json_value, max_size=3))):
        if draw(st.booleans()):
            record[key] = draw(strategy)
    return record


def deep(depth: int, opener: str) -> str:
    if opener == "[":
        return "[" * depth + "1" + "]" * depth
    return '{"x": ' * depth + "1" + "}" * depth


@pytest.fixture
def seeded_store(tmp_path: Path) -> Store:
    store = Store(f"sqlite:///{tmp_path / 'props.sqlite'}")
    store.save_transcript(Transcript(id="fixed-id", turns=[Turn(role="patient", text="stored before the tests")]))
    return store


def snapshot(store: Store) -> str:
    out = io.StringIO()
    store.export_jsonl(out)
    return out.getvalue()


def check_import(store: Store, tmp_path: Path, name: str, text: str) -> None:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    before = snapshot(store)
    try:
        transcripts = import_file(path, store, limits=SMALL_LIMITS)
    except ImportFailed as exc:
        assert re.match(rf"^{re.escape(name)}: ", str(exc)), str(exc)
        assert snapshot(store) == before  # nothing half-written
        return
    assert transcripts
    for transcript in transcripts:
        assert isinstance(transcript, Transcript) and transcript.turns
        assert len(transcript.turns) <= SMALL_LIMITS.max_turns
        assert all(len(turn.text) <= SMALL_LIMITS.max_turn_chars for turn in transcript.turns)
        assert store.get_transcript(transcript.id) == transcript  # stored exactly as imported
        json.loads(transcript.to_json_line())  # valid JSON: no NaN, no lone surrogate


@SETTINGS
@given(lines=st.lists(st.one_of(tricky_text, st.builds("{}: {}".format, st.sampled_from(SPECIAL[19:22]), tricky_text))))
def test_plain_text_property(seeded_store, tmp_path, lines):
    check_import(seeded_store, tmp_path, "s.txt", "\n".join(lines))


@SETTINGS
@given(
    document=st.one_of(
        message_lists(),
        st.builds(lambda m: {"messages": m}, message_lists()),
        transcript_records(),
        st.lists(transcript_records(), max_size=3),
        json_value,
    ),
    indent=st.sampled_from([None, 1]),
    ascii_only=st.booleans(),
)
def test_json_property(seeded_store, tmp_path, document, indent, ascii_only):
    check_import(seeded_store, tmp_path, "s.json", json.dumps(document, indent=indent, ensure_ascii=ascii_only))


@SETTINGS
@given(
    records=st.lists(
        st.one_of(transcript_records(), st.builds(lambda m: {"messages": m}, message_lists()), json_value), max_size=4
    ),
    messages=message_lists(),
    per_message=st.booleans(),
)
def test_jsonl_property(seeded_store, tmp_path, records, messages, per_message):
    rows = messages if per_message else records
    check_import(seeded_store, tmp_path, "s.jsonl", "\n".join(json.dumps(r, ensure_ascii=False) for r in rows))


@SETTINGS
@given(text=st.lists(st.sampled_from(list('[]{}",:\\ 0123456789aeflnrstu\n') + SPECIAL), max_size=300).map("".join))
def test_json_shaped_garbage(seeded_store, tmp_path, text):
    check_import(seeded_store, tmp_path, "g.json", text)
    check_import(seeded_store, tmp_path, "g.jsonl", text)


@settings(deadline=None, max_examples=25, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(depth=st.integers(min_value=1, max_value=20_000), opener=st.sampled_from(["[", "{"]))
def test_any_nesting_depth_is_a_result_or_a_message(seeded_store, tmp_path, depth, opener):
    check_import(seeded_store, tmp_path, "deep.json", deep(depth, opener))
    check_import(seeded_store, tmp_path, "deep.jsonl", deep(depth, opener))


@settings(deadline=None, max_examples=10, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(size=st.integers(min_value=1, max_value=600_000), fmt=st.sampled_from(["txt", "json", "jsonl"]))
def test_very_long_input_is_refused_by_its_limit(seeded_store, tmp_path, size, fmt):
    text = {"txt": "Patient: " + "x" * size, "json": json.dumps([{"role": "user", "content": "x" * size}])}.get(
        fmt, json.dumps({"turns": [{"role": "patient", "text": "x" * size}]})
    )
    check_import(seeded_store, tmp_path, f"long.{fmt}", text)
