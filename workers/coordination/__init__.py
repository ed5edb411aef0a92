"""Coordination: the one way to change a run (``advance``), the unit of work that sends what a
committed change asks for, the tick and schedules."""
