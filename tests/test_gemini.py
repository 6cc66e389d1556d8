"""The Gemini backend: the real google-genai SDK pointed at a local server speaking Gemini's REST format.

No Gemini service can run here; tests/gemini_stub.py stands in for it on the wire, so these tests check
what the SDK really sends (paths, headers, generationConfig, systemInstruction, responseSchema) and how
the backend reads Gemini's streamed answers and Google-format errors.
"""

from __future__ import annotations

import copy
import json
import logging
import time

import pytest

from cbtcompare.models.base import (
    AuthenticationFailed,
    ContextOverflow,
    EndpointUnavailable,
    Message,
    ModelNotFound,
    ModelSpec,
    ModelTimeout,
    RateLimited,
    Sampling,
)
from cbtcompare.models.gemini import GeminiModel
from cbtcompare.models.registry import Registry

KEY_ENV = "CBTCOMPARE_TEST_GEMINI_KEY"
SESSION = [
    Message("system", "You are a CBT therapist. Be brief."),
    Message("user", "Hello."),
    Message("assistant", "Hello, what would you like to work on today?"),
    Message("user", "I failed my exam and I think I am useless."),
]
SCORE_SCHEMA = {
    "type": "object",
    "properties": {
        "agenda": {"type": "integer", "minimum": 1, "maximum": 10, "description": "agenda setting"},
        "feedback": {"type": "integer", "minimum": 3, "maximum": 10},
        "rationale": {"type": "string"},
        "verdict": {"type": "string", "enum": ["adequate", "inadequate"]},
    },
    "required": ["agenda", "feedback", "rationale", "verdict"],
}


def gemini_spec(base_url: str, **fields: object) -> ModelSpec:
    values: dict[str, object] = {
        "name": "gemini-judge",
        "backend": "gemini",
        "weights": "gemini-stub",
        "base_url": base_url,
        "api_key_env": KEY_ENV,
        "timeout_s": 10.0,
        "max_retries": 2,
    }
    values.update(fields)
    return ModelSpec.model_validate(values)


@pytest.fixture
def gemini(gemini_stub, monkeypatch):
    monkeypatch.setenv(KEY_ENV, gemini_stub.api_key)
    model = GeminiModel(gemini_spec(gemini_stub.base_url))
    yield model
    model.close()


def test_streams_a_reply_over_sse_with_usage(gemini, gemini_stub):
    stream = gemini.stream(SESSION, Sampling(temperature=0.4, max_tokens=64, seed=21))
    chunks = list(stream)
    assert len(chunks) > 1, "the reply did not arrive as a stream"
    assert stream.text == "You said: I failed my exam and I think I am useless."
    assert stream.usage.finish_reason == "stop"
    assert stream.usage.completion_tokens == len(stream.text.split())
    prompt_words = sum(len(m.content.split()) for m in SESSION)
    assert stream.usage.prompt_tokens == prompt_words
    assert stream.usage.seed == 21
    (request,) = gemini_stub.generation_requests()
    assert request.path == "/v1beta/models/gemini-stub:streamGenerateContent"
    assert request.query == {"alt": ["sse"]}
    assert request.headers["x-goog-api-key"] == gemini_stub.api_key


def test_the_system_message_becomes_the_system_instruction(gemini, gemini_stub):
    gemini.complete(SESSION)
    body = gemini_stub.generation_requests()[-1].body
    assert body["systemInstruction"]["parts"] == [{"text": "You are a CBT therapist. Be brief."}]
    assert [c["role"] for c in body["contents"]] == ["user", "model", "user"]
    assert [c["parts"][0]["text"] for c in body["contents"]] == [m.content for m in SESSION[1:]]


def test_sampling_travels_as_generation_config_and_max_tokens_cuts_the_reply(gemini, gemini_stub):
    stream = gemini.stream(SESSION, Sampling(temperature=1.3, top_p=0.5, max_tokens=3, seed=9, stop=("END",)))
    list(stream)
    config = gemini_stub.generation_requests()[-1].body["generationConfig"]
    assert config == {"temperature": 1.3, "topP": 0.5, "maxOutputTokens": 3, "seed": 9, "stopSequences": ["END"]}
    assert stream.text == "You said: I"
    assert stream.usage.finish_reason == "length"


