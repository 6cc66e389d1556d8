"""The backend contract on ChatModel: capability flags read from the classes, availability that never
downloads, seeds resolved once in `stream`, close() that frees llama.cpp weights."""

from __future__ import annotations

import pytest

from cbtcompare.models.base import BackendCapabilities, ChatModel
from cbtcompare.models.registry import BACKENDS, backend_capabilities, backend_class, backends_with


def test_capabilities_say_which_backends_are_endpoints_and_which_can_be_trained():
    assert backends_with("remote") == {"openai", "gemini"}
    assert backends_with("local_weights") == {"llamacpp", "hf"}
    assert backends_with("trainable") == {"llamacpp", "hf"}
    assert backends_with("grammar") == {"llamacpp"}
    assert backends_with("json_schema") == {"llamacpp", "openai", "gemini"}
    assert "gemini" not in backends_with("adapters")


def test_capabilities_come_from_the_class_and_load_nothing(monkeypatch):
    def refuse(*_args, **_kwargs):
        raise AssertionError("a capability question constructed a model")

    for backend in BACKENDS:
        monkeypatch.setattr(backend_class(backend), "__init__", refuse)
    answers = {backend: backend_capabilities(backend) for backend in BACKENDS}
    assert all(isinstance(a, BackendCapabilities) and a.backend == b for b, a in answers.items())
    assert answers["llamacpp"].remote is False and answers["openai"].remote is True


def test_unknown_capability_and_backend_are_named():
    with pytest.raises(ValueError, match="unknown capability 'gpu'.*remote"):
        backends_with("gpu")
    with pytest.raises(Exception, match="unknown backend 'vllm-magic'"):
        backend_capabilities("vllm-magic")


def test_every_backend_declares_unavailable_reason_on_the_contract():
    assert ChatModel.unavailable_reason.__doc__ and "never download" in ChatModel.unavailable_reason.__doc__
    for backend in BACKENDS:
        assert "unavailable_reason" in vars(backend_class(backend)), backend
