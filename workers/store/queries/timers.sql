-- Timers: retry backoff, task timeouts and run deadlines, fired by the beat tick (never Celery ETAs).

-- name: schedule_timer
INSERT INTO timers (run_id, kind, key, due_at) VALUES (%(run_id)s, %(kind)s, %(key)s, %(due_at)s)
ON CONFLICT (run_id, kind, key) DO UPDATE SET due_at = EXCLUDED.due_at

-- name: cancel_timer
DELETE FROM timers WHERE run_id = %(run_id)s AND kind = %(kind)s AND key = %(key)s

-- name: take_due_timer
-- One due timer, taken (deleted) in the transaction of the step it feeds; concurrent ticks skip it.
-- With %(traced)s, its run's trace context too (otherwise the runs row is not read: the planner
-- drops the branch, or the executor never reaches it).
DELETE FROM timers WHERE id = (
    SELECT id FROM timers WHERE due_at <= %(now)s ORDER BY due_at FOR UPDATE SKIP LOCKED LIMIT 1
) RETURNING run_id, kind, key,
            CASE WHEN %(traced)s THEN (SELECT r.traceparent FROM runs r WHERE r.id = timers.run_id) END AS traceparent
