"""streams.side_by_side: what a caller announces is counted while it runs, and forgotten however it ends."""

from __future__ import annotations

import threading

import pytest

from cbtcompare.models.streams import announced_streams, side_by_side


def test_nothing_announced_counts_zero_and_the_largest_live_announcement_counts():
    assert announced_streams() == 0
    with side_by_side(2):
        assert announced_streams() == 2
        with side_by_side(3):
            assert announced_streams() == 3
        assert announced_streams() == 2
    assert announced_streams() == 0


def test_an_announcement_ends_with_its_block_even_when_it_raises():
    with pytest.raises(RuntimeError), side_by_side(4):
        raise RuntimeError("a pane failed")
    assert announced_streams() == 0


def test_announcements_from_many_threads_all_end():
    barrier = threading.Barrier(8)
    seen: list[int] = []

    def announce(n: int) -> None:
        with side_by_side(n):
            barrier.wait()
            seen.append(announced_streams())
            barrier.wait()

    threads = [threading.Thread(target=announce, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert seen == [7] * 8
    assert announced_streams() == 0
