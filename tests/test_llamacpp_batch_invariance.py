"""Batch-split invariance of the llama.cpp pool on the real SmolLM2 GGUF, and the reuse it allows.

llama.cpp's CPU kernels compute each row of a multi-row batch the same way whatever the batch's size; a
one-row decode takes other kernels and rounds differently (the logits of a lone last token differed by up
to 0.35 from the same token inside a batch). The pool decodes a lone token beside a throwaway row, so any
split of a prompt, and a generated reply decoded token by token, give bit-identical logits: a later turn
can keep the generated reply's KV, as raw llama-cpp-python does, and still sample the text that evaluating
from scratch would.
"""

from __future__ import annotations

import numpy as np
import pytest

from cbtcompare.models.base import Message, ModelSpec, Sampling
from cbtcompare.models.llamacpp import LlamaCppModel, cached_prefix

PATIENT = [
    "I have been feeling low for weeks and I can't sleep.",
    "Mostly at night. I lie awake thinking about work.",
    "That I'm going to be fired because I'm not good enough.",
]


@pytest.fixture(scope="module")
def model():
    loaded = LlamaCppModel(ModelSpec(name="invariance", backend="llamacpp", weights="embedded:smollm2"))
    yield loaded
    loaded.close()


@pytest.fixture(autouse=True)
def prefix_reuse_default(monkeypatch):
    monkeypatch.delenv("CBTCOMPARE_PREFIX_REUSE", raising=False)


def last_logits(model: LlamaCppModel, tokens: list[int], cuts: list[int]) -> np.ndarray:
    """Logits after evaluating `tokens` from scratch, one pool decode call per piece between `cuts`."""
    model.shared.forget_caches()
    with model.shared.context(None, 1.0, tokens, n_ctx=model.spec.n_ctx) as llama:
        llama.n_tokens = 0
        start = 0
        for end in [*cuts, len(tokens)]:
            llama.eval(tokens[start:end])
            start = end
        return np.ctypeslib.as_array(llama._ctx.get_logits_ith(-1), shape=(model.shared.model.n_vocab(),)).copy()


def test_every_split_of_a_prompt_gives_the_logits_of_one_batch(model):
    messages = [Message("system", "You are a supportive CBT therapist. " * 6), Message("user", PATIENT[0])]
    tokens = model._render(messages)[0]
    n = len(tokens)
    whole = last_logits(model, tokens, [])
    splits = {
        "last token alone": [n - 1],
        "twelve tokens one by one": [40, *range(41, 52)],
        "uneven pieces": [3, 5, 6, 37, n - 2],
    }
    for name, cuts in splits.items():
        assert np.array_equal(last_logits(model, tokens, cuts), whole), f"{name}: the split changed the logits"


def converse(model: LlamaCppModel, *, from_scratch: bool) -> tuple[list[str], list[int], list[int]]:
    messages = [Message("system", "You are a supportive CBT therapist. Answer in two sentences.")]
    replies, reused, prompts = [], [], []
    for turn, text in enumerate(PATIENT):
        messages.append(Message("user", text))
        if from_scratch:
            model.shared.forget_caches()
        stream = model.stream(messages, Sampling(temperature=0.8, max_tokens=16, seed=7 + turn))
        replies.append("".join(stream))
        reused.append(stream.usage.cached_prompt_tokens)
        prompts.append(stream.usage.prompt_tokens)
        messages.append(Message("assistant", replies[-1]))
    return replies, reused, prompts


@pytest.mark.slow
def test_a_turn_keeps_the_last_reply_it_generated_and_samples_the_fresh_text(model):
    fresh, fresh_reused, _ = converse(model, from_scratch=True)
    cached, cached_reused, prompts = converse(model, from_scratch=False)
    assert set(fresh_reused) == {0}
    for turn in range(1, len(PATIENT)):
        # the whole previous prompt and the reply generated after it (chunk-aligned reuse stopped at the
        # previous prompt's generation header: the reply and its header were read again every turn)
        assert cached_reused[turn] > prompts[turn - 1], (turn, cached_reused, prompts)
    assert cached == fresh


def test_the_cached_prefix_is_what_both_share_less_the_prompts_last_token():
    assert cached_prefix([1, 2, 3, 9], [1, 2, 3, 4, 5]) == 3
    assert cached_prefix([1, 2, 3, 4, 5, 6], [1, 2, 3, 4, 5]) == 4  # the last token's logits need a decode
    assert cached_prefix([], [1, 2]) == 0
    assert cached_prefix([7], [1, 2]) == 0
    assert cached_prefix([1], [1]) == 0
