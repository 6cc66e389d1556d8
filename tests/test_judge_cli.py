"""`python -m cbtcompare judge` as a user runs it: the parsed turns in --json, a non-zero exit when nothing
was scored, and nothing stored when a judge cannot load.

The judges are real registry entries: an OpenAI-compatible endpoint on a port nothing listens on, and a
llama.cpp spec whose adapter file does not exist. Each run is a real subprocess.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from cbtcompare.importers import import_file
from cbtcompare.paths import REPO_ROOT
from cbtcompare.store import Store

DATA = Path(__file__).parent / "data"


@pytest.fixture
def models_file(tmp_path: Path) -> Path:
    path = tmp_path / "models.yaml"
    path.write_text(
        "models:\n"
        "  - {name: dead-endpoint, backend: openai, weights: m, base_url: 'http://127.0.0.1:9/v1', max_retries: 0,"
        " timeout_s: 3}\n"
        "  - {name: missing-adapter, backend: llamacpp, weights: 'embedded:smollm2',"
        f" adapter: '{tmp_path}/no-such-adapter.gguf'}}\n"
    )
    return path


def judge(models_file: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "cbtcompare", "judge", "--rubric", "classic", *args],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, "CBTCOMPARE_MODELS": str(models_file)},
    )


def test_every_item_unscored_because_the_endpoint_is_down_exits_non_zero_and_says_why(models_file):
    source = DATA / "ctrs_session_short.txt"
    done = judge(models_file, "--judge", "dead-endpoint", "--transcript", str(source), "--retries", "0", "--json")
    assert done.returncode == 1, (done.returncode, done.stderr[-1500:])
    assert "error: no item was scored: " in done.stderr
    assert "dead-endpoint" in done.stderr and "127.0.0.1:9" in done.stderr  # which judge, and where it failed
    summary = json.loads(done.stdout)
    assert summary["scored_items"] == 0 and all(i["status"] == "unscored" for i in summary["items"].values())
    # The output carries the turns as parsed, so a reader can check what each citation points at.
    (parsed,) = import_file(source)
    assert summary["turns"] == [{"role": t.role, "text": t.text} for t in parsed.turns]
    assert summary["turns"][1]["text"].count("\n") == 1  # the patient's two-line turn, as one turn


def test_a_judge_that_cannot_load_stores_nothing(models_file, tmp_path):
    db = f"sqlite:///{tmp_path / 'judge.sqlite'}"
    source = DATA / "ctrs_sessions.jsonl"
    done = judge(
        models_file, "--judge", "missing-adapter", "--transcript", str(source), "--index", "0", "--store", db, "--json"
    )
    assert done.returncode == 2 and "no-such-adapter.gguf does not exist" in done.stderr
    assert Store(db).list_transcripts() == []  # the transcript was not stored ahead of a judge that never ran


@pytest.mark.slow
def test_judge_padding_bias_re_judges_stored_sessions_padded_and_stores_nothing(tmp_path, capsys):
    from cbtcompare import cli
    from cbtcompare.store import Store
    from cbtcompare.transcript import Transcript, Turn

    url = f"sqlite:///{tmp_path / 'bias.sqlite'}"
    store = Store(url)
    turns = [
        Turn(role="therapist", text="What would you like to work on today?"),
        Turn(role="patient", text="I keep thinking I failed my exam."),
        Turn(role="therapist", text="This week, write down the thought and the evidence for it."),
    ]
    stored_id = store.save_transcript(Transcript(kind="simulation", turns=turns))
    bias_csv = tmp_path / "padding.csv"
    code = cli.main(
        ["judge", "--padding-bias", "--rubric", "paper", "--judge", "smollm2-instruct", "--store", url,
         "--limit", "1", "--padding-exchanges", "1", "--retries", "0", "--max-evidence", "0",
         "--justification-chars", "20", "--max-tokens", "420", "--detail", "brief", "--bias-out", str(bias_csv),
         "--json"]
    )  # fmt: skip
    assert code == 0
    out = json.loads(capsys.readouterr().out)
    (row,) = out["per_transcript"]
    assert row["transcript_id"] == stored_id and row["padded_turns"] == row["original_turns"] + 2
    (judge,) = out["length_bias_by_padding"]
    assert judge["judge"] == "smollm2-instruct" and judge["n"] == (1 if row["items_compared"] else 0)
    assert pd.read_csv(bias_csv)["judge"].tolist() == ["smollm2-instruct"]
    assert [t.id for t in Store(url).list_transcripts()] == [stored_id]  # the padded copy is never stored
    assert Store(url).list_scores() == []
