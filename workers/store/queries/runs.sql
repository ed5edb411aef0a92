-- A run's state: the run row (run-level state, spec, version and write token), one run_tasks row per
-- task, and what each step adds (started attempts, events). See workers/store/run_state.py.
--
-- Rows travel as one JSON array each (%(tasks)s, %(attempts)s, %(events)s): one C-encoded parameter
-- instead of text and jsonb arrays, whose per-element escaping in psycopg cost more than the statement.
-- Event ids are allocated in the decided order, under the run lock the statement holds.
--
-- A step that depends on an attempt's row (recording a result or a score, marking an attempt lost)
-- changes that row in the statement that locks the run: the "guard". Each guarded statement is
-- written out in full below, one per guard (the names end in the guard's name).

-- name: lock_run
-- What a step needs of the run row to use, or refresh, its cached state; locked.
SELECT mission_id, status, state, version, spec_version, state_token FROM runs WHERE id = %(run_id)s FOR UPDATE

-- name: lock_run_recording_result
-- The run row locked together with the agent's result of a running attempt (its row, or NULL).
WITH guard AS (
    UPDATE attempts SET status = %(attempt_status)s, output = %(output)s, error = %(error)s, finished_at = %(now)s,
           heartbeat_at = %(now)s, tokens_in = %(tokens_in)s, tokens_out = %(tokens_out)s, cost_usd = %(cost)s,
           outcomes = %(outcomes)s
     WHERE run_id = %(run_id)s AND task_id = %(task_id)s AND attempt = %(attempt)s AND status = %(was)s
    RETURNING 1
)
SELECT r.mission_id, r.status, r.state, r.version, r.spec_version, r.state_token,
       (SELECT to_jsonb(guard) FROM guard) AS guard
  FROM runs r WHERE r.id = %(run_id)s FOR UPDATE OF r

-- name: lock_run_recording_score
-- The run row locked together with the judge's verdict on an assessing attempt.
WITH guard AS (
    UPDATE attempts SET status = %(attempt_status)s, score = %(score)s, assessment = %(assessment)s,
           heartbeat_at = %(now)s, judge_model = %(judge_model)s, assessed_at = %(now)s,
           -- added up: an attempt reassessed by an operator is judged (and paid) again
           judge_tokens_in = judge_tokens_in + %(judge_tokens_in)s,
           judge_tokens_out = judge_tokens_out + %(judge_tokens_out)s,
           judge_cost_usd = judge_cost_usd + %(judge_cost)s
     WHERE run_id = %(run_id)s AND task_id = %(task_id)s AND attempt = %(attempt)s AND status = %(was)s
    RETURNING 1
)
SELECT r.mission_id, r.status, r.state, r.version, r.spec_version, r.state_token,
       (SELECT to_jsonb(guard) FROM guard) AS guard
  FROM runs r WHERE r.id = %(run_id)s FOR UPDATE OF r

-- name: lock_run_marking_lost
-- The run row locked together with marking a running attempt lost (a racing tick's mark matches nothing).
WITH guard AS (
    UPDATE attempts SET status = 'lost', error = 'worker stopped heart-beating', finished_at = %(now)s
     WHERE run_id = %(run_id)s AND task_id = %(task_id)s AND attempt = %(attempt)s AND status = %(was)s
    RETURNING 1
)
SELECT r.mission_id, r.status, r.state, r.version, r.spec_version, r.state_token,
       (SELECT to_jsonb(guard) FROM guard) AS guard
  FROM runs r WHERE r.id = %(run_id)s FOR UPDATE OF r

-- name: read_run
-- The run row without a lock (a process that holds the run's spec and tasks already).
SELECT mission_id, status, state, version, spec_version, state_token FROM runs WHERE id = %(run_id)s

-- name: read_run_spec_and_tasks
-- Everything else of a run this process has not seen: its spec and every task state.
SELECT spec, (SELECT coalesce(jsonb_agg(state), '[]'::jsonb) FROM run_tasks WHERE run_id = %(run_id)s) AS tasks
  FROM runs WHERE id = %(run_id)s

-- name: read_run_all
-- A run this process has not seen, read without a lock: its row, spec and every task state at once.
SELECT mission_id, status, state, version, spec_version, state_token, spec,
       (SELECT coalesce(jsonb_agg(state), '[]'::jsonb) FROM run_tasks WHERE run_id = %(run_id)s) AS tasks
  FROM runs WHERE id = %(run_id)s

-- name: run_tasks_since
-- The task states written after the version a process holds.
SELECT state FROM run_tasks WHERE run_id = %(run_id)s AND version > %(version)s

-- name: delete_run_tasks
DELETE FROM run_tasks WHERE run_id = %(run_id)s AND task_id = ANY(%(ids)s)

-- name: update_run_spec
UPDATE runs SET spec = %(spec)s, spec_version = %(spec_version)s WHERE id = %(run_id)s

-- name: mirror_mission
-- A mission mirrors its latest run; once that run ends, a mission with fires left is "scheduled".
UPDATE missions
   SET status = CASE WHEN %(terminal)s AND next_run_at IS NOT NULL THEN 'scheduled' ELSE %(status)s END,
       updated_at = %(now)s
 WHERE id = %(mission_id)s AND latest_run_id = %(run_id)s

-- name: save_step
-- A step under the run lock the caller holds, in one round trip: the changed task rows, the run row,
-- the started attempts and the events; the last event id.
WITH changed AS (
    INSERT INTO run_tasks (run_id, task_id, version, state)
    SELECT %(run_id)s, t.id, %(version)s, t.state
      FROM jsonb_to_recordset(%(tasks)s) AS t(id text, state jsonb)
    ON CONFLICT (run_id, task_id) DO UPDATE SET version = EXCLUDED.version, state = EXCLUDED.state
), run AS (
    UPDATE runs
       SET state = %(state)s, status = %(status)s, pause_reason = %(pause_reason)s,
           pause_message = %(pause_message)s, failure_reason = %(failure_reason)s, version = %(version)s,
           state_token = %(token)s,
           finished_at = CASE WHEN %(terminal)s THEN coalesce(finished_at, %(now)s) ELSE NULL END
     WHERE id = %(run_id)s
), started AS (
    INSERT INTO attempts (run_id, task_id, attempt, status, agent, model, prompt, created_at, sent_at)
    SELECT %(run_id)s, a.task_id, a.attempt, 'queued', a.agent, a.model, a.prompt, %(now)s, %(now)s
      FROM jsonb_to_recordset(%(attempts)s) AS a(task_id text, attempt int, agent text, model text, prompt text)
    ON CONFLICT (run_id, task_id, attempt) DO NOTHING
), logged AS (
    INSERT INTO events (run_id, mission_id, type, data, created_at)
    SELECT %(run_id)s, %(mission_id)s, e.item->>'type', e.item->'data', %(now)s
      FROM jsonb_array_elements(%(events)s) WITH ORDINALITY AS e(item, n)
     ORDER BY e.n
    RETURNING id, type, data
), outbox AS (
    -- The webhooks of the run's project that want these events (the index probe finds none for a
    -- project without webhooks): one delivery each, due now, its message sent after commit.
    INSERT INTO webhook_deliveries (id, webhook_id, event_id, run_id, mission_id, type, data, next_attempt_at,
                                    sent_at, created_at)
    SELECT 'msg_' || replace(gen_random_uuid()::text, '-', ''), w.id, l.id, %(run_id)s, %(mission_id)s, l.type,
           l.data, %(now)s, %(now)s, %(now)s
      FROM webhooks w JOIN logged l ON l.type = ANY (w.events)
     WHERE w.project_id = (SELECT m.project_id FROM missions m WHERE m.id = %(mission_id)s) AND w.enabled
       AND (w.mission_ids IS NULL OR %(mission_id)s = ANY (w.mission_ids))
    RETURNING id
)
SELECT max(id) AS last_event_id, (SELECT array_agg(id) FROM outbox) AS deliveries FROM logged

-- name: save_step_if_current
-- A whole step in one statement that commits on its own, decided on the state this process holds of
-- the run: the run row is locked and everything (the mission's status when %(mirror)s, the changed
-- task rows, the run row, the started attempts, the events) is written only if the row still holds
-- that state (its version and write token). When the run moved on, nothing is written and "current"
-- is false.
WITH current AS (
    SELECT id FROM runs
     WHERE id = %(run_id)s AND version = %(expected_version)s AND state_token IS NOT DISTINCT FROM %(expected_token)s
       FOR UPDATE
), guard AS (
    SELECT 1 AS current FROM current
), mission AS (
    UPDATE missions
       SET status = CASE WHEN %(terminal)s AND next_run_at IS NOT NULL THEN 'scheduled' ELSE %(status)s END,
           updated_at = %(now)s
     WHERE id = %(mission_id)s AND latest_run_id = %(run_id)s AND %(mirror)s AND EXISTS (SELECT FROM guard)
), changed AS (
    INSERT INTO run_tasks (run_id, task_id, version, state)
    SELECT %(run_id)s, t.id, %(version)s, t.state
      FROM jsonb_to_recordset(%(tasks)s) AS t(id text, state jsonb)
     WHERE EXISTS (SELECT FROM guard)
    ON CONFLICT (run_id, task_id) DO UPDATE SET version = EXCLUDED.version, state = EXCLUDED.state
), run AS (
    UPDATE runs
       SET state = %(state)s, status = %(status)s, pause_reason = %(pause_reason)s,
           pause_message = %(pause_message)s, failure_reason = %(failure_reason)s, version = %(version)s,
           state_token = %(token)s,
           finished_at = CASE WHEN %(terminal)s THEN coalesce(finished_at, %(now)s) ELSE NULL END
     WHERE id = %(run_id)s AND EXISTS (SELECT FROM guard)
), started AS (
    INSERT INTO attempts (run_id, task_id, attempt, status, agent, model, prompt, created_at, sent_at)
    SELECT %(run_id)s, a.task_id, a.attempt, 'queued', a.agent, a.model, a.prompt, %(now)s, %(now)s
      FROM jsonb_to_recordset(%(attempts)s) AS a(task_id text, attempt int, agent text, model text, prompt text)
     WHERE EXISTS (SELECT FROM guard)
    ON CONFLICT (run_id, task_id, attempt) DO NOTHING
), logged AS (
    INSERT INTO events (run_id, mission_id, type, data, created_at)
    SELECT %(run_id)s, %(mission_id)s, e.item->>'type', e.item->'data', %(now)s
      FROM jsonb_array_elements(%(events)s) WITH ORDINALITY AS e(item, n)
     WHERE EXISTS (SELECT FROM guard)
     ORDER BY e.n
    RETURNING id, type, data
), outbox AS (
    -- The webhooks of the run's project that want these events (the index probe finds none for a
    -- project without webhooks): one delivery each, due now, its message sent after commit.
    INSERT INTO webhook_deliveries (id, webhook_id, event_id, run_id, mission_id, type, data, next_attempt_at,
                                    sent_at, created_at)
    SELECT 'msg_' || replace(gen_random_uuid()::text, '-', ''), w.id, l.id, %(run_id)s, %(mission_id)s, l.type,
           l.data, %(now)s, %(now)s, %(now)s
      FROM webhooks w JOIN logged l ON l.type = ANY (w.events)
     WHERE w.project_id = (SELECT m.project_id FROM missions m WHERE m.id = %(mission_id)s) AND w.enabled
       AND (w.mission_ids IS NULL OR %(mission_id)s = ANY (w.mission_ids))
    RETURNING id
)
SELECT EXISTS (SELECT FROM current) AS current, (SELECT to_jsonb(guard) FROM guard) AS guard,
       (SELECT max(id) FROM logged) AS last_event_id, (SELECT array_agg(id) FROM outbox) AS deliveries

-- name: save_step_if_current_recording_result
-- save_step_if_current, written only if the attempt's result was recorded too (it was still running).
WITH current AS (
    SELECT id FROM runs
     WHERE id = %(run_id)s AND version = %(expected_version)s AND state_token IS NOT DISTINCT FROM %(expected_token)s
       FOR UPDATE
), guard AS (
    UPDATE attempts SET status = %(attempt_status)s, output = %(output)s, error = %(error)s, finished_at = %(now)s,
           heartbeat_at = %(now)s, tokens_in = %(tokens_in)s, tokens_out = %(tokens_out)s, cost_usd = %(cost)s,
           outcomes = %(outcomes)s
     WHERE run_id = %(run_id)s AND task_id = %(task_id)s AND attempt = %(attempt)s AND status = %(was)s
       AND EXISTS (SELECT FROM current)
    RETURNING 1
), mission AS (
    UPDATE missions
       SET status = CASE WHEN %(terminal)s AND next_run_at IS NOT NULL THEN 'scheduled' ELSE %(status)s END,
           updated_at = %(now)s
     WHERE id = %(mission_id)s AND latest_run_id = %(run_id)s AND %(mirror)s AND EXISTS (SELECT FROM guard)
), changed AS (
    INSERT INTO run_tasks (run_id, task_id, version, state)
    SELECT %(run_id)s, t.id, %(version)s, t.state
      FROM jsonb_to_recordset(%(tasks)s) AS t(id text, state jsonb)
     WHERE EXISTS (SELECT FROM guard)
    ON CONFLICT (run_id, task_id) DO UPDATE SET version = EXCLUDED.version, state = EXCLUDED.state
), run AS (
    UPDATE runs
       SET state = %(state)s, status = %(status)s, pause_reason = %(pause_reason)s,
           pause_message = %(pause_message)s, failure_reason = %(failure_reason)s, version = %(version)s,
           state_token = %(token)s,
           finished_at = CASE WHEN %(terminal)s THEN coalesce(finished_at, %(now)s) ELSE NULL END
     WHERE id = %(run_id)s AND EXISTS (SELECT FROM guard)
), started AS (
    INSERT INTO attempts (run_id, task_id, attempt, status, agent, model, prompt, created_at, sent_at)
    SELECT %(run_id)s, a.task_id, a.attempt, 'queued', a.agent, a.model, a.prompt, %(now)s, %(now)s
      FROM jsonb_to_recordset(%(attempts)s) AS a(task_id text, attempt int, agent text, model text, prompt text)
     WHERE EXISTS (SELECT FROM guard)
    ON CONFLICT (run_id, task_id, attempt) DO NOTHING
), logged AS (
    INSERT INTO events (run_id, mission_id, type, data, created_at)
    SELECT %(run_id)s, %(mission_id)s, e.item->>'type', e.item->'data', %(now)s
      FROM jsonb_array_elements(%(events)s) WITH ORDINALITY AS e(item, n)
     WHERE EXISTS (SELECT FROM guard)
     ORDER BY e.n
    RETURNING id, type, data
), outbox AS (
    -- The webhooks of the run's project that want these events (the index probe finds none for a
    -- project without webhooks): one delivery each, due now, its message sent after commit.
    INSERT INTO webhook_deliveries (id, webhook_id, event_id, run_id, mission_id, type, data, next_attempt_at,
                                    sent_at, created_at)
    SELECT 'msg_' || replace(gen_random_uuid()::text, '-', ''), w.id, l.id, %(run_id)s, %(mission_id)s, l.type,
           l.data, %(now)s, %(now)s, %(now)s
      FROM webhooks w JOIN logged l ON l.type = ANY (w.events)
     WHERE w.project_id = (SELECT m.project_id FROM missions m WHERE m.id = %(mission_id)s) AND w.enabled
       AND (w.mission_ids IS NULL OR %(mission_id)s = ANY (w.mission_ids))
    RETURNING id
)
SELECT EXISTS (SELECT FROM current) AS current, (SELECT to_jsonb(guard) FROM guard) AS guard,
       (SELECT max(id) FROM logged) AS last_event_id, (SELECT array_agg(id) FROM outbox) AS deliveries

