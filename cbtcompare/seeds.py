"""Seed schedules: a per-turn seed derived only from the run seed and the turn's position.

Derived with sha256 so schedules are stable across Python versions and processes (unlike hash()). This is
the one seed scheme (`SEED_SCHEME`); simulated sessions, batches and studies all take their seeds from here.
"""

from __future__ import annotations

import hashlib

SEED_SCHEME = "derive_seed-v1"
SEED_SCHEDULE = "derive_seed(run_seed, role, session_index, turn_index) (cbtcompare.seeds, sha256-based)"
"""Stored beside every simulated transcript: how its per-turn seeds were made."""


def derive_seed(run_seed: int, *parts: object) -> int:
    """A 31-bit seed that depends only on `run_seed` and `parts` (e.g. role, turn index, attempt)."""
    material = ":".join([str(run_seed), *map(str, parts)]).encode("utf-8")
    return int.from_bytes(hashlib.sha256(material).digest()[:4], "big") & 0x7FFFFFFF


def turn_seed(run_seed: int, role: str, session_index: int, turn_index: int) -> int:
    """The seed of one generated turn of a simulated session (role: therapist, patient or summary)."""
    return derive_seed(run_seed, role, session_index, turn_index)


def replicate_seed(run_seed: int, profile_id: str, replicate: int) -> int:
    """The run seed of one replicate of a profile in a batch: every therapist of it shares the seed."""
    return derive_seed(run_seed, "replicate", profile_id, replicate)
