"""Gemini models through the google-genai SDK (the maintained one; never google-generativeai) as a ChatModel.

The spec's `weights` is the Gemini model id (e.g. gemini-2.5-flash); the key comes from the variable named
by `api_key_env` (GEMINI_API_KEY when unset); `base_url` replaces Google's endpoint (a proxy, or the
local stub the tests run). System messages become the request's systemInstruction, assistant turns the
"model" role. Replies stream over `streamGenerateContent?alt=sse`; `timeout_s` bounds each request; 429 and
5xx answers are retried `max_retries` times with exponential backoff (the RetryInfo delay Google sends,
when it sends one). Structured output sets responseMimeType application/json with the schema as
`responseSchema` when Gemini's OpenAPI subset can express it, else as `responseJsonSchema`.

Errors become typed ModelErrors that say what to do. This module must never put the API key in an error
message, a log line or `info()`; it imports google-genai only when a model is created.
"""

from __future__ import annotations

import copy
import importlib.util
import os
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, TypeVar

from cbtcompare.models.base import (
    AuthenticationFailed,
    BackendUnavailable,
    ChatModel,
    ContextOverflow,
    EndpointUnavailable,
    Message,
    ModelError,
    ModelInfo,
    ModelNotFound,
    ModelSpec,
    ModelTimeout,
    RateLimited,
    Sampling,
    Usage,
)
from cbtcompare.models.openai_compat import (
    TransportErrors,
    call_with_retries,
    missing_key_reason,
    public_url,
    scrub,
)

if TYPE_CHECKING:
    from google import genai

T = TypeVar("T")

DEFAULT_API_KEY_ENV = "GEMINI_API_KEY"
GOOGLE_ENDPOINT = "https://generativelanguage.googleapis.com/"
API_VERSION = "v1beta"
RETRYABLE_STATUS = frozenset({429, 500, 502, 503, 504})
FINISH_REASONS = {"STOP": "stop", "MAX_TOKENS": "length"}
# JSON-schema keywords that Gemini's responseSchema (an OpenAPI 3.0 subset) accepts.
RESPONSE_SCHEMA_KEYS = frozenset(
    {
        "type", "format", "title", "description", "nullable", "enum", "properties", "required", "items",
        "minItems", "maxItems", "minimum", "maximum", "minLength", "maxLength", "pattern", "anyOf",
        "propertyOrdering", "default", "example", "minProperties", "maxProperties", "additionalProperties",
    }
)  # fmt: skip
SCHEMA_TYPES = frozenset({"string", "number", "integer", "boolean", "array", "object"})


def _genai() -> object:
    try:
        from google import genai
    except ImportError as exc:
        raise BackendUnavailable("the google-genai package is not installed; pip install google-genai") from exc
    return genai


def fits_response_schema(schema: object) -> bool:
    """Whether Gemini's responseSchema can express `schema` (else it is sent as responseJsonSchema)."""
    if not isinstance(schema, dict):
        return False
    for key, value in schema.items():
        if key not in RESPONSE_SCHEMA_KEYS:
            return False
        if key == "type" and (not isinstance(value, str) or value.lower() not in SCHEMA_TYPES):
            return False
        if key == "properties" and not (isinstance(value, dict) and all(map(fits_response_schema, value.values()))):
            return False
        if key == "items" and not fits_response_schema(value):
            return False
        if key == "anyOf" and not (isinstance(value, list) and all(map(fits_response_schema, value))):
            return False
        if key == "enum" and not (isinstance(value, list) and all(isinstance(v, str) for v in value)):
            return False  # Gemini's Schema enumerates strings only
        if key == "additionalProperties" and not isinstance(value, bool):
            return False
    return True


