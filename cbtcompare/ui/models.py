"""Models tab: what the registry holds and whether each model can run here, and the Connections area that adds
an OpenAI-compatible endpoint, a Gemini model or a GGUF file for this browser session (cbtcompare.connections).

Notes are masked by cbtcompare.redact (a description or failure reason may name an endpoint URL with a key in
it). A key typed here goes to the server once and never comes back: the key box is cleared by the same event,
and nothing this tab sends to a browser holds it. Rendering this tab puts a SessionRegistry over the shared
registry, so every tab's pickers and model loads see the session's connections; they are forgotten (keys
dropped, models closed) when the browser session ends.
"""

from __future__ import annotations

import gradio as gr
from gradio.context import Context
from pydantic import SecretStr, ValidationError

from cbtcompare import access
from cbtcompare.config_errors import format_validation_error
from cbtcompare.connections import (
    ConnectionBook,
    ConnectionRefused,
    ConnectionRequest,
    SessionConnections,
    SessionRegistry,
)
from cbtcompare.models.openai_compat import public_url
from cbtcompare.redact import redact
from cbtcompare.ui import AppContext, current_request, ui_copy

TITLE = "Models"
KIND_CHOICES = [
    ("OpenAI-compatible endpoint", "openai"),
    ("Gemini", "gemini"),
    ("GGUF file or hf: reference", "gguf"),
]
CONNECTION_HEADERS = ["name", "kind", "model", "endpoint", "last test"]
CONNECTIONS_HELP = (
    "Add a model for this browser session only: an OpenAI-compatible endpoint (vLLM, a llama.cpp server, "
    "OpenRouter...), a Gemini model, or a GGUF file (a path on this machine or `hf:owner/repo:file.gguf`). "
    "**Add and test** runs a short completion; once it answers, the model is in every tab's model list. "
    "An API key entered here stays in this session's memory on the server: it is never stored, logged or "
    "shown again, and it is gone when you close this page."
)


def current_session_id() -> str | None:
    request = current_request()
    return getattr(request, "session_hash", None) if request is not None else None


def session_registry(context: AppContext) -> SessionRegistry:
    """The app's SessionRegistry, put over the shared registry the first time (every tab reads
    `context.registry` when an event runs, so they all see the session's connections from then on)."""
    if not isinstance(context.registry, SessionRegistry):
        context.registry = SessionRegistry(context.registry, ConnectionBook(), current_session_id)  # type: ignore[assignment]
    return context.registry  # type: ignore[return-value]


def availability_rows(context: AppContext) -> list[list[str]]:
    rows = []
    for name in context.registry.names():
        row = context.registry.availability(name)
        rows.append([row.name, row.backend, "yes" if row.available else "no", redact(row.reason or row.description)])
    return rows


def connection_rows(mine: SessionConnections | None) -> list[list[str]]:
    rows = []
    for name in mine.names() if mine else []:
        connection = mine.get(name)  # type: ignore[union-attr]
        if connection is None:
            continue
        spec, check = connection.spec, connection.last_check
        tested = "not tested" if check is None else ("ok: " if check.ok else "failed: ") + check.message
        endpoint = public_url(spec.base_url) if spec.base_url else ("Google" if spec.backend == "gemini" else "here")
        rows.append([name, spec.backend, connection.scrub(spec.weights), endpoint, connection.scrub(tested)])
    return rows or [["", "", "", "", "no connections in this session yet"]]


