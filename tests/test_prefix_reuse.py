"""KV prefix reuse on the real SmolLM2 GGUF: flat cost per turn, and the same text as evaluating from scratch.

Each request used to reset the KV cache, because reusing a cached prefix changed the sampled text. Now
every decode has two rows or more (any batch split gives the same logits), so a 12-turn conversation must
give identical replies whether every turn reuses the cached prefix or evaluates the whole conversation anew.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from cbtcompare.models.base import Message, ModelSpec, Sampling
from cbtcompare.models.gguf_lora import random_lora_for
from cbtcompare.models.llamacpp import (
    LlamaCppModel,
    prefill_aligned,
    prefix_reuse_enabled,
    thread_split,
)

HEADER_TOKENS = 8  # a chat template's "assistant" header, re-read because it was the generation prompt

PATIENT_TURNS = [
    "I have been feeling low for weeks and I can't sleep.",
    "Mostly at night. I lie awake thinking about work.",
    "That I'm going to be fired because I'm not good enough.",
    "My manager said my last report had mistakes.",
    "I guess it was two small mistakes in a long report.",
    "No, she also said the analysis was useful.",
    "Maybe 30 percent sure I'll be fired, if I'm honest.",
    'I tell myself "you always mess things up".',
    "I could write down what actually happened at work.",
    "Walking used to help. I stopped going out.",
    "I could walk for ten minutes after dinner.",
    "Thank you. Can we sum up what we talked about?",
]


def converse(model: LlamaCppModel, *, from_scratch: bool) -> tuple[list[str], list[int], list[int]]:
    messages = [Message("system", "You are a supportive CBT therapist. Answer in two sentences.")]
    replies, reused, prompts = [], [], []
    for turn, text in enumerate(PATIENT_TURNS):
        messages.append(Message("user", text))
        if from_scratch:
            model.shared.forget_caches()
        stream = model.stream(messages, Sampling(temperature=0.8, max_tokens=16, seed=100 + turn))
        reply = "".join(stream)
        replies.append(reply)
        reused.append(stream.usage.cached_prompt_tokens)
        prompts.append(stream.usage.prompt_tokens)
        messages.append(Message("assistant", reply))
    return replies, reused, prompts


@pytest.fixture(autouse=True)
def prefix_reuse_default(monkeypatch):
    monkeypatch.delenv("CBTCOMPARE_PREFIX_REUSE", raising=False)  # reuse is the default


@pytest.fixture(scope="module")
def lora(tmp_path_factory, default_gguf) -> Path:
    return random_lora_for(default_gguf, tmp_path_factory.mktemp("lora") / "lora.gguf", scale=0.08)


@pytest.mark.slow
@pytest.mark.parametrize("with_adapter", [False, True], ids=["base", "adapter"])
def test_twelve_turns_reusing_the_prefix_give_the_text_of_fresh_evaluation(with_adapter, lora):
    spec = ModelSpec(
        name="reuse-adapter" if with_adapter else "reuse-base",
        backend="llamacpp",
        weights="embedded:smollm2",
        adapter=str(lora) if with_adapter else None,
    )
    model = LlamaCppModel(spec)
    fresh, fresh_reused, _ = converse(model, from_scratch=True)
    cached, cached_reused, prompts = converse(model, from_scratch=False)
    assert set(fresh_reused) == {0}
    # turn k re-reads at most what is new: the last reply's header onwards (it re-read 30-150 tokens more a
    # turn when prompts were cut every 64 positions)
    for turn in range(1, len(PATIENT_TURNS)):
        assert cached_reused[turn] >= prompts[turn - 1] - HEADER_TOKENS, (turn, cached_reused, prompts)
    assert cached == fresh


@pytest.mark.slow
@pytest.mark.parametrize("warm_by", ["env", "keep_warm"])
def test_a_conversation_returns_to_the_context_holding_its_prefix(default_gguf, warm_by, tmp_path):
    """Two conversations alternate on one weights file: each keeps reusing its own prefix."""
    import os
    import shutil

    if warm_by == "env":
        os.environ["CBTCOMPARE_WARM_CONTEXTS"] = "2"
    private = tmp_path / "sticky.gguf"  # its own shared entry: no other test's contexts in the pool
    shutil.copyfile(default_gguf, private)
    try:
        model = LlamaCppModel(ModelSpec(name="sticky", backend="llamacpp", weights=str(private)))
        if warm_by == "keep_warm":
            model.shared.keep_warm(2)
        model.shared.forget_caches()
        a = [Message("system", "You are a calm therapist. " * 20), Message("user", "I feel anxious.")]
        b = [Message("system", "You are a patient describing your week. " * 20), Message("user", "How was it?")]
        sampling = Sampling(temperature=0.0, max_tokens=8, seed=1)
        for _ in range(2):
            for conversation in (a, b):
                stream = model.stream(conversation, sampling)
                conversation.append(Message("assistant", "".join(stream)))
                conversation.append(Message("user", "Tell me more."))
        third = [model.stream(c, sampling) for c in (a, b)]
        for conversation, stream in zip((a, b), third, strict=True):
            "".join(stream)
            system_tokens = model.count_tokens(conversation[:1]) - HEADER_TOKENS  # its own system prompt, at least
            assert stream.usage.cached_prompt_tokens >= system_tokens > 0
        model.close()
    finally:
        os.environ.pop("CBTCOMPARE_WARM_CONTEXTS", None)


def first_token_logits(model: LlamaCppModel, messages: list[Message]) -> tuple[np.ndarray, int]:
    """The logits the backend samples the first reply token from, by its own request path; and how many
    prompt positions came from the cached prefix."""
    tokens, _ = model._render(messages)
    shared = model.shared
    with shared.context(model._adapter, model.spec.adapter_scale, tokens, n_ctx=model.spec.n_ctx) as llama:
        kept = prefill_aligned(llama, tokens)
        llama.eval(tokens[-1:])
        logits = np.ctypeslib.as_array(llama._ctx.get_logits_ith(-1), shape=(shared.model.n_vocab(),)).copy()
    return logits, kept


def test_the_adapter_changes_logits_over_a_cached_prefix_exactly_as_from_scratch(lora):
    """Reuse was opt-in because an adapter's effect looked lost over pre-evaluated prompts: it is not."""
    base = LlamaCppModel(ModelSpec(name="logits-base", backend="llamacpp", weights="embedded:smollm2"))
    tuned = LlamaCppModel(
        ModelSpec(name="logits-tuned", backend="llamacpp", weights="embedded:smollm2", adapter=str(lora))
    )
    conversation = [Message("system", "You are a supportive CBT therapist. " * 12), Message("user", PATIENT_TURNS[0])]
    longer = [*conversation, Message("assistant", "Tell me more."), Message("user", PATIENT_TURNS[1])]
    results = {}
    for model in (base, tuned):
        model.shared.forget_caches()
        first_token_logits(model, conversation)  # leaves the shared prefix in the cache
        results[model.name, "cached"] = first_token_logits(model, longer)
        model.shared.forget_caches()
        results[model.name, "scratch"] = first_token_logits(model, longer)
    for name in ("logits-base", "logits-tuned"):
        (cached, kept), (scratch, fresh) = results[name, "cached"], results[name, "scratch"]
        system_tokens = model.count_tokens(conversation[:1]) - HEADER_TOKENS
        assert kept >= system_tokens > 0 and fresh == 0, (kept, fresh)
        assert np.array_equal(cached, scratch), f"{name}: a cached prefix changed the logits"
    effect = np.abs(results["logits-tuned", "cached"][0] - results["logits-base", "cached"][0]).max()
    assert effect > 1.0, f"the adapter moved the logits by only {effect} over a cached prefix"


def test_reuse_is_on_unless_switched_off(monkeypatch):
    assert prefix_reuse_enabled()
    monkeypatch.setenv("CBTCOMPARE_PREFIX_REUSE", "0")
    assert not prefix_reuse_enabled()


def test_thread_split_gives_a_lone_stream_every_core_for_prompts_and_shares_them():
    assert thread_split(1, cores=16) == (8, 16)
    assert thread_split(2, cores=16) == (4, 8)
    assert thread_split(3, cores=16) == (2, 5)
    assert thread_split(1, cores=2) == (1, 2)
    assert thread_split(2, cores=2) == (1, 1)
    assert thread_split(8, cores=2) == (1, 1)  # never below one thread
    assert thread_split(0, cores=4) == (2, 4)
