"""KV prefix reuse on the real SmolLM2 GGUF: flat cost per turn, and the same text as evaluating from scratch.

Each request used to reset the KV cache, because reusing a cached prefix changed the sampled text. Now
prompts are evaluated in position-aligned chunks on both paths, so a 12-turn conversation must give
identical replies whether every turn reuses the cached prefix or evaluates the whole conversation anew.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from cbtcompare.models.base import Message, ModelSpec, Sampling
from cbtcompare.models.gguf_lora import random_lora_for
from cbtcompare.models.llamacpp import PREFIX_CHUNK_TOKENS, LlamaCppModel, aligned_reusable_prefix

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


def converse(model: LlamaCppModel, *, from_scratch: bool) -> tuple[list[str], list[int]]:
    messages = [Message("system", "You are a supportive CBT therapist. Answer in two sentences.")]
    replies, reused = [], []
    for turn, text in enumerate(PATIENT_TURNS):
        messages.append(Message("user", text))
        if from_scratch:
            model.shared.forget_caches()
        stream = model.stream(messages, Sampling(temperature=0.8, max_tokens=16, seed=100 + turn))
        reply = "".join(stream)
        replies.append(reply)
        reused.append(stream.usage.cached_prompt_tokens)
        messages.append(Message("assistant", reply))
    return replies, reused


@pytest.fixture(autouse=True)
def prefix_reuse_on(monkeypatch):
    monkeypatch.setenv("CBTCOMPARE_PREFIX_REUSE", "1")


@pytest.fixture(scope="module")
def lora(tmp_path_factory, default_gguf) -> Path:
    return random_lora_for(default_gguf, tmp_path_factory.mktemp("lora") / "lora.gguf", scale=0.08)


@pytest.mark.slow
# The adapter case is left out: with reuse on, an adapter's effect was measured lost (reuse is opt-in).
@pytest.mark.parametrize("with_adapter", [False], ids=["base"])
def test_twelve_turns_reusing_the_prefix_give_the_text_of_fresh_evaluation(with_adapter, lora):
    spec = ModelSpec(
        name="reuse-adapter" if with_adapter else "reuse-base",
        backend="llamacpp",
        weights="embedded:smollm2",
        adapter=str(lora) if with_adapter else None,
    )
    model = LlamaCppModel(spec)
    fresh, fresh_reused = converse(model, from_scratch=True)
    cached, cached_reused = converse(model, from_scratch=False)
    assert set(fresh_reused) == {0}
    assert sum(1 for n in cached_reused[1:] if n > 0) >= len(PATIENT_TURNS) - 2, cached_reused
    assert cached == fresh


@pytest.mark.slow
def test_a_conversation_returns_to_the_context_holding_its_prefix(default_gguf):
    """Two conversations alternate on one weights file: each keeps reusing its own prefix."""
    import os

    os.environ["CBTCOMPARE_WARM_CONTEXTS"] = "2"
    try:
        model = LlamaCppModel(ModelSpec(name="sticky", backend="llamacpp", weights="embedded:smollm2"))
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
        for stream in third:
            "".join(stream)
            assert stream.usage.cached_prompt_tokens >= PREFIX_CHUNK_TOKENS
    finally:
        del os.environ["CBTCOMPARE_WARM_CONTEXTS"]


def test_reusable_prefix_is_chunk_aligned_and_leaves_the_last_token():
    chunk = PREFIX_CHUNK_TOKENS
    prompt = list(range(3 * chunk + 5))
    assert aligned_reusable_prefix(prompt, prompt) == 3 * chunk
    assert aligned_reusable_prefix(prompt[: 3 * chunk], prompt) == 3 * chunk
    assert aligned_reusable_prefix(prompt[: chunk + 3] + [-1], prompt) == chunk
    assert aligned_reusable_prefix([], prompt) == 0
    exact = list(range(2 * chunk))
    assert aligned_reusable_prefix(exact, exact) == chunk  # the last token is always decoded again
    # positions past the last whole aligned chunk were evaluated in other batches: never reused
    assert aligned_reusable_prefix(prompt, prompt, valid=chunk + 10) == chunk
    assert aligned_reusable_prefix(prompt, prompt, valid=0) == 0
