"""How many generations a caller is about to run side by side in this process.

A backend that divides the cores among its streams (llama.cpp) sets a stream's threads when the stream starts.
When one caller starts several at once (Compare's panes), the first would otherwise see itself alone and take
every core, and the next would join it on cores already taken: more compute threads than cores, which stall
each other at every barrier. The caller says how many it starts; the backend divides by at least that many.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager

_lock = threading.Lock()
_announced: list[int] = []


@contextmanager
def side_by_side(streams: int) -> Iterator[None]:
    """While inside, generations in this process count at least `streams` as running together."""
    with _lock:
        _announced.append(max(0, streams))
    try:
        yield
    finally:
        with _lock:
            _announced.remove(max(0, streams))


def announced_streams() -> int:
    """The largest number of side-by-side streams any caller has announced and not yet ended (0: none)."""
    with _lock:
        return max(_announced, default=0)
