"""What a study's endpoints cost: the tokens each remote model used (as its backend reported them) times
the study file's `prices`.

Local models (llama.cpp, transformers) cost nothing per token and are left out. A remote model with no
price in the study file gets no number, and the row says why: a cost is never guessed. Calls whose backend
reported no prompt tokens are counted (the ledger's calls_without_prompt_tokens) and make the cost a
marked lower bound. Judge calls are logged by cbtcompare.ctrs.batch with estimated
reply tokens only, so a judge's cost is marked as a lower bound. This module never calls a model.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path

from pydantic import BaseModel, Field

from cbtcompare.study.spec import Price


class UsageTotal(BaseModel):
    """One model in one role, summed over the usage ledger."""

    model: str
    role: str
    prompt_tokens: int = 0
    completion_tokens: float = 0
    seconds: float = 0.0
    calls_without_prompt_count: int = Field(
        0,
        description="calls whose backend reported no prompt tokens: a row's calls_without_prompt_tokens, or one for "
        "a row with no prompt_tokens at all",
    )


def read_usage_ledger(path: Path) -> dict[tuple[str, str], UsageTotal]:
    """(model, role) -> totals over every line of a study's usage.jsonl; a line cut by a kill is skipped."""
    totals: dict[tuple[str, str], UsageTotal] = {}
    if not path.is_file():
        return totals
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            row = json.loads(line)
            key = (str(row["model"]), str(row["role"]))
            completion, seconds = float(row["completion_tokens"]), float(row["seconds"])
            prompt = row.get("prompt_tokens")
            reported = isinstance(prompt, int | float) and not isinstance(prompt, bool)
            if not all(math.isfinite(v) and v >= 0 for v in (completion, seconds, *([prompt] if reported else []))):
                continue  # not a count this code wrote
            unreported = row.get("calls_without_prompt_tokens", 0)
            if not isinstance(unreported, int) or isinstance(unreported, bool) or unreported < 0:
                continue
        except (ValueError, KeyError, TypeError, AttributeError, RecursionError):
            continue
        total = totals.setdefault(key, UsageTotal(model=key[0], role=key[1]))
        total.completion_tokens += completion
        total.seconds += seconds
        if reported:
            total.prompt_tokens += int(prompt)
            total.calls_without_prompt_count += unreported
        else:
            total.calls_without_prompt_count += max(unreported, 1)
    return totals


class CostRow(BaseModel):
    model: str
    role: str
    prompt_tokens: int
    completion_tokens: int
    cost: float | None = Field(description="None when it cannot be known; `note` says why")
    currency: str = ""
    lower_bound: bool = Field(False, description="some tokens were not reported, so the true cost is higher")
    note: str = ""


def endpoint_costs(
    totals: Iterable[UsageTotal], prices: Mapping[str, Price], is_remote: Callable[[str], bool]
) -> list[CostRow]:
    """A cost row per remote model and role in `totals` (see the module docstring)."""
    rows = []
    for total in sorted(totals, key=lambda t: (t.role, t.model)):
        if not is_remote(total.model):
            continue
        price = prices.get(total.model)
        lower_bound = total.calls_without_prompt_count > 0
        note = ""
        if total.role == "judge":
            lower_bound, note = True, "judge prompt tokens are not logged; reply tokens are estimated"
        elif lower_bound:
            note = (
                f"lower bound: the backend did not report prompt tokens for {total.calls_without_prompt_count} "
                "call(s), counted as none"
            )
        cost = None
        if price is None:
            note = f"no price for {total.model} in the study file (prices:)"
        else:
            cost = round(
                total.prompt_tokens / 1e6 * price.input_per_million
                + total.completion_tokens / 1e6 * price.output_per_million,
                6,
            )
        rows.append(
            CostRow(
                model=total.model,
                role=total.role,
                prompt_tokens=total.prompt_tokens,
                completion_tokens=round(total.completion_tokens),
                cost=cost,
                currency=price.currency if price else "",
                lower_bound=lower_bound,
                note=note,
            )
        )
    return rows