-- name: save_step_if_current_recording_score
-- save_step_if_current, written only if the judge's verdict was recorded too (it was still assessing).
WITH current AS (
    SELECT id FROM runs
     WHERE id = %(run_id)s AND version = %(expected_version)s AND state_token IS NOT DISTINCT FROM %(expected_token)s
       FOR UPDATE
), guard AS (
    UPDATE attempts SET status = %(attempt_status)s, score = %(score)s, assessment = %(assessment)s,
           heartbeat_at = %(now)s, judge_model = %(judge_model)s, assessed_at = %(now)s,
           -- added up: an attempt reassessed by an operator is judged (and paid) again
           judge_tokens_in = judge_tokens_in + %(judge_tokens_in)s,
           judge_tokens_out = judge_tokens_out + %(judge_tokens_out)s,
           judge_cost_usd = judge_cost_usd + %(judge_cost)s
     WHERE run_id = %(run_id)s AND task_id = %(task_id)s AND attempt = %(attempt)s AND status = %(was)s
       AND EXISTS (SELECT FROM current)
    RETURNING 1
), mission AS (
    UPDATE missions
       SET status = CASE WHEN %(terminal)s AND next_run_at IS NOT NULL THEN 'scheduled' ELSE %(status)s END,
           updated_at = %(now)s
     WHERE id = %(mission_id)s AND latest_run_id = %(run_id)s AND %(mirror)s AND EXISTS (SELECT FROM guard)
), changed AS (
    INSERT INTO run_tasks (run_id, task_id, version, state)
    SELECT %(run_id)s, t.id, %(version)s, t.state
      FROM jsonb_to_recordset(%(tasks)s) AS t(id text, state jsonb)
     WHERE EXISTS (SELECT FROM guard)
    ON CONFLICT (run_id, task_id) DO UPDATE SET version = EXCLUDED.version, state = EXCLUDED.state
), run AS (
    UPDATE runs
       SET state = %(state)s, status = %(status)s, pause_reason = %(pause_reason)s,
           pause_message = %(pause_message)s, failure_reason = %(failure_reason)s, version = %(version)s,
           state_token = %(token)s,
           finished_at = CASE WHEN %(terminal)s THEN coalesce(finished_at, %(now)s) ELSE NULL END
     WHERE id = %(run_id)s AND EXISTS (SELECT FROM guard)
), started AS (
    INSERT INTO attempts (run_id, task_id, attempt, status, agent, model, prompt, created_at, sent_at)
    SELECT %(run_id)s, a.task_id, a.attempt, 'queued', a.agent, a.model, a.prompt, %(now)s, %(now)s
      FROM jsonb_to_recordset(%(attempts)s) AS a(task_id text, attempt int, agent text, model text, prompt text)
     WHERE EXISTS (SELECT FROM guard)
    ON CONFLICT (run_id, task_id, attempt) DO NOTHING
), logged AS (
    INSERT INTO events (run_id, mission_id, type, data, created_at)
    SELECT %(run_id)s, %(mission_id)s, e.item->>'type', e.item->'data', %(now)s
      FROM jsonb_array_elements(%(events)s) WITH ORDINALITY AS e(item, n)
     WHERE EXISTS (SELECT FROM guard)
     ORDER BY e.n
    RETURNING id, type, data
), outbox AS (
    -- The webhooks of the run's project that want these events (the index probe finds none for a
    -- project without webhooks): one delivery each, due now, its message sent after commit.
    INSERT INTO webhook_deliveries (id, webhook_id, event_id, run_id, mission_id, type, data, next_attempt_at,
                                    sent_at, created_at)
    SELECT 'msg_' || replace(gen_random_uuid()::text, '-', ''), w.id, l.id, %(run_id)s, %(mission_id)s, l.type,
           l.data, %(now)s, %(now)s, %(now)s
      FROM webhooks w JOIN logged l ON l.type = ANY (w.events)
     WHERE w.project_id = (SELECT m.project_id FROM missions m WHERE m.id = %(mission_id)s) AND w.enabled
       AND (w.mission_ids IS NULL OR %(mission_id)s = ANY (w.mission_ids))
    RETURNING id
)
SELECT EXISTS (SELECT FROM current) AS current, (SELECT to_jsonb(guard) FROM guard) AS guard,
       (SELECT max(id) FROM logged) AS last_event_id, (SELECT array_agg(id) FROM outbox) AS deliveries

