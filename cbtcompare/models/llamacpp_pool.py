"""One GGUF file loaded once and a pool of llama.cpp contexts over it, with deterministic KV prefix reuse.

Every spec that names the same GGUF shares one llama_model (memory-mapped, so the weights sit in memory
once) whatever n_ctx it asks for. Requests take a context from that file's pool, set the spec's LoRA adapter
on it (or clear it) and generate, so one context never serves two requests at once and base and tuned never
hold two copies of the weights. Contexts keep their KV cache between requests and a conversation is routed
back to the context holding its prefix, so turn k of a session costs its new tokens, not the whole
conversation: the longest run of tokens the cache and the prompt share, generated reply tokens included.
Reuse is deterministic because every decode has at least two rows (a lone token gets a throwaway row after
it): llama.cpp's CPU kernels compute each row of a multi-row batch the same way whatever the batch's size or
split, and only a one-row decode takes other kernels (sgemm is for prompts only) and rounds differently. So
a position's K/V and logits do not depend on how the prompt was cut into batches, nor on whether it was
decoded as a generated token, and same seed + same settings give the same text whichever context serves
the request (tests/test_llamacpp_batch_invariance.py proves it bit for bit on the default model).
(llama-cpp-python's own `lora_path` would turn mmap off and load a private copy; adapters are applied per
context here instead.) This module knows nothing of chat templates or specs.
"""

from __future__ import annotations

import ctypes
import os
import threading
import types
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from cbtcompare.models.base import AdapterMismatch, BackendUnavailable, InvalidWeights, ModelError
from cbtcompare.models.prefix_reuse import PREFIX_REUSE_ENV, prefix_reuse_enabled
from cbtcompare.models.streams import announced_streams
from cbtcompare.models.weights import check_gguf

MAX_CONTEXTS_PER_WEIGHTS = 4
WARM_CONTEXTS_ENV = "CBTCOMPARE_WARM_CONTEXTS"
__all__ = ["PREFIX_REUSE_ENV", "prefix_reuse_enabled"]  # re-exported: they live in prefix_reuse

_NO_CACHE = object()


