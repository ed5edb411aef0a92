-- What /metrics reads from Postgres when Prometheus scrapes: the present only (missions, live runs,
-- due timers, queued attempts), each through an index that holds just that, so a scrape does not
-- grow with the history. What happened over time is counted as it happens (workers/support/metrics.py).

-- name: missions_by_status
SELECT status, count(*) AS n FROM missions GROUP BY status

-- name: tasks_by_status
-- Tasks of the runs that are not over (the partial index runs_active finds them).
SELECT rt.state->>'status' AS status, count(*) AS n
  FROM runs JOIN run_tasks rt ON rt.run_id = runs.id
 WHERE runs.status IN ('active', 'paused')
 GROUP BY 1

-- name: tick_lag
-- How late the most overdue timer is: the beat tick should have fired it already.
SELECT coalesce(extract(epoch FROM now() - min(due_at)), 0)::float8 AS lag FROM timers WHERE due_at <= now()

-- name: queued_attempts
-- Attempts waiting for a worker (all go to the broker queue `missions`) and how long the oldest has
-- waited: read from the partial index attempts_queued, so the cost follows the queue, not the history.
SELECT count(*)::bigint AS n, coalesce(extract(epoch FROM now() - min(created_at)), 0)::float8 AS oldest
  FROM attempts WHERE status = 'queued'

-- name: webhook_deliveries_by_status
-- Webhook deliveries not delivered (pending, failed) by status, and how overdue the oldest due pending
-- one is: read from the partial index webhook_deliveries_undelivered, so the delivered history (the
-- bulk) is never counted.
SELECT status, count(*) AS n,
       coalesce(extract(epoch FROM now() - min(next_attempt_at) FILTER (WHERE next_attempt_at <= now())), 0)::float8
           AS overdue
  FROM webhook_deliveries
 WHERE status <> 'delivered'
 GROUP BY status
