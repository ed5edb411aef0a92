"""Real model providers: ``anthropic/<model>`` and ``openai/<model>`` (any OpenAI-compatible server).

``Providers`` is what a worker holds: its settings, the environment the keys come from, and the
price table. It makes a ``ModelClient`` for a model and an agent or assessor config. The endpoint
and the key variable are the operator's (docs/security.md):

- with a ``profile`` (one of ``MISSIONS_PROVIDER_PROFILES``): the profile's ``baseUrl`` and
  ``apiKeyEnv``, each defaulting as below;
- else the provider's: base URL ``MISSIONS_OPENAI_BASE_URL`` / ``MISSIONS_ANTHROPIC_BASE_URL``,
  else the SDK's own ``OPENAI_BASE_URL`` / ``ANTHROPIC_BASE_URL``, else the official endpoint;
  key ``OPENAI_API_KEY`` / ``ANTHROPIC_API_KEY``;
- a config's own ``baseUrl``/``apiKeyEnv`` only where the operator allows mission endpoints
  (``MISSIONS_ALLOW_MISSION_ENDPOINTS``); even then a mission's ``baseUrl`` is never sent the
  operator's default key, only the variable the mission names (or none).

A missing key is an error that names the variable, except on a custom base URL where the default
variable is unset: local servers (Ollama, vLLM, llama.cpp) take none. An agent's endpoint belongs
to its own provider: when an escalation switches to a model of another provider, it is not
carried over.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from config import Settings
from config.prices import PriceTable, load_prices
from orchestrator.failures import ErrorCode
from workers.execution.providers.base import ModelClient, ProviderError, RetryPolicy, Usage

KEY_ENV = {"openai": "OPENAI_API_KEY", "anthropic": "ANTHROPIC_API_KEY"}
SDK_BASE_URL_ENV = {"openai": "OPENAI_BASE_URL", "anthropic": "ANTHROPIC_BASE_URL"}
MODEL_PROVIDERS = tuple(KEY_ENV)
NO_KEY = "missions-no-key"  # sent to servers that need none (the SDKs insist on some value)


def split_model(model: str) -> tuple[str, str]:
    """``"openai/gpt-4o"`` -> ``("openai", "gpt-4o")``."""
    provider, _, name = model.partition("/")
    return provider, name


ENDPOINT_KEYS = ("profile", "baseUrl", "apiKeyEnv")


def endpoint_config(model: str, owner_model: str, config: Mapping[str, Any]) -> Mapping[str, Any]:
    """The ``profile``/``baseUrl``/``apiKeyEnv`` of ``config`` (written for ``owner_model``) that apply to ``model``."""
    if split_model(model)[0] != split_model(owner_model)[0]:
        return {}
    return {k: config[k] for k in ENDPOINT_KEYS if config.get(k)}


@dataclass(frozen=True)
class Endpoint:
    """Where a model call goes and which variable holds its key; ``key_named``: the variable was
    chosen for this endpoint (a missing value is then an error), ``key_allowed``: the provider's
    default key may be sent there."""

    base_url: str | None
    key_env: str
    key_named: bool
    key_allowed: bool = True


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

    def _default_base_url(self, provider: str) -> str | None:
        configured = {"openai": self.settings.openai_base_url, "anthropic": self.settings.anthropic_base_url}
        text = str(configured.get(provider) or self.environ.get(SDK_BASE_URL_ENV[provider]) or "").strip()
        return text or None

    def endpoint(self, provider: str, config: Mapping[str, Any]) -> Endpoint:
        """The endpoint of ``provider`` for ``config``; ``ProviderError`` when the config names one the
        operator did not offer (checked again here: a worker's settings are the ones that count)."""
        mission_url = str(config.get("baseUrl") or "").strip() or None
        mission_env = str(config.get("apiKeyEnv") or "").strip() or None
        if (mission_url or mission_env) and not self.settings.allow_mission_endpoints:
            raise ProviderError(
                "baseUrl and apiKeyEnv are chosen by this server's operator, not by a mission: name one of "
                'the operator\'s provider profiles with "profile" (MISSIONS_PROVIDER_PROFILES)',
                code=ErrorCode.CONFIGURATION_ERROR,
            )
        name = config.get("profile")
        if name:
            profile = self.settings.profile(str(name))
            if profile is None:
                raise ProviderError(
                    f"provider profile {name!r} is not defined on this worker (MISSIONS_PROVIDER_PROFILES)",
                    code=ErrorCode.CONFIGURATION_ERROR,
                )
            if profile.provider != provider:
                raise ProviderError(
                    f"provider profile {name!r} is for {profile.provider} models, not {provider} ones",
                    code=ErrorCode.CONFIGURATION_ERROR,
                )
            return Endpoint(
                profile.base_url or self._default_base_url(provider),
                profile.api_key_env or KEY_ENV[provider],
                key_named=profile.api_key_env is not None,
            )
        if mission_url or mission_env:
            return Endpoint(
                mission_url or self._default_base_url(provider),
                mission_env or KEY_ENV[provider],
                key_named=mission_env is not None,
                key_allowed=mission_url is None or mission_env is not None,
            )
        return Endpoint(self._default_base_url(provider), KEY_ENV[provider], key_named=False)

    def client(self, model: str, config: Mapping[str, Any]) -> ModelClient:
        """A client for ``provider/model``; ``ProviderError`` (not transient) when it cannot be made."""
        provider, name = split_model(model)
        if provider not in KEY_ENV:
            raise ProviderError(
                f"model {model!r}: provider {provider!r} is not one of {', '.join(MODEL_PROVIDERS)}",
                code=ErrorCode.CONFIGURATION_ERROR,
            )
        if not name.strip():
            raise ProviderError(f"model {model!r} names no model after the provider", code=ErrorCode.MODEL_NOT_FOUND)
        endpoint = self.endpoint(provider, config)
        base_url, key_env = endpoint.base_url, endpoint.key_env
        key = (self.environ.get(key_env) or "").strip() if endpoint.key_allowed else ""
        if not key:
            if endpoint.key_named:
                raise ProviderError(
                    f"no API key for {model}: its endpoint's key variable {key_env} is not set in the workers' "
                    "environment",
                    code=ErrorCode.MISSING_KEY,
                )
            if base_url is None:
                raise ProviderError(
                    f"no API key for {model}: set {key_env} in the workers' environment (or use a provider "
                    "profile of this server whose endpoint needs none)",
                    code=ErrorCode.MISSING_KEY,
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