def test_json_output_sends_the_schema_as_response_schema(gemini, gemini_stub):
    schema = copy.deepcopy(SCORE_SCHEMA)
    reply = json.loads(gemini.complete_json(SESSION, schema, Sampling(temperature=0.0, seed=1)))
    assert schema == SCORE_SCHEMA, "the caller's schema was changed"
    config = gemini_stub.generation_requests()[-1].body["generationConfig"]
    assert config["responseMimeType"] == "application/json"
    sent = config["responseSchema"]
    # As google-genai sends it: Gemini's OpenAPI Schema with upper-case types and a property order.
    assert sent["type"] == "OBJECT"
    assert {name: p["type"] for name, p in sent["properties"].items()} == {
        "agenda": "INTEGER", "feedback": "INTEGER", "rationale": "STRING", "verdict": "STRING",
    }  # fmt: skip
    assert sent["properties"]["feedback"]["minimum"] == 3 and sent["properties"]["verdict"]["enum"] == [
        "adequate",
        "inadequate",
    ]
    assert sent["required"] == SCORE_SCHEMA["required"]
    assert "responseJsonSchema" not in config
    assert set(reply) == set(SCORE_SCHEMA["properties"])
    assert 3 <= reply["feedback"] <= 10 and reply["verdict"] in ("adequate", "inadequate")


def test_a_schema_beyond_gemini_schema_is_sent_as_response_json_schema(gemini, gemini_stub):
    schema = {
        "type": "object",
        "properties": {"item": {"const": "agenda"}, "score": {"type": "integer", "enum": [0, 2, 4, 6]}},
        "required": ["item", "score"],
    }
    reply = json.loads(gemini.complete_json(SESSION, schema))
    config = gemini_stub.generation_requests()[-1].body["generationConfig"]
    assert config["responseJsonSchema"] == schema and "responseSchema" not in config
    assert reply == {"item": "agenda", "score": 0}


def test_a_wrong_key_is_authentication_failed_and_the_key_never_leaks(gemini_stub, monkeypatch, caplog):
    wrong = "AIzaWrongKey-0123456789abcdefghij"
    monkeypatch.setenv(KEY_ENV, wrong)
    model = GeminiModel(gemini_spec(gemini_stub.base_url))
    with caplog.at_level(logging.DEBUG), pytest.raises(AuthenticationFailed) as caught:
        model.complete(SESSION)
    message = str(caught.value)
    assert f"check the key in ${KEY_ENV}" in message and "API key not valid" in message
    # The stub, like Google, echoes the bad key in a DebugInfo detail: it must not reach the message or logs.
    assert wrong in json.dumps(gemini_stub.requests[-1].headers)
    for text in (message, repr(model.info()), caplog.text):
        assert wrong not in text and wrong[-6:] not in text
    assert len(gemini_stub.generation_requests()) == 1, "an auth failure is not retried"


@pytest.mark.parametrize("status", [401, 403])
def test_401_and_403_are_authentication_failed(gemini, gemini_stub, status):
    gemini_stub.fail_next(status)
    with pytest.raises(AuthenticationFailed, match=f"HTTP {status}"):
        gemini.complete(SESSION)


def test_an_unknown_model_is_model_not_found(gemini_stub, monkeypatch):
    monkeypatch.setenv(KEY_ENV, gemini_stub.api_key)
    model = GeminiModel(gemini_spec(gemini_stub.base_url, weights="gemini-9-ultra"))
    with pytest.raises(ModelNotFound) as caught:
        list(model.stream(SESSION))
    assert "'gemini-9-ultra'" in str(caught.value) and "is not found for API version v1beta" in str(caught.value)


def test_a_prompt_over_the_input_limit_is_context_overflow(gemini, gemini_stub):
    gemini_stub.max_input_tokens = 20
    with pytest.raises(ContextOverflow, match=r"exceeds the maximum number of tokens allowed \(20\)"):
        gemini.complete(SESSION)


