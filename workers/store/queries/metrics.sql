-- What /metrics computes from Postgres when Prometheus scrapes: the tables are the truth and survive
-- restarts. width_bucket(x, bounds) is the number of bounds <= x: bucket i holds bounds[i-1] <= x < bounds[i].

-- name: missions_by_status
SELECT status, count(*) AS n FROM missions GROUP BY status

-- name: tasks_by_status
-- Tasks of the runs that are not over (the partial index runs_active finds them).
SELECT rt.state->>'status' AS status, count(*) AS n
  FROM runs JOIN run_tasks rt ON rt.run_id = runs.id
 WHERE runs.status IN ('active', 'paused')
 GROUP BY 1

-- name: attempts_by_status
SELECT status, count(*) AS n, count(*) FILTER (WHERE attempt > 1) AS retries
  FROM attempts
 GROUP BY status

-- name: task_durations
SELECT width_bucket(d, %(bounds)s::float8[]) AS bucket, count(*) AS n, sum(d) AS total
  FROM (SELECT extract(epoch FROM finished_at - claimed_at)::float8 AS d
          FROM attempts WHERE claimed_at IS NOT NULL AND finished_at IS NOT NULL) AS x
 GROUP BY bucket

-- name: queue_waits
SELECT width_bucket(d, %(bounds)s::float8[]) AS bucket, count(*) AS n, sum(d) AS total
  FROM (SELECT extract(epoch FROM claimed_at - created_at)::float8 AS d
          FROM attempts WHERE claimed_at IS NOT NULL) AS x
 GROUP BY bucket

-- name: assessment_scores
SELECT width_bucket(score, %(bounds)s::float8[]) AS bucket, count(*) AS n, sum(score) AS total
  FROM attempts WHERE score IS NOT NULL
 GROUP BY bucket

-- name: tick_lag
-- How late the most overdue timer is: the beat tick should have fired it already.
SELECT coalesce(extract(epoch FROM now() - min(due_at)), 0)::float8 AS lag FROM timers WHERE due_at <= now()

-- name: webhook_deliveries_by_status
-- Webhook deliveries by status (pending, delivered, failed), and how overdue the oldest due pending one is.
SELECT status, count(*) AS n,
       coalesce(extract(epoch FROM now() - min(next_attempt_at) FILTER (WHERE next_attempt_at <= now())), 0)::float8
           AS overdue
  FROM webhook_deliveries
 GROUP BY status
