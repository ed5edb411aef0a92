-- Project-wide agent concurrency: the slots of a reusable agent's maxConcurrency (table agent_slots).
-- Every change to one agent's slots happens under a transaction-scoped advisory lock on
-- (project, agent), so two grants never hand out the same free slot.

-- name: request_agent_slots
-- The attempts a step started for reusable agents with a limit wait for a slot (same transaction
-- as their attempt rows).
INSERT INTO agent_slots (project_id, agent, run_id, task_id, attempt, max_concurrency, requested_at)
SELECT m.project_id, w.agent, r.id, w.task_id, w.attempt, w.max_concurrency, %(now)s
  FROM runs r JOIN missions m ON m.id = r.mission_id
 CROSS JOIN jsonb_to_recordset(%(wanted)s) AS w(agent text, task_id text, attempt int, max_concurrency int)
 WHERE r.id = %(run_id)s
ON CONFLICT (run_id, task_id, attempt) DO NOTHING

-- name: project_of_run
-- The project of a run, for the slots of one of its agents.
SELECT m.project_id FROM runs r JOIN missions m ON m.id = r.mission_id WHERE r.id = %(run_id)s

-- name: lock_agent_slots
-- Held until the transaction ends.
SELECT pg_advisory_xact_lock(hashtextextended(%(project_id)s || chr(31) || %(agent)s, 0))

-- name: drop_stale_agent_slots
-- Rows whose attempt no longer waits or holds a slot (it ran, failed, was cancelled or lost).
DELETE FROM agent_slots s USING attempts a
 WHERE s.project_id = %(project_id)s AND s.agent = %(agent)s
   AND a.run_id = s.run_id AND a.task_id = s.task_id AND a.attempt = s.attempt
   AND a.status <> ALL(%(live)s)

-- name: held_agent_slots
SELECT count(*) AS held FROM agent_slots
 WHERE project_id = %(project_id)s AND agent = %(agent)s AND granted_at IS NOT NULL

-- name: waiting_for_agent_slots
-- First come, first served across the project's runs.
SELECT run_id, task_id, attempt, max_concurrency FROM agent_slots
 WHERE project_id = %(project_id)s AND agent = %(agent)s AND granted_at IS NULL
 ORDER BY requested_at, run_id, task_id, attempt
 LIMIT %(limit)s

-- name: grant_agent_slots
-- The granted attempts count as sent now (their message goes right after the commit), so the
-- repair of lost messages waits its usual time before sending them again.
WITH granted AS (
    UPDATE agent_slots s SET granted_at = %(now)s
      FROM jsonb_to_recordset(%(granted)s) AS g(run_id text, task_id text, attempt int)
     WHERE s.run_id = g.run_id AND s.task_id = g.task_id AND s.attempt = g.attempt
    RETURNING s.run_id, s.task_id, s.attempt
)
UPDATE attempts a SET sent_at = %(now)s
  FROM granted g
 WHERE a.run_id = g.run_id AND a.task_id = g.task_id AND a.attempt = g.attempt
RETURNING a.run_id, a.task_id, a.attempt

-- name: agents_waiting_for_slots
-- The (project, agent) pairs with an attempt waiting for a slot: the tick grants what is free,
-- in case a release was committed but its grant never ran (the process died in between).
SELECT DISTINCT project_id, agent FROM agent_slots WHERE granted_at IS NULL LIMIT %(limit)s