class GeminiModel(ChatModel):
    remote = True
    supports_seed = True  # Gemini takes a seed; Google documents determinism as best effort
    supports_json_schema = True

    def __init__(self, spec: ModelSpec):
        super().__init__(spec)
        genai = _genai()
        if reason := self.unavailable_reason(spec):  # only a missing key is left to report
            raise AuthenticationFailed(reason, model=spec.name)
        from google.genai import types

        self._types = types
        self._key_env = spec.api_key_env or DEFAULT_API_KEY_ENV
        self._api_key = os.environ[self._key_env].strip()
        self.base_url = spec.base_url or GOOGLE_ENDPOINT
        self._client: genai.Client = genai.Client(  # type: ignore[attr-defined]
            vertexai=False,
            api_key=self._api_key,
            http_options=types.HttpOptions(
                base_url=self.base_url,
                api_version=API_VERSION,
                timeout=max(1, round(spec.timeout_s * 1000)),  # milliseconds
                # No retry_options: the SDK would also retry refused connections and timeouts. Retries are ours.
            ),
        )
        self._transport = TransportErrors.load()

    @staticmethod
    def unavailable_reason(spec: ModelSpec) -> str | None:
        try:
            installed = importlib.util.find_spec("google.genai") is not None
        except ModuleNotFoundError:  # no `google` namespace package at all
            installed = False
        if not installed:
            return "the google-genai package is not installed; pip install google-genai"
        if spec.api_key_env is None and not os.environ.get(DEFAULT_API_KEY_ENV, "").strip():
            return f"set {DEFAULT_API_KEY_ENV} to the Gemini API key (or name another variable in api_key_env)"
        return missing_key_reason(spec.api_key_env) if spec.api_key_env else None

    def info(self) -> ModelInfo:
        return ModelInfo(
            name=self.spec.name,
            backend=self.spec.backend,
            weights=f"{self.spec.weights} @ {public_url(self.base_url)}",
            weights_sha256=None,
            adapter=None,
            adapter_sha256=None,
            adapter_scale=self.spec.adapter_scale,
            n_ctx=None,
        )

    def close(self) -> None:
        self._client.close()

    # --- requests ------------------------------------------------------------------------------------

    def _request(self, messages: list[Message], sampling: Sampling, usage: Usage, **config: object) -> dict:
        types = self._types
        system = "\n\n".join(m.content for m in messages if m.role == "system")
        contents = [
            types.Content(role="model" if m.role == "assistant" else "user", parts=[types.Part(text=m.content)])
            for m in messages
            if m.role != "system"
        ]
        if not contents:
            raise ModelError("there is no user message to answer; send at least one", model=self.name)
        generation = types.GenerateContentConfig(
            system_instruction=system or None,
            temperature=sampling.temperature,
            top_p=sampling.top_p,
            max_output_tokens=sampling.max_tokens,
            seed=sampling.seed,
            stop_sequences=list(sampling.stop) or None,
            **config,  # type: ignore[arg-type]
        )
        return {"model": self.spec.weights, "contents": contents, "config": generation}

    def _stream(self, messages: list[Message], sampling: Sampling, usage: Usage) -> Iterator[str]:
        request = self._request(messages, sampling, usage)

        def first_chunk() -> tuple[Iterator[object], object | None]:
            # The SDK sends the request when the stream is first read, so that read is what gets retried.
            chunks = iter(self._client.models.generate_content_stream(**request))  # type: ignore[arg-type]
            return chunks, next(chunks, None)

        chunks, chunk = self._send(first_chunk)
        try:
            while chunk is not None:
                text = self._read_chunk(chunk, usage)
                if text:
                    yield text
                chunk = next(chunks, None)
        except Exception as exc:
            raise self._model_error(exc, mid_reply=True) from None
        finally:
            close = getattr(chunks, "close", None)
            if close is not None:
                close()

    def _read_chunk(self, response: object, usage: Usage) -> str:
        metadata = getattr(response, "usage_metadata", None)
        if metadata is not None:
            if metadata.prompt_token_count is not None:
                usage.prompt_tokens = metadata.prompt_token_count
            if metadata.candidates_token_count is not None:
                usage.completion_tokens = metadata.candidates_token_count
        feedback = getattr(response, "prompt_feedback", None)
        if feedback is not None and feedback.block_reason is not None:
            usage.finish_reason = f"prompt_blocked_{_enum_name(feedback.block_reason).lower()}"
        candidates = getattr(response, "candidates", None) or []
        if not candidates:
            return ""
        candidate = candidates[0]
        if candidate.finish_reason is not None:
            name = _enum_name(candidate.finish_reason)
            usage.finish_reason = FINISH_REASONS.get(name, name.lower())
        parts = candidate.content.parts if candidate.content is not None and candidate.content.parts else []
        return "".join(part.text for part in parts if part.text and not part.thought)

    def _complete_json(self, messages: list[Message], schema: dict, sampling: Sampling) -> str:
        field = "response_schema" if fits_response_schema(schema) else "response_json_schema"
        request = self._request(messages, sampling, Usage(), response_mime_type="application/json")

        def generate() -> object:
            # The SDK rewrites a responseSchema dict in place (upper-case types, property order), so each
            # attempt gets its own copy and the caller's schema stays as it was.
            config = request["config"].model_copy(update={field: copy.deepcopy(schema)})
            return self._client.models.generate_content(**{**request, "config": config})

        return self._read_chunk(self._send(generate), Usage())

    def _send(self, call: Callable[[], T]) -> T:
        """`call()` with retries on 429/5xx; SDK and transport exceptions become typed ModelErrors."""
        try:
            return call_with_retries(
                call,
                max_retries=self.spec.max_retries,
                should_retry=lambda exc: getattr(exc, "code", None) in RETRYABLE_STATUS
                or self._transport.dropped_connection(exc),
                retry_after=_retry_delay,
            )
        except Exception as exc:
            raise self._model_error(exc) from None

    # --- errors --------------------------------------------------------------------------------------

    def _model_error(self, exc: BaseException, *, mid_reply: bool = False) -> ModelError:
        """A typed, actionable error for an SDK or transport exception; the key never appears in it."""
        from google.genai import errors

        url = public_url(self.base_url)
        if isinstance(exc, self._transport.timeout):
            return ModelTimeout(
                f"no answer from {url} within timeout_s={self.spec.timeout_s:g} s; raise timeout_s in the model "
                "spec or lower max_tokens",
                model=self.name,
            )
        if isinstance(exc, self._transport.any) and mid_reply:
            return EndpointUnavailable(
                f"{url} broke off the reply midway ({self._clean(str(exc) or type(exc).__name__)}); send the "
                "message again",
                model=self.name,
            )
        if isinstance(exc, self._transport.any):
            return EndpointUnavailable(
                f"cannot reach {url} ({self._clean(str(exc) or type(exc).__name__)}): is the server at {url} "
                "running? Check base_url in the model spec and the network",
                model=self.name,
            )
        if not isinstance(exc, errors.APIError):
            return ModelError(f"request to {url} failed: {self._clean(str(exc))}", model=self.name)
        status = exc.code
        detail = self._clean(f"{exc.status}: {exc.message}" if exc.status else str(exc.message))
        reasons = {d.get("reason") for d in _details(exc) if isinstance(d, dict)}
        message = (exc.message or "").lower()
        if status in (401, 403) or "API_KEY_INVALID" in reasons or "api key not valid" in message:
            return AuthenticationFailed(
                f"Gemini refused the API key (HTTP {status} {detail}); check the key in ${self._key_env}",
                model=self.name,
            )
        if status == 429:
            return RateLimited(
                f"Gemini is rate-limiting requests (HTTP 429 after {self.spec.max_retries} retries: {detail}); "
                "wait and try again, raise max_retries, or check the project's quota",
                model=self.name,
            )
        if status == 404:
            return ModelNotFound(
                f"Gemini has no model {self.spec.weights!r} (HTTP 404 {detail}); set weights to a model id such "
                "as gemini-2.5-flash",
                model=self.name,
            )
        if status == 400 and "token" in message and "exceeds" in message:
            return ContextOverflow(
                f"the conversation is too long for {self.spec.weights} ({detail}); clear or shorten it, or use "
                "the 'trim' context policy with n_ctx set",
                model=self.name,
            )
        if status == 504:
            return ModelTimeout(
                f"Gemini gave up before answering (HTTP 504 after {self.spec.max_retries} retries: {detail}); "
                "lower max_tokens or try again later",
                model=self.name,
            )
        if status >= 500:
            return EndpointUnavailable(
                f"Gemini failed (HTTP {status} after {self.spec.max_retries} retries: {detail}); try again later",
                model=self.name,
            )
        return ModelError(f"Gemini rejected the request (HTTP {status} {detail})", model=self.name)

    def _clean(self, text: str) -> str:
        return scrub(text, self._api_key)[:500]


def _enum_name(value: object) -> str:
    return str(getattr(value, "name", None) or getattr(value, "value", None) or value)


def _details(exc: object) -> list[object]:
    body = getattr(exc, "details", None)
    error = body.get("error", body) if isinstance(body, dict) else None
    details = error.get("details") if isinstance(error, dict) else None
    return details if isinstance(details, list) else []


def _retry_delay(exc: Exception) -> float | None:
    """Seconds from a google.rpc.RetryInfo detail ("retryDelay": "13s"), if the error carries one."""
    for detail in _details(exc):
        if isinstance(detail, dict) and str(detail.get("@type", "")).endswith("google.rpc.RetryInfo"):
            delay = str(detail.get("retryDelay", ""))
            try:
                return float(delay.removesuffix("s"))
            except ValueError:
                return None
    return None
