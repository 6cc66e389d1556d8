"""Models tab: what the registry holds and whether each model can run here (notes masked by cbtcompare.redact:
a model's description or failure reason may name an endpoint URL with a key in it)."""

from __future__ import annotations

import gradio as gr

from cbtcompare.redact import redact
from cbtcompare.ui import AppContext, ui_copy

TITLE = "Models"


def availability_rows(context: AppContext) -> list[list[str]]:
    rows = []
    for name in context.registry.names():
        row = context.registry.availability(name)
        rows.append([row.name, row.backend, "yes" if row.available else "no", redact(row.reason or row.description)])
    return rows


def render(context: AppContext) -> None:
    gr.Markdown(ui_copy("models_intro"))
    table = gr.Dataframe(
        value=availability_rows(context),
        headers=["model", "backend", "available", "notes"],
        interactive=False,
        wrap=True,
    )
    refresh = gr.Button("Refresh")
    refresh.click(lambda: availability_rows(context), None, table, api_name="models")
