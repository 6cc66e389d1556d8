"""The model contract every backend implements: messages, sampling, specs, streams and typed errors.

A backend subclasses `ChatModel` and implements `_stream` (and `_complete_json` where it can constrain
output). Nothing here knows about any one backend, and nothing here imports gradio.
"""

from __future__ import annotations

import random
import time
from abc import ABC, abstractmethod
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field

Role = Literal["system", "user", "assistant"]
ContextPolicy = Literal["refuse", "trim"]


@dataclass(frozen=True)
class Message:
    role: Role
    content: str

    def to_dict(self) -> dict[str, str]:
        return {"role": self.role, "content": self.content}


class Sampling(BaseModel):
    """Decoding settings; stored beside every transcript and score they produce."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    temperature: float = Field(0.7, ge=0.0, le=2.0, description="0 is greedy decoding")
    top_p: float = Field(0.95, gt=0.0, le=1.0, description="nucleus sampling mass")
    max_tokens: int = Field(256, ge=1, le=32768, description="most tokens to generate")
    repeat_penalty: float = Field(
        1.0, ge=0.5, le=2.0, description="penalise repeated tokens (llama.cpp and transformers; endpoints ignore it)"
    )
    seed: int | None = Field(None, description="same seed + same settings = same text, where the backend allows")
    stop: tuple[str, ...] = Field((), description="strings that end the reply")

    def merged(self, **overrides: object) -> Sampling:
        """A copy with the given fields replaced; `None` values leave a field as it is."""
        values = {k: v for k, v in overrides.items() if v is not None}
        return self.model_copy(update=values) if values else self


class ModelSpec(BaseModel):
    """A named, reproducible recipe for a chat model (one entry of models.yaml)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str = Field(description="registry name, e.g. smollm2-instruct")
    backend: Literal["llamacpp", "hf", "openai", "gemini"]
    weights: str = Field(
        description="a GGUF path, hf:owner/repo:file.gguf, a local HF folder or Hub id, or an endpoint's model id"
    )
    adapter: str | None = Field(
        None,
        description="a LoRA adapter: a GGUF LoRA (llamacpp), a PEFT folder (hf), or the model id a server gives a LoRA "
        "it serves (openai: vLLM --lora-modules NAME=PATH, llama.cpp server model aliases)",
    )
    adapter_scale: float = Field(1.0, description="how strongly the adapter is applied")
    quantization: Literal["4bit"] | None = Field(
        None, description="hf backend only: '4bit' loads the weights with bitsandbytes NF4 (needs a CUDA GPU)"
    )
    system_prompt: str | None = Field(None, description="a prompt file in cbtcompare/prompts/ used as the system turn")
    chat_template: str = Field("auto", description="'auto' reads the template from the weights; else a Jinja file")
    base_url: str | None = Field(None, description="endpoint URL for openai/gemini backends")
    api_key_env: str | None = Field(None, description="name of the environment variable holding the API key")
    server: Literal["generic", "llamacpp", "vllm"] = Field(
        "generic",
        description="openai backend: the server software, for the cache hints it understands: 'llamacpp' (llama.cpp "
        "server: cache_prompt, and id_slot when server_slots is set), 'vllm' (prefix caching is automatic), 'generic'",
    )
    server_slots: int | None = Field(
        None, ge=1, description="llama.cpp server's --parallel: one slot per conversation keeps its prefix"
    )
    n_ctx: int = Field(2048, ge=128, description="context window the backend is run with")
    context_policy: ContextPolicy = Field("refuse", description="over the context: refuse, or trim oldest turns")
    timeout_s: float = Field(120.0, gt=0, description="per-request timeout for endpoints")
    max_retries: int = Field(3, ge=0, description="retries on 429/5xx for endpoints")
    sampling: Sampling = Field(default_factory=Sampling)
    description: str = ""

    def public_dict(self) -> dict[str, object]:
        """What may be stored or shown: never a key, only the name of its variable."""
        return self.model_dump(mode="json")


