"""The ``missions`` command: the server commands (``api.cli.server_commands``) and the client
commands (``api.cli.client_commands``) under one group. Heavy modules are imported inside each
command, so that the API server's workers can apply gevent's patches before psycopg, redis or Celery
are loaded."""

from __future__ import annotations

import click

from api.cli import client_commands, server_commands, status


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="missions")
def main() -> None:
    """Missions: orchestrate AI-agent workflows (API, Celery workers, beat)."""


main.add_command(server_commands.db)
main.add_command(server_commands.keys)
main.add_command(server_commands.project)
main.add_command(server_commands.api_command)
main.add_command(server_commands.worker_command)
main.add_command(server_commands.beat_command)
main.add_command(server_commands.up_command)
main.add_command(server_commands.flower_command)
main.add_command(status.status_command)
main.add_command(client_commands.run_command)
main.add_command(client_commands.demo_command)
main.add_command(client_commands.list_command)
main.add_command(client_commands.show_command)
main.add_command(client_commands.resume_command)
main.add_command(client_commands.abort_command)
main.add_command(client_commands.task_group)
main.add_command(client_commands.review_command)
main.add_command(client_commands.events_command)
