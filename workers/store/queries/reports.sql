-- What a person reads about a run (workers/store/reports.py): the attempts of a task, a run's
-- report, and its timeline. Every read that starts from an id the client sent is scoped to the
-- client's project (find_run), so another project's run is not found.

-- name: find_run
-- A run of a mission of the project, or no row.
SELECT r.id, r.mission_id, r.number, r.status
  FROM runs r JOIN missions m ON m.id = r.mission_id
 WHERE r.id = %(run_id)s AND r.mission_id = %(mission_id)s AND m.project_id = %(project_id)s

-- name: run_task_context
-- What rendering a task's attempts needs of its run: the task's spec (NULL once removed from the
-- run), its state in the run (NULL likewise), the team's agents and the quality threshold, and
-- whether any attempt of it exists (a removed task keeps its attempts).
SELECT (SELECT t.task FROM jsonb_array_elements(r.spec->'tasks') AS t(task)
         WHERE t.task->>'id' = %(task_id)s LIMIT 1) AS task,
       (SELECT rt.state FROM run_tasks rt WHERE rt.run_id = r.id AND rt.task_id = %(task_id)s) AS state,
       coalesce(r.spec->'team'->'agents', '[]'::jsonb) AS agents,
       r.spec->'qualityThreshold' AS quality_threshold,
       EXISTS (SELECT FROM attempts a WHERE a.run_id = r.id AND a.task_id = %(task_id)s) AS attempted
  FROM runs r WHERE r.id = %(run_id)s

-- name: task_attempts_page
-- A page of a task's attempts in a run, oldest first, after attempt number %(after)s (keyset).
SELECT attempt, status, agent, model, worker, prompt, output, error, score, assessment,
       (assessment IS NOT NULL OR assessed_at IS NOT NULL) AS assessed, tokens_in, tokens_out, cost_usd, judge_model, judge_tokens_in, judge_tokens_out, judge_cost_usd,
       outcomes, created_at, sent_at, claimed_at, heartbeat_at, finished_at, assessed_at
  FROM attempts
 WHERE run_id = %(run_id)s AND task_id = %(task_id)s AND attempt > %(after)s
 ORDER BY attempt
 LIMIT %(limit)s

-- name: run_report
-- One row per task of the run's spec, in its order, with the run's own columns repeated (and the
-- database's clock, for the duration of a run not yet finished): the task's state and what its
-- attempts spent, agent and judge usage added as in usage.sql. A task's work is the time from each
-- attempt's claim to its end (the verdict, else the agent's end).
-- With %(task_id)s and %(attempt)s (else NULL), that attempt is left out of its task's sums and its
-- own columns come beside them (g_*): what the step about to record it needs to figure the report
-- it will leave (reports.ending_report).
SELECT r.id, r.mission_id, r.number, r.status, r.pause_reason, r.pause_message, r.failure_reason,
       r.created_at, r.started_at, r.finished_at, statement_timestamp() AS now,
       s.task->>'id' AS task_id, coalesce(rt.state->>'title', s.task->>'title') AS title,
       rt.state->>'status' AS task_status, (rt.state->>'score')::double precision AS score,
       coalesce(a.attempts, 0) AS attempts, coalesce(a.tokens_in, 0) AS tokens_in,
       coalesce(a.tokens_out, 0) AS tokens_out, coalesce(a.cost_usd, 0) AS cost_usd,
       a.first_queued_at, a.last_ended_at, coalesce(a.work_seconds, 0) AS work_seconds,
       g.created_at AS g_created_at, g.claimed_at AS g_claimed_at, g.assessed_at AS g_assessed_at,
       g.tokens_in AS g_tokens_in, g.tokens_out AS g_tokens_out,
       g.cost_usd AS g_cost_usd, g.judge_tokens_in AS g_judge_tokens_in,
       g.judge_tokens_out AS g_judge_tokens_out, g.judge_cost_usd AS g_judge_cost_usd
  FROM runs r
  LEFT JOIN LATERAL jsonb_array_elements(r.spec->'tasks') WITH ORDINALITY AS s(task, n) ON true
  LEFT JOIN run_tasks rt ON rt.run_id = r.id AND rt.task_id = s.task->>'id'
  LEFT JOIN (
      SELECT task_id, count(*)::bigint AS attempts,
             sum(tokens_in + judge_tokens_in)::bigint AS tokens_in,
             sum(tokens_out + judge_tokens_out)::bigint AS tokens_out,
             sum(cost_usd + judge_cost_usd)::double precision AS cost_usd,
             min(created_at) AS first_queued_at, max(coalesce(assessed_at, finished_at)) AS last_ended_at,
             sum(greatest(0, extract(epoch FROM coalesce(assessed_at, finished_at) - claimed_at)))::double precision
                 AS work_seconds
        FROM attempts
       WHERE run_id = %(run_id)s AND (task_id, attempt) IS DISTINCT FROM (%(task_id)s::text, %(attempt)s::integer)
       GROUP BY task_id
  ) a ON a.task_id = s.task->>'id'
  LEFT JOIN attempts g
    ON g.run_id = r.id AND g.task_id = %(task_id)s::text AND g.attempt = %(attempt)s::integer
   AND g.task_id = s.task->>'id'
 WHERE r.id = %(run_id)s
 ORDER BY s.n

-- name: run_timeline
-- Every attempt of a run in brief (what a timeline draws: no prompt, output or usage), by task;
-- the primary key's order.
SELECT task_id, attempt, status, agent, model, error, score,
       (assessment IS NOT NULL OR assessed_at IS NOT NULL) AS assessed,
       created_at, claimed_at, finished_at, assessed_at
  FROM attempts WHERE run_id = %(run_id)s
 ORDER BY task_id, attempt

-- name: run_spec_parts
-- The parts of a run's spec that describe its graph and team: its tasks (with dependsOn and
-- retry policies), agents, gates and checkpoints, and its run-level state (their statuses).
SELECT r.spec->'tasks' AS tasks, coalesce(r.spec->'team'->'agents', '[]'::jsonb) AS agents,
       coalesce(r.spec->'qualityGates', '[]'::jsonb) AS gates,
       coalesce(r.spec->'checkpoints', '[]'::jsonb) AS checkpoints, r.state
  FROM runs r WHERE r.id = %(run_id)s

-- name: run_scores
-- For each of these runs: its start and end, the database's clock, and the scores its tasks hold.
SELECT r.id, r.started_at, r.finished_at, statement_timestamp() AS now,
       ARRAY(SELECT (rt.state->>'score')::double precision FROM run_tasks rt
              WHERE rt.run_id = r.id AND jsonb_typeof(rt.state->'score') = 'number') AS scores
  FROM runs r WHERE r.id = ANY(%(run_ids)s)

-- name: attach_report_to_done
-- The report of a run that just ended goes into its latest mission:done event (written by the same
-- transaction's step, so no reader has seen it yet), and into the webhook deliveries of that event.
WITH done AS (
    UPDATE events SET data = data || jsonb_build_object('report', %(report)s::jsonb)
     WHERE id = (SELECT max(id) FROM events WHERE run_id = %(run_id)s AND type = 'mission:done')
    RETURNING id
)
UPDATE webhook_deliveries d SET data = d.data || jsonb_build_object('report', %(report)s::jsonb)
  FROM done WHERE d.event_id = done.id