-- name: create_run
-- A new run in one round trip: its row, its task rows, the mission's pointer to it, its first attempts
-- and its events; the last event id.
WITH run AS (
    INSERT INTO runs (id, mission_id, number, status, spec, state, deadline_at, created_at, started_at,
                      finished_at, failure_reason, state_token, input, traceparent)
    VALUES (%(run_id)s, %(mission_id)s, %(number)s, %(status)s, %(spec)s, %(state)s, %(deadline)s, %(now)s,
            %(now)s, CASE WHEN %(terminal)s THEN %(now)s END, %(failure_reason)s, %(token)s, %(input)s,
            %(traceparent)s)
), tasks AS (
    INSERT INTO run_tasks (run_id, task_id, version, state)
    SELECT %(run_id)s, t.id, 0, t.state FROM jsonb_to_recordset(%(tasks)s) AS t(id text, state jsonb)
), mission AS (
    UPDATE missions SET latest_run_id = %(run_id)s, execution_count = execution_count + 1, status = %(status)s,
           updated_at = %(now)s
     WHERE id = %(mission_id)s
), started AS (
    INSERT INTO attempts (run_id, task_id, attempt, status, agent, model, prompt, created_at, sent_at)
    SELECT %(run_id)s, a.task_id, a.attempt, 'queued', a.agent, a.model, a.prompt, %(now)s, %(now)s
      FROM jsonb_to_recordset(%(attempts)s) AS a(task_id text, attempt int, agent text, model text, prompt text)
    ON CONFLICT (run_id, task_id, attempt) DO NOTHING
), logged AS (
    INSERT INTO events (run_id, mission_id, type, data, created_at)
    SELECT %(run_id)s, %(mission_id)s, e.item->>'type', e.item->'data', %(now)s
      FROM jsonb_array_elements(%(events)s) WITH ORDINALITY AS e(item, n)
     ORDER BY e.n
    RETURNING id, type, data
), outbox AS (
    -- The webhooks of the run's project that want these events (the index probe finds none for a
    -- project without webhooks): one delivery each, due now, its message sent after commit.
    INSERT INTO webhook_deliveries (id, webhook_id, event_id, run_id, mission_id, type, data, next_attempt_at,
                                    sent_at, created_at)
    SELECT 'msg_' || replace(gen_random_uuid()::text, '-', ''), w.id, l.id, %(run_id)s, %(mission_id)s, l.type,
           l.data, %(now)s, %(now)s, %(now)s
      FROM webhooks w JOIN logged l ON l.type = ANY (w.events)
     WHERE w.project_id = (SELECT m.project_id FROM missions m WHERE m.id = %(mission_id)s) AND w.enabled
       AND (w.mission_ids IS NULL OR %(mission_id)s = ANY (w.mission_ids))
    RETURNING id
)
SELECT max(id) AS last_event_id, (SELECT array_agg(id) FROM outbox) AS deliveries FROM logged

