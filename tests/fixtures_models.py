"""Fixtures for the real embedded default model and a throwaway store."""

from __future__ import annotations

from pathlib import Path

import pytest

from cbtcompare.models.defaults import default_gguf_path
from cbtcompare.store import Store


@pytest.fixture(scope="session")
def default_gguf() -> Path:
    return default_gguf_path()


@pytest.fixture
def store(tmp_path: Path) -> Store:
    return Store(f"sqlite:///{tmp_path / 'test.sqlite'}")


@pytest.fixture(scope="session")
def registry():
    from cbtcompare.models.registry import Registry

    return Registry.from_files()


@pytest.fixture(scope="session")
def instruct_model(registry):
    """The real SmolLM2-135M-Instruct through llama.cpp (loaded once per test session)."""
    return registry.load("smollm2-instruct")
