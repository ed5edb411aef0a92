"""Per-run inputs: the data one run sees.

A run may be given data of its own (``POST /execute`` with ``{"data": {...}}``, or a schedule's
``scheduleData`` for the runs it starts). It is merged over the mission's ``data`` for that run
only, **shallowly**: each top-level key of the run's data replaces the mission's key of the same
name whole (an object under it is not merged key by key), and the mission's other keys stay. So a
client can override one input without restating the rest, and what a run saw is always the
mission's data with the run's keys laid over it, easy to tell from the two. The mission's own
``data`` must then be an object (or absent); an array or a scalar cannot take keys.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

_JSON_KINDS = {list: "an array", str: "a string", bool: "a boolean", int: "a number", float: "a number"}


def merge_run_data(mission_data: Any, run_data: Mapping[str, Any] | None) -> Any:
    """The data a run sees; ``ValueError`` when there is run data and the mission's is not an object."""
    if run_data is None:
        return mission_data
    if mission_data is None:
        return dict(run_data)
    if not isinstance(mission_data, Mapping):
        kind = _JSON_KINDS.get(type(mission_data), "not an object")
        raise ValueError(f"the mission's data is {kind}, not an object: per-run data merges into an object only")
    return {**mission_data, **run_data}