@dataclass
class Usage:
    """Filled in while a stream runs; complete once the stream is exhausted."""

    prompt_tokens: int | None = None
    completion_tokens: int = 0
    seconds: float = 0.0
    first_token_seconds: float | None = None
    finish_reason: str | None = None
    trimmed_messages: int = 0
    seed: int | None = None  # the seed actually used, also when none was asked for
    cached_prompt_tokens: int = 0  # prompt positions served from a cached prefix (llama.cpp, hf)

    @property
    def tokens_per_second(self) -> float | None:
        if not self.completion_tokens or self.seconds <= 0:
            return None
        decode = self.seconds - (self.first_token_seconds or 0.0)
        return self.completion_tokens / (decode if decode > 0 else self.seconds)


@dataclass
class TextStream:
    """An iterator of text chunks with its usage and full text available once it is exhausted."""

    chunks: Iterator[str]
    usage: Usage = field(default_factory=Usage)
    text: str = ""
    _started: float = field(default_factory=time.perf_counter)

    def __iter__(self) -> Iterator[str]:
        for chunk in self.chunks:
            if self.usage.first_token_seconds is None:
                self.usage.first_token_seconds = time.perf_counter() - self._started
            self.text += chunk
            self.usage.seconds = time.perf_counter() - self._started
            yield chunk
        self.usage.seconds = time.perf_counter() - self._started

    def close(self) -> None:
        close = getattr(self.chunks, "close", None)
        if close:
            close()


@dataclass(frozen=True)
class ModelInfo:
    """Provenance stored with each transcript and score."""

    name: str
    backend: str
    weights: str
    weights_sha256: str | None
    adapter: str | None
    adapter_sha256: str | None
    adapter_scale: float
    n_ctx: int | None


class ModelError(Exception):
    """A model problem with a message that says what to do about it."""

    kind = "model_error"

    def __init__(self, message: str, *, model: str | None = None):
        self.model = model
        super().__init__(f"{model}: {message}" if model else message)


class ModelNotFound(ModelError):
    kind = "model_not_found"


class InvalidWeights(ModelError):
    kind = "invalid_weights"


class AdapterMismatch(ModelError):
    kind = "adapter_mismatch"


class BackendUnavailable(ModelError):
    kind = "backend_unavailable"


class EndpointUnavailable(ModelError):
    kind = "endpoint_unavailable"


class AuthenticationFailed(ModelError):
    kind = "authentication_failed"


class ModelTimeout(ModelError):
    kind = "timeout"


class RateLimited(ModelError):
    kind = "rate_limited"


class ContextOverflow(ModelError):
    kind = "context_overflow"


class InvalidConstraint(ModelError):
    """A JSON schema the backend cannot turn into a working output constraint; nothing was generated."""

    kind = "invalid_constraint"


