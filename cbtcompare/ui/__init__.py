"""The Gradio app: one Blocks built from one module per tab, each thin over cbtcompare's core functions.

Adding a tab is one new module exposing `TITLE` and `render(context)` plus one line in TAB_MODULES.
Three things every tab shares are decided here: the admin gate for events that change shared state
(`require_admin`), the upload size limit (`upload_limit_bytes`, `check_upload_size`), and that no error
message reaches a browser before secrets are masked (`redact_event_errors`, applied to every event).
"""

from __future__ import annotations

import functools
import importlib
import inspect
import os
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cache
from importlib import resources
from pathlib import Path

import gradio as gr

from cbtcompare import access
from cbtcompare.limits import DEFAULT_LIMITS, describe_bytes
from cbtcompare.models.registry import Registry
from cbtcompare.redact import redact
from cbtcompare.store import Store

TAB_MODULES = [
    "cbtcompare.ui.compare",
    "cbtcompare.ui.simulate",
    "cbtcompare.ui.judge",
    "cbtcompare.ui.rate",
    "cbtcompare.ui.results",
    "cbtcompare.ui.study",
    "cbtcompare.ui.train",
    "cbtcompare.ui.models",
]
# CBTCOMPARE_MODE=rating serves the Rate tab alone, so raters never see which models exist.
MODE_TABS = {"full": TAB_MODULES, "rating": ["cbtcompare.ui.rate"]}

CSS = """
#crisis-panel { border: 2px solid #b91c1c; border-radius: 8px; padding: 12px; background: #fef2f2; }
#crisis-panel * { color: #7f1d1d !important; }
.research-banner { border-left: 4px solid #b45309; padding: 6px 12px; background: #fffbeb; }
.research-banner * { color: #78350f !important; }
.pane-stats { font-size: 0.85em; opacity: 0.85; }
"""


# How often a page's live lists (model pickers, stored transcripts, runs) look for changes.
REFRESH_S = 5.0


@dataclass
class AppContext:
    """What every tab shares: the model registry and the store. Per-user state lives in gr.State.

    The registry holds the published adapters from the moment the context is built (`from_environment`,
    or `build_app` for a context built elsewhere), whatever tabs render; `sync_adapters` takes in what
    jobs publish later, at most once per REFRESH_S however many pickers ask.
    """

    registry: Registry
    store: Store
    _adapter_stamps: dict[str, int] = field(default_factory=dict, repr=False)
    _adapters_synced_at: float = field(default=float("-inf"), repr=False)
    _sync_lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    @classmethod
    def from_environment(cls) -> AppContext:
        context = cls(registry=Registry.from_files(), store=Store())
        context.sync_adapters(force=True)
        return context

    def sync_adapters(self, *, force: bool = False) -> list[str]:
        """Register adapters published since the last look (training.jobs); returns the names added."""
        from training.jobs import register_published_adapters

        with self._sync_lock:
            now = time.monotonic()
            if not force and now - self._adapters_synced_at < REFRESH_S / 2:
                return []
            self._adapters_synced_at = now
            try:
                return register_published_adapters(self.registry, seen=self._adapter_stamps)
            except OSError:
                return []  # an unreadable runs or adapters folder: the pickers keep what they have


@cache
def ui_copy(name: str) -> str:
    """UI text kept in cbtcompare/ui/copy/<name>.md."""
    return (resources.files(__package__) / "copy" / f"{name}.md").read_text(encoding="utf-8").strip()


def banner() -> gr.Markdown:
    return gr.Markdown(ui_copy("banner"), elem_classes=["research-banner"])


def generation_concurrency() -> int:
    """How many generating requests run at once; contexts are pooled per weights file beyond this."""
    return int(os.environ.get("CBTCOMPARE_CONCURRENCY", "2"))


def app_mode() -> str:
    mode = os.environ.get("CBTCOMPARE_MODE", "full")
    if mode not in MODE_TABS:
        raise ValueError(f"CBTCOMPARE_MODE={mode!r} is not one of {', '.join(MODE_TABS)}")
    return mode


def warm_up_crisis_screening() -> None:
    """Load the crisis classifier in the background so the first person's message is not kept waiting."""
    from cbtcompare.safety import detect_crisis

    threading.Thread(target=detect_crisis, args=("hello",), daemon=True, name="crisis-warm-up").start()


# A rating app has no file inputs at all; Gradio's upload route still exists, so it gets a token limit.
RATING_MODE_UPLOAD_BYTES = 1024


def upload_limit_bytes(mode: str | None = None) -> int:
    """The largest file this app accepts, enforced by Gradio's upload route and again in every handler."""
    return RATING_MODE_UPLOAD_BYTES if (mode or app_mode()) == "rating" else DEFAULT_LIMITS.max_bytes


