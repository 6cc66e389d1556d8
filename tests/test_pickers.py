"""Published adapters reach the registry when the app is built, whatever tabs it renders, and later publishes
reach it while the app runs; the model pickers offer what the registry holds.

Before the fix the registry took in published adapters only inside the Train tab's render (after Compare,
Simulate and Judge had built their pickers, and never in rating mode), and only from the default adapters/
folder, so an adapter a job published elsewhere was never offered anywhere.
"""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import pytest

from cbtcompare.models.registry import Registry
from cbtcompare.paths import ADAPTERS_DIR
from cbtcompare.store import Store
from cbtcompare.ui import AppContext
from training.config import TrainConfig
from training.staging import move_into_place, staging_dir
from training.train_lora import CONFIG_NAME, MANIFEST_NAME, new_run_id

SHIPPED_ADAPTER = ADAPTERS_DIR / "smollm2-135m-cbt"


def job_run(runs_dir: Path, adapters_dir: Path, name: str) -> Path:
    """A run folder as start_job writes it: its config says where the job publishes."""
    run_dir = runs_dir / new_run_id(name)
    run_dir.mkdir(parents=True)
    config = TrainConfig(name=name, adapters_dir=str(adapters_dir), runs_dir=str(runs_dir))
    (run_dir / CONFIG_NAME).write_text(config.to_yaml(), encoding="utf-8")
    return run_dir


def publish_adapter(adapters_dir: Path, name: str, *, steps: int = 101) -> Path:
    """Publish the shipped adapter's files under `name` the way a job does: staged beside, then one rename."""
    adapters_dir.mkdir(parents=True, exist_ok=True)
    staging = staging_dir(adapters_dir, name)
    shutil.copytree(SHIPPED_ADAPTER, staging)
    manifest = json.loads((staging / MANIFEST_NAME).read_text(encoding="utf-8"))
    manifest.update(name=name, steps=steps)
    (staging / MANIFEST_NAME).write_text(json.dumps(manifest), encoding="utf-8")
    target = adapters_dir / name
    move_into_place(staging, target)
    return target


@pytest.fixture
def data(tmp_path, monkeypatch) -> Path:
    monkeypatch.setenv("CBTCOMPARE_DATA_DIR", str(tmp_path / "data"))
    (tmp_path / "data").mkdir()
    return tmp_path / "data"


def new_context(data: Path) -> AppContext:
    return AppContext(registry=Registry.from_files(), store=Store(f"sqlite:///{data / 'cbtcompare.sqlite'}"))


def test_an_adapter_a_job_published_is_registered_when_a_rating_app_is_built(data, monkeypatch):
    from cbtcompare.ui import build_app

    adapters = data / "job-adapters"
    job_run(data / "runs", adapters, "picked-cbt")
    publish_adapter(adapters, "picked-cbt")
    monkeypatch.setenv("CBTCOMPARE_MODE", "rating")  # no Train tab is rendered at all
    context = new_context(data)
    build_app(context, warm_up=False)
    spec = context.registry.spec("picked-cbt")
    assert spec.adapter == str(adapters / "picked-cbt" / "adapter.gguf")
    assert spec.backend == "llamacpp"


def test_later_publishes_and_republishes_reach_the_registry_and_the_pickers(data):
    from cbtcompare.ui.pickers import model_choices

    adapters = data / "job-adapters"
    context = AppContext.from_environment()
    before = model_choices(context)
    assert "late-cbt" not in before

    job_run(data / "runs", adapters, "late-cbt")
    publish_adapter(adapters, "late-cbt", steps=7)
    assert context.sync_adapters(force=True) == ["late-cbt"]
    assert model_choices(context) == [*before, "late-cbt"]
    assert "7 steps" in context.registry.spec("late-cbt").description
    assert "late-cbt" not in model_choices(context, "base")  # an adapter is no training base

    assert context.sync_adapters(force=True) == []  # nothing new: nothing replaced
    time.sleep(0.01)  # a distinct manifest mtime on coarse clocks
    publish_adapter(adapters, "late-cbt", steps=9)  # a job with overwrite replaced it
    assert context.sync_adapters(force=True) == ["late-cbt"]
    assert "9 steps" in context.registry.spec("late-cbt").description


def test_a_broken_manifest_is_skipped_and_the_rest_still_registered(data):
    adapters = data / "job-adapters"
    job_run(data / "runs", adapters, "good-cbt")
    publish_adapter(adapters, "good-cbt")
    (adapters / "not-ours").mkdir()
    (adapters / "not-ours" / MANIFEST_NAME).write_text('{"name": "not-ours", "base_model": ', encoding="utf-8")
    context = AppContext.from_environment()
    assert "good-cbt" in context.registry.names()
    assert "not-ours" not in context.registry.names()


def test_a_page_refreshes_all_its_live_lists_with_one_timer():
    # One timer per dropdown made each open page send a request per list every few seconds, which stalled
    # the Compare tab's events on a loaded machine; a page now has one timer and one load event for them all.
    import gradio as gr

    from cbtcompare.ui import build_app

    app = build_app(AppContext.from_environment(), warm_up=False)
    refreshes = [fn for fn in app.fns.values() if fn.name == "refresh"]
    assert len(refreshes) == 2  # the timer's tick and the page load
    outputs = {block._id for block in refreshes[0].outputs}
    dropdowns = [b for b in app.blocks.values() if isinstance(b, gr.Dropdown) and b.elem_id in {
        "compare-model-0", "compare-model-1", "compare-model-2"}]
    assert len(dropdowns) == 3 and {d._id for d in dropdowns} <= outputs
