"""The context guard's "trim" policy: what it keeps, and that a trimmed conversation keeps its beginning.

Token counts come from a word counter with a per-message and per-prompt overhead, as a chat template adds;
the llama.cpp backend's real counter is exercised in test_llamacpp_backend.py.
"""

from __future__ import annotations

import random
from collections.abc import Sequence

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cbtcompare.models.base import ContextOverflow, Message
from cbtcompare.models.context import fit_to_context


def words(messages: Sequence[Message]) -> int:
    return 3 + sum(4 + len(m.content.split()) for m in messages)


def conversation(turns: int, seed: int) -> list[Message]:
    rng = random.Random(seed)
    messages = [Message(role="system", content="be brief " * 10)]
    for t in range(turns):
        messages.append(Message(role="user", content=f"u{t} " * rng.randint(10, 60)))
        messages.append(Message(role="assistant", content=f"a{t} " * rng.randint(40, 120)))
    return messages


def trim(messages: list[Message], n_ctx: int = 900, reserve: int = 100) -> list[Message]:
    kept, dropped = fit_to_context(messages, count_tokens=words, n_ctx=n_ctx, reserve=reserve, policy="trim")
    assert dropped == len(messages) - len(kept)
    return kept


@pytest.mark.parametrize("seed", range(4))
def test_a_trimmed_conversation_keeps_its_beginning_for_the_turns_that_follow(seed):
    """Each turn the person adds a message to the last prompt and its reply. When the guard has trimmed, the
    next prompt should most often extend the previous one, so a backend's cached prefix still holds. Dropping
    just enough each turn changes every prompt's beginning from the first trim on (the old rule: 0 of 26)."""
    full = conversation(30, seed)
    previous: list[Message] | None = None
    extended = trimmed_turns = 0
    for end in range(3, len(full) + 1, 2):  # system + user, then each reply and the next user message
        kept = trim(full[:end])
        assert words(kept) <= 800 and kept[-1] is full[end - 1] and kept[0] is full[0]
        if len(kept) < end and previous is not None and len(previous) < end - 2:
            trimmed_turns += 1
            extended += kept[: len(previous)] == previous
        previous = kept
    assert trimmed_turns >= 20
    assert extended >= trimmed_turns / 2, f"only {extended} of {trimmed_turns} trimmed prompts kept the last one"


def test_the_newest_message_alone_over_budget_is_refused_with_what_to_do():
    messages = [Message(role="system", content="s"), Message(role="user", content="w " * 2000)]
    with pytest.raises(ContextOverflow, match="shorten it or lower max_tokens"):
        trim(messages)


roles = st.sampled_from(["system", "user", "assistant"])
texts = st.lists(st.sampled_from(["w ", "x", " ", "\n", "é ", "<|im_end|> ", "\\", '"']), max_size=200).map("".join)


@settings(max_examples=200, deadline=None)
@given(
    body=st.lists(st.tuples(roles, texts), max_size=30),
    last=texts,
    n_ctx=st.integers(min_value=40, max_value=1500),
    reserve=st.integers(min_value=0, max_value=300),
)
def test_trim_keeps_system_and_newest_drops_only_the_oldest_and_fits(body, last, n_ctx, reserve):
    messages = [Message(role=r, content=c) for r, c in body] + [Message(role="user", content=last)]
    try:
        kept, dropped = fit_to_context(messages, count_tokens=words, n_ctx=n_ctx, reserve=reserve, policy="trim")
    except ContextOverflow as exc:
        assert "max_tokens" in str(exc)
        return
    assert words(kept) <= n_ctx - reserve
    assert dropped == len(messages) - len(kept)
    assert kept[-1] is messages[-1]
    assert [m for m in kept if m.role == "system"] == [m for m in messages if m.role == "system"]
    rest = [m for m in messages if m.role != "system"]
    kept_rest = [m for m in kept if m.role != "system"]
    assert kept_rest == rest[len(rest) - len(kept_rest) :]  # only the oldest go
    assert [m for m in messages if any(m is k for k in kept)] == kept  # order unchanged


@settings(max_examples=100, deadline=None)
@given(seed=st.integers(0, 10_000), n_ctx=st.integers(300, 2000))
def test_a_dropped_message_never_comes_back_as_the_conversation_grows(seed, n_ctx):
    full = conversation(20, seed)
    dropped_before = 0
    for end in range(3, len(full) + 1, 2):
        try:
            kept, dropped = fit_to_context(full[:end], count_tokens=words, n_ctx=n_ctx, reserve=50, policy="trim")
        except ContextOverflow:
            continue
        assert dropped >= dropped_before
        dropped_before = dropped