def check_upload_size(path: str | Path | None, what: str = "the upload") -> None:
    """gr.Error, saying the limit, when an uploaded file is over upload_limit_bytes (before it is read)."""
    if not path:
        return
    limit = upload_limit_bytes()
    try:
        size = Path(path).stat().st_size
    except OSError as exc:
        raise gr.Error(f"{what} is gone ({exc.strerror}); upload it again") from None
    if size > limit:
        raise gr.Error(f"{what} is {describe_bytes(size)}; files are limited to {describe_bytes(limit)} here")


def client_of(request: gr.Request | None) -> str | None:
    """Who sent an event, for counting wrong admin secrets: the connecting address (a proxy in front of
    the app makes every visitor one client; the overall limit still holds)."""
    if request is None:
        return None
    client = getattr(request, "client", None)
    return getattr(client, "host", None) or None


def current_request() -> gr.Request | None:
    """The request of the event being handled (Gradio keeps it in a context variable while a handler runs)."""
    from gradio.context import LocalContext

    return LocalContext.request.get(None)


def require_admin(secret: str | None, request: gr.Request | None = None) -> None:
    """The server-side admin gate for one event: returns for the right secret, else gr.Error saying why.
    Without `request`, the client is the one whose event is being handled."""
    try:
        access.require_admin(secret, client_of(request or current_request()))
    except access.AdminRefused as exc:
        raise gr.Error(str(exc), title="Admin secret needed") from None


def _redacted_error(error: gr.Error) -> gr.Error:
    masked = gr.Error(redact(error.message), duration=error.duration, visible=error.visible,
                      title=redact(error.title), print_exception=error.print_exception)
    return masked


def _redacting(fn: Callable) -> Callable:
    """`fn` with the message of any gr.Error it raises (the only kind shown to a visitor) masked."""
    if inspect.isasyncgenfunction(fn):
        @functools.wraps(fn)
        async def async_gen(*args, **kwargs):  # type: ignore[no-untyped-def]
            try:
                async for item in fn(*args, **kwargs):
                    yield item
            except gr.Error as error:
                raise _redacted_error(error) from error
        return async_gen
    if inspect.isgeneratorfunction(fn):
        @functools.wraps(fn)
        def gen(*args, **kwargs):  # type: ignore[no-untyped-def]
            try:
                yield from fn(*args, **kwargs)
            except gr.Error as error:
                raise _redacted_error(error) from error
        return gen
    if inspect.iscoroutinefunction(fn):
        @functools.wraps(fn)
        async def coroutine(*args, **kwargs):  # type: ignore[no-untyped-def]
            try:
                return await fn(*args, **kwargs)
            except gr.Error as error:
                raise _redacted_error(error) from error
        return coroutine

    @functools.wraps(fn)
    def plain(*args, **kwargs):  # type: ignore[no-untyped-def]
        try:
            return fn(*args, **kwargs)
        except gr.Error as error:
            raise _redacted_error(error) from error
    return plain


def redact_event_errors(app: gr.Blocks) -> None:
    """Wrap every event function of `app` so that no error message reaches a browser unmasked."""
    for block_fn in app.fns.values():
        if block_fn.fn is not None and not getattr(block_fn.fn, "__redacting__", False):
            block_fn.fn = _redacting(block_fn.fn)
            block_fn.fn.__redacting__ = True  # type: ignore[attr-defined]


# Python lets a thread that waits for the GIL take it only every switch interval (5 ms by default). A streamed
# update hops threads many times (Gradio runs each handler step and each component's postprocess in its thread
# pool) while the llama.cpp workers hold the GIL for their Python between tokens, so every hop could wait 5 ms.
STREAMING_SWITCH_INTERVAL_S = 0.0005


def launch(app: gr.Blocks, **launch_kwargs: object) -> None:
    """Serve `app` as app.py does (without blocking): the app's CSS and upload limit, a short GIL switch
    interval for the whole server process, then the crisis classifier loads in the background."""
    sys.setswitchinterval(STREAMING_SWITCH_INTERVAL_S)
    # Gradio checks that its first page answers within 3 s; the classifier's heavy imports wait until after.
    app.launch(css=CSS, max_file_size=upload_limit_bytes(), prevent_thread_lock=True, **launch_kwargs)
    warm_up_crisis_screening()


def build_app(context: AppContext | None = None, *, warm_up: bool = True) -> gr.Blocks:
    """The whole app. `warm_up=False` leaves loading the crisis classifier to the caller (app.py starts it
    after launch, so its imports do not slow the server's first page past Gradio's start-up check)."""
    if context is None:
        context = AppContext.from_environment()
    else:
        context.sync_adapters(force=True)
    if warm_up:
        warm_up_crisis_screening()
    with gr.Blocks(title="CBTCompare") as app:
        gr.Markdown("# CBTCompare\nBase vs CBT-tuned language models, side by side.")
        for module_name in MODE_TABS[app_mode()]:
            module = importlib.import_module(module_name)
            with gr.Tab(module.TITLE):
                banner()
                module.render(context)
    from cbtcompare.ui.pickers import wire_live_lists  # pickers imports this module

    wire_live_lists(app)
    redact_event_errors(app)
    app.queue(default_concurrency_limit=generation_concurrency())
    return app
