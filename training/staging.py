"""Folders that appear whole or not at all: build beside the target under a staging name, then rename.

A staging folder is named `.partial-<pid>-<hex>-<name>` after the process that builds it, so a later
start, publish or listing can tell one in progress (its process is alive) from one a killed process left
behind, and remove it. Replacing an existing folder is one atomic exchange of the two (Linux
renameat2 RENAME_EXCHANGE) where the file system allows it; elsewhere the old folder is renamed to
`.replaced-<pid>-<hex>-<name>` first, and a cleanup after a kill between the two renames puts it back.

This module never deletes a folder that is not a staging folder, nor one whose process is still running.
"""

from __future__ import annotations

import ctypes
import errno
import os
import re
import shutil
import uuid
from pathlib import Path

PARTIAL, REPLACED = "partial", "replaced"
_STAGING_NAME = re.compile(r"^\.(partial|replaced)-(?:(\d+)-([0-9a-f]{8})-(.+)|(.+)-[0-9a-f]{8})$")
_RENAME_EXCHANGE = 2
_AT_FDCWD = -100


def staging_dir(parent: Path, name: str, kind: str = PARTIAL) -> Path:
    """A fresh staging path beside `parent / name`, tagged with this process's id."""
    return parent / f".{kind}-{os.getpid()}-{uuid.uuid4().hex[:8]}-{name}"


def process_start_ticks(pid: int) -> int | None:
    """The process's start time in clock ticks (Linux), to tell a live process from a recycled pid."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat[stat.rindex(")") + 2 :].split()
    return int(fields[19]) if len(fields) > 19 else None


def process_alive(pid: int, start_ticks: int | None = None) -> bool:
    """Whether `pid` still runs (and, given `start_ticks`, is the same process, not a recycled pid).

    A zombie leader whose other threads still run counts as alive: they still hold its files and locks.
    """
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True  # no /proc (not Linux): the signal check is all there is
    if stat[stat.rindex(")") + 2 :].startswith("Z"):
        try:
            return len(os.listdir(f"/proc/{pid}/task")) > 1
        except OSError:
            return False
    return start_ticks is None or process_start_ticks(pid) == start_ticks


def _exchange(first: Path, second: Path) -> bool:
    """Swap two paths in one step; False where the platform or file system cannot."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        renameat2 = libc.renameat2
    except (OSError, AttributeError):
        return False
    result = renameat2(_AT_FDCWD, os.fsencode(first), _AT_FDCWD, os.fsencode(second), _RENAME_EXCHANGE)
    if result == 0:
        return True
    code = ctypes.get_errno()
    if code in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP):
        return False
    raise OSError(code, os.strerror(code), str(second))


def move_into_place(staging: Path, target: Path) -> None:
    """Make the complete `staging` folder `target`; an existing target is replaced without a gap."""
    if not target.exists():
        os.rename(staging, target)
        return
    if _exchange(staging, target):
        shutil.rmtree(staging, ignore_errors=True)  # now the old folder
        return
    aside = staging_dir(target.parent, target.name, REPLACED)
    os.rename(target, aside)
    os.rename(staging, target)
    shutil.rmtree(aside, ignore_errors=True)


def _size(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


def clean_partial_outputs(parent: Path) -> list[str]:
    """Remove the staging folders killed processes left in `parent`; restore a replaced folder left without
    its successor. Returns one line per action, for the job log or the CLI."""
    if not parent.is_dir():
        return []
    actions = []
    for entry in sorted(parent.iterdir()):
        match = _STAGING_NAME.match(entry.name)
        if not match or not entry.is_dir():
            continue
        kind, pid, name = match[1], match[2], match[4] or match[5]
        if pid is not None and process_alive(int(pid)):
            continue  # still being built or replaced
        target = parent / name
        if kind == REPLACED and not target.exists():
            os.rename(entry, target)
            actions.append(f"restored {target}: a publish was killed after moving it aside")
            continue
        size = _size(entry)
        shutil.rmtree(entry, ignore_errors=True)
        what = "an unfinished copy" if kind == PARTIAL else "the replaced copy"
        actions.append(f"removed {entry} ({size / 1e6:.1f} MB), {what} of {name} left by a process that was killed")
    return actions
