"""Real model providers: ``anthropic/<model>`` and ``openai/<model>`` (any OpenAI-compatible server).

``Providers`` is what a worker holds: its settings, the environment the keys come from, and the
price table. It makes a ``ModelClient`` for a model and an agent or assessor config:

- base URL: the config's ``baseUrl``, else ``MISSIONS_OPENAI_BASE_URL`` /
  ``MISSIONS_ANTHROPIC_BASE_URL``, else the SDK's own ``OPENAI_BASE_URL`` / ``ANTHROPIC_BASE_URL``,
  else the provider's official endpoint;
- key: the variable named by the config's ``apiKeyEnv``, else ``OPENAI_API_KEY`` /
  ``ANTHROPIC_API_KEY``. A missing key is an error that names the variable, except on a custom
  base URL where the default variable is unset: local servers (Ollama, vLLM, llama.cpp) take none.

An agent's ``baseUrl`` and ``apiKeyEnv`` belong to its own provider: when an escalation switches
to a model of another provider, they are not carried over.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from config import Settings
from config.prices import PriceTable, load_prices
from workers.execution.providers.base import ModelClient, ProviderError, RetryPolicy, Usage

KEY_ENV = {"openai": "OPENAI_API_KEY", "anthropic": "ANTHROPIC_API_KEY"}
SDK_BASE_URL_ENV = {"openai": "OPENAI_BASE_URL", "anthropic": "ANTHROPIC_BASE_URL"}
MODEL_PROVIDERS = tuple(KEY_ENV)
NO_KEY = "missions-no-key"  # sent to servers that need none (the SDKs insist on some value)


def split_model(model: str) -> tuple[str, str]:
    """``"openai/gpt-4o"`` -> ``("openai", "gpt-4o")``."""
    provider, _, name = model.partition("/")
    return provider, name


def endpoint_config(model: str, owner_model: str, config: Mapping[str, Any]) -> Mapping[str, Any]:
    """The ``baseUrl``/``apiKeyEnv`` of ``config`` (written for ``owner_model``) that apply to ``model``."""
    if split_model(model)[0] != split_model(owner_model)[0]:
        return {}
    return {k: config[k] for k in ("baseUrl", "apiKeyEnv") if config.get(k)}


@dataclass
class Providers:
    settings: Settings
    environ: Mapping[str, str] = field(default_factory=lambda: os.environ)
    _prices: PriceTable | None = None

    @property
    def prices(self) -> PriceTable:
        if self._prices is None:
            self._prices = load_prices(self.settings.prices_file, self.settings.prices)
        return self._prices

    @property
    def retry_policy(self) -> RetryPolicy:
        return RetryPolicy(self.settings.provider_retries, self.settings.provider_backoff_seconds)

    def cost(self, model: str, usage: Usage) -> float:
        return self.prices.cost(model, usage.tokens_in, usage.tokens_out)

    def base_url(self, provider: str, config: Mapping[str, Any]) -> str | None:
        configured = {"openai": self.settings.openai_base_url, "anthropic": self.settings.anthropic_base_url}
        value = config.get("baseUrl") or configured.get(provider) or self.environ.get(SDK_BASE_URL_ENV[provider])
        text = str(value or "").strip()
        return text or None

    def client(self, model: str, config: Mapping[str, Any]) -> ModelClient:
        """A client for ``provider/model``; ``ProviderError`` (not transient) when it cannot be made."""
        provider, name = split_model(model)
        if provider not in KEY_ENV:
            raise ProviderError(f"model {model!r}: provider {provider!r} is not one of {', '.join(MODEL_PROVIDERS)}")
        if not name.strip():
            raise ProviderError(f"model {model!r} names no model after the provider")
        base_url = self.base_url(provider, config)
        named = config.get("apiKeyEnv")
        key_env = str(named) if named else KEY_ENV[provider]
        key = (self.environ.get(key_env) or "").strip()
        if not key:
            if named:
                raise ProviderError(
                    f"no API key for {model}: its apiKeyEnv names {key_env}, which is not set in "
                    "the workers' environment"
                )
            if base_url is None:
                raise ProviderError(
                    f"no API key for {model}: set {key_env} in the workers' environment (or name "
                    "another variable with the agent's apiKeyEnv, or give a baseUrl for a local "
                    "server)"
                )
            key = NO_KEY
        timeout = self.settings.provider_timeout_seconds
        # The SDK modules are imported on first use: importing openai takes ~0.5 s here, anthropic ~2 s,
        # which a worker running scripted agents only (and every API process) should not pay.
        if provider == "openai":
            from workers.execution.providers.openai_chat import OpenAIChat

            return OpenAIChat(api_key=key, base_url=base_url, timeout=timeout, key_env=key_env)
        from workers.execution.providers.anthropic_messages import AnthropicMessages

        return AnthropicMessages(api_key=key, base_url=base_url, timeout=timeout, key_env=key_env)
