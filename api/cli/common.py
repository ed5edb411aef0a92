"""What the commands of ``missions`` share: settings from the environment, and the database."""

from __future__ import annotations

from typing import Any

import click

from config import ConfigError, Settings


def load_settings(**overrides: Any) -> Settings:
    try:
        settings = Settings.from_env()
    except ConfigError as exc:
        raise click.ClickException(f"bad setting {exc}") from None
    changes = {k: v for k, v in overrides.items() if v is not None}
    return settings.replace(**changes) if changes else settings


def database_url(settings: Settings) -> str:
    """The configured database, else the embedded one under the data dir (started if needed)."""
    if settings.database_url:
        return settings.database_url
    from workers.wiring import start_embedded_postgres as start_postgres

    return start_postgres(settings.data_dir)
