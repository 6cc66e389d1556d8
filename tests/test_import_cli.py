"""`python -m cbtcompare import` and `export`, run as a user runs them: exact JSONL round trips, CSV a
spreadsheet cannot execute, errors that name the file and line (exit 2), and no password on screen.

The round trip and one error run as real subprocesses; the other cases call the same `cli.main` in
this process, because every CLI start imports all command modules (about 10 s on a loaded machine)."""

from __future__ import annotations

import csv
import io
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from test_store import sample

from cbtcompare import cli as cbt_cli
from cbtcompare.store import Store
from cbtcompare.transcript import Turn

REPO = Path(__file__).resolve().parent.parent


def cli(*args: str, data_dir: Path) -> subprocess.CompletedProcess[bytes]:
    env = {**os.environ, "CBTCOMPARE_DATA_DIR": str(data_dir)}
    env.pop("CBTCOMPARE_DB_URL", None)
    return subprocess.run(
        [sys.executable, "-m", "cbtcompare", *args], cwd=REPO, env=env, capture_output=True, timeout=300
    )


def awkward_transcripts():
    quoted = sample(1)
    quoted.turns.append(Turn(role="patient", text='She said "fine" \\ then left\u2028\u2029\x85 <|im_start|>system'))
    formula = sample(2)
    formula.turns.append(Turn(role="patient", text='=HYPERLINK("http://example.invalid","click")'))
    return [sample(0), quoted, formula]


def test_export_import_export_is_byte_identical(tmp_path):
    source = tmp_path / "source.sqlite"
    store = Store(f"sqlite:///{source}")
    for transcript in awkward_transcripts():
        store.save_transcript(transcript)
    first = cli("export", "--db", f"sqlite:///{source}", "--format", "jsonl", data_dir=tmp_path)
    assert first.returncode == 0, first.stderr.decode()
    assert len(first.stdout.splitlines()) == 3
    exported = tmp_path / "export.jsonl"
    exported.write_bytes(first.stdout)
    fresh = f"sqlite:///{tmp_path / 'fresh.sqlite'}"
    imported = cli("import", "--db", fresh, str(exported), data_dir=tmp_path)
    assert imported.returncode == 0, imported.stderr.decode()
    assert "stored 3 new transcript(s)" in imported.stdout.decode()
    second = cli("export", "--db", fresh, "--format", "jsonl", data_dir=tmp_path)
    assert second.returncode == 0 and second.stdout == first.stdout


def in_process(capsysbinary: pytest.CaptureFixture[bytes], *args: str) -> tuple[int, str, str]:
    code = cbt_cli.main(list(args))
    captured = capsysbinary.readouterr()
    return code, captured.out.decode(), captured.err.decode()


def test_reimporting_an_export_changes_nothing(tmp_path, capsysbinary):
    db = f"sqlite:///{tmp_path / 'db.sqlite'}"
    store = Store(db)
    for transcript in awkward_transcripts():
        store.save_transcript(transcript)
    exported = tmp_path / "export.jsonl"
    assert in_process(capsysbinary, "export", "--db", db, "--format", "jsonl", "--output", str(exported))[0] == 0
    code, out, _ = in_process(capsysbinary, "import", "--db", db, "--json", str(exported))
    summary = json.loads(out)
    assert code == 0 and summary["stored"] == [] and len(summary["unchanged"]) == 3
    code, out, _ = in_process(capsysbinary, "import", "--db", db, str(exported))
    assert code == 0 and "3 already stored with identical content, left unchanged" in out


def test_csv_export_is_one_row_per_turn_and_neutralises_formulas(tmp_path, capsysbinary):
    db = f"sqlite:///{tmp_path / 'db.sqlite'}"
    store = Store(db)
    for transcript in awkward_transcripts():
        store.save_transcript(transcript)
    code, out, err = in_process(capsysbinary, "export", "--db", db, "--format", "csv")
    assert code == 0, err
    rows = list(csv.DictReader(io.StringIO(out)))
    assert len(rows) == sum(len(t.turns) for t in awkward_transcripts())
    texts = [row["text"] for row in rows]
    assert '\'=HYPERLINK("http://example.invalid","click")' in texts
    assert not any(text.startswith(("=", "+", "-", "@")) for text in texts)
    assert any("\u2028" in text for text in texts)  # everything else is kept as it is


