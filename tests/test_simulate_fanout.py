"""The one fan-out-and-stop helper that matched groups and batches share: order, errors, and stopping."""

from __future__ import annotations

import threading

import pytest

from cbtcompare.fanout import fan_out, values_or_raise


@pytest.mark.parametrize("workers", [1, 3])
def test_outcomes_come_back_in_task_order_with_their_errors(workers):
    def task(i):
        def run(stop):
            if i == 2:
                raise ValueError("task 2 broke")
            return i * 10

        return run

    outcomes = fan_out([task(i) for i in range(5)], workers)
    assert [o.value for o in outcomes] == [0, 10, None, 30, 40]
    assert [str(o.error) if o.error else None for o in outcomes] == [None, None, "task 2 broke", None, None]
    assert all(o.started for o in outcomes)
    with pytest.raises(ValueError, match="task 2 broke"):
        values_or_raise(outcomes)


@pytest.mark.parametrize("workers", [1, 2])
def test_a_stop_starts_no_new_task_and_reaches_the_running_ones(workers):
    stop = threading.Event()
    seen: list[threading.Event] = []

    def task(i):
        def run(event):
            seen.append(event)
            if i == 0 and workers > 1:
                event.wait(30)  # still running when task 1 (on the other thread) stops the fan-out
            if i == 1:
                stop.set()  # as the Stop button does while task 1 runs
            return event.is_set()

        return run

    outcomes = fan_out([task(i) for i in range(6)], workers, stop)
    assert [o.started for o in outcomes] == [True, True, False, False, False, False]
    assert outcomes[1].value is True and all(event is stop for event in seen) and len(seen) == 2
    assert outcomes[0].value is (workers > 1)  # the running task saw the stop
    assert values_or_raise(outcomes)[2:] == [None] * 4


def test_halt_on_error_starts_nothing_after_a_failure():
    def task(i):
        def run(stop):
            if i == 1:
                raise RuntimeError("down")
            return i

        return run

    outcomes = fan_out([task(i) for i in range(4)], 1, halt_on_error=True)
    assert [o.started for o in outcomes] == [True, True, False, False]
    assert outcomes[0].value == 0 and isinstance(outcomes[1].error, RuntimeError)