def test_429_is_retried_after_googles_retry_delay_then_succeeds(gemini, gemini_stub):
    gemini_stub.fail_next(429, times=2, retry_delay="0.05s")
    stream = gemini.stream(SESSION)
    assert "".join(stream).startswith("You said:")
    assert len(gemini_stub.generation_requests()) == 3


def test_rate_limits_beyond_max_retries_raise_rate_limited(gemini, gemini_stub):
    gemini_stub.fail_next(429, times=5, retry_delay="0.01s")
    with pytest.raises(RateLimited, match="after 2 retries"):
        gemini.complete(SESSION)
    assert len(gemini_stub.generation_requests()) == 3, "one request and max_retries=2 retries"


def test_5xx_is_retried_with_exponential_backoff(gemini, gemini_stub):
    gemini_stub.fail_next(503)
    gemini_stub.fail_next(500)
    started = time.perf_counter()
    assert gemini.complete(SESSION).startswith("You said:")
    assert time.perf_counter() - started >= 0.5 * 0.75 + 1.0 * 0.75, "no exponential backoff between retries"
    assert len(gemini_stub.generation_requests()) == 3


def test_a_retried_json_request_sends_the_same_schema_again(gemini, gemini_stub):
    gemini_stub.fail_next(503, retry_delay="0.01s")
    reply = json.loads(gemini.complete_json(SESSION, SCORE_SCHEMA))
    first, second = (r.body["generationConfig"] for r in gemini_stub.generation_requests())
    assert first["responseSchema"] == second["responseSchema"] and second["responseSchema"]["type"] == "OBJECT"
    assert set(reply) == set(SCORE_SCHEMA["properties"])


def test_a_server_failing_every_retry_is_endpoint_unavailable(gemini, gemini_stub):
    gemini_stub.fail_next(500, times=3, retry_delay="0.01s")
    with pytest.raises(EndpointUnavailable, match="INTERNAL"):
        gemini.complete_json(SESSION, SCORE_SCHEMA)


def test_a_slow_answer_times_out_once(gemini_stub, monkeypatch):
    monkeypatch.setenv(KEY_ENV, gemini_stub.api_key)
    gemini_stub.delay_s = 3.0
    model = GeminiModel(gemini_spec(gemini_stub.base_url, timeout_s=0.4, max_retries=3))
    started = time.perf_counter()
    with pytest.raises(ModelTimeout, match="timeout_s=0.4"):
        model.complete(SESSION)
    assert time.perf_counter() - started < 2.0
    assert len(gemini_stub.generation_requests()) == 1, "a timeout is not retried"


def test_a_dead_endpoint_is_endpoint_unavailable_at_once(closed_port_url, monkeypatch):
    monkeypatch.setenv(KEY_ENV, "any-key")
    base_url = closed_port_url.removesuffix("/v1") + "/"
    model = GeminiModel(gemini_spec(base_url, max_retries=3))
    started = time.perf_counter()
    with pytest.raises(EndpointUnavailable, match="is the server at"):
        model.complete(SESSION)
    assert time.perf_counter() - started < 2.0


def test_a_missing_key_makes_the_model_unavailable(gemini_stub, monkeypatch):
    monkeypatch.delenv(KEY_ENV, raising=False)
    monkeypatch.delenv("GEMINI_API_KEY", raising=False)
    named = gemini_spec(gemini_stub.base_url)
    assert GeminiModel.unavailable_reason(named) == f"set {KEY_ENV} (named by api_key_env) to the API key"
    default = gemini_spec(gemini_stub.base_url, api_key_env=None)
    assert "set GEMINI_API_KEY" in Registry([default]).availability(default.name).reason
    with pytest.raises(AuthenticationFailed, match=KEY_ENV):
        GeminiModel(named)
    monkeypatch.setenv("GEMINI_API_KEY", gemini_stub.api_key)
    assert Registry([default]).availability(default.name).available
    assert GeminiModel(default).complete(SESSION).startswith("You said:")


def test_info_names_the_model_and_endpoint_but_not_the_key(gemini, gemini_stub):
    info = gemini.info()
    assert info.backend == "gemini" and info.weights == f"gemini-stub @ {gemini_stub.base_url}"
    assert gemini_stub.api_key not in repr(info)
