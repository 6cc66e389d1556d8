"""Whether local backends keep a conversation's KV prefix between requests: one switch for llama.cpp and hf."""

from __future__ import annotations

import os

PREFIX_REUSE_ENV = "CBTCOMPARE_PREFIX_REUSE"


def prefix_reuse_enabled() -> bool:
    """On unless CBTCOMPARE_PREFIX_REUSE=0 (then every request resets the cache and evaluates its prompt
    anew). It was opt-in while an adapter's effect seemed lost under reuse; it is not lost (the adapter
    changes the logits as much on both paths, see tests/test_prefix_reuse.py)."""
    return os.environ.get(PREFIX_REUSE_ENV, "1") != "0"
