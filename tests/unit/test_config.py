"""Settings come from environment variables: typed, defaulted, and a bad value is named."""

from __future__ import annotations

from pathlib import Path

import pytest

from config import SETTINGS_TABLE, ConfigError, Settings


def test_no_variables_give_the_documented_defaults() -> None:
    settings = Settings.from_env({})
    assert settings == Settings()
    assert settings.database_url is None
    assert settings.redis_url is None
    assert settings.data_dir == Path("~/.missions").expanduser()
    assert settings.host == "127.0.0.1"
    assert settings.port == 8000
    assert settings.max_body_bytes == 1 << 20
    assert settings.max_tasks == 10_000
    assert settings.allow_commands is False
    assert settings.judge_model is None
    assert settings.tick_seconds == 1.0
    assert settings.log_level == "info"
    assert settings.log_format == "text"


def test_every_setting_in_the_table_has_its_default_on_the_dataclass() -> None:
    defaults = Settings()
    for setting in SETTINGS_TABLE:
        assert getattr(defaults, setting.attribute) == setting.default, setting.variable
        assert setting.meaning, setting.variable


@pytest.mark.parametrize(
    ("variable", "raw", "attribute", "expected"),
    [
        ("DATABASE_URL", "postgresql://u:p@db:5432/missions", "database_url", "postgresql://u:p@db:5432/missions"),
        ("DATABASE_URL", "postgres://localhost/m", "database_url", "postgres://localhost/m"),
        ("REDIS_URL", "redis://localhost:6379/0", "redis_url", "redis://localhost:6379/0"),
        ("REDIS_URL", "rediss://cache:6380/1", "redis_url", "rediss://cache:6380/1"),
        ("REDIS_URL", "unix:///tmp/redis.sock", "redis_url", "unix:///tmp/redis.sock"),
        ("MISSIONS_DATA_DIR", "/srv/missions", "data_dir", Path("/srv/missions")),
        ("MISSIONS_DATA_DIR", "~/m", "data_dir", Path("~/m").expanduser()),
        ("MISSIONS_HOST", " 0.0.0.0 ", "host", "0.0.0.0"),
        ("MISSIONS_PORT", "9000", "port", 9000),
        ("MISSIONS_PORT", " 65535 ", "port", 65535),
        ("MISSIONS_API_THREADS", "50", "api_threads", 50),
        ("MISSIONS_MAX_BODY_BYTES", "4096", "max_body_bytes", 4096),
        ("MISSIONS_MAX_TASKS", "10", "max_tasks", 10),
        ("MISSIONS_DB_POOL_SIZE", "3", "db_pool_size", 3),
        ("MISSIONS_ALLOW_COMMANDS", "true", "allow_commands", True),
        ("MISSIONS_ALLOW_COMMANDS", "YES", "allow_commands", True),
        ("MISSIONS_ALLOW_COMMANDS", "1", "allow_commands", True),
        ("MISSIONS_ALLOW_COMMANDS", "on", "allow_commands", True),
        ("MISSIONS_ALLOW_COMMANDS", "false", "allow_commands", False),
        ("MISSIONS_ALLOW_COMMANDS", "0", "allow_commands", False),
        ("MISSIONS_ALLOW_COMMANDS", "Off", "allow_commands", False),
        ("MISSIONS_JUDGE_MODEL", "openai/gpt-4o-mini", "judge_model", "openai/gpt-4o-mini"),
        ("MISSIONS_TICK_SECONDS", "0.25", "tick_seconds", 0.25),
        ("MISSIONS_HEARTBEAT_SECONDS", "5", "heartbeat_seconds", 5.0),
        ("MISSIONS_WORKER_LOST_SECONDS", "30.5", "worker_lost_seconds", 30.5),
        ("MISSIONS_SSE_HEARTBEAT_SECONDS", "1", "sse_heartbeat_seconds", 1.0),
        ("MISSIONS_LOG_LEVEL", "DEBUG", "log_level", "debug"),
        ("MISSIONS_LOG_FORMAT", "json", "log_format", "json"),
    ],
)
def test_a_variable_is_parsed_into_its_type(variable: str, raw: str, attribute: str, expected: object) -> None:
    value = getattr(Settings.from_env({variable: raw}), attribute)
    assert value == expected
    assert type(value) is type(expected)


