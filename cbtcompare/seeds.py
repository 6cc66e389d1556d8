"""Seed schedules: a per-turn seed derived only from the run seed and the turn's position.

Derived with sha256 so schedules are stable across Python versions and processes (unlike hash()).
"""

from __future__ import annotations

import hashlib


def derive_seed(run_seed: int, *parts: object) -> int:
    """A 31-bit seed that depends only on `run_seed` and `parts` (e.g. role, turn index, attempt)."""
    material = ":".join([str(run_seed), *map(str, parts)]).encode("utf-8")
    return int.from_bytes(hashlib.sha256(material).digest()[:4], "big") & 0x7FFFFFFF
