"""The context guard: keep a conversation inside a model's window by a stated policy.

Policies: "refuse" raises ContextOverflow with what to do; "trim" drops the oldest non-system turns
(a user turn with the assistant reply after it) until the prompt plus the reply budget fits. The policy
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
    kept = list(messages)
    dropped = 0
    while True:
        droppable = [i for i, m in enumerate(kept) if m.role != "system"]
        # Always keep the newest turn: it is what the model must answer.
        if len(droppable) <= 1:
            raise ContextOverflow(
                f"the newest message alone needs {used} tokens, over the {budget} left after the reply budget; "
                "shorten it or lower max_tokens",
                model=model,
            )
        first = droppable[0]
        span = 2 if first + 1 < len(kept) - 1 and kept[first + 1].role == "assistant" else 1
        del kept[first : first + span]
        dropped += span
        used = count_tokens(kept) or 0
        if used <= budget:
            return kept, dropped
