"""The CLI contract of the core engine, run as a user would: `python -m cbtcompare ...` in a subprocess."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


def cli(*args: str, stdin: str | None = None, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "cbtcompare", *args],
        cwd=REPO,
        input=stdin,
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, **(env or {})},
    )


def test_models_json_lists_specs_with_availability():
    result = cli("models", "--json")
    assert result.returncode == 0, result.stderr
    rows = {row["name"]: row for row in json.loads(result.stdout)}
    assert rows["smollm2-instruct"]["available"] is True and rows["smollm2-instruct"]["backend"] == "llamacpp"
    assert set(rows["smollm2-cbt"]) >= {"name", "backend", "available", "reason"}


@pytest.mark.slow
def test_pair_replies_from_both_models_reproducibly():
    args = (
        "pair",
        "--models",
        "smollm2-instruct,smollm2-cbt-prompted",
        "--message",
        "I failed my driving test and feel useless.",
        "--seed",
        "7",
        "--max-tokens",
        "24",
        "--json",
    )
    first = cli(*args)
    assert first.returncode == 0, first.stderr
    payload = json.loads(first.stdout)
    assert [r["model"] for r in payload["replies"]] == ["smollm2-instruct", "smollm2-cbt-prompted"]
    assert all(r["text"] and r["error"] is None for r in payload["replies"])
    assert payload["replies"][0]["text"] != payload["replies"][1]["text"], "the CBT system prompt changed nothing"
    assert json.loads(cli(*args).stdout)["replies"] == payload["replies"]


def test_pair_with_an_unknown_model_says_which_exist():
    result = cli("pair", "--models", "smollm2-instruct,nope", "--message", "hi", "--json")
    assert result.returncode == 2
    assert "no model named 'nope'" in result.stderr and "smollm2-instruct" in result.stderr


def test_pair_with_an_unavailable_model_reports_it_in_the_reply(tmp_path):
    models = tmp_path / "models.yaml"
    models.write_text(
        "models:\n  - {name: dead-endpoint, backend: openai, weights: m, base_url: 'http://127.0.0.1:9/v1', "
        "timeout_s: 3, max_retries: 0}\n"
    )
    result = cli(
        "pair",
        "--models",
        "smollm2-instruct,dead-endpoint",
        "--message",
        "hello",
        "--max-tokens",
        "8",
        "--json",
        env={"CBTCOMPARE_MODELS": str(models)},
    )
    assert result.returncode == 1
    replies = json.loads(result.stdout)["replies"]
    assert replies[0]["text"] and replies[0]["error"] is None
    assert replies[1]["text"] is None and "127.0.0.1:9" in replies[1]["error"]


@pytest.mark.slow
def test_chat_answers_in_the_terminal_and_shows_crisis_resources():
    result = cli("chat", "--model", "smollm2-instruct", stdin="Hello there\nI want to kill myself\n/quit\n")
    assert result.returncode == 0, result.stderr
    assert "not therapy" in result.stdout
    assert result.stdout.count("smollm2-instruct>") == 2
    assert result.stdout.count("988") >= 2, "the crisis resources were not shown after the crisis message"
