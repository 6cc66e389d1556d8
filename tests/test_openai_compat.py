"""The OpenAI-compatible backend against a real server: llama-cpp-python's own, serving the default GGUF.

Faults the real server cannot be asked for (429, 5xx, a 404 for an unknown model) come from a proxy in
front of it that answers a scripted fault first and then forwards to the real server.
"""

from __future__ import annotations

import json
import logging
import time

import pytest
from fixtures_servers import Fault

from cbtcompare.models.base import (
    AuthenticationFailed,
    BackendUnavailable,
    ContextOverflow,
    EndpointUnavailable,
    Message,
    ModelNotFound,
    ModelSpec,
    ModelTimeout,
    RateLimited,
    Sampling,
)
from cbtcompare.models.openai_compat import OpenAICompatModel
from cbtcompare.models.registry import Registry

KEY_ENV = "CBTCOMPARE_TEST_LLAMA_SERVER_KEY"
ASK = [Message("system", "You are a supportive listener."), Message("user", "I could not sleep last night.")]
MOOD_SCHEMA = {
    "type": "object",
    "properties": {
        "mood": {"type": "string", "enum": ["low", "anxious", "calm"]},
        # llama-cpp-python's schema-to-grammar converter enforces types, enums and required keys but not
        # minimum/maximum, so a bounded score is written as an enum.
        "intensity": {"type": "integer", "enum": list(range(1, 11))},
    },
    "required": ["mood", "intensity"],
    "additionalProperties": False,
}


def endpoint_spec(base_url: str, **fields: object) -> ModelSpec:
    values: dict[str, object] = {
        "name": "local-endpoint",
        "backend": "openai",
        "weights": "smollm2",
        "base_url": base_url,
        "api_key_env": KEY_ENV,
        "timeout_s": 60.0,
        "max_retries": 3,
        "sampling": Sampling(temperature=0.8, max_tokens=24),
    }
    values.update(fields)
    return ModelSpec.model_validate(values)


@pytest.fixture
def server_key(llama_server, monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setenv(KEY_ENV, llama_server.api_key)
    return llama_server.api_key


@pytest.fixture
def endpoint(llama_server, server_key):
    model = OpenAICompatModel(endpoint_spec(llama_server.base_url))
    yield model
    model.close()


@pytest.mark.slow
def test_streams_a_reply_from_the_real_server(endpoint):
    stream = endpoint.stream(ASK, Sampling(temperature=0.7, max_tokens=24, seed=11))
    chunks = list(stream)
    assert len(chunks) > 1, "the reply did not arrive as a stream"
    assert stream.text.strip() and stream.text == "".join(chunks)
    assert stream.usage.finish_reason in ("stop", "length")
    assert 1 <= stream.usage.completion_tokens <= 24
    assert stream.usage.seed == 11
    assert stream.usage.first_token_seconds is not None and stream.usage.seconds >= stream.usage.first_token_seconds


@pytest.mark.slow
def test_same_seed_gives_the_same_text_and_another_seed_another(endpoint):
    sampling = Sampling(temperature=1.0, top_p=1.0, max_tokens=32, seed=1234)
    first = endpoint.complete(ASK, sampling)
    second = endpoint.complete(ASK, sampling)
    other = endpoint.complete(ASK, sampling.merged(seed=98765))
    assert first and first == second
    assert other != first, "the seed did not reach the server"


@pytest.mark.slow
def test_json_schema_output_is_constrained_on_a_llama_cpp_server(llama_server, server_key, fault_proxy):
    proxy = fault_proxy()
    model = OpenAICompatModel(endpoint_spec(proxy.base_url))
    # A prompt that invites prose: only the grammar from the schema keeps the reply to the schema.
    ask = [Message("user", "Write a short poem about the sea, then describe how you feel.")]
    for _ in range(2):
        reply = json.loads(model.complete_json(ask, MOOD_SCHEMA, Sampling(temperature=0.9, max_tokens=60, seed=5)))
        assert set(reply) == {"mood", "intensity"}
        assert reply["mood"] in ("low", "anxious", "calm")
        assert isinstance(reply["intensity"], int) and 1 <= reply["intensity"] <= 10
    formats = [body["response_format"] for body in proxy.posts()]
    # OpenAI's json_schema form first; llama-cpp-python rejects it, so the schema is resent as json_object
    # + schema, which the model then keeps using (three requests for two replies, not four).
    assert [f["type"] for f in formats] == ["json_schema", "json_object", "json_object"]
    assert formats[0]["json_schema"]["schema"] == MOOD_SCHEMA and formats[1]["schema"] == MOOD_SCHEMA
    assert model.json_mode == "json_object"


def test_a_dead_endpoint_fails_fast_with_what_to_check(closed_port_url, monkeypatch):
    monkeypatch.setenv(KEY_ENV, "irrelevant")
    model = OpenAICompatModel(endpoint_spec(closed_port_url, max_retries=3))
    started = time.perf_counter()
    with pytest.raises(EndpointUnavailable) as caught:
        model.complete(ASK)
    assert time.perf_counter() - started < 2.0, "a refused connection must not be retried with backoff"
    assert f"is the server at {closed_port_url} running?" in str(caught.value)


def test_a_server_that_never_answers_times_out(silent_endpoint_url, monkeypatch):
    monkeypatch.setenv(KEY_ENV, "irrelevant")
    model = OpenAICompatModel(endpoint_spec(silent_endpoint_url, timeout_s=0.5, max_retries=3))
    started = time.perf_counter()
    with pytest.raises(ModelTimeout) as caught:
        list(model.stream(ASK))
    elapsed = time.perf_counter() - started
    assert 0.4 <= elapsed < 2.5, f"took {elapsed:.2f} s: the 0.5 s timeout was not applied once"
    assert "timeout_s=0.5" in str(caught.value)


def test_a_wrong_key_is_refused_and_never_shown(llama_server, monkeypatch, caplog):
    wrong = "sk-wrong-0123456789abcdef0123"
    monkeypatch.setenv(KEY_ENV, wrong)
    model = OpenAICompatModel(endpoint_spec(llama_server.base_url, max_retries=3))
    with caplog.at_level(logging.DEBUG), pytest.raises(AuthenticationFailed) as caught:
        model.complete(ASK)
    message = str(caught.value)
    assert f"check the key in ${KEY_ENV}" in message and "401" in message
    for text in (message, repr(model.info()), caplog.text):
        assert wrong not in text and wrong[-6:] not in text
        assert llama_server.api_key not in text


def test_a_missing_key_variable_makes_the_model_unavailable(llama_server, monkeypatch):
    monkeypatch.delenv(KEY_ENV, raising=False)
    spec = endpoint_spec(llama_server.base_url)
    reason = OpenAICompatModel.unavailable_reason(spec)
    assert reason == f"set {KEY_ENV} (named by api_key_env) to the API key"
    availability = Registry([spec]).availability(spec.name)
    assert not availability.available and availability.reason == reason
    with pytest.raises(AuthenticationFailed, match=KEY_ENV):
        OpenAICompatModel(spec)


def test_a_local_server_needs_no_key_but_a_url(monkeypatch):
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)
    local = endpoint_spec("http://127.0.0.1:9/v1", api_key_env=None)
    assert OpenAICompatModel.unavailable_reason(local) is None
    nowhere = endpoint_spec(None, api_key_env=None)
    assert "set base_url" in OpenAICompatModel.unavailable_reason(nowhere)
    with pytest.raises(BackendUnavailable, match="set base_url"):
        OpenAICompatModel(nowhere)


