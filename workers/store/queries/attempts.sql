-- Attempt rows: the claim, prompts, heartbeats, the assessment's reads, and the tick's repair scans.
-- A point lookup of one attempt names the status it expects as a parameter (%(was)s), never as a
-- literal (see workers/store/attempts.py); the repair scans name theirs as literals, to read the
-- partial indexes attempts_running and attempts_queued.

-- name: claim_attempt
-- A worker takes a queued attempt; a second delivery of its message matches nothing.
UPDATE attempts SET status = 'running', worker = %(worker)s, claimed_at = %(now)s, heartbeat_at = %(now)s
 WHERE run_id = %(run_id)s AND task_id = %(task_id)s AND attempt = %(attempt)s AND status = %(was)s
RETURNING agent, model, prompt, created_at

-- name: store_attempt_prompt
-- The prompt of an attempt queued by a version that built prompts at the claim.
UPDATE attempts SET prompt = %(prompt)s WHERE run_id = %(run_id)s AND task_id = %(task_id)s AND attempt = %(attempt)s

-- name: record_cancelled_usage
-- What a cancelled attempt had already spent (turns that finished before the cancel) still counts.
UPDATE attempts SET tokens_in = %(tokens_in)s, tokens_out = %(tokens_out)s, cost_usd = %(cost)s,
       outcomes = %(outcomes)s
 WHERE run_id = %(run_id)s AND task_id = %(task_id)s AND attempt = %(attempt)s

-- name: attempt_to_assess
-- An assessing attempt with its run's status and how many attempts of its task were assessed.
SELECT a.output, a.agent, a.model, r.status AS run_status,
       (SELECT count(*) FROM attempts p WHERE p.run_id = a.run_id AND p.task_id = a.task_id
           AND p.assessment IS NOT NULL) AS assessed
  FROM attempts a JOIN runs r ON r.id = a.run_id
 WHERE a.run_id = %(run_id)s AND a.task_id = %(task_id)s AND a.attempt = %(attempt)s AND a.status = %(was)s

-- name: reopen_for_assessment
-- An operator asked for an assessed attempt's output to be judged again: it is assessing once more
-- (heart-beaten now, so the reaper of stale assessments leaves it to the judge it is sent to).
UPDATE attempts SET status = %(assessing)s, heartbeat_at = %(now)s
 WHERE run_id = %(run_id)s AND task_id = %(task_id)s AND attempt = %(attempt)s
   AND status = ANY(%(was)s) AND output IS NOT NULL
RETURNING 1

-- name: drop_assessment
-- The run ended (abort, deadline, budget) while this attempt waited for its judge: do not judge it.
UPDATE attempts SET status = 'cancelled', error = coalesce(error, 'the run ended before the assessment'),
       heartbeat_at = %(now)s
 WHERE run_id = %(run_id)s AND task_id = %(task_id)s AND attempt = %(attempt)s AND status = %(was)s

-- name: cancel_attempt
-- A step cancelled the attempt (abort, timeout, budget): it stops if it is still queued or running.
UPDATE attempts SET status = 'cancelled', error = %(reason)s, finished_at = %(now)s
 WHERE run_id = %(run_id)s AND task_id = %(task_id)s AND attempt = %(attempt)s
   AND status = ANY(%(live)s)

-- name: beat_attempts
-- Rows still in the status the worker holds them in get a new heartbeat_at; the others are not
-- returned, and their attempts are cancelled.
UPDATE attempts a SET heartbeat_at = now()
  FROM jsonb_to_recordset(%(watched)s) AS w(run_id text, task_id text, attempt int, status text)
 WHERE a.run_id = w.run_id AND a.task_id = w.task_id AND a.attempt = w.attempt AND a.status = w.status
RETURNING a.run_id, a.task_id, a.attempt

-- name: lost_running_attempts
-- Running attempts whose worker stopped heart-beating, oldest first; with %(traced)s, with their
-- run's trace context (as take_due_timer).
SELECT run_id, task_id, attempt, worker, claimed_at,
       CASE WHEN %(traced)s THEN (SELECT r.traceparent FROM runs r WHERE r.id = attempts.run_id) END AS traceparent
  FROM attempts
 WHERE status = 'running' AND heartbeat_at < %(cutoff)s
 ORDER BY heartbeat_at LIMIT %(limit)s

-- name: stale_assessing_attempts
-- Assessments whose worker went silent; touched, so that a concurrent tick skips them. With
-- %(traced)s, with their run's trace context (as take_due_timer).
UPDATE attempts SET heartbeat_at = %(now)s
 WHERE (run_id, task_id, attempt) IN (
    SELECT run_id, task_id, attempt FROM attempts
     WHERE status = 'assessing' AND coalesce(heartbeat_at, finished_at) < %(cutoff)s
     LIMIT %(limit)s FOR UPDATE SKIP LOCKED)
RETURNING run_id, task_id, attempt,
          CASE WHEN %(traced)s THEN (SELECT r.traceparent FROM runs r WHERE r.id = attempts.run_id) END AS traceparent

-- name: unsent_attempts
-- Queued attempts no worker claimed: their message was never sent, or the broker lost it. Each is
-- sent again once its last send is older than the cutoff and than the time it had waited when last
-- sent (capped by %(backoff_cap)s): the gaps between the re-sends of one attempt double, so a long
-- queue is not flooded with duplicates of the attempts waiting in it. A zero cap re-sends every
-- attempt past the cutoff (an empty queue holds no message of any of them). An attempt waiting for
-- a slot of its agent (agent_slots, not granted) was never sent on purpose: it goes when granted.
-- With %(traced)s, with their run's trace context (as take_due_timer).
UPDATE attempts SET sent_at = %(now)s
 WHERE (run_id, task_id, attempt) IN (
    SELECT q.run_id, q.task_id, q.attempt FROM attempts q
     WHERE q.status = 'queued' AND coalesce(q.sent_at, q.created_at) < %(cutoff)s
       AND coalesce(q.sent_at, q.created_at)
           < %(now)s - least(%(backoff_cap)s::interval, coalesce(q.sent_at, q.created_at) - q.created_at)
       AND NOT EXISTS (SELECT 1 FROM agent_slots s
                        WHERE s.run_id = q.run_id AND s.task_id = q.task_id AND s.attempt = q.attempt
                          AND s.granted_at IS NULL)
     ORDER BY q.created_at LIMIT %(limit)s FOR UPDATE SKIP LOCKED)
RETURNING run_id, task_id, attempt,
          CASE WHEN %(traced)s THEN (SELECT r.traceparent FROM runs r WHERE r.id = attempts.run_id) END AS traceparent

-- name: postpone_lost_attempt
-- A lost attempt the tick could not reap (its step failed): looked at again once its heartbeat,
-- set to now, is old again, so that it does not hold the head of the reaper's scan tick after tick.
UPDATE attempts SET heartbeat_at = %(now)s
 WHERE run_id = %(run_id)s AND task_id = %(task_id)s AND attempt = %(attempt)s AND status = %(was)s
