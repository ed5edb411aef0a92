"""Provider profiles: the model endpoints and key variables the operator offers to missions.

The trust model (docs/security.md): an API-key holder describes work; the operator owns the
machines and their secrets. So a mission never names a URL or an environment variable for a
provider; it names a profile the operator defined, by name:

    MISSIONS_PROVIDER_PROFILES='{"local": {"provider": "openai", "baseUrl": "http://ollama:11434/v1"},
                                 "team-a": {"provider": "anthropic", "apiKeyEnv": "TEAM_A_ANTHROPIC_KEY"}}'

and an agent (or the mission's assessor) says ``"profile": "local"``. A profile without
``baseUrl`` uses the provider's configured or official endpoint; one without ``apiKeyEnv`` uses
the provider's default key variable (``OPENAI_API_KEY`` / ``ANTHROPIC_API_KEY``).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from urllib.parse import urlsplit

PROVIDERS = ("openai", "anthropic")
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,127}$")


@dataclass(frozen=True)
class ProviderProfile:
    name: str
    provider: str
    base_url: str | None = None
    api_key_env: str | None = None


def parse_profiles(raw: str) -> tuple[ProviderProfile, ...]:
    """``MISSIONS_PROVIDER_PROFILES``: a JSON object of name -> ``{"provider", "baseUrl"?, "apiKeyEnv"?}``;
    ``ValueError`` saying what is wrong."""
    try:
        document = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise ValueError(f"not JSON: {exc.msg} at column {exc.colno}") from None
    if not isinstance(document, dict):
        raise ValueError('expected a JSON object of profiles, {"name": {"provider": "openai", ...}}')
    profiles = []
    for name, body in document.items():
        if not _NAME.match(name):
            raise ValueError(f"profile name {name!r}: letters, digits, '_', '.', '-', at most 64")
        if not isinstance(body, dict):
            raise ValueError(f"profile {name!r}: expected an object")
        unknown = sorted(set(body) - {"provider", "baseUrl", "apiKeyEnv"})
        if unknown:
            raise ValueError(f"profile {name!r}: unknown field(s) {', '.join(unknown)}")
        provider = body.get("provider")
        if provider not in PROVIDERS:
            raise ValueError(f"profile {name!r}: provider must be one of {', '.join(PROVIDERS)}")
        base_url = body.get("baseUrl")
        if base_url is not None:
            if not isinstance(base_url, str) or urlsplit(base_url).scheme not in ("http", "https"):
                raise ValueError(f"profile {name!r}: baseUrl must be an http:// or https:// URL")
            if not urlsplit(base_url).hostname:
                raise ValueError(f"profile {name!r}: baseUrl names no host")
        key_env = body.get("apiKeyEnv")
        if key_env is not None and (not isinstance(key_env, str) or not _ENV_NAME.match(key_env)):
            raise ValueError(f"profile {name!r}: apiKeyEnv must be an environment variable name")
        profiles.append(ProviderProfile(name, provider, base_url, key_env))
    return tuple(profiles)


def parse_host_list(raw: str) -> tuple[str, ...]:
    """A comma-separated list of hosts, ``host:port`` entries or CIDR blocks (``10.0.0.0/8``)."""
    items = tuple(item.strip().lower() for item in raw.split(",") if item.strip())
    for item in items:
        if any(ch.isspace() for ch in item):
            raise ValueError(f"{item!r} is not a host or a CIDR block")
    return items
