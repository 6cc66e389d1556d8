"""KV prefix reuse for the hf backend: the LRU store of DynamicCaches, and bit-identical logits on the default model.

The store tests use real transformers DynamicCaches whose keys encode the token at each position, so a test
can read back which tokens a cache holds. The logits test runs the real SmolLM2 GGUF (through transformers)
on the generate path the backend uses: a prompt whose prefix comes from the cache of an earlier, shorter
prompt must give exactly the logits of evaluating it from scratch.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

from transformers import DynamicCache  # noqa: E402

from cbtcompare.models.base import ModelSpec  # noqa: E402
from cbtcompare.models.hf import HFModel, LoadedBase  # noqa: E402
from cbtcompare.models.hf_cache import (  # noqa: E402
    PREFIX_CHUNK_TOKENS,
    PrefixCacheStore,
    aligned_prefix_length,
    whole_chunk_length,
)

CHUNK = PREFIX_CHUNK_TOKENS
LAYERS = 2


def empty_cache() -> DynamicCache:
    """A cache built the way the backend builds one (from the model's config), for a 2-layer Llama."""
    from transformers import LlamaConfig

    return DynamicCache(config=LlamaConfig(num_hidden_layers=LAYERS, hidden_size=8, num_attention_heads=1))


def adapter_mark(adapter: str | None) -> int:
    """An adapter changes every key and value: here it shifts them, so a cache served across settings shows."""
    return 0 if adapter is None else 1000 + sum(map(ord, adapter))


def extend(cache: DynamicCache, tokens: Sequence[int], adapter: str | None) -> None:
    """What a forward pass over `tokens` appends: here each position's key and value are its token id."""
    if not tokens:
        return
    states = torch.tensor([t + adapter_mark(adapter) for t in tokens], dtype=torch.float32).view(1, 1, -1, 1)
    for layer in cache.layers:
        layer.update(states.clone(), states.clone())


def held_tokens(cache: DynamicCache) -> list[list[int]]:
    """The tokens each layer's keys and values encode."""
    out = []
    for layer in cache.layers:
        if not layer.is_initialized or layer.keys.numel() == 0:
            out.append([])
            continue
        keys, values = layer.keys.flatten().long().tolist(), layer.values.flatten().long().tolist()
        assert keys == values
        out.append(keys)
    return out


def generate(store: PrefixCacheStore, adapter: str | None, prompt: list[int], reply: list[int]) -> int:
    """One request the way the backend runs it: take, evaluate the rest of the prompt and the reply, keep."""
    lease = store.take(adapter, prompt, empty_cache)
    expected = [t + adapter_mark(adapter) for t in prompt[: lease.reused]]
    assert held_tokens(lease.cache) == [expected] * LAYERS
    extend(lease.cache, prompt[lease.reused :] + reply[:-1], adapter)  # the last generated token is never evaluated
    store.keep(adapter, prompt, lease.cache)
    return lease.reused


def test_reusable_prefix_is_chunk_aligned_and_never_the_last_token() -> None:
    prompt = list(range(3 * CHUNK + 5))
    assert aligned_prefix_length(prompt[: 2 * CHUNK], prompt) == 2 * CHUNK
    assert aligned_prefix_length(prompt, prompt) == 3 * CHUNK
    assert aligned_prefix_length(prompt[: 3 * CHUNK], prompt[: 3 * CHUNK]) == 2 * CHUNK, "the last token is decoded"
    changed = prompt[:]
    changed[CHUNK + 3] = -1
    assert aligned_prefix_length(prompt, changed) == CHUNK
    assert aligned_prefix_length(prompt[: CHUNK - 1], prompt) == 0
    assert whole_chunk_length(2 * CHUNK) == 2 * CHUNK and whole_chunk_length(2 * CHUNK - 1) == CHUNK


@settings(max_examples=200, deadline=None)
@given(
    st.lists(st.integers(0, 3), max_size=4 * CHUNK),
    st.lists(st.integers(0, 3), min_size=1, max_size=4 * CHUNK),
)
def test_reusable_prefix_is_a_shared_aligned_prefix(cached: list[int], prompt: list[int]) -> None:
    length = aligned_prefix_length(cached, prompt)
    assert length % CHUNK == 0 and 0 <= length < len(prompt)
    assert cached[:length] == prompt[:length]
    longer = length + CHUNK
    assert not (longer < len(prompt) and longer <= len(cached) and cached[:longer] == prompt[:longer])


def test_next_turn_takes_the_cache_over_and_another_conversation_copies_the_shared_prefix() -> None:
    store = PrefixCacheStore(capacity=4)
    system = [1] * (2 * CHUNK)
    first = system + [2] * 30
    assert generate(store, None, first, [9] * 5) == 0
    assert store.held() == [(None, 2 * CHUNK)], "only the whole aligned chunks of the prompt are kept"

    second = first + [9] * 5 + [3] * 40
    assert generate(store, None, second, [8] * 5) == 2 * CHUNK
    assert store.held() == [(None, whole_chunk_length(len(second)))], "the turn replaced its conversation's entry"

    other = system + [4] * 100  # same system prompt, another conversation
    assert generate(store, None, other, [7] * 3) == 2 * CHUNK
    assert sorted(store.held()) == sorted([(None, 3 * CHUNK), (None, whole_chunk_length(len(other)))])
    assert generate(store, None, second + [8] * 5 + [5] * 10, [6]) == 3 * CHUNK, "the first conversation kept its own"


def test_adapter_settings_never_share_a_cache() -> None:
    store = PrefixCacheStore()
    prompt = list(range(3 * CHUNK))
    generate(store, None, prompt, [1])
    assert generate(store, "adapter_a", prompt, [1]) == 0
    assert generate(store, "adapter_a", prompt, [1]) == 2 * CHUNK
    store.drop("adapter_a")
    assert store.held() == [(None, 3 * CHUNK)]
    store.clear()
    assert store.held() == []


def test_least_recently_used_conversation_is_evicted() -> None:
    store = PrefixCacheStore(capacity=2)
    conversations = {name: [name] * (2 * CHUNK) for name in (1, 2, 3)}
    generate(store, None, conversations[1], [0])
    generate(store, None, conversations[2], [0])
    generate(store, None, conversations[1] + [5], [0])  # 1 is used again: 2 is now the oldest
    generate(store, None, conversations[3], [0])
    assert len(store.held()) == 2
    assert generate(store, None, conversations[2] + [5], [0]) == 0, "conversation 2 was evicted"
    assert generate(store, None, conversations[3] + [5], [0]) == 2 * CHUNK


def test_a_short_prompt_keeps_nothing() -> None:
    store = PrefixCacheStore()
    assert generate(store, None, [1] * (CHUNK - 1), [2] * 20) == 0
    assert store.held() == []


requests = st.lists(
    st.tuples(
        st.sampled_from([None, "adapter_a", "adapter_b"]),
        st.integers(0, 2),  # which conversation
        st.lists(st.integers(0, 2), min_size=1, max_size=CHUNK + 20),  # new prompt tokens: few values, long matches
        st.lists(st.integers(0, 2), min_size=1, max_size=8),  # reply tokens
    ),
    min_size=1,
    max_size=12,
)


@settings(max_examples=60, deadline=None)
@given(requests, st.integers(1, 3))
def test_any_request_sequence_reuses_only_its_own_tokens(sequence: list, capacity: int) -> None:
    """Whatever arrives, a lease holds exactly the first `reused` tokens of its prompt, computed under the
    same adapter setting (generate checks both), and the store never exceeds its capacity."""
    store = PrefixCacheStore(capacity=capacity)
    histories: dict[tuple[str | None, int], list[int]] = {}
    for adapter, conversation, added, reply in sequence:
        key = (adapter, conversation)
        prompt = histories.get(key, []) + added  # the same tokens under every adapter setting
        reused = generate(store, adapter, prompt, reply)
        assert reused % CHUNK == 0 and reused < len(prompt)
        histories[key] = prompt + reply
        assert len(store.held()) <= capacity
        assert all(length % CHUNK == 0 and length > 0 for _, length in store.held())


# --- the real model ------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def shared_base(default_gguf: Path) -> Iterator[LoadedBase]:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as in test_hf_backend: torch's spinning threads crawl on shared cores
    model = HFModel(ModelSpec(name="hf-cache-logits", backend="hf", weights=str(default_gguf)))
    yield model._base
    model.close()
    torch.set_num_threads(threads)


def step_logits(base: LoadedBase, prompt: list[int], cache: DynamicCache, steps: int) -> torch.Tensor:
    """The greedy logits of `steps` tokens, on the backend's generate path (aligned chunked prefill)."""
    ids = torch.tensor([prompt])
    output = base.model.generate(
        input_ids=ids,
        attention_mask=torch.ones_like(ids),
        cache=cache,
        prefill_chunk_size=PREFIX_CHUNK_TOKENS,
        max_new_tokens=steps,
        min_new_tokens=steps,
        do_sample=False,
        output_logits=True,
        return_dict_in_generate=True,
        pad_token_id=base.tokenizer.eos_token_id,
    )
    return torch.stack(output.logits)


@pytest.mark.slow
def test_a_reused_prefix_gives_the_logits_of_evaluating_from_scratch(shared_base: LoadedBase) -> None:
    tokenizer = shared_base.tokenizer
    turn_one = tokenizer(
        "<|im_start|>system\nYou are a supportive CBT therapist. " * 6 + "<|im_end|>\n<|im_start|>user\nI feel low.",
        add_special_tokens=False,
    )["input_ids"]
    turn_two = turn_one + tokenizer(" I cannot sleep and I think I will lose my job.<|im_end|>\n" * 6)["input_ids"]
    assert len(turn_one) > CHUNK and len(turn_two) > len(turn_one) + CHUNK, (len(turn_one), len(turn_two))
    store = PrefixCacheStore()

    first = shared_base.new_cache()
    step_logits(shared_base, turn_one, first, steps=4)
    assert store.keep(None, turn_one, first) == whole_chunk_length(len(turn_one))
    lease = store.take(None, turn_two, shared_base.new_cache)
    assert lease.reused == whole_chunk_length(len(turn_one))

    reused = step_logits(shared_base, turn_two, lease.cache, steps=6)
    fresh = step_logits(shared_base, turn_two, shared_base.new_cache(), steps=6)
    assert torch.equal(reused, fresh), f"max logit difference {(reused - fresh).abs().max().item()}"
