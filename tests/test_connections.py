"""Connections added at run time (cbtcompare.connections): a real llama-cpp-python server with an API key,
the Gemini REST stub, and the embedded GGUF; each tested with a short completion, visible to its own
session only, its key held in memory only and gone when the session ends."""

from __future__ import annotations

import json
import logging
import secrets

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import SecretStr, ValidationError

from cbtcompare.connections import (
    ConnectionBook,
    ConnectionRefused,
    ConnectionRequest,
    SessionRegistry,
    spec_for,
)
from cbtcompare.models.base import Message, ModelNotFound
from cbtcompare.models.defaults import default_gguf_path
from cbtcompare.models.registry import Registry


@pytest.fixture(scope="module")
def registry() -> Registry:
    return Registry.from_files()


def session_registry(registry: Registry, book: ConnectionBook, session: dict[str, str | None]) -> SessionRegistry:
    return SessionRegistry(registry, book, lambda: session["id"])


def test_an_endpoint_with_a_key_is_tested_used_in_its_session_only_and_forgotten(registry, llama_server, caplog):
    caplog.set_level(logging.DEBUG)
    book = ConnectionBook()
    request = ConnectionRequest(
        kind="openai", name="my-llama-server", model="local", base_url=llama_server.base_url,
        api_key=SecretStr(llama_server.api_key),
    )  # fmt: skip
    connection, check = book.add("session-a", request, registry)
    assert check.ok, check.message
    assert check.message and llama_server.api_key not in check.message
    assert llama_server.api_key not in json.dumps(connection.spec.public_dict())

    current: dict[str, str | None] = {"id": "session-a"}
    models = session_registry(registry, book, current)
    assert "my-llama-server" in models.names() and set(registry.names()) < set(models.names())
    assert models.spec("my-llama-server").backend == "openai"
    reply = models.load("my-llama-server").complete([Message("user", "Say hi.")])
    assert reply.strip()

    current["id"] = "session-b"
    assert "my-llama-server" not in models.names()
    with pytest.raises(ModelNotFound):
        models.load("my-llama-server")

    book.end_session("session-a")
    current["id"] = "session-a"
    assert "my-llama-server" not in models.names()
    assert connection.api_key is None and connection.model is None
    assert llama_server.api_key not in caplog.text


def test_a_wrong_key_fails_the_test_in_words_without_echoing_the_key(registry, llama_server):
    wrong = f"sk-wrong-{secrets.token_hex(12)}"
    book = ConnectionBook()
    request = ConnectionRequest(
        kind="openai", name="wrong-key", model="local", base_url=llama_server.base_url, api_key=SecretStr(wrong)
    )
    connection, check = book.add("s", request, registry)
    assert not check.ok
    assert "key" in check.message.lower() or "401" in check.message
    assert wrong not in check.message and wrong[-6:] not in check.message
    availability = SessionRegistry(registry, book, lambda: "s").availability("wrong-key")
    assert not availability.available and wrong not in availability.reason


def test_a_gemini_connection_sends_the_session_key_and_scrubs_it_from_errors(registry, gemini_stub):
    book = ConnectionBook()
    request = ConnectionRequest(
        kind="gemini", name="my-gemini", model="gemini-stub", base_url=gemini_stub.base_url,
        api_key=SecretStr(gemini_stub.api_key),
    )  # fmt: skip
    _, check = book.add("s", request, registry)
    assert check.ok, check.message
    assert check.message.startswith("You said:")
    assert gemini_stub.requests[-1].headers["x-goog-api-key"] == gemini_stub.api_key

    wrong = f"AIza-wrong-{secrets.token_hex(12)}"  # the stub echoes a bad key in its error details, as Google can
    bad = request.model_copy(update={"name": "bad-gemini", "api_key": SecretStr(wrong)})
    _, failed = book.add("s", bad, registry)
    assert not failed.ok and "key" in failed.message.lower()
    assert wrong not in failed.message


def test_a_gguf_file_is_added_and_answers(registry):
    book = ConnectionBook()
    request = ConnectionRequest(kind="gguf", name="my-gguf", model=str(default_gguf_path()))
    connection, check = book.add("s", request, registry, public_demo=False)
    assert check.ok, check.message
    assert connection.spec.backend == "llamacpp"
    book.end_session("s")


def test_a_public_demo_refuses_local_files_and_its_own_network(registry):
    book = ConnectionBook()
    with pytest.raises(ConnectionRefused, match="local files cannot be added"):
        book.add("s", ConnectionRequest(kind="gguf", name="g", model=str(default_gguf_path())), registry,
                 public_demo=True)  # fmt: skip
    for url in ("http://127.0.0.1:8000/v1", "http://localhost:8000/v1", "http://10.1.2.3/v1", "http://[::1]:80/v1"):
        with pytest.raises(ConnectionRefused, match="public demo"):
            spec_for(ConnectionRequest(kind="openai", name="e", model="m", base_url=url), public_demo=True)
    spec = spec_for(ConnectionRequest(kind="gguf", name="g", model="hf:owner/repo:file.gguf"), public_demo=True)
    assert spec.weights == "hf:owner/repo:file.gguf"
    assert book.sessions() == 0 or book.session("s").names() == []


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"kind": "openai", "name": "x", "model": "m"}, "needs one"),
        ({"kind": "openai", "name": "x", "model": "m", "base_url": "ftp://h/v1"}, "http:// or https://"),
        ({"kind": "gemini", "name": "x", "model": "gemini-2.0-flash"}, "needs one"),
        ({"kind": "gguf", "name": "x", "model": "a.gguf", "base_url": "http://h/v1"}, "leave the URL empty"),
        ({"kind": "gguf", "name": "has space", "model": "a.gguf"}, "name:"),
        ({"kind": "gguf", "name": "", "model": "a.gguf"}, "name:"),
    ],
)
def test_a_request_missing_a_part_says_which(fields, message):
    with pytest.raises(ConnectionRefused, match=message):
        spec_for(ConnectionRequest(**fields), public_demo=False)


def test_a_session_name_never_shadows_a_model_of_the_app(registry):
    taken = registry.names()[0]
    with pytest.raises(ConnectionRefused, match="already"):
        ConnectionBook().add("s", ConnectionRequest(kind="gguf", name=taken, model="x.gguf"), registry)


KEY = "sk-" + "q7Zr" * 6


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    kind=st.sampled_from(["openai", "gemini", "gguf"]),
    name=st.text(max_size=80),
    model=st.text(max_size=300),
    base_url=st.one_of(st.none(), st.text(max_size=200), st.just("http://example.org/v1")),
    key=st.one_of(st.none(), st.just(KEY), st.text(max_size=40).map(lambda t: KEY + t)),
    demo=st.booleans(),
)
def test_any_form_input_gives_a_spec_or_a_refusal_that_never_holds_the_key(kind, name, model, base_url, key, demo):
    try:
        request = ConnectionRequest(
            kind=kind, name=name, model=model, base_url=base_url, api_key=SecretStr(key) if key is not None else None
        )
    except ValidationError as exc:
        assert KEY not in str(exc)
        return
    try:
        spec = spec_for(request, public_demo=demo)
    except ConnectionRefused as exc:
        assert str(exc) and KEY not in str(exc)
        return
    assert KEY not in json.dumps(spec.public_dict())
    assert spec.name == request.name and spec.api_key_env is None
