"""Settings for every Missions process, parsed from the environment.

Parsing is pure: ``Settings.from_env(environ)`` reads only the mapping it is given, connects to
nothing and raises ``ConfigError`` naming the variable when a value is malformed.
"""

from config.errors import ConfigError
from config.settings import SETTINGS_TABLE, Settings

__all__ = ["SETTINGS_TABLE", "ConfigError", "Settings"]
