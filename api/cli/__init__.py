"""The `missions` command: server commands, client commands, the live view, the demo and the `up` supervisor."""

from api.cli.main import main

__all__ = ["main"]
