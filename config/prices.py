"""What model tokens cost, in US dollars per million tokens.

``DEFAULT_PRICES`` holds list prices of common models (input, output). An operator overrides or
extends them with ``MISSIONS_PRICES_FILE`` (a JSON file) and/or ``MISSIONS_PRICES`` (the same JSON
inline; it wins over the file), shaped ``{"openai/gpt-4o": {"input": 2.5, "output": 10}}``. A model
is looked up by its exact ``provider/model`` name, then by the longest known name it starts with
followed by ``-`` (so ``anthropic/claude-sonnet-4-5-20250929`` is priced as
``anthropic/claude-sonnet-4-5``). A model with no price costs 0: local models (Ollama, vLLM) are
free, and a budget's ``maxTokens`` still applies to them.

Parsing here is pure (no I/O except reading the named file when asked); a malformed table raises
``ConfigError`` naming the variable.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from config.errors import ConfigError

PER = 1_000_000

# (input, output) USD per million tokens; list prices, standard tier.
DEFAULT_PRICES: Mapping[str, tuple[float, float]] = {
    "anthropic/claude-opus-4-5": (5.0, 25.0),
    "anthropic/claude-opus-4-1": (15.0, 75.0),
    "anthropic/claude-opus-4": (15.0, 75.0),
    "anthropic/claude-sonnet-4-5": (3.0, 15.0),
    "anthropic/claude-sonnet-4": (3.0, 15.0),
    "anthropic/claude-3-7-sonnet": (3.0, 15.0),
    "anthropic/claude-haiku-4-5": (1.0, 5.0),
    "anthropic/claude-3-5-haiku": (0.8, 4.0),
    "openai/gpt-5": (1.25, 10.0),
    "openai/gpt-5-mini": (0.25, 2.0),
    "openai/gpt-5-nano": (0.05, 0.4),
    "openai/gpt-4.1": (2.0, 8.0),
    "openai/gpt-4.1-mini": (0.4, 1.6),
    "openai/gpt-4.1-nano": (0.1, 0.4),
    "openai/gpt-4o": (2.5, 10.0),
    "openai/gpt-4o-mini": (0.15, 0.6),
    "openai/o3": (2.0, 8.0),
    "openai/o4-mini": (1.1, 4.4),
}


@dataclass(frozen=True)
class Price:
    input: float  # USD per million input tokens
    output: float  # USD per million output tokens

    def cost(self, tokens_in: int, tokens_out: int) -> float:
        return (tokens_in * self.input + tokens_out * self.output) / PER


@dataclass(frozen=True)
class PriceTable:
    prices: Mapping[str, Price] = field(default_factory=dict)

    def price_of(self, model: str) -> Price | None:
        """The price of ``provider/model``: exact name, else the longest known ``name-`` prefix."""
        if model in self.prices:
            return self.prices[model]
        best = ""
        for name in self.prices:
            if model.startswith(name + "-") and len(name) > len(best):
                best = name
        return self.prices[best] if best else None

    def cost(self, model: str, tokens_in: int, tokens_out: int) -> float:
        price = self.price_of(model)
        return round(price.cost(tokens_in, tokens_out), 8) if price is not None else 0.0

    def merged(self, overrides: Mapping[str, Price]) -> PriceTable:
        return PriceTable({**self.prices, **overrides})


def default_table() -> PriceTable:
    return PriceTable({name: Price(*pair) for name, pair in DEFAULT_PRICES.items()})


def parse_prices(raw: str | Mapping[str, Any]) -> dict[str, Price]:
    """``{"provider/model": {"input": n, "output": n}}`` (JSON text or already decoded) -> prices.

    Raises ValueError with the offending entry named.
    """
    if isinstance(raw, str):
        try:
            data = json.loads(raw)
        except json.JSONDecodeError as exc:
            raise ValueError(f"not valid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}") from None
    else:
        data = raw
    if not isinstance(data, Mapping):
        raise ValueError('expected a JSON object like {"openai/gpt-4o": {"input": 2.5, "output": 10}}')
    out: dict[str, Price] = {}
    for name, entry in data.items():
        if not isinstance(name, str) or "/" not in name:
            raise ValueError(f'price key {name!r} must be "provider/model"')
        if not isinstance(entry, Mapping):
            raise ValueError(f'price of {name!r} must be an object {{"input": n, "output": n}}')
        values: list[float] = []
        for side in ("input", "output"):
            value = entry.get(side, 0)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value < 1e6:
                raise ValueError(f"{side} price of {name!r} must be a number of USD per million tokens, got {value!r}")
            values.append(float(value))
        unknown = set(entry) - {"input", "output"}
        if unknown:
            raise ValueError(f"price of {name!r} has unknown fields {sorted(unknown)} (use input and output)")
        out[name] = Price(*values)
    return out


def validate_inline(raw: str) -> str:
    """The settings parser of ``MISSIONS_PRICES``: checks the JSON, keeps the text."""
    parse_prices(raw)
    return raw.strip()


def load_prices(prices_file: Path | None = None, inline: str | None = None) -> PriceTable:
    """The default table overridden by the file, then by the inline JSON."""
    table = default_table()
    if prices_file is not None:
        try:
            text = Path(prices_file).read_text(encoding="utf-8")
        except OSError as exc:
            raise ConfigError("MISSIONS_PRICES_FILE", f"cannot read {prices_file}: {exc.strerror or exc}") from None
        try:
            table = table.merged(parse_prices(text))
        except ValueError as exc:
            raise ConfigError("MISSIONS_PRICES_FILE", f"{prices_file}: {exc}") from None
    if inline:
        try:
            table = table.merged(parse_prices(inline))
        except ValueError as exc:
            raise ConfigError("MISSIONS_PRICES", str(exc)) from None
    return table
