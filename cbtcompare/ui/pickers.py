"""Dropdowns that stay current: model pickers over the registry, and lists read from the store or disk.

Every tab's model dropdown is `model_dropdown(context, label=..., kind=...)`; any other list that changes
while the app runs (stored transcripts, training runs, studies) is `live_dropdown(choices_fn, ...)`. Both
load their choices when a page loads and look again every REFRESH_S seconds, sending the browser an update
only when the choices changed, so a transcript stored by another tab or an adapter a training job just
published appears at once, without a restart. A page has ONE timer and one page-load event for all its live
lists (`wire_live_lists`, called by build_app after every tab rendered): one dropdown a timer made the page
send a request per list every few seconds, which stalled the Compare tab's events on a loaded machine. Looks
run outside the generation queue (`queue=False`), so they never wait behind a model. This module never
decides what a model is or where adapters live.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal

import gradio as gr
from gradio.context import Context

from cbtcompare.ui import REFRESH_S, AppContext

Choice = str | tuple[str, str]
ModelKind = Literal["any", "base"]


def model_choices(context: AppContext, kind: ModelKind = "any") -> list[str]:
    """Registry names ("any"), or the local models without an adapter that can serve as a training base."""
    context.sync_adapters()
    if kind == "base":
        from training.jobs import base_model_choices

        return base_model_choices(context.registry)
    return context.registry.names()


@dataclass(frozen=True)
class LiveList:
    choices_fn: Callable[[], Sequence[Choice]]
    widget: gr.Dropdown
    shown: gr.State  # what this browser's dropdown offers now


# Live lists made while a Blocks is being built, by id of that Blocks; wire_live_lists takes them.
_PENDING: dict[int, list[LiveList]] = {}


def live_dropdown(choices_fn: Callable[[], Sequence[Choice]], **dropdown: object) -> gr.Dropdown:
    """A gr.Dropdown whose choices are `choices_fn()` at page load and whenever they change afterwards."""
    initial = list(choices_fn())
    if "value" not in dropdown and not dropdown.get("multiselect"):
        dropdown["value"] = _value_of(initial[0]) if initial else None
    widget = gr.Dropdown(initial, **dropdown)  # type: ignore[arg-type]
    live = LiveList(choices_fn, widget, gr.State(initial))
    root = Context.root_block
    if root is not None:
        _PENDING.setdefault(id(root), []).append(live)
    return widget


def refresh_all(lists: Sequence[LiveList], previous: Sequence[list[Choice] | None]) -> list[object]:
    """Updates for every list whose choices changed (gr.skip() for the rest): widgets first, then states.
    A list whose source fails keeps what it shows."""
    widgets: list[object] = []
    states: list[object] = []
    for live, before in zip(lists, previous, strict=True):
        try:
            current = list(live.choices_fn())
        except Exception:  # noqa: BLE001  an unreadable store or folder must not break every other list
            current = None
        if current is None or _same(current, before):
            widgets.append(gr.skip())
            states.append(gr.skip())
        else:
            widgets.append(gr.update(choices=current))
            states.append(current)
    return [*widgets, *states]


def wire_live_lists(app: gr.Blocks, every: float = REFRESH_S) -> int:
    """One timer and one page-load event refreshing every live list made inside `app`; returns how many."""
    lists = _PENDING.pop(id(app), [])
    if not lists:
        return 0
    states = [live.shown for live in lists]
    outputs = [*(live.widget for live in lists), *states]

    def refresh(*previous: list[Choice] | None) -> list[object]:
        return refresh_all(lists, previous)

    events = {"queue": False, "show_progress": "hidden", "api_name": False}
    with app:
        timer = gr.Timer(every)
        timer.tick(refresh, states, outputs, **events)  # type: ignore[arg-type]
        app.load(refresh, states, outputs, **events)  # type: ignore[arg-type]
    return len(lists)


def model_dropdown(
    context: AppContext, *, label: str, kind: ModelKind = "any", leading: Sequence[str] = (), **dropdown: object
) -> gr.Dropdown:
    """A model picker over the registry (published adapters included) that follows it while the app runs.

    `leading` choices (such as a "(none)" entry) come first; other keywords go to gr.Dropdown.
    """
    return live_dropdown(lambda: [*leading, *model_choices(context, kind)], label=label, **dropdown)


def _value_of(choice: Choice) -> str:
    return choice[1] if isinstance(choice, tuple) else choice


def _same(current: list[Choice], previous: list[Choice] | None) -> bool:
    # gr.State may hand back lists where tuples went in
    return previous is not None and [_flat(c) for c in current] == [_flat(c) for c in previous]


def _flat(choice: Choice | list[str]) -> tuple[str, ...]:
    return tuple(choice) if isinstance(choice, (tuple, list)) else (choice,)


def on_page_load(
    fn: Callable[..., object], inputs: Sequence[gr.components.Component], outputs: Sequence[gr.components.Component]
) -> None:
    """Run `fn` when a browser loads the page (outside the generation queue, without a progress overlay)."""
    if Context.root_block is not None:
        Context.root_block.load(fn, list(inputs), list(outputs), queue=False, show_progress="hidden", api_name=False)
