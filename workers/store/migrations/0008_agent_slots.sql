-- The slots of a reusable agent's maxConcurrency, shared by every run of its project: one row per
-- attempt of such an agent, waiting for a slot (granted_at NULL) or holding one. A slot is held
-- while its attempt is queued or running; once the attempt is anything else the row is stale and
-- the next grant for that agent deletes it, so a lost worker's slot is freed when the reaper
-- marks its attempt lost.
CREATE TABLE agent_slots (
    project_id       text NOT NULL REFERENCES projects (id) ON DELETE CASCADE,
    agent            text NOT NULL,
    run_id           text NOT NULL,
    task_id          text NOT NULL,
    attempt          integer NOT NULL,
    max_concurrency  integer NOT NULL,
    requested_at     timestamptz NOT NULL,
    granted_at       timestamptz,
    PRIMARY KEY (run_id, task_id, attempt),
    FOREIGN KEY (run_id, task_id, attempt) REFERENCES attempts (run_id, task_id, attempt) ON DELETE CASCADE
);
CREATE INDEX agent_slots_queue ON agent_slots (project_id, agent, requested_at);
