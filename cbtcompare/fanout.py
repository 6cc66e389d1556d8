"""The one fan-out-and-stop helper: run N tasks on a pool, stop starting new ones on a stop event.

Matched groups, batches and batch judging all go through `fan_out`, so they stop the same way: once the event is set,
no task starts, and the running ones get the same event to check between turns. Outcomes come back in the
order the tasks were given, each with its value, its error, or the fact that it never started.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Generic, TypeVar

T = TypeVar("T")
Task = Callable[[threading.Event], T]


@dataclass
class Outcome(Generic[T]):
    value: T | None = None
    error: Exception | None = None
    started: bool = False


def fan_out(
    tasks: Sequence[Task[T]], workers: int, stop_event: threading.Event | None = None, *, halt_on_error: bool = False
) -> list[Outcome[T]]:
    """Run `tasks` (each handed the stop event) on up to `workers` threads; in order, one at a time, for 1.

    `halt_on_error`: after a task fails, start no further task (running ones finish).
    """
    stop = stop_event or threading.Event()
    halted = threading.Event()
    outcomes: list[Outcome[T]] = [Outcome() for _ in tasks]

    def run(index: int) -> None:
        if stop.is_set() or halted.is_set():
            return
        outcome = outcomes[index]
        outcome.started = True
        try:
            outcome.value = tasks[index](stop)
        except Exception as exc:  # collected for the caller, in order
            outcome.error = exc
            if halt_on_error:
                halted.set()

    if workers <= 1 or len(tasks) <= 1:
        for index in range(len(tasks)):
            run(index)
    else:
        with ThreadPoolExecutor(max_workers=min(workers, len(tasks)), thread_name_prefix="fan-out") as pool:
            list(pool.map(run, range(len(tasks))))
    return outcomes


def values_or_raise(outcomes: Sequence[Outcome[T]]) -> list[T | None]:
    """The values in order (None for a task that never started); the first error is raised."""
    for outcome in outcomes:
        if outcome.error is not None:
            raise outcome.error
    return [outcome.value for outcome in outcomes]
