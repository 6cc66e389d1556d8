"""Any OpenAI-compatible chat server (OpenAI, vLLM, llama.cpp servers, DeepSeek, OpenRouter...) as a ChatModel.

The spec names the endpoint (`base_url`), the model id the server knows (`weights`) and the environment
variable that holds the key (`api_key_env`; none for a local server, which gets a placeholder key).
Replies stream; `timeout_s` bounds each request (connecting, and each wait for the next bytes);
429 and 5xx answers (and a connection the server dropped under a request) are retried `max_retries` times
with exponential backoff (the server's Retry-After when it sends one). A refused connection and a timeout
are not retried: they are reported at once.

A stream that ends with neither text nor a finish reason (llama-cpp-python's server swallows errors
raised after it has started streaming, e.g. a prompt over its context) is asked again without streaming,
so the server's real error surfaces.

Structured output sends OpenAI's `response_format={"type": "json_schema", ...}`. llama-cpp-python's
server does not accept that form (it answers an error naming `json_object`); it constrains output with
`{"type": "json_object", "schema": ...}` instead. When a server rejects the json_schema form that way,
this model switches to the json_object form for the rest of its life and resends at once.

Errors become typed ModelErrors whose messages say what to do. This module must never put an API key in
an error message, a log line or `info()`; it imports the openai SDK only when a model is created, so the
registry can ask `unavailable_reason` without it.

The retry loop and the transport-error helpers here are shared with the Gemini backend.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import random
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal, TypeVar
from urllib.parse import urlsplit, urlunsplit

from cbtcompare.content_hash import content_digest
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

if TYPE_CHECKING:
    import openai

T = TypeVar("T")

PLACEHOLDER_API_KEY = "not-needed"
RETRY_INITIAL_DELAY_S = 0.5
RETRY_MAX_DELAY_S = 8.0
RETRY_AFTER_CAP_S = 60.0
JsonMode = Literal["json_schema", "json_object"]


# ---------------------------------------------------------------------------------------------------------
# Helpers shared by the endpoint backends (this one and gemini.py).


def public_url(url: str) -> str:
    """The URL without user info or a query string, so no credential can ride along into a message."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    if parts.port:
        host = f"{host}:{parts.port}"
    return urlunsplit((parts.scheme, host, parts.path, "", ""))


def scrub(text: str, secret: str | None) -> str:
    """`text` with every occurrence of `secret` (and its last characters, as some servers echo) masked."""
    if secret and secret != PLACEHOLDER_API_KEY:
        text = text.replace(secret, "***")
        if len(secret) >= 12:
            text = text.replace(secret[-6:], "***")
    return text


def backoff_delay(attempt: int, retry_after: float | None = None) -> float:
    """Seconds before retry number `attempt` (0 for the first): the server's Retry-After when it sends
    one (capped at a minute), else 0.5 s doubling per attempt up to 8 s, less up to 25 % jitter."""
    if retry_after is not None and 0 <= retry_after <= RETRY_AFTER_CAP_S:
        return retry_after
    return min(RETRY_INITIAL_DELAY_S * 2**attempt, RETRY_MAX_DELAY_S) * (1 - 0.25 * random.random())


def call_with_retries(
    call: Callable[[], T],
    *,
    max_retries: int,
    should_retry: Callable[[Exception], bool],
    retry_after: Callable[[Exception], float | None] = lambda exc: None,
    sleep: Callable[[float], None] = time.sleep,
) -> T:
    """`call()`, repeated after a backoff while it raises an error `should_retry` accepts, `max_retries` times."""
    attempt = 0
    while True:
        try:
            return call()
        except Exception as exc:
            if attempt >= max_retries or not should_retry(exc):
                raise
            sleep(backoff_delay(attempt, retry_after(exc)))
            attempt += 1


@dataclass(frozen=True)
class TransportErrors:
    """Exception classes of the HTTP libraries the SDKs use (httpx and its fork httpx2)."""

    timeout: tuple[type[Exception], ...]  # no answer in time
    connect: tuple[type[Exception], ...]  # no connection made (refused, unknown host)
    any: tuple[type[Exception], ...]  # every transport failure, the two above included

    @classmethod
    def load(cls) -> TransportErrors:
        found: dict[str, list[type[Exception]]] = {"timeout": [], "connect": [], "any": []}
        for name in ("httpx2", "httpx"):
            if importlib.util.find_spec(name) is None:
                continue
            module = importlib.import_module(name)
            found["timeout"].append(module.TimeoutException)
            found["connect"].append(module.ConnectError)
            found["any"].append(module.TransportError)
        return cls(**{kind: tuple(classes) for kind, classes in found.items()})

    def dropped_connection(self, exc: BaseException) -> bool:
        """A connection that was made and then broke (reset, closed early): worth one more try."""
        cause = exc.__cause__ or exc.__context__ or exc
        return isinstance(cause, self.any) and not isinstance(cause, self.timeout + self.connect)


