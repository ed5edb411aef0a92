"""Cost is tokens times the model's price per million; the table can be overridden by a file or
inline JSON, and a malformed table names its variable."""

from __future__ import annotations

from pathlib import Path

import pytest

from config import ConfigError, Settings
from config.prices import Price, default_table, load_prices, parse_prices
from orchestrator.budget import budget_exceeded
from workers.store.usage import Totals


def test_cost_is_input_and_output_tokens_at_their_prices_per_million() -> None:
    table = default_table()
    assert table.cost("anthropic/claude-sonnet-4-5", 1_000_000, 0) == 3.0
    assert table.cost("anthropic/claude-sonnet-4-5", 2000, 500) == pytest.approx(0.006 + 0.0075)
    assert table.cost("openai/gpt-4o-mini", 10_000, 10_000) == pytest.approx(0.0015 + 0.006)


def test_a_dated_model_is_priced_as_its_family_and_the_longest_name_wins() -> None:
    table = default_table()
    assert table.price_of("anthropic/claude-sonnet-4-5-20250929") == Price(3.0, 15.0)
    assert table.price_of("openai/gpt-4o-mini-2024-07-18") == Price(0.15, 0.6)
    assert table.price_of("openai/gpt-4o-2024-08-06") == Price(2.5, 10.0)


def test_an_unknown_or_local_model_costs_nothing() -> None:
    table = default_table()
    assert table.price_of("openai/llama3.2") is None
    assert table.cost("openai/llama3.2", 10_000, 10_000) == 0.0
    assert table.price_of("openai/gpt-4ox") is None  # a prefix only counts up to a "-"


def test_a_file_and_then_inline_json_override_the_built_in_prices(tmp_path: Path) -> None:
    file = tmp_path / "prices.json"
    file.write_text('{"openai/gpt-4o": {"input": 1, "output": 2}, "openai/local": {"input": 0.5, "output": 0.5}}')
    table = load_prices(file, '{"openai/local": {"input": 4, "output": 8}}')
    assert table.price_of("openai/gpt-4o") == Price(1.0, 2.0)
    assert table.price_of("openai/local") == Price(4.0, 8.0)
    assert table.price_of("anthropic/claude-haiku-4-5") == Price(1.0, 5.0)


@pytest.mark.parametrize(
    ("raw", "problem"),
    [
        ("{", "not valid JSON"),
        ("[1]", "expected a JSON object"),
        ('{"gpt-4o": {"input": 1}}', '"provider/model"'),
        ('{"openai/x": 3}', "must be an object"),
        ('{"openai/x": {"input": "cheap"}}', "input price"),
        ('{"openai/x": {"input": -1}}', "input price"),
        ('{"openai/x": {"output": true}}', "output price"),
        ('{"openai/x": {"input": 1, "cached": 0.1}}', "unknown fields"),
    ],
)
def test_a_malformed_price_table_is_refused_with_the_entry_named(raw: str, problem: str) -> None:
    with pytest.raises(ValueError, match=problem.replace("[", r"\[").replace("(", r"\(")):
        parse_prices(raw)


def test_inline_prices_are_checked_when_settings_are_parsed() -> None:
    settings = Settings.from_env({"MISSIONS_PRICES": ' {"openai/x": {"input": 1, "output": 2}} '})
    assert settings.prices == '{"openai/x": {"input": 1, "output": 2}}'
    with pytest.raises(ConfigError) as raised:
        Settings.from_env({"MISSIONS_PRICES": '{"openai/x": {"input": "free"}}'})
    assert raised.value.variable == "MISSIONS_PRICES"


def test_an_unreadable_or_malformed_price_file_names_its_variable(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="MISSIONS_PRICES_FILE.*cannot read"):
        load_prices(tmp_path / "missing.json")
    bad = tmp_path / "bad.json"
    bad.write_text('{"openai/x": {"input": "a lot"}}')
    with pytest.raises(ConfigError, match="MISSIONS_PRICES_FILE.*input price"):
        load_prices(bad)


def test_provider_settings_are_parsed_and_checked() -> None:
    settings = Settings.from_env(
        {
            "MISSIONS_OPENAI_BASE_URL": "http://localhost:11434/v1",
            "MISSIONS_ANTHROPIC_BASE_URL": "https://proxy.example.com",
            "MISSIONS_PROVIDER_TIMEOUT_SECONDS": "30",
            "MISSIONS_PROVIDER_RETRIES": "0",
            "MISSIONS_PROVIDER_BACKOFF_SECONDS": "0.5",
            "MISSIONS_COMMAND_TIMEOUT_SECONDS": "5",
            "MISSIONS_PRICES_FILE": "~/prices.json",
        }
    )
    assert settings.openai_base_url == "http://localhost:11434/v1"
    assert settings.anthropic_base_url == "https://proxy.example.com"
    assert (settings.provider_timeout_seconds, settings.provider_retries, settings.provider_backoff_seconds) == (
        30.0,
        0,
        0.5,
    )
    assert settings.command_timeout_seconds == 5.0
    assert settings.prices_file == Path("~/prices.json").expanduser()
    for variable, raw in (
        ("MISSIONS_OPENAI_BASE_URL", "localhost:11434"),
        ("MISSIONS_PROVIDER_RETRIES", "-1"),
        ("MISSIONS_PROVIDER_BACKOFF_SECONDS", "soon"),
    ):
        with pytest.raises(ConfigError, match=variable):
            Settings.from_env({variable: raw})


def test_a_budget_is_exceeded_only_when_a_total_goes_over_it() -> None:
    spent = Totals(tokens_in=600, tokens_out=400, cost_usd=0.25)
    assert budget_exceeded(None, spent) is None
    assert budget_exceeded({}, spent) is None
    assert budget_exceeded({"maxTokens": 1000}, spent) is None
    assert budget_exceeded({"maxTokens": 999}, spent) == "1000 tokens are over the budget's maxTokens 999"
    assert budget_exceeded({"maxCostUsd": 0.25}, spent) is None
    assert "over the budget's maxCostUsd $0.2" in (
        budget_exceeded({"maxCostUsd": 0.2, "maxTokens": 10**6}, spent) or ""
    )
