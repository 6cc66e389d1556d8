"""The Gradio app: one Blocks built from one module per tab, each thin over cbtcompare's core functions.

Adding a tab is one new module exposing `TITLE` and `render(context)` plus one line in TAB_MODULES.
"""

from __future__ import annotations

import importlib
import os
import threading
from dataclasses import dataclass
from functools import cache
from importlib import resources

import gradio as gr

from cbtcompare.models.registry import Registry
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


@dataclass
class AppContext:
    """What every tab shares: the model registry and the store. Per-user state lives in gr.State."""

    registry: Registry
    store: Store


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


def build_app(context: AppContext | None = None) -> gr.Blocks:
    context = context or AppContext(registry=Registry.from_files(), store=Store())
    warm_up_crisis_screening()
    with gr.Blocks(title="CBTCompare") as app:
        gr.Markdown("# CBTCompare\nBase vs CBT-tuned language models, side by side.")
        for module_name in MODE_TABS[app_mode()]:
            module = importlib.import_module(module_name)
            with gr.Tab(module.TITLE):
                banner()
                module.render(context)
    app.queue(default_concurrency_limit=generation_concurrency())
    return app