def test_info_names_the_endpoint_and_model_but_not_the_key(endpoint, llama_server):
    info = endpoint.info()
    assert info.backend == "openai"
    assert info.weights == f"smollm2 @ {llama_server.base_url}"
    assert llama_server.api_key not in repr(info)


@pytest.mark.slow
@pytest.mark.parametrize("statuses", [(429, 429), (503, 500)], ids=["rate-limited", "server-errors"])
def test_429_and_5xx_are_retried_with_backoff_then_succeed(server_key, fault_proxy, statuses):
    proxy = fault_proxy([Fault(status) for status in statuses])
    model = OpenAICompatModel(endpoint_spec(proxy.base_url, max_retries=3))
    started = time.perf_counter()
    text = model.complete(ASK, Sampling(max_tokens=8, seed=1))
    elapsed = time.perf_counter() - started
    assert text.strip()
    assert len(proxy.posts()) == 3, "two faults then the real answer"
    least_backoff = 0.5 * 0.75 + 1.0 * 0.75  # 0.5 s then 1 s, less at most 25 % jitter
    assert elapsed >= least_backoff, f"retried after {elapsed:.2f} s: no exponential backoff"


def test_retry_after_from_the_server_sets_the_wait(server_key, fault_proxy):
    proxy = fault_proxy([Fault(429, headers={"retry-after-ms": "1500"})])
    model = OpenAICompatModel(endpoint_spec(proxy.base_url, max_retries=1))
    started = time.perf_counter()
    assert model.complete(ASK, Sampling(max_tokens=4, seed=1)).strip()
    assert len(proxy.posts()) == 2
    assert time.perf_counter() - started >= 1.5, "the server's Retry-After (1.5 s, over the 0.5 s backoff) was ignored"


def test_rate_limits_beyond_max_retries_raise_rate_limited(server_key, fault_proxy):
    proxy = fault_proxy([Fault(429, "Rate limit reached for requests")] * 3)
    model = OpenAICompatModel(endpoint_spec(proxy.base_url, max_retries=1))
    with pytest.raises(RateLimited) as caught:
        model.complete(ASK)
    assert len(proxy.posts()) == 2, "one request and one retry"
    assert "Rate limit reached" in str(caught.value) and "raise max_retries" in str(caught.value)


def test_an_unknown_model_is_model_not_found(server_key, fault_proxy):
    proxy = fault_proxy([Fault(404, "The model `gpt-nope` does not exist", code="model_not_found")])
    model = OpenAICompatModel(endpoint_spec(proxy.base_url, weights="gpt-nope"))
    with pytest.raises(ModelNotFound) as caught:
        model.complete(ASK)
    assert len(proxy.posts()) == 1, "a 404 is not retried"
    assert "'gpt-nope'" in str(caught.value) and f"{proxy.base_url}/models" in str(caught.value)


@pytest.mark.slow
def test_a_conversation_over_the_servers_context_is_context_overflow(endpoint):
    long_message = Message("user", "I keep worrying about everything at work and at home. " * 250)
    with pytest.raises(ContextOverflow) as caught:
        endpoint.complete([long_message], Sampling(max_tokens=16))
    assert "2048" in str(caught.value) and "shorten" in str(caught.value)
