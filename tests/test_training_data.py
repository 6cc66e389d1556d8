"""The shipped synthetic CBT dataset meets PROTOCOL.md, and the validator reports bad files by line number."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from cbtcompare.models.base import Message
from cbtcompare.prompts import load_prompt
from cbtcompare.safety import detect_crisis
from training.validate import PHASES, ValidationReport, protocol_problems, validate_file

REPO = Path(__file__).resolve().parent.parent
DATASET = REPO / "training" / "data" / "cbt_synthetic"
SESSIONS = DATASET / "sessions.jsonl"
TOKEN_BUDGET = 1800


@pytest.fixture(scope="module")
def count_tokens(instruct_model):
    """SmolLM2's own chat template through llama.cpp: the same count the validator uses by default."""
    return instruct_model.count_tokens


@pytest.fixture(scope="module")
def shipped_report(count_tokens) -> ValidationReport:
    return validate_file(SESSIONS, count_tokens=count_tokens, protocol=True)


@pytest.fixture(scope="module")
def records() -> list[dict]:
    return [json.loads(line) for line in SESSIONS.read_text(encoding="utf-8").splitlines()]


def _messages(record: dict) -> list[Message]:
    return [Message(m["role"], m["content"]) for m in record["messages"]]


# --- the shipped dataset -------------------------------------------------------------------------------


def test_shipped_dataset_is_valid_with_no_warnings(shipped_report):
    assert shipped_report.ok, shipped_report.format()
    assert shipped_report.warnings == [], shipped_report.format()


def test_shipped_dataset_meets_the_counts(shipped_report, records):
    counts = shipped_report.counts
    assert counts["sessions"] == len(records) >= 40
    assert counts["profiles"] >= 10
    assert set(counts["phases"]) == set(PHASES)
    assert counts["min_therapist_turns_per_session"] >= 20
    for record in records:
        therapist = [m for m in record["messages"] if m["role"] == "assistant"]
        assert len(therapist) >= 20, record["id"]


def test_every_session_fits_the_token_budget(shipped_report):
    assert shipped_report.counts["tokens_max"] <= TOKEN_BUDGET
    assert shipped_report.counts["tokens_min"] > 0


def test_system_prompt_is_the_therapist_cbt_prompt(records):
    expected = load_prompt("therapist_cbt").text
    assert expected == (REPO / "cbtcompare" / "prompts" / "therapist_cbt.txt").read_text(encoding="utf-8").strip()
    for record in records:
        assert record["messages"][0] == {"role": "system", "content": expected}, record["id"]
        assert record["messages"][1]["role"] == "user", record["id"]


def test_patient_brings_the_last_summary_from_session_two(records):
    for record in records:
        opening = record["messages"][1]["content"]
        if record["session_index"] == 1:
            assert "Session " not in opening, record["id"]
        else:
            assert f"Session {record['session_index'] - 1}:" in opening, record["id"]


def test_manifest_and_profiles_describe_the_file(records):
    manifest = json.loads((DATASET / "manifest.json").read_text(encoding="utf-8"))
    assert manifest["sha256"] == hashlib.sha256(SESSIONS.read_bytes()).hexdigest()
    assert manifest["synthetic"] is True
    assert manifest["sessions"] == len(records)
    assert manifest["system_prompt"] == load_prompt("therapist_cbt").version
    assert manifest["phases"] == {name: sum(r["phase"] == name for r in records) for name in PHASES}

    profiles = yaml.safe_load((DATASET / "profiles.yaml").read_text(encoding="utf-8"))["profiles"]
    listed = {(p["id"], index) for p in profiles for index in p["sessions"]}
    shipped = {(r["profile_id"], r["session_index"]) for r in records}
    assert listed == shipped
    assert manifest["profiles"] == len(profiles) == len({r["profile_id"] for r in records})

    readme = (DATASET / "README.md").read_text(encoding="utf-8")
    assert "synthetic" in readme.lower() and "no real patient data" in readme.lower()


def test_safety_sessions_follow_the_crisis_protocol(records):
    profiles = yaml.safe_load((DATASET / "profiles.yaml").read_text(encoding="utf-8"))["profiles"]
    marked = {(p["id"], index) for p in profiles for index in p.get("safety", [])}
    assert len(marked) >= 2
    by_key = {(r["profile_id"], r["session_index"]): r for r in records}
    for key in marked:
        turns = by_key[key]["messages"][1:]
        disclosures = [i for i, m in enumerate(turns) if m["role"] == "user" and detect_crisis(m["content"]).crisis]
        assert disclosures, f"{key}: no disclosure the crisis rules recognise"
        after = " ".join(m["content"] for m in turns[disclosures[0] + 1 :] if m["role"] == "assistant")
        assert "findahelpline.com" in after and "988" in after, key
        assert "concerned" in after and "AI" in after, key  # concern and limits, stated by the therapist
        assert "safe" in after, key  # the therapist checks present safety