def parse_retry_after(headers: object) -> float | None:
    """Seconds from `retry-after-ms` or `retry-after` (a number of seconds) response headers, if any."""
    get = getattr(headers, "get", None)
    if get is None:
        return None
    for name, scale in (("retry-after-ms", 0.001), ("retry-after", 1.0)):
        value = get(name)
        if value is None:
            continue
        try:
            return float(value) * scale
        except ValueError:
            continue
    return None


def missing_key_reason(api_key_env: str) -> str | None:
    if os.environ.get(api_key_env, "").strip():
        return None
    return f"set {api_key_env} (named by api_key_env) to the API key"


# ---------------------------------------------------------------------------------------------------------


def _openai() -> object:
    try:
        import openai
    except ImportError as exc:
        raise BackendUnavailable("the openai package is not installed; pip install 'openai>=1'") from exc
    return openai


LLAMACPP_LORA_PREFIX = "lora:"


def served_model_id(spec: ModelSpec) -> str:
    """The `model` a request names: a LoRA the server serves is its own model id (vLLM --enable-lora with
    --lora-modules NAME=PATH), so base and tuned come from one server. On llama.cpp's server an adapter
    written `lora:N` is applied per request instead (cache_hints) and the model stays the weights' id."""
    if spec.adapter and not spec.adapter.startswith(LLAMACPP_LORA_PREFIX):
        return spec.adapter
    return spec.weights


def cache_hints(spec: ModelSpec, messages: Sequence[Message]) -> dict[str, object]:
    """Request fields beyond OpenAI's for the server named by `spec.server`.

    llama.cpp's server: `cache_prompt` reuses the KV of the slot's previous prompt; with `server_slots` (its
    --parallel) `id_slot` pins a conversation, named by its first two messages, to one slot, so the turns of
    one session land where their prefix is; an adapter `lora:N` sends `lora: [{id: N, scale}]` (the server
    loads it with --lora and --lora-init-without-apply, so requests without it get the base). vLLM's
    automatic prefix caching needs nothing in the request.
    """
    if spec.server != "llamacpp":
        return {}
    hints: dict[str, object] = {"cache_prompt": True}
    if spec.server_slots:
        opening = "\x1f".join(f"{m.role}:{m.content}" for m in messages[:2])
        hints["id_slot"] = int(content_digest(opening, 8), 16) % spec.server_slots
    if spec.adapter and spec.adapter.startswith(LLAMACPP_LORA_PREFIX):
        index = spec.adapter.removeprefix(LLAMACPP_LORA_PREFIX)
        if not index.isdigit():
            raise ModelNotFound(
                f"adapter {spec.adapter!r}: write lora:N, N the adapter's position among the server's --lora flags",
                model=spec.name,
            )
        hints["lora"] = [{"id": int(index), "scale": spec.adapter_scale}]
    return hints