@pytest.mark.parametrize(
    ("variable", "raw"),
    [
        ("DATABASE_URL", "mysql://localhost/missions"),
        ("DATABASE_URL", "localhost:5432"),
        ("REDIS_URL", "http://localhost:6379"),
        ("MISSIONS_PORT", "abc"),
        ("MISSIONS_PORT", "0"),
        ("MISSIONS_PORT", "65536"),
        ("MISSIONS_PORT", "80.5"),
        ("MISSIONS_API_THREADS", "0"),
        ("MISSIONS_MAX_BODY_BYTES", "1mb"),
        ("MISSIONS_MAX_TASKS", "-1"),
        ("MISSIONS_DB_POOL_SIZE", "many"),
        ("MISSIONS_ALLOW_COMMANDS", "maybe"),
        ("MISSIONS_TICK_SECONDS", "fast"),
        ("MISSIONS_TICK_SECONDS", "0"),
        ("MISSIONS_HEARTBEAT_SECONDS", "nan"),
        ("MISSIONS_WORKER_LOST_SECONDS", "-5"),
        ("MISSIONS_SSE_HEARTBEAT_SECONDS", "1e9"),
        ("MISSIONS_LOG_LEVEL", "verbose"),
        ("MISSIONS_LOG_FORMAT", "xml"),
    ],
)
def test_a_malformed_value_raises_a_config_error_naming_the_variable(variable: str, raw: str) -> None:
    with pytest.raises(ConfigError) as raised:
        Settings.from_env({variable: raw})
    assert raised.value.variable == variable
    assert variable in str(raised.value)
    assert raised.value.problem
    assert isinstance(raised.value, ValueError)


@pytest.mark.parametrize("setting", SETTINGS_TABLE, ids=[s.variable for s in SETTINGS_TABLE])
@pytest.mark.parametrize("empty", ["", "   ", "\t"], ids=["empty", "spaces", "tab"])
def test_an_empty_value_means_unset(setting: object, empty: str) -> None:
    variable = setting.variable  # type: ignore[attr-defined]
    assert Settings.from_env({variable: empty}) == Settings()


def test_unrelated_variables_are_ignored() -> None:
    assert Settings.from_env({"PATH": "/usr/bin", "MISSIONS_UNKNOWN": "x", "missions_port": "abc"}) == Settings()


def test_a_given_mapping_is_the_only_source(monkeypatch: pytest.MonkeyPatch) -> None:
    for setting in SETTINGS_TABLE:
        monkeypatch.setenv(setting.variable, "not a valid value for anything")
    assert Settings.from_env({}) == Settings()
    assert Settings.from_env({"MISSIONS_PORT": "9001"}) == Settings(port=9001)


def test_without_a_mapping_the_process_environment_is_read(monkeypatch: pytest.MonkeyPatch) -> None:
    for setting in SETTINGS_TABLE:
        monkeypatch.delenv(setting.variable, raising=False)
    monkeypatch.setenv("MISSIONS_PORT", "9002")
    assert Settings.from_env().port == 9002
    monkeypatch.setenv("MISSIONS_PORT", "abc")
    with pytest.raises(ConfigError, match="MISSIONS_PORT"):
        Settings.from_env()


def test_replace_changes_only_the_given_settings() -> None:
    settings = Settings.from_env({"MISSIONS_PORT": "9000", "MISSIONS_LOG_LEVEL": "debug"})
    changed = settings.replace(max_body_bytes=4096)
    assert changed.max_body_bytes == 4096
    assert changed.port == 9000
    assert changed.log_level == "debug"
    assert settings.max_body_bytes == 1 << 20


def test_the_readme_configuration_table_lists_every_setting() -> None:
    from pathlib import Path

    from config.settings import SETTINGS_TABLE

    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text(encoding="utf-8")
    missing = [s.variable for s in SETTINGS_TABLE if f"| `{s.variable}` |" not in readme]
    assert missing == []
