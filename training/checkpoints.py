"""A run's checkpoints: which are complete, the last complete one, and setting incomplete ones aside.

The trainer writes `checkpoints/checkpoint-N/` file by file and its `trainer_state.json` last, so a process
killed while saving leaves a folder without that file, or with a torn one. Such a folder cannot be resumed
from (transformers: "Can't find a valid checkpoint"), and while it is the newest it would be picked every
time. A resume therefore moves it, untouched, to `incomplete-checkpoints/` in the run folder (the job log
says so) and continues from the last complete checkpoint.

This module never deletes a checkpoint, and reading (status, listing) never moves one.
"""

from __future__ import annotations

import json
import os
import re
import time
from pathlib import Path

from pydantic import BaseModel, ConfigDict

CHECKPOINTS_DIR = "checkpoints"
SET_ASIDE_DIR = "incomplete-checkpoints"
TRAINER_STATE = "trainer_state.json"
WEIGHT_FILES = ("adapter_model.safetensors", "adapter_model.bin", "model.safetensors", "pytorch_model.bin")
_CHECKPOINT_NAME = re.compile(r"^checkpoint-(\d+)$")


class CheckpointState(BaseModel):
    """The part of a checkpoint's trainer_state.json a resume needs."""

    model_config = ConfigDict(extra="ignore")

    global_step: int
    max_steps: int


def checkpoint_folders(run_dir: Path) -> list[tuple[int, Path]]:
    """Every `checkpoint-N` folder of a run, by step."""
    folder = run_dir / CHECKPOINTS_DIR
    if not folder.is_dir():
        return []
    found = []
    for path in folder.iterdir():
        match = _CHECKPOINT_NAME.match(path.name)
        if match and path.is_dir():
            found.append((int(match[1]), path))
    return sorted(found)


def checkpoint_state(checkpoint: Path) -> CheckpointState | None:
    """The checkpoint's saved trainer state when the checkpoint is complete, else None."""
    if not any((checkpoint / name).is_file() and (checkpoint / name).stat().st_size for name in WEIGHT_FILES):
        return None
    try:
        state = CheckpointState.model_validate(json.loads((checkpoint / TRAINER_STATE).read_text(encoding="utf-8")))
    except (OSError, ValueError, RecursionError):
        return None
    match = _CHECKPOINT_NAME.match(checkpoint.name)
    return state if match and int(match[1]) == state.global_step else None


def last_complete_checkpoint(run_dir: Path) -> Path | None:
    for _step, path in reversed(checkpoint_folders(run_dir)):
        if checkpoint_state(path) is not None:
            return path
    return None


def set_aside_incomplete(run_dir: Path) -> list[tuple[Path, Path]]:
    """Move every incomplete checkpoint to incomplete-checkpoints/; returns (from, to) for the job log."""
    moved = []
    for _step, path in checkpoint_folders(run_dir):
        if checkpoint_state(path) is not None:
            continue
        destination = run_dir / SET_ASIDE_DIR / f"{path.name}-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}"
        destination.parent.mkdir(exist_ok=True)
        os.rename(path, destination)
        moved.append((path, destination))
    return moved
