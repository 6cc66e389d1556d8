"""The context guard: keep a conversation inside a model's window by a stated policy.

Policies: "refuse" raises ContextOverflow with what to do; "trim" drops the oldest non-system turns
(a user turn with the assistant reply after it) until the prompt plus the reply budget fits, in steps of
half the budget, so that a trimmed conversation keeps its beginning for the turns that follow. The policy
is part of the ModelSpec, so it is stored with every session.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from cbtcompare.models.base import ContextOverflow, ContextPolicy, Message


def fit_to_context(
    messages: list[Message],
    *,
    count_tokens: Callable[[Sequence[Message]], int | None],
    n_ctx: int | None,
    reserve: int,
    policy: ContextPolicy,
    model: str | None = None,
) -> tuple[list[Message], int]:
    """Messages that fit `n_ctx` with `reserve` tokens left for the reply, and how many were dropped."""
    if n_ctx is None:
        return messages, 0
    if reserve >= n_ctx:
        raise ContextOverflow(
            f"max_tokens={reserve} leaves no room for the prompt in a {n_ctx}-token context; lower max_tokens",
            model=model,
        )
    budget = n_ctx - reserve
    used = count_tokens(messages)
    if used is None or used <= budget:
        return messages, 0
    if policy == "refuse":
        raise ContextOverflow(
            f"the conversation needs {used} tokens plus {reserve} for the reply, over the {n_ctx}-token context; "
            "clear or shorten the conversation, lower max_tokens, or use the 'trim' context policy",
            model=model,
        )
    units = droppable_units(messages)
    if len(units) <= 1:  # always keep the newest turn: it is what the model must answer
        raise ContextOverflow(
            f"the newest message alone needs {used} tokens, over the {budget} left after the reply budget; "
            "shorten it or lower max_tokens",
            model=model,
        )
    system = [m for m in messages if m.role == "system"]
    base = count_tokens(system) or 0

    def offset(k: int) -> int:
        """Tokens the oldest k units take, counted from the conversation's start (so appending never moves it)."""
        return (count_tokens(system + [messages[i] for unit in units[:k] for i in unit]) or 0) - base

    def without(k: int) -> list[Message]:
        gone = {i for unit in units[:k] for i in unit}
        return [m for i, m in enumerate(messages) if i not in gone]

    # The cut moves in steps of half the budget: the turns after a trim keep the same beginning (and so a
    # backend's cached prefix) until the conversation has grown by another step.
    step = max(1, budget // 2)
    cut = -(-(used - budget) // step) * step
    k = 1
    while k < len(units) - 1 and offset(k) < cut:
        k += 1
    while True:
        kept = without(k)
        used = count_tokens(kept) or 0
        if used <= budget:
            return kept, sum(len(unit) for unit in units[:k])
        if k >= len(units) - 1:
            raise ContextOverflow(
                f"the newest message alone needs {used} tokens, over the {budget} left after the reply budget; "
                "shorten it or lower max_tokens",
                model=model,
            )
        k += 1  # a template's tokens are not quite additive: drop one more


def droppable_units(messages: Sequence[Message]) -> list[list[int]]:
    """Positions of the non-system messages in the order they go: a user turn with the assistant reply after
    it, or one message alone; the last message is always a unit of its own."""
    rest = [i for i, m in enumerate(messages) if m.role != "system"]
    units: list[list[int]] = []
    j = 0
    while j < len(rest):
        followed = j + 1 < len(rest) - 1 and messages[rest[j + 1]].role == "assistant"
        span = 2 if messages[rest[j]].role == "user" and followed else 1
        units.append(rest[j : j + span])
        j += span
    return units
