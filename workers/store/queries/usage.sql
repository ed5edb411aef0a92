-- Tokens and cost (workers/store/usage.py). A total adds an attempt's agent usage (tokens_in,
-- tokens_out, cost_usd) and its judge's (judge_tokens_in, judge_tokens_out, judge_cost_usd). The
-- statements sum the same four columns, written out in each.

-- name: run_totals
SELECT coalesce(sum(a.tokens_in + a.judge_tokens_in), 0)::bigint AS tokens_in,
       coalesce(sum(a.tokens_out + a.judge_tokens_out), 0)::bigint AS tokens_out,
       coalesce(sum(a.cost_usd + a.judge_cost_usd), 0)::double precision AS cost_usd,
       count(a.attempt)::bigint AS attempts
  FROM attempts a WHERE a.run_id = %(run_id)s

-- name: runs_usage
-- mission_usage for some runs only (a page of a mission's runs): one row per (run, task) and one per
-- run; level 0 and 1.
SELECT a.run_id, a.task_id, GROUPING(a.run_id, a.task_id) AS level,
       coalesce(sum(a.tokens_in + a.judge_tokens_in), 0)::bigint AS tokens_in,
       coalesce(sum(a.tokens_out + a.judge_tokens_out), 0)::bigint AS tokens_out,
       coalesce(sum(a.cost_usd + a.judge_cost_usd), 0)::double precision AS cost_usd,
       count(a.attempt)::bigint AS attempts
  FROM attempts a
 WHERE a.run_id = ANY(%(run_ids)s)
 GROUP BY GROUPING SETS ((a.run_id, a.task_id), (a.run_id))

-- name: mission_usage
-- The mission's totals over all its runs (level 3), and those of its latest run (level 1) and of
-- each task in it (level 0): what the mission's detail shows. Older runs get no rows of their own,
-- so the answer has a row per task, not one per (run, task) of the mission's whole history.
SELECT NULL::text AS run_id, NULL::text AS task_id, 3 AS level,
       coalesce(sum(a.tokens_in + a.judge_tokens_in), 0)::bigint AS tokens_in,
       coalesce(sum(a.tokens_out + a.judge_tokens_out), 0)::bigint AS tokens_out,
       coalesce(sum(a.cost_usd + a.judge_cost_usd), 0)::double precision AS cost_usd,
       count(a.attempt)::bigint AS attempts
  FROM runs r JOIN attempts a ON a.run_id = r.id
 WHERE r.mission_id = %(mission_id)s
UNION ALL
SELECT a.run_id, a.task_id, GROUPING(a.run_id, a.task_id) AS level,
       coalesce(sum(a.tokens_in + a.judge_tokens_in), 0)::bigint AS tokens_in,
       coalesce(sum(a.tokens_out + a.judge_tokens_out), 0)::bigint AS tokens_out,
       coalesce(sum(a.cost_usd + a.judge_cost_usd), 0)::double precision AS cost_usd,
       count(a.attempt)::bigint AS attempts
  FROM attempts a
 WHERE a.run_id = (SELECT m.latest_run_id FROM missions m WHERE m.id = %(mission_id)s)
 GROUP BY GROUPING SETS ((a.run_id, a.task_id), (a.run_id))
