"""Dropdowns that stay current: model pickers over the registry, and lists read from the store or disk.

Every tab's model dropdown is `model_dropdown(context, label=..., kind=...)`; any other list that changes
while the app runs (stored transcripts, training runs, studies) is `live_dropdown(choices_fn, ...)`. Both
load their choices when a page loads and look again every REFRESH_S seconds, sending the browser an update
only when the choices changed, so a transcript stored by another tab or an adapter a training job just
published appears at once, without a restart. Looks run outside the generation queue (`queue=False`), so
they never wait behind a model. This module never decides what a model is or where adapters live.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
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


def live_dropdown(
    choices_fn: Callable[[], Sequence[Choice]], *, every: float = REFRESH_S, **dropdown: object
) -> gr.Dropdown:
    """A gr.Dropdown whose choices are `choices_fn()` at page load and whenever they change afterwards."""
    initial = list(choices_fn())
    if "value" not in dropdown and not dropdown.get("multiselect"):
        dropdown["value"] = _value_of(initial[0]) if initial else None
    widget = gr.Dropdown(initial, **dropdown)  # type: ignore[arg-type]
    shown = gr.State(initial)  # what this browser's dropdown offers now

    def refresh(previous: list[Choice] | None) -> tuple[object, object]:
        current = list(choices_fn())
        if _same(current, previous):
            return gr.skip(), gr.skip()
        return gr.update(choices=current), current

    timer = gr.Timer(every)
    timer.tick(refresh, [shown], [widget, shown], queue=False, show_progress="hidden", api_name=False)
    on_page_load(refresh, [shown], [widget, shown])
    return widget


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
