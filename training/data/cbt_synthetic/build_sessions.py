"""Build the shipped synthetic CBT dataset (sessions.jsonl + manifest.json) from its hand-written sources.

Each file in sources/ holds the sessions written for one synthetic profile of profiles.yaml, as plain
`P:` (patient) and `T:` (therapist) lines under `=== session N` headers. This script adds the CBT
therapist system prompt, the phase, the id, and the summary the patient brings from the session before,
then validates the result and writes it. Run it from the repository root:

    python training/data/cbt_synthetic/build_sessions.py

The output is deterministic (no timestamps, no randomness). It never reads or writes real patient data.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import yaml

HERE = Path(__file__).resolve().parent
REPO_ROOT = HERE.parents[2]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

from cbtcompare.models.base import Message  # noqa: E402
from cbtcompare.prompts import load_prompt  # noqa: E402
from training.validate import PHASES, model_token_counter, validate_file  # noqa: E402

SOURCES = HERE / "sources"
PROFILES = HERE / "profiles.yaml"
OUTPUT = HERE / "sessions.jsonl"
MANIFEST = HERE / "manifest.json"
SYSTEM_PROMPT = "therapist_cbt"
TOKEN_BUDGET = 1800  # with the system prompt, so each session fits SmolLM2's 2048-token context
MIN_THERAPIST_TURNS = 20
SUMMARY_SLOT = "{summary}"
HEADER = re.compile(r"^=== session (\d+)\s*$")


@dataclass
class SourceSession:
    profile_id: str
    index: int
    line: int
    summary: str = ""
    previous_summary: str = ""
    turns: list[tuple[str, str]] = field(default_factory=list)


def phase_of(index: int) -> str:
    for name, span in PHASES.items():
        if index in span:
            return name
    raise ValueError(f"session {index} is outside the 20-session course")


def parse_source(path: Path) -> list[SourceSession]:
    sessions: list[SourceSession] = []
    profile_id = path.stem
    for number, raw in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        header = HEADER.match(line)
        if header:
            sessions.append(SourceSession(profile_id, int(header.group(1)), number))
            continue
        if not sessions:
            raise ValueError(f"{path}:{number}: text before the first '=== session N' header")
        key, sep, value = line.partition(":")
        if not sep:
            raise ValueError(f"{path}:{number}: expected 'P:', 'T:', 'summary:' or 'previous_summary:'")
        value = value.strip()
        current = sessions[-1]
        if key == "P":
            current.turns.append(("user", value))
        elif key == "T":
            current.turns.append(("assistant", value))
        elif key == "summary":
            current.summary = value
        elif key == "previous_summary":
            current.previous_summary = value
        else:
            raise ValueError(f"{path}:{number}: unknown key {key!r}")
    return sessions


def compose(session: SourceSession, by_index: dict[int, SourceSession], system_prompt: str) -> dict:
    where = f"{session.profile_id} session {session.index}"
    if session.index + 1 in by_index and not session.summary:
        raise ValueError(f"{where}: no 'summary:' (the summary the patient takes to session {session.index + 1})")
    turns = list(session.turns)
    if not turns or turns[0][0] != "user":
        raise ValueError(f"{where}: the first turn must be the patient's")
    first = turns[0][1]
    if session.index == 1:
        if SUMMARY_SLOT in first:
            raise ValueError(f"{where}: session 1 has no previous summary to bring")
    else:
        before = by_index.get(session.index - 1)
        carried = before.summary if before else session.previous_summary
        if before and session.previous_summary:
            raise ValueError(f"{where}: session {session.index - 1} is shipped; drop 'previous_summary:'")
        if not carried:
            raise ValueError(f"{where}: needs 'previous_summary:' (session {session.index - 1} is not shipped)")
        if first.count(SUMMARY_SLOT) != 1:
            raise ValueError(f"{where}: the patient's first turn must bring the last summary via {SUMMARY_SLOT}")
        turns[0] = ("user", first.replace(SUMMARY_SLOT, carried))
    return {
        "id": f"{session.profile_id}-s{session.index:02d}",
        "profile_id": session.profile_id,
        "session_index": session.index,
        "phase": phase_of(session.index),
        "messages": [{"role": "system", "content": system_prompt}]
        + [{"role": role, "content": text} for role, text in turns],
    }


def build() -> dict:
    profiles = yaml.safe_load(PROFILES.read_text(encoding="utf-8"))["profiles"]
    known = {p["id"]: p for p in profiles}
    prompt = load_prompt(SYSTEM_PROMPT)
    records: list[dict] = []
    for path in sorted(SOURCES.glob("*.txt")):
        if path.stem not in known:
            raise ValueError(f"{path}: no profile {path.stem!r} in {PROFILES.name}")
        sessions = parse_source(path)
        by_index = {s.index: s for s in sessions}
        if len(by_index) != len(sessions):
            raise ValueError(f"{path}: a session number appears twice")
        listed = sorted(known[path.stem].get("sessions", []))
        if listed != sorted(by_index):
            raise ValueError(f"{path}: sessions {sorted(by_index)} but profiles.yaml lists {listed}")
        records.extend(compose(s, by_index, prompt.text) for s in sorted(sessions, key=lambda s: s.index))

    text = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records)
    # Validate a draft outside the repository; the shipped file is replaced only when the draft is valid.
    draft = Path(tempfile.gettempdir()) / f"cbt_synthetic-{os.getpid()}.sessions.jsonl"
    draft.write_text(text, encoding="utf-8")
    lengths: list[int] = []  # in file order; every session is counted once its structure is valid
    count = model_token_counter()

    def count_and_keep(messages: Sequence[Message]) -> int:
        lengths.append(count(messages))
        return lengths[-1]

    report = validate_file(draft, max_tokens=2048, count_tokens=count_and_keep, protocol=True)
    problems = []
    if report.ok:
        for record, used in zip(records, lengths, strict=True):
            therapist = sum(m["role"] == "assistant" for m in record["messages"])
            print(f"{record['id']:32} {therapist:3} therapist turns {used:5} tokens", file=sys.stderr)
            if used > TOKEN_BUDGET:
                problems.append(f"{record['id']}: {used} tokens, over the {TOKEN_BUDGET}-token budget")
            if therapist < MIN_THERAPIST_TURNS:
                problems.append(f"{record['id']}: {therapist} therapist turns, under {MIN_THERAPIST_TURNS}")
    if not report.ok or report.warnings or problems:
        print(report.format(), file=sys.stderr)
        print("\n".join(problems), file=sys.stderr)
        raise SystemExit(f"the dataset does not meet PROTOCOL.md; see {draft} (the shipped file is unchanged)")
    staged = OUTPUT.with_name(OUTPUT.name + ".tmp")
    staged.write_text(text, encoding="utf-8")
    staged.replace(OUTPUT)
    draft.unlink()

    phases = {name: sum(r["phase"] == name for r in records) for name in PHASES}
    manifest = {
        "name": "cbt_synthetic",
        "synthetic": True,
        "description": "Hand-written synthetic CBT-for-depression sessions; no real patient data.",
        "file": OUTPUT.name,
        "sha256": hashlib.sha256(text.encode("utf-8")).hexdigest(),
        "format": "messages JSONL, one session per line (see training/data/PROTOCOL.md)",
        "system_prompt": prompt.version,
        "sessions": len(records),
        "profiles": len({r["profile_id"] for r in records}),
        "phases": phases,
        "therapist_turns": report.counts["therapist_turns"],
        "patient_turns": report.counts["patient_turns"],
        "min_therapist_turns_per_session": report.counts["min_therapist_turns_per_session"],
        "tokens": {
            "tokenizer": "smollm2-instruct chat template (training.validate)",
            "min": report.counts["tokens_min"],
            "mean": report.counts["tokens_mean"],
            "max": report.counts["tokens_max"],
            "budget": TOKEN_BUDGET,
        },
        "built_by": "training/data/cbt_synthetic/build_sessions.py",
    }
    MANIFEST.write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
    return manifest


if __name__ == "__main__":
    print(json.dumps(build(), indent=2))
