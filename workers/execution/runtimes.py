"""Which runtime runs a model: ``scripted/...`` offline, ``anthropic/...`` and ``openai/...`` through
the official SDKs (``workers.execution.providers.agent.ModelAgent``), anything else fails clearly."""

from __future__ import annotations

from config import Settings
from workers.execution.agents import AgentRuntime, ScriptedAgent, UnavailableProvider
from workers.execution.providers import MODEL_PROVIDERS, Providers
from workers.execution.providers.agent import ModelAgent

_SCRIPTED = ScriptedAgent()


def runtime_for(model: str, providers: Providers | None = None) -> AgentRuntime:
    """The runtime of ``provider/model``. ``providers`` carries the worker's settings and prices
    (without it, settings are read from the environment)."""
    provider = model.split("/", 1)[0]
    if provider == "scripted":
        return _SCRIPTED
    if provider in MODEL_PROVIDERS:
        return ModelAgent(providers if providers is not None else Providers(Settings.from_env()))
    return UnavailableProvider(provider)
