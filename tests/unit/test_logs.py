from __future__ import annotations

import io
import json
import logging

from config import Settings
from workers.support.logs import configure_logging, log_ids


def test_json_log_lines_carry_the_ids_of_the_attempt_being_worked_on() -> None:
    configure_logging(Settings(log_format="json"))
    stream = io.StringIO()
    logging.getLogger().handlers[0].setStream(stream)  # type: ignore[attr-defined]
    try:
        with log_ids(run_id="run_1", task_id="task_1", attempt=2):
            logging.getLogger("missions.test").warning("judge reply unreadable")
        logging.getLogger("missions.test").warning("outside")
    finally:
        logging.getLogger().handlers.clear()
    inside, outside = (json.loads(line) for line in stream.getvalue().splitlines())
    assert (inside["run_id"], inside["task_id"], inside["attempt"]) == ("run_1", "task_1", 2)
    assert inside["message"] == "judge reply unreadable" and inside["level"] == "warning"
    assert "run_id" not in outside