def test_no_other_session_holds_an_unanswered_crisis_disclosure(records):
    for record in records:
        assert protocol_problems(_messages(record)) == [], record["id"]


# --- bad files: each problem is reported with its line number ------------------------------------------


def _session(session_id: str = "s1", turns: int = 2, **overrides) -> dict:
    messages = [{"role": "system", "content": "You are a CBT therapist."}]
    for n in range(turns):
        messages.append({"role": "user", "content": f"Patient turn {n} of {session_id}."})
        messages.append(
            {"role": "assistant", "content": f"Therapist turn {n} of {session_id}. What do you make of it?"}
        )
    record = {"id": session_id, "profile_id": "p1", "session_index": 1, "phase": "assessment", "messages": messages}
    record.update(overrides)
    return record


def _write(tmp_path: Path, lines: list[object]) -> Path:
    path = tmp_path / "data.jsonl"
    path.write_text(
        "".join((line if isinstance(line, str) else json.dumps(line)) + "\n" for line in lines), encoding="utf-8"
    )
    return path


def _errors_on(report: ValidationReport, line: int) -> str:
    return " | ".join(message for number, message in report.errors if number == line)


def test_a_small_good_file_is_valid(tmp_path, count_tokens):
    report = validate_file(_write(tmp_path, [_session("a"), _session("b")]), count_tokens=count_tokens)
    assert report.ok and report.warnings == [], report.format()
    assert report.counts["sessions"] == 2
    assert 0 < report.counts["tokens_min"] <= report.counts["tokens_max"] < 200


def test_malformed_json_is_reported_on_its_line(tmp_path, count_tokens):
    path = _write(tmp_path, [_session("a"), '{"id": "b", "messages": [', _session("c")])
    report = validate_file(path, count_tokens=count_tokens)
    assert not report.ok
    assert report.error_lines() == [2]
    assert "not valid JSON" in _errors_on(report, 2)
    assert report.counts["valid_sessions"] == 2


def test_wrong_roles_are_reported(tmp_path, count_tokens):
    bad_role = _session("b")
    bad_role["messages"][2]["role"] = "therapist"
    late_system = _session("c")
    late_system["messages"][3] = {"role": "system", "content": "Be brief."}
    report = validate_file(_write(tmp_path, [_session("a"), bad_role, late_system]), count_tokens=count_tokens)
    assert report.error_lines() == [2, 3]
    assert "role 'therapist'" in _errors_on(report, 2)
    assert "system message may only come first" in _errors_on(report, 3)


def test_broken_alternation_is_reported(tmp_path, count_tokens):
    two_patients = _session("b")
    two_patients["messages"][2] = {"role": "user", "content": "I keep talking."}
    therapist_first = _session("c")
    therapist_first["messages"] = [therapist_first["messages"][0]] + therapist_first["messages"][2:]
    ends_on_patient = _session("d")
    ends_on_patient["messages"].append({"role": "user", "content": "One more thing."})
    path = _write(tmp_path, [_session("a"), two_patients, therapist_first, ends_on_patient])
    report = validate_file(path, count_tokens=count_tokens)
    assert report.error_lines() == [2, 3, 4]
    assert "messages[2]: expected a therapist" in _errors_on(report, 2)
    assert "messages[1]: expected a patient" in _errors_on(report, 3)
    assert "ends on a patient turn" in _errors_on(report, 4)


def test_empty_therapist_turn_is_reported(tmp_path, count_tokens):
    empty = _session("b")
    empty["messages"][4]["content"] = "   "
    report = validate_file(_write(tmp_path, [_session("a"), empty]), count_tokens=count_tokens)
    assert report.error_lines() == [2]
    assert "messages[4] is an empty therapist turn" in _errors_on(report, 2)


def test_over_long_session_is_reported_against_max_tokens(tmp_path, count_tokens):
    long_session = _session("b", turns=12)
    path = _write(tmp_path, [_session("a"), long_session])
    used = count_tokens(_messages(long_session))
    report = validate_file(path, max_tokens=used - 1, count_tokens=count_tokens)
    assert report.error_lines() == [2]
    assert f"session is {used} tokens, over the {used - 1}-token context" in _errors_on(report, 2)
    assert validate_file(path, max_tokens=used, count_tokens=count_tokens).ok


