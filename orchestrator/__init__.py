"""The pure core of Missions.

Theory of operation: a mission document becomes a ``MissionSpec`` (``spec``), is checked by
``validation`` (references, cycles, ranges), and once running is driven by
``engine.decide(state, event, now) -> Decision``: every fact the shell observes (a task was
claimed, produced output, finished, failed, timed out, was scored; a human resumed or aborted; a
deadline passed; a worker was lost) comes in as an event, and the core answers with the new run
state and the effects the shell must carry out (start a task, schedule a retry, cancel a task,
pause, publish an event, finish the run). ``vocabulary`` holds the words the core and the shell
share: the statuses it stores, the rules that give an attempt row its status, and timer keys;
``failures`` the stable error codes and the rule of which failures a retry cannot fix.

Nothing in this package performs I/O, reads the clock, draws random numbers or reads the
environment: time and ids are arguments. The same state and event always give the same decision,
and a duplicate or late event is ignored, never raised.
"""