class BackendCapabilities(BaseModel):
    """What a backend can do, read from its class: callers branch on these, never on backend names."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    backend: str
    remote: bool = Field(description="an endpoint: requests cross a network, may need an API key, run concurrently")
    local_weights: bool = Field(description="weights are loaded into this process (memory, one request per context)")
    trainable: bool = Field(description="a spec on this backend can be the base of a LoRA training run")
    adapters: bool = Field(description="a spec can name a LoRA adapter applied over shared base weights")
    json_schema: bool = Field(description="complete_json constrains the output to a JSON schema")
    grammar: bool = Field(description="the constraint is a local grammar (llama.cpp GBNF), not a server feature")
    seed: bool = Field(description="same seed + same settings = same text (exactly, or best effort on some servers)")
    parallel_requests: int | None = Field(
        ge=1,
        description="requests one loaded model serves at once (llama.cpp: its context pool); None: no limit on this "
        "side, an endpoint's server queues its own",
    )


class ChatModel(ABC):
    """One loaded model. Subclasses implement `_stream`; the rest comes from here.

    Capability flags are class attributes so they can be read without loading anything
    (registry.backend_capabilities); a subclass sets the ones that are true for it.
    """

    remote: ClassVar[bool] = False
    local_weights: ClassVar[bool] = False
    trainable: ClassVar[bool] = False
    adapters: ClassVar[bool] = False
    grammar: ClassVar[bool] = False
    supports_seed: ClassVar[bool] = False
    supports_json_schema: ClassVar[bool] = False
    # None: the default of the backend's kind, 1 for local weights (one request at a time) and no limit for an
    # endpoint; a backend that serves more at once (a pool of contexts) declares how many.
    parallel_requests: ClassVar[int | None] = None

    @classmethod
    def capabilities(cls, backend: str) -> BackendCapabilities:
        return BackendCapabilities(
            backend=backend,
            remote=cls.remote,
            local_weights=cls.local_weights,
            trainable=cls.trainable,
            adapters=cls.adapters,
            json_schema=cls.supports_json_schema,
            grammar=cls.grammar,
            seed=cls.supports_seed,
            parallel_requests=cls.parallel_requests or (None if cls.remote else 1),
        )

    @staticmethod
    def unavailable_reason(spec: ModelSpec) -> str | None:
        """Why `spec` cannot be loaded here, or None. Must never download, load weights or call an endpoint:
        the Models tab asks it for every spec while the app is being built."""
        return None

    def __init__(self, spec: ModelSpec):
        self.spec = spec

    @property
    def name(self) -> str:
        return self.spec.name

    @abstractmethod
    def _stream(self, messages: list[Message], sampling: Sampling, usage: Usage) -> Iterator[str]:
        """Yield text chunks; record token counts and the finish reason on `usage`."""

    def info(self) -> ModelInfo:
        return ModelInfo(
            name=self.spec.name,
            backend=self.spec.backend,
            weights=self.spec.weights,
            weights_sha256=None,
            adapter=self.spec.adapter,
            adapter_sha256=None,
            adapter_scale=self.spec.adapter_scale,
            n_ctx=self.context_length,
        )

    @property
    def context_length(self) -> int | None:
        return None

    def count_tokens(self, messages: Sequence[Message]) -> int | None:
        """Tokens the rendered prompt takes, where the backend can tell; None when it cannot."""
        return None

    def sampling_for(self, sampling: Sampling | None) -> Sampling:
        """The settings a request runs with: the spec's when none are given, and always a concrete seed where
        the backend takes one (drawn here, once, so `_stream` and Usage.seed never disagree)."""
        resolved = sampling if sampling is not None else self.spec.sampling
        if self.supports_seed and resolved.seed is None:
            resolved = resolved.model_copy(update={"seed": random.getrandbits(31)})
        return resolved

    def prepare(self, messages: Sequence[Message], sampling: Sampling) -> tuple[list[Message], int]:
        """The messages to send after the context guard, and how many were trimmed."""
        from cbtcompare.models.context import fit_to_context

        return fit_to_context(
            list(messages),
            count_tokens=self.count_tokens,
            n_ctx=self.context_length,
            reserve=sampling.max_tokens,
            policy=self.spec.context_policy,
            model=self.name,
        )

    def stream(self, messages: Sequence[Message], sampling: Sampling | None = None) -> TextStream:
        resolved = self.sampling_for(sampling)
        usage = Usage(seed=resolved.seed)
        fitted, trimmed = self.prepare(messages, resolved)
        usage.trimmed_messages = trimmed
        return TextStream(self._stream(fitted, resolved, usage), usage)

    def complete(self, messages: Sequence[Message], sampling: Sampling | None = None) -> str:
        stream = self.stream(messages, sampling)
        for _ in stream:
            pass
        return stream.text

    def complete_json(self, messages: Sequence[Message], schema: dict, sampling: Sampling | None = None) -> str:
        """Raw text of a reply constrained to `schema` where the backend can; callers validate it."""
        resolved = self.sampling_for(sampling)
        fitted, _ = self.prepare(messages, resolved)
        return self._complete_json(fitted, schema, resolved)

    def _complete_json(self, messages: list[Message], schema: dict, sampling: Sampling) -> str:
        return self.complete(messages, sampling)

    def close(self) -> None:  # noqa: B027 (optional hook, deliberately not abstract)
        """Release what the model holds; the default holds nothing."""
