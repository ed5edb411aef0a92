-- A run's task states get a row each, so a coordinator step writes only the tasks it changed
-- instead of the whole run. runs.state keeps the run-level fields; runs.spec the run's current
-- spec, whose changes (a task added, changed or removed while running) bump spec_version.
CREATE TABLE run_tasks (
    run_id   text NOT NULL REFERENCES runs (id) ON DELETE CASCADE,
    task_id  text NOT NULL,
    version  bigint NOT NULL,   -- the run version that last wrote this row
    state    jsonb NOT NULL,
    PRIMARY KEY (run_id, task_id)
);
CREATE INDEX run_tasks_changes ON run_tasks (run_id, version);

ALTER TABLE runs ADD COLUMN spec_version integer NOT NULL DEFAULT 0;
-- A random token per write: a process may cache a state before its transaction commits, and uses
-- it only once it finds the same token in the row (so a rolled-back write is never trusted).
ALTER TABLE runs ADD COLUMN state_token text;

-- Runs written before this migration kept their tasks inside runs.state.
INSERT INTO run_tasks (run_id, task_id, version, state)
SELECT r.id, t->>'taskId', r.version, t
  FROM runs r CROSS JOIN LATERAL jsonb_array_elements(coalesce(r.state->'tasks', '[]'::jsonb)) AS t;
UPDATE runs SET state = state - 'tasks' - 'spec' WHERE state ? 'tasks';