def thread_split(active_streams: int, cores: int | None = None) -> tuple[int, int]:
    """(n_threads, n_threads_batch) for one of `active_streams` concurrent generations over `cores` cores.

    Prompt processing is compute-bound, so a lone stream takes every core for it and concurrent streams
    divide them; decoding one token at a time is memory-bound, so it keeps llama-cpp-python's own ratio of
    half the batch threads. Never below one thread each.
    """
    cores = cores or available_cores()
    batch = max(1, cores // max(1, active_streams))
    return max(1, batch // 2), batch


def available_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


class _ActiveStreams:
    """How many llama.cpp generations run in this process right now (every weights file shares the cores)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.count = 0

    def enter(self) -> int:
        with self._lock:
            self.count += 1
            return self.count

    def leave(self) -> None:
        with self._lock:
            self.count -= 1


ACTIVE_STREAMS = _ActiveStreams()


def warm_contexts() -> int:
    """Contexts per weights file kept for their caches before one is reused for another conversation.

    Each costs its KV cache (about 47 MiB for the default model at n_ctx 2048); 1 keeps the memory of a
    single context, 2 lets a simulated patient and its therapist on the same weights keep their prefixes.
    """
    return max(1, int(os.environ.get(WARM_CONTEXTS_ENV, "1")))


def cached_prefix(cached: Sequence[int], prompt: Sequence[int]) -> int:
    """How many leading positions of `prompt` a cache holding `cached` can keep: the tokens both share,
    less the prompt's last one (its logits must come from a decode). Any of them is bit-identical to
    evaluating from scratch, however it was batched, because every decode has two rows or more."""
    limit = min(len(cached), len(prompt) - 1)
    common = 0
    while common < limit and cached[common] == prompt[common]:
        common += 1
    return common


def prefill_aligned(llama: object, prompt: Sequence[int]) -> int:
    """Evaluate all but the last prompt token over the cached prefix in one call, keeping what
    cached_prefix() allows; returns the positions reused. Requests skip this: llama-cpp-python's
    generate() keeps the same prefix and decodes the rest, last token included, in one call."""
    keep = cached_prefix(llama._input_ids, prompt)  # type: ignore[attr-defined]
    llama.n_tokens = keep  # type: ignore[attr-defined]
    if len(prompt) - 1 > keep:
        llama.eval(prompt[keep:-1])  # type: ignore[attr-defined]
    return keep


def _eval_two_rows_or_more(llama: object, tokens: Sequence[int]) -> None:
    """Llama.eval, but a one-token batch is decoded beside a throwaway copy of itself one position later
    (masked from it by causality, removed at once), so it takes the same kernels as a prompt batch. Only
    when the context has no cell left for that row is the token decoded alone (nothing can extend it)."""
    ctx, n_batch = llama._ctx, llama.n_batch  # type: ignore[attr-defined]
    ctx.kv_cache_seq_rm(-1, llama.n_tokens, -1)  # type: ignore[attr-defined]
    for i in range(0, len(tokens), n_batch):
        batch = list(tokens[i : i + n_batch])
        n_past = llama.n_tokens  # type: ignore[attr-defined]
        padded = len(batch) == 1 and n_past + 2 <= llama._n_ctx  # type: ignore[attr-defined]
        llama._batch.set_batch(batch=batch * 2 if padded else batch, n_past=n_past, logits_all=False)  # type: ignore[attr-defined]
        if padded:
            llama._batch.batch.logits[0], llama._batch.batch.logits[1] = True, False  # type: ignore[attr-defined]
        ctx.decode(llama._batch)  # type: ignore[attr-defined]
        if padded:
            ctx.kv_cache_seq_rm(-1, n_past + 1, -1)
        llama.input_ids[n_past : n_past + len(batch)] = batch  # type: ignore[attr-defined]
        llama.n_tokens += len(batch)  # type: ignore[attr-defined]
        llama._requires_eval = False  # type: ignore[attr-defined]


def llama_cpp_library():
    # llama.cpp's OpenMP threads spin while waiting; on a few shared cores (the app's server threads, two
    # panes, a judge) spinning starved the others: prefill fell from 26 to 6 tokens/s under load.
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    try:
        import llama_cpp
        import llama_cpp.llama
    except ImportError as exc:
        raise BackendUnavailable(
            "llama-cpp-python is not installed; run `make run` or pip install llama-cpp-python"
        ) from exc
    return llama_cpp


class _BorrowedModel:
    """Stands in for a LlamaModel inside one Llama object; closing it leaves the shared model alone."""

    def __init__(self, real: object):
        self._real = real

    def __getattr__(self, name: str) -> object:
        return getattr(self._real, name)

    def close(self) -> None:
        pass


class SharedWeights:
    """One GGUF file: its llama_model, its LoRA adapters, and a pool of contexts over it.

    There is one instance per file whatever n_ctx the specs ask for (each context has its own n_ctx; the
    weights are loaded once). Models acquire it and release it on close(); when the last one releases it,
    its contexts, adapters and weights are freed and the entry is dropped.
    """

    _lock = threading.Lock()  # guards construction, which briefly patches llama-cpp-python's loader
    _instances: dict[str, SharedWeights] = {}

    def __init__(self, path: Path, n_ctx: int):
        self.path = path
        self._lib = llama_cpp_library()
        self._pool_lock = threading.Condition()
        self._idle: list[object] = []
        self._contexts: list[object] = []
        self._adapters: dict[str, object] = {}
        self._use_count = 0
        self._warm_floor = 1
        self.users = 0
        self.closed = False
        self._first = self._new_context(n_ctx)  # loads the model; it owns it, so it is freed last
        self.model = self._first._model  # type: ignore[attr-defined]
        self._idle.append(self._first)

    @classmethod
    def acquire(cls, path: Path, n_ctx: int) -> SharedWeights:
        """The shared entry for `path` (loaded now if no model holds it), with one more user."""
        key = str(path.resolve())
        with cls._lock:
            shared = cls._instances.get(key)
            if shared is None:
                shared = cls._instances[key] = cls(path, n_ctx)
            shared.users += 1
            return shared

    def release(self) -> None:
        """One user fewer; the last one frees the contexts, the adapters and the weights."""
        with SharedWeights._lock:
            self.users -= 1
            if self.users > 0:
                return
            if SharedWeights._instances.get(str(self.path.resolve())) is self:
                del SharedWeights._instances[str(self.path.resolve())]
        with self._pool_lock:
            self.closed = True
            self._free_when_idle()

    @classmethod
    def loaded(cls) -> list[SharedWeights]:
        with cls._lock:
            return list(cls._instances.values())

    def _free_when_idle(self) -> None:
        """Free everything once no request holds a context (called with the pool lock held)."""
        if not self.closed or len(self._idle) < len(self._contexts):
            return
        for llama in self._contexts:
            if llama is not self._first:
                llama.close()  # type: ignore[attr-defined]
        for handle in self._adapters.values():  # before the model, as llama-cpp-python's own close does
            self._lib.llama_adapter_lora_free(handle)
        self._first.close()  # type: ignore[attr-defined]
        self._idle, self._contexts, self._adapters = [], [], {}
        self.model = None

    def _new_context(self, n_ctx: int) -> object:
        llama_module = self._lib.llama
        kwargs = dict(model_path=str(self.path), n_ctx=n_ctx, verbose=False, seed=0)
        if not self._contexts:
            try:
                llama = llama_module.Llama(**kwargs)
            except ValueError as exc:
                raise InvalidWeights(
                    f"llama.cpp could not load {self.path} ({exc}); the file may be truncated or not a model: "
                    "download it again"
                ) from exc
        else:
            original = llama_module.internals.LlamaModel
            shared = self.model
            llama_module.internals.LlamaModel = lambda **_: _BorrowedModel(shared)  # type: ignore[assignment]
            try:
                llama = llama_module.Llama(**kwargs)
            finally:
                llama_module.internals.LlamaModel = original
        llama._cbt_n_ctx = n_ctx  # type: ignore[attr-defined]
        llama.eval = types.MethodType(_eval_two_rows_or_more, llama)  # type: ignore[method-assign]
        self._contexts.append(llama)
        return llama

    def adapter(self, path: Path) -> object:
        key = str(path.resolve())
        with self._pool_lock:
            if key not in self._adapters:
                check_gguf(path)
                handle = self._lib.llama_adapter_lora_init(self.model.model, key.encode("utf-8"))
                if not handle:
                    raise AdapterMismatch(
                        f"the LoRA adapter {path} does not fit {self.path.name}: it was built for another base "
                        "model or its tensor shapes differ; export an adapter trained on this base"
                    )
                self._adapters[key] = handle
            return self._adapters[key]

    @contextmanager
    def context(
        self,
        adapter: object | None,
        scale: float,
        prompt: Sequence[int] = (),
        *,
        n_ctx: int | None = None,
    ) -> Iterator[object]:
        """Borrow a context of `n_ctx` positions with the given adapter set (or none), for one request.

        Sticky: the idle context whose cache `prompt` continues (it extends the last prompt served there, under
        the same adapter setting), the longest cached_prefix first; otherwise a new one while fewer than
        warm_contexts() exist; otherwise the one sharing the longest prefix, or the least recently used. A
        context whose adapter setting changes forgets its cache (LoRA changes every K/V).
        Its threads are set from the number of generations running now, or the number a caller has said it
        starts side by side if that is more (thread_split, streams.side_by_side).
        """
        n_ctx = n_ctx or self._first._cbt_n_ctx  # type: ignore[attr-defined]
        key = (id(adapter), scale) if adapter is not None else None
        with self._pool_lock:
            llama = self._take(n_ctx, key, prompt)
            llama._cbt_prompt_length = len(prompt)  # type: ignore[attr-defined]
        active = ACTIVE_STREAMS.enter()
        try:
            llama._ctx.set_n_threads(*thread_split(max(active, announced_streams())))  # type: ignore[attr-defined]
            if not prefix_reuse_enabled():
                self._set_adapter(llama, adapter, scale)
                llama.reset()  # type: ignore[attr-defined]
                llama._cbt_kv_key = _NO_CACHE  # type: ignore[attr-defined]
            elif getattr(llama, "_cbt_kv_key", _NO_CACHE) != key:
                self._set_adapter(llama, adapter, scale)
                llama.n_tokens = 0  # type: ignore[attr-defined]
                llama._cbt_kv_key = key  # type: ignore[attr-defined]
            yield llama
        finally:
            ACTIVE_STREAMS.leave()
            with self._pool_lock:
                self._use_count += 1
                llama._cbt_last_use = self._use_count  # type: ignore[attr-defined]
                self._idle.append(llama)
                self._free_when_idle()
                self._pool_lock.notify_all()

    def keep_warm(self, contexts: int) -> None:
        """Keep at least `contexts` contexts' caches before reusing one for another conversation (e.g. 2 for a
        simulated therapist and patient on this file, so each keeps its prefix; each costs its KV cache)."""
        with self._pool_lock:
            self._warm_floor = max(self._warm_floor, min(contexts, MAX_CONTEXTS_PER_WEIGHTS))

    def forget_caches(self) -> None:
        """Drop every idle context's cached prefix (the next request on each evaluates from scratch)."""
        with self._pool_lock:
            for llama in self._idle:
                llama.n_tokens = 0  # type: ignore[attr-defined]

    def _take(self, n_ctx: int, key: object, prompt: Sequence[int]) -> object:
        """The context to serve `prompt` (see context()), created or evicted as needed; pool lock held."""
        while True:
            if self.closed:
                raise ModelError(f"the weights {self.path.name} were closed; load the model again")
            llama = self._pick_idle(n_ctx, key, prompt)
            if llama is not None:
                return llama
            if len(self._contexts) >= MAX_CONTEXTS_PER_WEIGHTS:
                # make room: close the least recently used idle context of another size (never the first,
                # which owns the weights)
                spare = [c for c in self._idle if c is not self._first and c._cbt_n_ctx != n_ctx]  # type: ignore[attr-defined]
                if not spare:
                    self._pool_lock.wait()
                    continue
                victim = min(spare, key=lambda c: getattr(c, "_cbt_last_use", 0))
                self._idle.remove(victim)
                self._contexts.remove(victim)
                victim.close()  # type: ignore[attr-defined]
            with SharedWeights._lock:
                llama = self._new_context(n_ctx)
            return llama

    def _pick_idle(self, n_ctx: int, key: object, prompt: Sequence[int]) -> object | None:
        """Pop the idle context of `n_ctx` to serve `prompt` (see context()); None means: create one."""
        sized = [c for c in self._idle if c._cbt_n_ctx == n_ctx]  # type: ignore[attr-defined]
        if not sized:
            return None

        def reusable(llama: object) -> int:
            if getattr(llama, "_cbt_kv_key", _NO_CACHE) != key:
                return 0
            return cached_prefix(llama._input_ids, prompt)  # type: ignore[attr-defined]

        def continues(llama: object) -> bool:
            """Its cache is empty, or `prompt` extends the last prompt it served (not just a shared opening,
            such as another conversation's identical system prompt, which is no reason to overwrite it)."""
            return llama.n_tokens == 0 or reusable(llama) >= getattr(llama, "_cbt_prompt_length", 0) - 1  # type: ignore[attr-defined]

        best = max(sized, key=reusable)
        if not continues(best):
            of_size = sum(1 for c in self._contexts if c._cbt_n_ctx == n_ctx)  # type: ignore[attr-defined]
            if of_size < max(warm_contexts(), self._warm_floor) and len(self._contexts) < MAX_CONTEXTS_PER_WEIGHTS:
                return None
            if reusable(best) == 0:
                best = min(sized, key=lambda llama: getattr(llama, "_cbt_last_use", 0))
        self._idle.remove(best)
        return best

    def _set_adapter(self, llama: object, adapter: object | None, scale: float) -> None:
        lib = self._lib
        ctx = llama._ctx.ctx  # type: ignore[attr-defined]
        if adapter is None:
            lib.llama_set_adapters_lora(ctx, None, 0, None)
            return
        adapters = (lib.llama_adapter_lora_p_ctypes * 1)(adapter)
        scales = (ctypes.c_float * 1)(scale)
        if lib.llama_set_adapters_lora(ctx, adapters, 1, scales):
            raise AdapterMismatch(f"llama.cpp refused to apply the adapter to {self.path.name}")
