"""GGUF models through llama-cpp-python, as a ChatModel over the shared weights of llamacpp_pool.

The prompt is rendered with the chat template from the GGUF's own metadata (or a Jinja file named by
the spec), and the same rendering is used to count tokens for the context guard. JSON output is
constrained by a llama.cpp grammar built from the JSON schema (llamacpp_grammar). The pool's and the
grammar's public names are re-exported here.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path

from cbtcompare.models.base import (
    ChatModel,
    ContextOverflow,
    InvalidWeights,
    Message,
    ModelError,
    ModelInfo,
    ModelNotFound,
    ModelSpec,
    Sampling,
    Usage,
)
from cbtcompare.models.llamacpp_grammar import compile_grammar, gbnf_literal, schema_to_grammar
from cbtcompare.models.llamacpp_pool import (
    MAX_CONTEXTS_PER_WEIGHTS,
    PREFIX_REUSE_ENV,
    WARM_CONTEXTS_ENV,
    SharedWeights,
    cached_prefix,
    llama_cpp_library,
    prefill_aligned,
    prefix_reuse_enabled,
    thread_split,
    warm_contexts,
)
from cbtcompare.models.weights import check_gguf, local_weights_file, resolve_weights, sha256_of

__all__ = [
    "MAX_CONTEXTS_PER_WEIGHTS",
    "PREFIX_REUSE_ENV",
    "WARM_CONTEXTS_ENV",
    "LlamaCppModel",
    "SharedWeights",
    "cached_prefix",
    "compile_grammar",
    "gbnf_literal",
    "keep_prefix_per_role",
    "prefill_aligned",
    "prefix_reuse_enabled",
    "schema_to_grammar",
    "thread_split",
    "warm_contexts",
]


class LlamaCppModel(ChatModel):
    local_weights = True
    trainable = True
    adapters = True
    grammar = True
    supports_seed = True
    supports_json_schema = True
    parallel_requests = MAX_CONTEXTS_PER_WEIGHTS  # one request per context of the pool over one GGUF

    def __init__(self, spec: ModelSpec):
        super().__init__(spec)
        self.weights_path = resolve_weights(spec.weights)
        check_gguf(self.weights_path)
        self.adapter_path = self._adapter_path(spec)
        self.shared: SharedWeights | None = SharedWeights.acquire(self.weights_path, spec.n_ctx)
        try:
            self._adapter = self.shared.adapter(self.adapter_path) if self.adapter_path else None
            self._formatter = self._chat_formatter()
            self._last_render: tuple[tuple[tuple[str, str], ...], tuple[int, ...], tuple[str, ...]] | None = None
        except BaseException:
            self.close()
            raise

    def close(self) -> None:
        """Give back this model's hold on the shared weights; the last model on a file frees them."""
        shared, self.shared = self.shared, None
        if shared is not None:
            shared.release()

    def _weights(self) -> SharedWeights:
        if self.shared is None:
            raise ModelError("this model was closed; load it again from the registry", model=self.name)
        return self.shared

    @staticmethod
    def unavailable_reason(spec: ModelSpec) -> str | None:
        """Why `spec` cannot load, from local files only: an hf: file not cached yet is fetched at load, not here."""
        try:
            llama_cpp_library()
            for reference, what in ((spec.weights, "weights"), (spec.adapter, "adapter")):
                if reference is None:
                    continue
                if what == "adapter" and not reference.startswith("hf:") and not Path(reference).exists():
                    raise ModelNotFound(LlamaCppModel._adapter_missing(Path(reference)), model=spec.name)
                path = local_weights_file(reference)
                if path is not None:
                    check_gguf(path)
        except ModelError as exc:
            return str(exc)
        return None

    @staticmethod
    def _adapter_missing(path: Path) -> str:
        return f"adapter not built yet: {path} does not exist; train it (see training/) or fix the path"

    @staticmethod
    def _adapter_path(spec: ModelSpec) -> Path | None:
        if not spec.adapter:
            return None
        path = resolve_weights(spec.adapter) if spec.adapter.startswith("hf:") else Path(spec.adapter)
        if not path.exists():
            raise ModelNotFound(LlamaCppModel._adapter_missing(path), model=spec.name)
        return path

    def _chat_formatter(self, *, generation_prompt: bool = True):  # type: ignore[no-untyped-def]
        from llama_cpp.llama_chat_format import Jinja2ChatFormatter

        llama = self._weights()._first
        metadata = llama.metadata  # type: ignore[attr-defined]
        if self.spec.chat_template != "auto":
            template = Path(self.spec.chat_template).read_text(encoding="utf-8")
        elif "tokenizer.chat_template" in metadata:
            template = metadata["tokenizer.chat_template"]
        else:
            raise InvalidWeights(
                f"{self.weights_path.name} carries no chat template; set chat_template to a Jinja file in the spec",
                model=self.name,
            )
        model = self._weights().model
        eos = model.token_get_text(model.token_eos())
        bos = model.token_get_text(model.token_bos()) if model.token_bos() >= 0 else ""
        return Jinja2ChatFormatter(
            template=template,
            eos_token=eos,
            bos_token=bos,
            add_generation_prompt=generation_prompt,
            stop_token_ids=[model.token_eos()],
        )

    @property
    def context_length(self) -> int:
        return self.spec.n_ctx

    def info(self) -> ModelInfo:
        return ModelInfo(
            name=self.spec.name,
            backend="llamacpp",
            weights=str(self.weights_path),
            weights_sha256=sha256_of(self.weights_path),
            adapter=str(self.adapter_path) if self.adapter_path else None,
            adapter_sha256=sha256_of(self.adapter_path) if self.adapter_path else None,
            adapter_scale=self.spec.adapter_scale,
            n_ctx=self.spec.n_ctx,
        )

    def _render(self, messages: Sequence[Message]) -> tuple[list[int], list[str]]:
        """The prompt's tokens and the template's stop strings. The last rendering is remembered: the context
        guard counts the tokens of the very prompt the request then evaluates (7 ms a render at turn 12)."""
        key = tuple((m.role, m.content) for m in messages)
        if self._last_render is not None and self._last_render[0] == key:
            return list(self._last_render[1]), list(self._last_render[2])
        rendered = self._formatter(messages=[m.to_dict() for m in messages])
        tokens = self._weights().model.tokenize(
            rendered.prompt.encode("utf-8"), add_bos=not rendered.added_special, special=True
        )
        stops = [rendered.stop] if isinstance(rendered.stop, str) else list(rendered.stop or [])
        self._last_render = (key, tuple(tokens), tuple(stops))
        return tokens, stops

    def count_tokens(self, messages: Sequence[Message]) -> int:
        return len(self._render(messages)[0])

    def _generate(
        self, messages: list[Message], sampling: Sampling, usage: Usage, grammar: object | None = None
    ) -> Iterator[str]:
        tokens, template_stops = self._render(messages)
        usage.prompt_tokens = len(tokens)
        shared = self._weights()
        with shared.context(self._adapter, self.spec.adapter_scale, tokens, n_ctx=self.spec.n_ctx) as llama:
            try:
                # generate() keeps this prefix of the cache and decodes the rest of the prompt in one call
                usage.cached_prompt_tokens = cached_prefix(llama._input_ids, tokens)  # type: ignore[attr-defined]
                chunks = llama.create_completion(  # type: ignore[attr-defined]
                    prompt=tokens,
                    max_tokens=sampling.max_tokens,
                    temperature=sampling.temperature,
                    top_p=sampling.top_p,
                    repeat_penalty=sampling.repeat_penalty,
                    seed=sampling.seed,
                    stop=template_stops + list(sampling.stop),
                    grammar=grammar,
                    stream=True,
                )
                for chunk in chunks:
                    choice = chunk["choices"][0]
                    if choice["text"]:
                        usage.completion_tokens += 1
                        yield choice["text"]
                    if choice.get("finish_reason"):
                        usage.finish_reason = choice["finish_reason"]
            except ValueError as exc:
                if "context window" in str(exc):
                    raise ContextOverflow(
                        f"{exc}; shorten the conversation or lower max_tokens", model=self.name
                    ) from exc
                raise

    def _stream(self, messages: list[Message], sampling: Sampling, usage: Usage) -> Iterator[str]:
        return self._generate(messages, sampling, usage)

    def _complete_json(self, messages: list[Message], schema: dict, sampling: Sampling) -> str:
        gbnf = schema_to_grammar(schema, model=self.name)
        grammar = compile_grammar(gbnf, self._weights().model.vocab, model=self.name)
        return "".join(self._generate(messages, sampling, Usage(), grammar=grammar))


def keep_prefix_per_role(models: Sequence[ChatModel]) -> None:
    """Let each of `models` that share a GGUF keep its own cached prefix (a simulated therapist and patient,
    a judge beside them): one warm context per model on the same file, each costing its KV cache."""
    per_file: dict[int, tuple[SharedWeights, int]] = {}
    for model in models:
        if isinstance(model, LlamaCppModel) and model.shared is not None:
            shared, count = per_file.get(id(model.shared), (model.shared, 0))
            per_file[id(shared)] = (shared, count + 1)
    for shared, count in per_file.values():
        shared.keep_warm(count)