def test_a_bad_file_names_file_and_line_exits_2_and_stores_nothing(tmp_path, capsysbinary):
    db = tmp_path / "db.sqlite"
    good = tmp_path / "good.txt"
    good.write_text("Patient: hello\nTherapist: hi", encoding="utf-8")
    bad = tmp_path / "bad.json"
    bad.write_text('[\n  {"role": "user", "content": "hi"},\n  {"role": "bot", "content": "x"}\n]', encoding="utf-8")
    result = cli("import", "--db", f"sqlite:///{db}", str(good), str(bad), data_dir=tmp_path)
    assert result.returncode == 2
    assert result.stderr.decode().strip() == (
        "error: bad.json: line 3: message 2: role 'bot' is not one of user, assistant, patient, therapist "
        "(and system first)"
    )
    assert Store(f"sqlite:///{db}").list_transcripts() == []  # the good file was not stored either
    code, _, err = in_process(capsysbinary, "import", "--db", f"sqlite:///{db}", str(tmp_path / "nope.jsonl"))
    assert code == 2 and "no transcript file at" in err
    deep = tmp_path / "deep.json"
    deep.write_text("[" * 3000 + "]" * 3000, encoding="utf-8")
    code, _, err = in_process(capsysbinary, "import", "--db", f"sqlite:///{db}", str(deep))
    assert code == 2 and err.startswith("error: deep.json: line 1: JSON nested deeper than 64"), err
    huge = tmp_path / "huge.jsonl"
    huge.write_text('{"seed": 99999999999999999999, "turns": [{"role": "patient", "text": "x"}]}', encoding="utf-8")
    code, _, err = in_process(capsysbinary, "import", "--db", f"sqlite:///{db}", str(huge))
    assert code == 2 and err.startswith("error: huge.jsonl: line 1: field 'seed': Input should be less"), err
    assert Store(f"sqlite:///{db}").list_transcripts() == []


def test_the_database_password_is_never_printed(tmp_path, capsysbinary):
    secret = "pa55-w0rd-never-shown"
    url = f"postgresql+psycopg://cbt:{secret}@127.0.0.1:1/cbt?connect_timeout=2"
    good = tmp_path / "good.txt"
    good.write_text("Patient: hello", encoding="utf-8")
    result = cli("import", "--db", url, str(good), data_dir=tmp_path)
    shown = (result.stdout + result.stderr).decode()
    assert result.returncode == 2, shown
    assert secret not in shown and "***@127.0.0.1:1/cbt" in shown and "Traceback" not in shown
    code, out, err = in_process(capsysbinary, "export", "--db", url, "--format", "jsonl")
    assert code == 2 and secret not in out + err and "***@127.0.0.1:1/cbt" in err


def test_import_records_who_produced_an_upload_or_marks_it_unassigned(tmp_path, capsysbinary):
    db = f"sqlite:///{tmp_path / 'db.sqlite'}"
    plain = tmp_path / "plain.txt"
    plain.write_text("Patient: hello\nTherapist: hi", encoding="utf-8")
    code, _, err = in_process(capsysbinary, "import", "--db", db, str(plain))
    assert code == 0, err
    named = tmp_path / "named.txt"
    named.write_text("Patient: hello again\nTherapist: hi there", encoding="utf-8")
    code, _, err = in_process(
        capsysbinary, "import", "--db", db, "--therapist", "Dr Lee", "--variant", "tuned", "--family", "smollm2",
        str(named),
    )  # fmt: skip
    assert code == 0, err
    store = Store(db)
    recorded = {t.therapist_name: (t.meta.get("variant"), t.meta.get("family")) for t in store.iter_transcripts()}
    assert recorded == {"unknown": ("unassigned", None), "Dr Lee": ("tuned", "smollm2")}
    with pytest.raises(SystemExit) as refused:
        cbt_cli.main(["import", "--db", db, "--variant", "champion", str(plain)])
    assert refused.value.code == 2
    assert "invalid choice: 'champion'" in capsysbinary.readouterr().err.decode()
