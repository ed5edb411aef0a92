"""The error every settings parser raises: its message names the variable."""

from __future__ import annotations


class ConfigError(ValueError):
    """A setting has a malformed value; the message names the variable."""

    def __init__(self, variable: str, problem: str) -> None:
        super().__init__(f"{variable}: {problem}")
        self.variable = variable
        self.problem = problem