def render(context: AppContext) -> None:
    models = session_registry(context)
    book = models.book
    gr.Markdown(ui_copy("models_intro"))
    table = gr.Dataframe(
        value=availability_rows(context),
        headers=["model", "backend", "available", "notes"],
        interactive=False,
        wrap=True,
        elem_id="models-table",
    )
    refresh = gr.Button("Refresh")

    with gr.Accordion("Connections: add a model for this browser session", open=True, elem_id="connections"):
        gr.Markdown(CONNECTIONS_HELP)
        if access.public_demo():
            gr.Markdown("This is a public demo: local GGUF files cannot be added here (an `hf:` reference can).")
        with gr.Row():
            kind = gr.Radio(KIND_CHOICES, value="openai", label="Kind", elem_id="connection-kind", scale=2)
            name = gr.Textbox(label="Name (shown in every picker)", placeholder="my-vllm", elem_id="connection-name")
        with gr.Row():
            model_id = gr.Textbox(
                label="Model",
                placeholder="the endpoint's model id, gemini-2.0-flash, /models/x.gguf or hf:owner/repo:file.gguf",
                elem_id="connection-model",
            )
            base_url = gr.Textbox(
                label="Base URL (endpoints)", placeholder="http://127.0.0.1:8000/v1", elem_id="connection-url"
            )
            api_key = gr.Textbox(
                label="API key (kept in this session's server memory only)",
                type="password",
                elem_id="connection-key",
            )
        add = gr.Button("Add and test", variant="primary", elem_id="connection-add")
        result = gr.Markdown(elem_id="connection-result")
        mine = gr.Dataframe(
            value=connection_rows(None), headers=CONNECTION_HEADERS, interactive=False, wrap=True,
            elem_id="connections-table",
        )  # fmt: skip
        with gr.Row():
            to_remove = gr.Dropdown([], label="Connection", elem_id="connection-remove-name", scale=3)
            remove = gr.Button("Remove", elem_id="connection-remove", scale=1)
    # Holds this session's id on the server; when Gradio deletes the session's state, its connections go too.
    session_marker = gr.State(None, delete_callback=book.end_session)

    def session_views(session_id: str | None) -> list[object]:
        mine_now = book.peek(session_id)
        names = mine_now.names() if mine_now else []
        return [connection_rows(mine_now), gr.update(choices=names, value=names[-1] if names else None)]

    def on_add(
        kind_value: str, name_value: str, model_value: str, url_value: str, key_value: str, request: gr.Request
    ) -> list[object]:
        session_id = request.session_hash or ""
        try:
            wanted = ConnectionRequest(
                kind=kind_value or "openai",  # type: ignore[arg-type]
                name=name_value or "",
                model=model_value or "",
                base_url=(url_value or "").strip() or None,
                api_key=SecretStr(key_value) if (key_value or "").strip() else None,
            )
            connection, check = book.add(session_id, wanted, models.base)
        except ValidationError as exc:
            text = f"**Not added.** {format_validation_error(exc, 'connection')}"
        except ConnectionRefused as exc:
            text = f"**Not added.** {exc}"
        else:
            state = "answered" if check.ok else "was added, but its test failed"
            text = (
                f"**{connection.spec.name} {state}** ({check.seconds:.1f} s): {check.message}\n\n"
                + ("It is in every tab's model list now, for this browser session." if check.ok else
                   "Fix it and add it again under the same name, or remove it.")
            )  # fmt: skip
        if key_value:
            text = text.replace(key_value.strip(), "***")
        return [redact(text), "", *session_views(session_id), availability_rows(context), session_id]

    def on_remove(chosen: str | None, request: gr.Request) -> list[object]:
        mine_now = book.peek(request.session_hash)
        removed = bool(chosen and mine_now and mine_now.remove(chosen))
        text = f"Removed **{chosen}**." if removed else "Pick a connection to remove."
        return [text, *session_views(request.session_hash), availability_rows(context)]

    def on_load(request: gr.Request) -> list[object]:
        return [availability_rows(context), *session_views(request.session_hash)]

    add.click(
        on_add,
        [kind, name, model_id, base_url, api_key],
        [result, api_key, mine, to_remove, table, session_marker],
        api_name="connections_add",
    )
    remove.click(on_remove, [to_remove], [result, mine, to_remove, table], api_name="connections_remove")
    refresh.click(lambda: availability_rows(context), None, table, api_name="models")
    if Context.root_block is not None:
        Context.root_block.load(on_load, None, [table, mine, to_remove], api_name=False, queue=False)