class OpenAICompatModel(ChatModel):
    remote = True
    adapters = True  # a LoRA served by the endpoint (vLLM --enable-lora) is addressed by its model id
    supports_seed = True  # exact on llama.cpp and vLLM servers; best effort on OpenAI's own
    supports_json_schema = True

    def __init__(self, spec: ModelSpec):
        super().__init__(spec)
        openai = _openai()
        if spec.api_key_env and (missing := missing_key_reason(spec.api_key_env)):
            raise AuthenticationFailed(missing, model=spec.name)
        if reason := self.unavailable_reason(spec):
            raise BackendUnavailable(reason, model=spec.name)
        self._api_key = os.environ[spec.api_key_env].strip() if spec.api_key_env else PLACEHOLDER_API_KEY
        self._client: openai.OpenAI = openai.OpenAI(  # type: ignore[attr-defined]
            base_url=spec.base_url,
            api_key=self._api_key,
            timeout=spec.timeout_s,
            max_retries=0,  # retries are ours: the SDK would also retry timeouts and refused connections
        )
        self.base_url = str(self._client.base_url).rstrip("/")
        self.json_mode: JsonMode = "json_schema"
        self._transport = TransportErrors.load()

    @staticmethod
    def unavailable_reason(spec: ModelSpec) -> str | None:
        if importlib.util.find_spec("openai") is None:
            return "the openai package is not installed; pip install 'openai>=1'"
        if spec.api_key_env and (missing := missing_key_reason(spec.api_key_env)):
            return missing
        if not spec.api_key_env and not spec.base_url and not os.environ.get("OPENAI_BASE_URL"):
            return "set base_url to the server's URL (e.g. http://127.0.0.1:8000/v1), or api_key_env for OpenAI"
        try:
            cache_hints(spec, [])
        except ModelError as exc:
            return str(exc)
        return None

    def info(self) -> ModelInfo:
        return ModelInfo(
            name=self.spec.name,
            backend=self.spec.backend,
            weights=f"{self.spec.weights} @ {public_url(self.base_url)}",
            weights_sha256=None,
            adapter=self.spec.adapter,
            adapter_sha256=None,
            adapter_scale=self.spec.adapter_scale,
            n_ctx=None,
        )

    def close(self) -> None:
        self._client.close()

    # --- requests ------------------------------------------------------------------------------------

    def _request_arguments(self, messages: list[Message], sampling: Sampling, usage: Usage) -> dict[str, object]:
        arguments: dict[str, object] = {
            "model": served_model_id(self.spec),
            "messages": [m.to_dict() for m in messages],
            "temperature": sampling.temperature,
            "top_p": sampling.top_p,
            "max_tokens": sampling.max_tokens,
            "seed": sampling.seed,
        }
        if sampling.stop:
            arguments["stop"] = list(sampling.stop)
        if hints := cache_hints(self.spec, messages):
            arguments["extra_body"] = hints
        return arguments

    def _call(self, **arguments: object) -> object:
        """One chat completion call, retried on 429/5xx; SDK exceptions pass through unmapped."""
        return call_with_retries(
            lambda: self._client.chat.completions.create(**arguments),  # type: ignore[call-overload]
            max_retries=self.spec.max_retries,
            should_retry=self._should_retry,
            retry_after=lambda exc: parse_retry_after(getattr(getattr(exc, "response", None), "headers", None)),
        )

    def _send(self, **arguments: object) -> object:
        """`_call` with SDK and transport exceptions turned into typed ModelErrors."""
        try:
            return self._call(**arguments)
        except Exception as exc:
            raise self._model_error(exc) from None

    def _stream(self, messages: list[Message], sampling: Sampling, usage: Usage) -> Iterator[str]:
        arguments = self._request_arguments(messages, sampling, usage)
        stream = self._send(**arguments, stream=True, stream_options={"include_usage": True})
        counted = 0
        reported: int | None = None
        try:
            for chunk in stream:  # type: ignore[attr-defined]
                if chunk.usage is not None:
                    usage.prompt_tokens = chunk.usage.prompt_tokens
                    reported = chunk.usage.completion_tokens
                if not chunk.choices:
                    continue
                choice = chunk.choices[0]
                text = choice.delta.content if choice.delta is not None else None
                if text:
                    counted += 1  # one streamed piece per token on llama.cpp and vLLM servers
                    usage.completion_tokens = counted
                    yield text
                if choice.finish_reason:
                    usage.finish_reason = choice.finish_reason
        except Exception as exc:
            raise self._model_error(exc, mid_reply=True) from None
        finally:
            stream.close()  # type: ignore[attr-defined]
        if reported is not None:
            usage.completion_tokens = reported
        if counted == 0 and usage.finish_reason is None:
            # The stream ended with neither text nor a finish reason: llama-cpp-python's server does this when
            # the request fails after its 200 header (e.g. over the context). Asked again without streaming,
            # the server either answers or states the real error, which becomes a typed ModelError.
            response = self._send(**arguments)
            choice = response.choices[0]  # type: ignore[attr-defined]
            usage.finish_reason = choice.finish_reason
            if response.usage is not None:  # type: ignore[attr-defined]
                usage.prompt_tokens = response.usage.prompt_tokens  # type: ignore[attr-defined]
                usage.completion_tokens = response.usage.completion_tokens  # type: ignore[attr-defined]
            if choice.message.content:
                yield choice.message.content

    def _complete_json(self, messages: list[Message], schema: dict, sampling: Sampling) -> str:
        arguments = self._request_arguments(messages, sampling, Usage())
        try:
            response = self._call(**arguments, response_format=self._response_format(schema))
        except Exception as exc:
            if self.json_mode != "json_schema" or not _rejects_json_schema(exc):
                raise self._model_error(exc) from None
            self.json_mode = "json_object"
            response = self._send(**arguments, response_format=self._response_format(schema))
        choice = response.choices[0]  # type: ignore[attr-defined]
        return choice.message.content or ""

    def _response_format(self, schema: dict) -> dict[str, object]:
        if self.json_mode == "json_object":
            return {"type": "json_object", "schema": schema}
        name = str(schema.get("title") or "reply")
        safe_name = "".join(c if c.isalnum() or c in "_-" else "_" for c in name)[:64]
        return {"type": "json_schema", "json_schema": {"name": safe_name, "schema": schema}}

    # --- errors --------------------------------------------------------------------------------------

    def _should_retry(self, exc: Exception) -> bool:
        """429 and 5xx answers, and a kept-alive connection the server closed under a new request."""
        if self._transport.dropped_connection(exc):
            return True
        status = getattr(exc, "status_code", None)
        if not isinstance(status, int) or _rejects_json_schema(exc):
            return False
        return status == 429 or status >= 500

    def _model_error(self, exc: BaseException, *, mid_reply: bool = False) -> ModelError:
        """A typed, actionable error for an SDK or transport exception; the key never appears in it."""
        openai = _openai()
        url = public_url(self.base_url)
        key_hint = f"${self.spec.api_key_env}" if self.spec.api_key_env else "api_key_env (the server wants a key)"
        if isinstance(exc, (openai.APITimeoutError, *self._transport.timeout)):  # type: ignore[attr-defined]
            return ModelTimeout(
                f"no answer from {url} within timeout_s={self.spec.timeout_s:g} s; the server may be overloaded "
                "or the model too slow: raise timeout_s in the model spec or lower max_tokens",
                model=self.name,
            )
        if isinstance(exc, (openai.APIConnectionError, *self._transport.any)):  # type: ignore[attr-defined]
            cause = exc.__cause__ or exc.__context__ or exc
            reason = self._clean(str(cause) or type(cause).__name__)
            if mid_reply:
                return EndpointUnavailable(
                    f"the server at {url} broke off the reply midway ({reason}); check the server's logs and "
                    "send the message again",
                    model=self.name,
                )
            return EndpointUnavailable(
                f"cannot reach {url} ({reason}): "
                f"is the server at {url} running? Check base_url in the model spec",
                model=self.name,
            )
        if not isinstance(exc, openai.APIStatusError):  # type: ignore[attr-defined]
            return ModelError(f"request to {url} failed: {self._clean(str(exc))}", model=self.name)
        status = exc.status_code
        detail = self._clean(_server_message(exc))
        code = (exc.code or "").lower()
        lowered = detail.lower()
        if status in (401, 403):
            return AuthenticationFailed(
                f"the server at {url} refused the API key (HTTP {status}: {detail}); check the key in {key_hint}",
                model=self.name,
            )
        if status == 429:
            return RateLimited(
                f"{url} is rate-limiting requests (HTTP 429 after {self.spec.max_retries} retries: {detail}); "
                "wait and try again, raise max_retries, or check the account's quota",
                model=self.name,
            )
        if code == "context_length_exceeded" or "context length" in lowered or "context window" in lowered:
            return ContextOverflow(
                f"the conversation is too long for the model at {url} ({detail}); clear or shorten the "
                "conversation, lower max_tokens, or use the 'trim' context policy with n_ctx set",
                model=self.name,
            )
        if status == 404 or code == "model_not_found":
            return ModelNotFound(
                f"the server at {url} has no model {self.spec.weights!r} (HTTP {status}: {detail}); set weights "
                f"to a model id listed at {url}/models, and check base_url ends with its API prefix (often /v1)",
                model=self.name,
            )
        if status >= 500:
            return EndpointUnavailable(
                f"the server at {url} failed (HTTP {status} after {self.spec.max_retries} retries: {detail}); "
                "check its logs",
                model=self.name,
            )
        return ModelError(f"the server at {url} rejected the request (HTTP {status}: {detail})", model=self.name)

    def _clean(self, text: str) -> str:
        return scrub(text, self._api_key)[:500]


def _server_message(exc: object) -> str:
    body = getattr(exc, "body", None)
    if isinstance(body, dict) and body.get("message"):
        return str(body["message"])
    return str(body) if body else str(exc)


def _rejects_json_schema(exc: BaseException | None) -> bool:
    """The server answered that it knows only the `text`/`json_object` response formats (llama-cpp-python)."""
    status = getattr(exc, "status_code", None)
    if not isinstance(status, int) or status < 400:
        return False
    message = _server_message(exc)
    return "json_schema" in message and "json_object" in message