def test_duplicates_are_reported_with_the_first_line(tmp_path, count_tokens):
    repeated_turn = _session("c")
    repeated_turn["messages"][4]["content"] = repeated_turn["messages"][2]["content"]
    same_id = _session("a", turns=3)
    path = _write(tmp_path, [_session("a"), _session("b"), _session("a"), repeated_turn, same_id])
    report = validate_file(path, count_tokens=count_tokens)
    assert report.error_lines() == [3, 3, 4, 5]
    assert "duplicate session: the same messages as line 1" in _errors_on(report, 3)
    assert "duplicate id 'a' (first on line 1)" in _errors_on(report, 3)
    assert "messages[4] repeats messages[2]" in _errors_on(report, 4)
    assert "duplicate id 'a' (first on line 1)" in _errors_on(report, 5)


def test_schema_problems_are_reported(tmp_path, count_tokens):
    lines = [
        _session("a", phase="middle"),
        _session("b", session_index="two"),
        ["not", "an", "object"],
        {"id": "d"},
        _session("e", session_index=25, phase="termination"),
    ]
    report = validate_file(_write(tmp_path, lines), count_tokens=count_tokens)
    assert report.error_lines() == [1, 2, 3, 4, 5]
    assert "session 1 belongs to 'assessment'" in _errors_on(report, 1)
    assert "'session_index' must be a whole number" in _errors_on(report, 2)
    assert "expected a JSON object per line, got list" in _errors_on(report, 3)
    assert "no 'messages' field" in _errors_on(report, 4)
    assert "past the 20-session course" in _errors_on(report, 5)


def test_protocol_warnings_name_what_is_missing(tmp_path, count_tokens):
    disclosure = _session("b")
    disclosure["messages"][3]["content"] = "Some nights I wish I could just go to sleep and never wake up."
    report = validate_file(_write(tmp_path, [_session("a"), disclosure]), count_tokens=count_tokens, protocol=True)
    assert report.ok  # protocol departures are warnings, not errors
    line_two = " | ".join(message for number, message in report.warnings if number == 2)
    assert "no agenda setting" in line_two and "no summary" in line_two and "no homework" in line_two
    assert "messages[3]: the patient discloses suicidal_ideation" in line_two


def test_stage_directions_and_speaker_labels_are_warned(tmp_path, count_tokens):
    acted = _session("a")
    acted["messages"][1]["content"] = "*sighs* I don't know where to start."
    acted["messages"][2]["content"] = "Therapist: What would you like to focus on today?"
    report = validate_file(_write(tmp_path, [acted]), count_tokens=count_tokens)
    assert report.ok
    assert [line for line, _ in report.warnings] == [1, 1]
    messages = " | ".join(message for _, message in report.warnings)
    assert "messages[1] looks like it holds a stage direction" in messages
    assert "messages[2] starts with a speaker label" in messages


def test_missing_file_is_an_error(tmp_path, count_tokens):
    report = validate_file(tmp_path / "nope.jsonl", count_tokens=count_tokens)
    assert report.errors == [(0, f"no such file: {tmp_path / 'nope.jsonl'}")]


# --- the command line ----------------------------------------------------------------------------------


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "training.validate", *args], cwd=REPO, capture_output=True, text=True, timeout=120
    )


@pytest.mark.slow
def test_cli_accepts_the_shipped_dataset():
    done = _cli(str(SESSIONS), "--protocol")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "VALID (0 errors, 0 warnings)" in done.stdout
    assert f"sessions: {len(SESSIONS.read_text(encoding='utf-8').splitlines())}" in done.stdout


@pytest.mark.slow
def test_cli_rejects_a_bad_file_with_line_numbers(tmp_path):
    empty = _session("b")
    empty["messages"][2]["content"] = ""
    path = _write(tmp_path, [_session("a"), empty, "not json"])
    done = _cli(str(path), "--max-tokens", "2048")
    assert done.returncode == 1
    assert "INVALID" in done.stdout
    assert "line 2: error: messages[2] is an empty therapist turn" in done.stdout
    assert "line 3: error: not valid JSON" in done.stdout

    missing = _cli(str(tmp_path / "missing.jsonl"))
    assert missing.returncode == 1
    assert "no such file" in missing.stdout