-- name: get_run
-- A run of a mission with its task states in the order of its spec, its reviews, and its delays
-- (as the spec gives them, and where each is).
SELECT r.id, r.mission_id, r.number, r.status, r.pause_reason, r.pause_message, r.failure_reason,
       r.created_at, r.started_at, r.finished_at, r.input,
       r.state->'reviews' AS reviews, r.state->'delays' AS delays, r.spec->'delays' AS delay_specs,
       (SELECT jsonb_agg(rt.state ORDER BY s.n)
          FROM jsonb_array_elements(r.spec->'tasks') WITH ORDINALITY AS s(task, n)
          JOIN run_tasks rt ON rt.run_id = r.id AND rt.task_id = s.task->>'id') AS run_tasks
  FROM runs r WHERE r.id = %(run_id)s AND r.mission_id = %(mission_id)s

-- name: list_runs
-- A mission's runs, newest first.
SELECT id, mission_id, number, status, pause_reason, pause_message, failure_reason, created_at,
       started_at, finished_at, input
  FROM runs WHERE mission_id = %(mission_id)s ORDER BY number DESC LIMIT %(limit)s OFFSET %(offset)s

-- name: list_runs_after
-- The page of a mission's runs older than run number %(number)s (a cursor), newest first.
SELECT id, mission_id, number, status, pause_reason, pause_message, failure_reason, created_at,
       started_at, finished_at
  FROM runs WHERE mission_id = %(mission_id)s AND number < %(number)s ORDER BY number DESC LIMIT %(limit)s

-- name: project_agents_named
-- The documents of the project's reusable agents with these names (frozen into a run's team).
SELECT name, document FROM agents WHERE project_id = %(project_id)s AND name = ANY(%(names)s)

-- name: latest_run_trace
-- The latest run of a project's mission with its trace context: read, while tracing is on, by a
-- request that acts on the run (workers/coordination/runs.py, in_run_trace).
SELECT r.id, r.status, r.traceparent FROM missions m JOIN runs r ON r.id = m.latest_run_id
 WHERE m.id = %(mission_id)s AND m.project_id = %(project_id)s

-- name: run_traces
-- The trace contexts of runs, by id (those that have one): the tick's grants of agent slots send
-- the attempts of several runs at once.
SELECT id, traceparent FROM runs WHERE id = ANY(%(run_ids)s) AND traceparent IS NOT NULL
