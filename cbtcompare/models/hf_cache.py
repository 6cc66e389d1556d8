"""KV prefix reuse for the hf backend: a small LRU store of transformers DynamicCaches per loaded base.

Each entry is the cache of one conversation's prompt, keyed on the adapter setting it was computed
under (a LoRA on or off changes every key and value) and on the tokens it holds. A request takes the
entry sharing its longest token prefix: the whole entry when the request extends it (the next turn of
that conversation), else a copy cropped to the shared prefix, so another conversation's longer prefix
survives. Generation on a base is serialised by the base's lock; this store has its own lock because
closing a model drops entries from any thread.

Determinism: prompts are always evaluated in chunks aligned to multiples of PREFIX_CHUNK_TOKENS
(transformers' chunked prefill), with or without a cached prefix, and only positions evaluated inside
whole aligned chunks are ever kept. A reused prefix therefore holds the very keys and values that
evaluating from scratch computes, and the positions after it go through the same forward passes on
both paths, so the logits are bit-identical (tests/test_hf_cache.py; benchmarks/hf_session.py prints
0). Plain `past_key_values` reuse (the prefix evaluated in one batch, the rest in another) is not: on
the default model on the CPU in fp32 it differed from one batch over the whole prompt by 2.2e-05 at
most (logits up to 37), and aligned chunks differ from one batch by 2.3e-05; a different matmul split
sums in a different order, enough to flip a token wherever two candidates are that close. On this
CPU, 64-token chunks started at an unaligned position also matched exactly (the one large batch is
what changed the sums); alignment makes both paths run the same shapes on any kernel library or GPU,
for at most 63 positions evaluated again per turn.

Memory: a cached position costs 2 x layers x kv_heads x head_dim x dtype bytes (45 KiB for the default
SmolLM2-135M in fp32: about 90 MiB for a 2,048-token conversation); at most MAX_CACHED_PREFIXES entries
are kept per base. This module never loads a model, never generates, and never touches adapters.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from transformers import DynamicCache

# Prompts are evaluated in chunks aligned to multiples of this many positions on every path (as in
# llamacpp_pool), so a prompt evaluated from scratch and one extending a cached prefix run identical batches.
PREFIX_CHUNK_TOKENS = 64
MAX_CACHED_PREFIXES = 4

AdapterKey = str | None  # the adapter's name on the shared base; None for the plain base


def aligned_prefix_length(cached: Sequence[int], prompt: Sequence[int]) -> int:
    """How many leading positions of `prompt` a cache holding `cached` can serve: the common prefix, never the
    prompt's last token (its logits start the reply), floored to a chunk boundary."""
    limit = min(len(cached), len(prompt) - 1)
    common = 0
    while common < limit and cached[common] == prompt[common]:
        common += 1
    return common - common % PREFIX_CHUNK_TOKENS


def whole_chunk_length(prompt_length: int) -> int:
    """The positions of a prompt that were evaluated inside whole aligned chunks: the reusable ones. The
    partial last chunk and the generated tokens (decoded one at a time) went through other batches than a
    longer prompt evaluated from scratch would use for them."""
    return prompt_length - prompt_length % PREFIX_CHUNK_TOKENS


def cache_is_croppable(cache: DynamicCache) -> bool:
    """Whether every layer keeps all positions (no sliding window, no recurrent state), so cropping to a
    prefix leaves exactly what evaluating that prefix would."""
    from transformers.cache_utils import DynamicLayer

    return bool(cache.layers) and all(type(layer) is DynamicLayer for layer in cache.layers)


def cropped_copy(cache: DynamicCache, keep: int, new_cache: Callable[[], DynamicCache]) -> DynamicCache:
    """A fresh cache holding the first `keep` positions of `cache` (the original is left as it is)."""
    copy = new_cache()
    for source, target in zip(cache.layers, copy.layers, strict=True):
        if source.is_initialized:
            target.update(source.keys[..., :keep, :], source.values[..., :keep, :])  # update concatenates: a copy
    return copy


@dataclass
class CachedPrefix:
    adapter: AdapterKey
    tokens: tuple[int, ...]  # exactly the positions `cache` holds, all evaluated in whole aligned chunks
    cache: DynamicCache


@dataclass(frozen=True)
class PrefixLease:
    """The cache one generation runs on, and how many prompt positions it already holds."""

    cache: DynamicCache
    reused: int


class PrefixCacheStore:
    """Per-conversation caches over one loaded base, least recently used evicted beyond `capacity`."""

    def __init__(self, capacity: int = MAX_CACHED_PREFIXES) -> None:
        self.capacity = max(1, capacity)
        self._lock = threading.Lock()
        self._entries: list[CachedPrefix] = []  # least recently used first

    def take(self, adapter: AdapterKey, prompt: Sequence[int], new_cache: Callable[[], DynamicCache]) -> PrefixLease:
        """The cache to generate `prompt` on: the stored one with the longest reusable prefix, or a new one."""
        with self._lock:
            best, keep = None, 0
            for entry in self._entries:
                if entry.adapter == adapter:
                    length = aligned_prefix_length(entry.tokens, prompt)
                    if length > keep:
                        best, keep = entry, length
            if best is None:
                return PrefixLease(new_cache(), 0)
            if keep == len(best.tokens):  # the request extends this conversation: it takes the cache over
                self._entries.remove(best)
                return PrefixLease(best.cache, keep)
            self._entries.remove(best)
            self._entries.append(best)  # still in use as a shared prefix
            return PrefixLease(cropped_copy(best.cache, keep, new_cache), keep)

    def keep(self, adapter: AdapterKey, prompt: Sequence[int], cache: DynamicCache) -> int:
        """Store `cache` after generating `prompt` on it, cropped to the prompt's whole aligned chunks; returns
        the positions kept (0 when nothing reusable is left, and then nothing is stored)."""
        valid = whole_chunk_length(len(prompt))
        held = cache.get_seq_length()
        if valid == 0 or held < valid or not cache_is_croppable(cache):
            return 0
        if held > valid:
            cache.crop(valid - held)
        tokens = tuple(prompt[:valid])
        with self._lock:
            # An entry whose tokens start the new one serves every prompt the new one serves, and no more.
            self._entries = [
                e for e in self._entries if not (e.adapter == adapter and tokens[: len(e.tokens)] == e.tokens)
            ]
            self._entries.append(CachedPrefix(adapter, tokens, cache))
            del self._entries[: max(0, len(self._entries) - self.capacity)]
        return valid

    def drop(self, adapter: AdapterKey) -> None:
        """Forget every cache computed under `adapter` (it was taken off the base, or its last user closed)."""
        with self._lock:
            self._entries = [e for e in self._entries if e.adapter != adapter]

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()

    def held(self) -> list[tuple[AdapterKey, int]]:
        """(adapter, cached positions) per entry, least recently used first (for status pages and tests)."""
        with self._lock:
            return [(e.adapter, len(e.tokens)) for e in self._entries]
