"""Transcript importers: every format a user can bring, errors with line numbers, nothing half-imported."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from cbtcompare.importers import detect_format, import_file, import_files, parse_transcripts
from cbtcompare.limits import ImportLimits
from cbtcompare.store import ImportFailed, TranscriptConflict
from cbtcompare.transcript import Transcript

DATA = Path(__file__).parent / "data"


def write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


# Plain text --------------------------------------------------------------------------------------


def test_plain_text_in_the_papers_format_with_multi_line_turns():
    (transcript,) = import_file(DATA / "ctrs_session_short.txt")
    assert [t.role for t in transcript.turns] == ["therapist", "patient"] * 3
    assert transcript.turns[1].text == (
        "I've been feeling really down since I lost my job.\nI can't get out of bed in the morning."
    )
    assert transcript.kind == "import"
    assert transcript.meta["source"] == "ctrs_session_short.txt"
    assert transcript.meta["format"] == "text"


def test_plain_text_labels_are_case_insensitive_and_may_be_bold(tmp_path):
    path = write(tmp_path, "s.txt", "**Therapist:** Hi there.\nPATIENT: hello\n\nclient: more\nCounselor: ok")
    (transcript,) = import_file(path)
    assert [(t.role, t.text) for t in transcript.turns] == [
        ("therapist", "Hi there."),
        ("patient", "hello"),
        ("patient", "more"),
        ("therapist", "ok"),
    ]


@pytest.mark.parametrize(
    ("text", "line", "fragment"),
    [
        ("Session 3 notes\nPatient: hi\nTherapist: hello", 1, "speaker label"),
        ("\n\nsome words\nPatient: hi", 3, "speaker label"),
        ("Patient: hi\nTherapist:   \n\nPatient: still here", 2, "therapist turn is empty"),
        ("", 1, "no turns"),
    ],
)
def test_plain_text_errors_name_the_line(text, line, fragment):
    with pytest.raises(ImportFailed) as caught:
        parse_transcripts(text, source="notes.txt", fmt="text")
    message = str(caught.value)
    assert message.startswith(f"notes.txt: line {line}: "), message
    assert fragment in message


# JSON ---------------------------------------------------------------------------------------------


def test_json_messages_map_user_to_patient_and_keep_the_system_prompt():
    (transcript,) = import_file(DATA / "ctrs_session_messages.json")
    assert transcript.system_prompt == "You are a CBT therapist (synthetic test data)."
    assert [t.role for t in transcript.turns] == ["therapist", "patient", "therapist", "patient"]
    assert transcript.turns[3].text == "That she thinks I'm a failure."


def test_json_messages_object_and_transcript_objects(tmp_path):
    wrapped = write(tmp_path, "w.json", json.dumps({"messages": [{"role": "patient", "content": "hi"}]}))
    assert import_file(wrapped)[0].turns[0].role == "patient"
    ours = write(
        tmp_path,
        "t.json",
        json.dumps({"id": "abc", "therapist": {"name": "x"}, "turns": [{"role": "therapist", "text": "Hello"}]}),
    )
    (transcript,) = import_file(ours)
    assert transcript.id == "abc" and transcript.therapist_name == "x"
    many = write(tmp_path, "m.json", json.dumps([{"turns": [{"role": "patient", "text": str(i)}]} for i in range(3)]))
    assert [t.turns[0].text for t in import_file(many)] == ["0", "1", "2"]


def test_json_errors_name_the_line_of_the_bad_message(tmp_path):
    text = (
        "[\n"
        '  {"role": "user", "content": "hi"},\n'
        '  {"role": "assistant", "content": "hello"},\n'
        "  {\n"
        '    "role": "bot",\n'
        '    "content": "x"\n'
        "  }\n"
        "]\n"
    )
    with pytest.raises(ImportFailed, match=r"^bad\.json: line 4: message 3: role 'bot' is not one of"):
        import_file(write(tmp_path, "bad.json", text))


@pytest.mark.parametrize(
    ("text", "line", "fragment"),
    [
        ('[\n  {"role": "user", "content": "hi"},\n  {"role": "user" "content": "x"}\n]', 3, "not valid JSON"),
        ('[\n  {"role": "user", "content": "hi"},\n  {"role": "system", "content": "late"}\n]', 3, "only come first"),
        ('[\n  {"role": "user", "content": ""}\n]', 2, "content is empty"),
        ('[\n  {"role": "user", "content": 5}\n]', 2, "content must be a string"),
        (
            '{"turns": [\n  {"role": "patient", "text": "a"},\n  {"role": "doctor", "text": "b"}\n]}',
            3,
            "field 'turns.1.role'",
        ),
        ('{"turns": [], "kind": "import"}', 1, "no turns"),
        ('{"turns": [{"role": "patient", "text": "a"}],\n "colour": "blue"}', 1, "field 'colour'"),
        ("42", 1, "expected a list of messages"),
    ],
)
def test_json_errors(text, line, fragment):
    with pytest.raises(ImportFailed) as caught:
        parse_transcripts(text, source="x.json", fmt="json")
    message = str(caught.value)
    assert message.startswith(f"x.json: line {line}: "), message
    assert fragment in message


# JSONL --------------------------------------------------------------------------------------------


def test_jsonl_one_transcript_per_line():
    transcripts = import_file(DATA / "ctrs_sessions.jsonl")
    assert [t.id for t in transcripts] == ["synthetic-a", "synthetic-b"]
    assert transcripts[0].meta["variant"] == "base"
    # Records with their own id are kept exactly as given: no provenance is mixed into them.
    lines = (DATA / "ctrs_sessions.jsonl").read_text(encoding="utf-8").splitlines()
    given = [Transcript.model_validate_json(line).model_dump(mode="json") for line in lines if line.strip()]
    assert [t.model_dump(mode="json", exclude={"created_at"}) for t in transcripts] == [
        {k: v for k, v in record.items() if k != "created_at"} for record in given
    ]
    built = parse_transcripts('{"turns": [{"role": "patient", "text": "a"}]}\n' * 2, source="x.jsonl", fmt="jsonl")
    assert [t.meta["source_index"] for t in built] == [0, 1] and built[0].meta["source"] == "x.jsonl"


def test_separator_characters_are_text_not_line_breaks(tmp_path):
    """U+2028/U+2029/U+0085 are legal inside JSON strings; splitting lines on them broke JSONL records,
    and in plain text they let a forged label start a turn."""
    odd = "one\u2028Therapist: forged\u2029two\x85three"
    record = json.dumps({"id": "sep", "turns": [{"role": "patient", "text": odd}]}, ensure_ascii=False)
    (transcript,) = import_file(write(tmp_path, "sep.jsonl", record + "\n"))
    assert transcript.turns[0].text == odd
    (plain,) = import_file(write(tmp_path, "sep.txt", f"Patient: {odd}\nTherapist: ok"))
    assert [(t.role, t.text) for t in plain.turns] == [("patient", odd), ("therapist", "ok")]


def test_jsonl_one_message_per_line_is_one_transcript():
    (transcript,) = import_file(DATA / "ctrs_messages.jsonl")
    assert [t.role for t in transcript.turns] == ["therapist", "patient", "therapist"]


@pytest.mark.parametrize(
    ("lines", "line", "fragment"),
    [
        (['{"role": "patient", "content": "a"}', "", '{"role": "therapist", "content": "b"', ""], 3, "not valid JSON"),
        (['{"role": "patient", "content": "a"}', '{"turns": [{"role": "patient", "text": "x"}]}'], 2, "a transcript"),
        (['{"role": "patient", "content": "a"}', '{"role": "robot", "content": "b"}'], 2, "role 'robot'"),
        (['{"turns": [{"role": "patient", "text": "x"}]}', '{"turns": [{"role": "nurse", "text": "y"}]}'], 2, "0.role"),
        (['{"turns": [{"role": "patient", "text": "x"}]}', '{"messages": []}'], 2, "non-empty list"),
        (['{"turns": [{"role": "patient", "text": "x"}]}', "[1, 2]"], 2, "expected a transcript"),
    ],
)
def test_jsonl_errors_name_the_file_line(lines, line, fragment):
    with pytest.raises(ImportFailed) as caught:
        parse_transcripts("\n".join(lines), source="x.jsonl", fmt="jsonl")
    message = str(caught.value)
    assert message.startswith(f"x.jsonl: line {line}: "), message
    assert fragment in message


def test_format_is_sniffed_when_the_extension_says_nothing(tmp_path):
    assert detect_format(Path("a.dat"), "Patient: hi") == "text"
    assert detect_format(Path("a.dat"), '[{"role": "user", "content": "x"}]') == "json"
    assert detect_format(Path("a.dat"), '{"role": "user", "content": "x"}\n{"role": "assistant", "content": "y"}') == (
        "jsonl"
    )
    assert detect_format(Path("a.dat"), '{\n "turns": []\n}') == "json"
    path = write(tmp_path, "session.log", '{"role": "user", "content": "x"}\n{"role": "assistant", "content": "y"}\n')
    assert len(import_file(path)[0].turns) == 2


# Store: all or nothing ------------------------------------------------------------------------------


def test_nothing_is_half_imported(tmp_path, store):
    good = DATA / "ctrs_sessions.jsonl"
    bad = write(tmp_path, "bad.jsonl", good.read_text() + '{"turns": [{"role": "patient"}]}\n')
    with pytest.raises(ImportFailed, match=r"^bad\.jsonl: line 3: field 'turns\.0\.text'"):
        import_file(bad, store)
    assert store.list_transcripts() == []
    imported = import_file(good, store)
    assert sorted(s.id for s in store.list_transcripts()) == sorted(t.id for t in imported)
    assert store.get_transcript("synthetic-b").turns[0].text == "Let's set an agenda. What matters most today?"


def test_import_can_name_the_therapist_and_add_meta(tmp_path, store):
    (transcript,) = import_file(DATA / "ctrs_session_short.txt", store, therapist="paper-llama", meta={"session": 3})
    stored = store.get_transcript(transcript.id)
    assert stored.therapist_name == "paper-llama"
    assert stored.meta["session"] == 3 and stored.meta["format"] == "text"


def test_missing_and_non_utf8_files(tmp_path):
    with pytest.raises(FileNotFoundError):
        import_file(tmp_path / "nope.txt")
    path = tmp_path / "latin1.txt"
    path.write_bytes("Patient: caf\xe9".encode("latin-1"))
    with pytest.raises(ImportFailed, match="not UTF-8"):
        import_file(path)


# Never overwrite ------------------------------------------------------------------------------------


def test_reimporting_identical_content_is_a_no_op_and_different_content_is_refused(tmp_path, store):
    good = DATA / "ctrs_sessions.jsonl"
    first = import_files([good], store)
    assert first.saved is not None and first.saved.stored == ["synthetic-a", "synthetic-b"]
    again = import_files([good], store)
    assert (
        again.saved is not None and again.saved.stored == [] and again.saved.unchanged == ["synthetic-a", "synthetic-b"]
    )
    before = store.get_transcript("synthetic-b")
    lines = good.read_text(encoding="utf-8").splitlines()
    edited = json.loads(lines[1])
    edited["turns"][0]["text"] = "Replaced text."
    new = {"turns": [{"role": "patient", "text": "a new one"}]}
    changed = write(tmp_path, "changed.jsonl", json.dumps(new) + "\n" + json.dumps(edited) + "\n")
    with pytest.raises(
        TranscriptConflict, match=r"^changed\.jsonl: line 2: transcript 'synthetic-b' is already stored"
    ):
        import_file(changed, store)
    assert store.get_transcript("synthetic-b") == before
    assert len(store.list_transcripts()) == 2  # the new transcript in the same file was not stored either


# Limits ---------------------------------------------------------------------------------------------


def test_a_file_over_the_byte_limit_is_refused_before_it_is_read(tmp_path):
    path = write(tmp_path, "big.txt", "Patient: " + "x" * 2048)
    with pytest.raises(ImportFailed, match=r"^big\.txt: the file is 2\.0 KiB, over the import limit of 1 KiB"):
        import_file(path, limits=ImportLimits(max_bytes=1024))
    with pytest.raises(ImportFailed, match="over the import limit of 1 KiB"):
        parse_transcripts("Patient: " + "x" * 2048, limits=ImportLimits(max_bytes=1024))


@pytest.mark.parametrize("fmt", ["text", "json", "jsonl"])
def test_turn_count_and_turn_length_limits_name_the_limit_and_the_line(fmt):
    limits = ImportLimits(max_turns=3, max_turn_chars=10)
    many = [("patient" if i % 2 == 0 else "therapist", f"turn {i}") for i in range(4)]
    long = [("patient", "hi"), ("therapist", "y" * 11)]

    def render(turns):
        if fmt == "text":
            return "\n".join(f"{role.title()}: {text}" for role, text in turns)
        if fmt == "json":
            return "[\n" + ",\n".join(json.dumps({"role": r, "content": t}) for r, t in turns) + "\n]"
        return json.dumps({"turns": [{"role": r, "text": t} for r, t in turns]})

    with pytest.raises(ImportFailed, match="more than 3 turns") as caught:
        parse_transcripts(render(many), source="s", fmt=fmt, limits=limits)
    assert str(caught.value).startswith(f"s: line {dict(text=4, json=5, jsonl=1)[fmt]}: "), str(caught.value)
    with pytest.raises(ImportFailed, match="11 characters; the most one turn may hold is 10") as caught:
        parse_transcripts(render(long), source="s", fmt=fmt, limits=limits)
    assert str(caught.value).startswith(f"s: line {dict(text=2, json=3, jsonl=1)[fmt]}: "), str(caught.value)


def test_transcript_count_limit():
    record = '{"turns": [{"role": "patient", "text": "a"}]}'
    with pytest.raises(ImportFailed, match=r"^x\.jsonl: line 3: the file holds more than 2 transcripts"):
        parse_transcripts(
            "\n".join([record] * 3), source="x.jsonl", fmt="jsonl", limits=ImportLimits(max_transcripts=2)
        )
    with pytest.raises(ImportFailed, match="more than 2 transcripts"):
        parse_transcripts(f"[{record},{record},{record}]", fmt="json", limits=ImportLimits(max_transcripts=2))


# Tracebacks that became messages ----------------------------------------------------------------------


@pytest.mark.parametrize("fmt", ["json", "jsonl"])
def test_deep_json_is_refused_with_the_limit_not_a_recursion_error(fmt):
    deep = '{"turns": [{"role": "patient", "text": "a"}], "meta": {"x": ' + "[" * 3000 + "]" * 3000 + "}}"
    with pytest.raises(ImportFailed, match="line 1: JSON nested deeper than 64 levels"):
        parse_transcripts(deep, source="d", fmt=fmt)
    with pytest.raises(ImportFailed, match="line 2: JSON nested deeper"):
        parse_transcripts("[\n" + "[" * 100 + "]" * 100 + "]", source="d", fmt="json")


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        (
            '{"seed": 18446744073709551616, "turns": [{"role": "patient", "text": "a"}]}',
            "field 'seed': Input should be less",
        ),
        ('{"turns": [{"role": "patient", "text": "a", "tokens": -9223372036854775809}]}', "field 'turns.0.tokens'"),
        ('{"turns": [{"role": "patient", "text": "a"}], "meta": {"n": ' + "9" * 5000 + "}}", "4,300 digits or more"),
        ('{"turns": [{"role": "patient", "text": "a"}],\n "meta": {"n": NaN}}', "line 2: NaN is not a JSON number"),
        ('{"turns": [{"role": "patient", "text": "a"}], "meta": {"n": 1e999}}', "1e999 is out of range"),
        ('{"turns": [{"role": "patient", "text": "a\\u0000b"}]}', "contains a NUL character"),
        ('{"turns": [{"role": "patient", "text": "a\\ud800b"}]}', "unpaired surrogate (U+D800)"),
    ],
)
def test_numbers_and_characters_no_database_stores_are_typed_errors(tmp_path, text, fragment, store):
    with pytest.raises(ImportFailed, match=re.escape(fragment)):
        import_file(write(tmp_path, "n.json", text), store)
    assert store.list_transcripts() == []


# Who produced an import (issue 14: uploads became therapist "unknown", variant "base") ------------


def test_an_import_naming_no_producer_is_unassigned_not_base(tmp_path):
    """Results read an upload with no therapist as a base model; now it is `unassigned`, which the
    tuned-vs-base analyses leave out."""
    from cbtcompare.ctrs.results import transcript_columns
    from cbtcompare.provenance import of_record

    (transcript,) = import_file(write(tmp_path, "s.txt", "Patient: hello\nTherapist: hi"))
    assert transcript.meta["variant"] == "unassigned" and "family" not in transcript.meta
    assert transcript_columns(transcript)["variant"] == "unassigned"
    assert of_record(transcript.therapist, transcript.meta)[0] == "unassigned"


def test_the_importer_takes_therapist_variant_and_family_or_reads_them_beside_the_messages(tmp_path):
    (given,) = import_file(
        write(tmp_path, "s.txt", "Patient: hello\nTherapist: hi"), therapist="Dr Lee", variant="tuned", family="smollm2"
    )
    assert (given.therapist_name, given.meta["variant"], given.meta["family"]) == ("Dr Lee", "tuned", "smollm2")
    wrapped = {"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}],
               "therapist": "qwen-cbt", "variant": "prompted", "family": "qwen2.5"}  # fmt: skip
    (read,) = import_file(write(tmp_path, "w.json", json.dumps(wrapped)), variant="base")
    assert (read.therapist_name, read.meta["variant"], read.meta["family"]) == ("qwen-cbt", "prompted", "qwen2.5")
    with pytest.raises(ImportFailed, match=r"w\.json: line 1: variant 'champion' is not one of base, tuned"):
        import_file(write(tmp_path, "w.json", json.dumps({**wrapped, "variant": "champion"})))
    with pytest.raises(ImportFailed, match=r"import options: variant: input should be 'base', 'tuned'"):
        import_file(write(tmp_path, "s.txt", "Patient: hello\nTherapist: hi"), variant="champion")


def test_a_transcript_with_its_own_id_keeps_what_it_records(tmp_path):
    """An exported transcript is stored exactly as given: no `unassigned` mark is added to it, and
    options fill only what it does not record."""
    exported = Transcript(
        therapist={"name": "m", "variant": "tuned"}, meta={"family": "smollm2"},
        turns=[{"role": "patient", "text": "hi"}],
    )  # fmt: skip
    path = write(tmp_path, "t.jsonl", exported.to_json_line() + "\n")
    (same,) = import_file(path)
    assert same == exported
    (filled,) = import_file(path, variant="base", family="other")
    assert filled.meta == {"family": "smollm2"}  # the therapist record's variant and the meta's family win
