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
-- One row per (run, task), one per run, and one for the whole mission (run_id and task_id NULL);
-- level (GROUPING) tells them apart: 0, 1 and 3.
SELECT r.id AS run_id, a.task_id, GROUPING(r.id, a.task_id) AS level,
       coalesce(sum(a.tokens_in + a.judge_tokens_in), 0)::bigint AS tokens_in,
       coalesce(sum(a.tokens_out + a.judge_tokens_out), 0)::bigint AS tokens_out,
       coalesce(sum(a.cost_usd + a.judge_cost_usd), 0)::double precision AS cost_usd,
       count(a.attempt)::bigint AS attempts
  FROM runs r JOIN attempts a ON a.run_id = r.id
 WHERE r.mission_id = %(mission_id)s
 GROUP BY GROUPING SETS ((r.id, a.task_id), (r.id), ())
