"""The rule "is this run over its budget".

A mission's ``budget`` (``{"maxCostUsd": n}`` and/or ``{"maxTokens": n}``, tokens in + out)
applies to each run. The shell adds up what the run's attempts and judges spent and asks
``budget_exceeded``; once it answers a reason, the shell feeds ``engine.BudgetExceeded`` to the run.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol


class Spent(Protocol):
    """What a run has spent so far (the shell's ``workers.store.usage.Totals``)."""

    @property
    def tokens(self) -> int: ...

    @property
    def cost_usd(self) -> float: ...


def budget_exceeded(budget: Mapping[str, Any] | None, spent: Spent) -> str | None:
    """Why ``spent`` is over ``budget``, or None while within it (or without a budget). A limit is
    exceeded only when strictly passed: spending exactly the budget is within it."""
    if not budget:
        return None
    max_cost = budget.get("maxCostUsd")
    if isinstance(max_cost, (int, float)) and spent.cost_usd > max_cost:
        return f"cost ${spent.cost_usd:.6f} is over the budget's maxCostUsd ${float(max_cost):g}"
    max_tokens = budget.get("maxTokens")
    if isinstance(max_tokens, (int, float)) and spent.tokens > max_tokens:
        return f"{spent.tokens} tokens are over the budget's maxTokens {int(max_tokens)}"
    return None
