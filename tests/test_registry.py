"""The registry: shipped specs, user files, availability reasons, one load per spec and per weights file."""

from __future__ import annotations

from pathlib import Path

import pytest

from cbtcompare.models.base import ModelNotFound
from cbtcompare.models.registry import Registry


def write_models(path: Path, body: str) -> Path:
    path.write_text(body)
    return path


def test_shipped_default_models_are_listed_and_the_base_ones_available():
    registry = Registry.from_files()
    assert {"smollm2-instruct", "smollm2-cbt-prompted", "smollm2-cbt"} <= set(registry.names())
    assert registry.availability("smollm2-instruct").available
    assert registry.availability("smollm2-cbt-prompted").available


def test_missing_adapter_is_reported_not_raised(tmp_path):
    models = write_models(
        tmp_path / "models.yaml",
        "models:\n  - {name: future-cbt, backend: llamacpp, weights: 'embedded:smollm2', "
        f"adapter: {tmp_path}/none.gguf}}\n",
    )
    availability = Registry.from_files(models).availability("future-cbt")
    assert not availability.available
    assert "adapter not built yet" in availability.reason


def test_unknown_model_names_the_known_ones():
    with pytest.raises(ModelNotFound, match="smollm2-instruct"):
        Registry.from_files().spec("gpt-9")


def test_bad_models_file_names_the_entry_and_field(tmp_path):
    models = write_models(tmp_path / "m.yaml", "models:\n  - {name: x, backend: llamacpp, weights: a.gguf, top_p: 2}\n")
    # the one config-error formatter (cbtcompare.config_errors): file, entry, field, and the value given
    with pytest.raises(ValueError, match=r"m\.yaml: model x: top_p: extra inputs are not permitted \(got 2\)"):
        Registry.from_files(models)
    models = write_models(tmp_path / "m2.yaml", "models:\n  - {name: y, backend: vllm-magic, weights: a}\n")
    with pytest.raises(ValueError, match=r"m2\.yaml: model y: backend: .*'vllm-magic'"):
        Registry.from_files(models)


def test_env_file_adds_and_replaces_entries(tmp_path, monkeypatch):
    models = write_models(
        tmp_path / "m.yaml",
        "models:\n"
        "  - {name: smollm2-instruct, backend: llamacpp, weights: 'embedded:smollm2', n_ctx: 1024}\n"
        "  - {name: my-endpoint, backend: openai, weights: some-model, base_url: 'http://127.0.0.1:9/v1'}\n",
    )
    monkeypatch.setenv("CBTCOMPARE_MODELS", str(models))
    registry = Registry.from_files()
    assert registry.spec("smollm2-instruct").n_ctx == 1024
    assert registry.spec("my-endpoint").backend == "openai"


def test_each_spec_loads_once_and_shares_weights():
    registry = Registry.from_files()
    first = registry.load("smollm2-instruct")
    assert registry.load("smollm2-instruct") is first
    prompted = registry.load("smollm2-cbt-prompted")
    assert prompted is not first and prompted.shared is first.shared
