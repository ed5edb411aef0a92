-- Webhooks and their outbox (workers/store/webhooks.py). The outbox rows are written by the
-- statements that log run events (runs.sql); these statements read, claim and settle them.

-- name: lock_project
-- Creating a webhook takes the project's row lock, so that concurrent creates count one another.
SELECT id FROM projects WHERE id = %(project_id)s FOR UPDATE

-- name: insert_webhook
-- No row when the project has %(max_webhooks)s webhooks already.
INSERT INTO webhooks (id, project_id, url, events, mission_ids, secret, enabled, description, created_at, updated_at)
SELECT %(id)s, %(project_id)s, %(url)s, %(events)s, %(mission_ids)s, %(secret)s, %(enabled)s, %(description)s,
       %(now)s, %(now)s
 WHERE (SELECT count(*) FROM webhooks WHERE project_id = %(project_id)s) < %(max_webhooks)s
RETURNING id, url, events, mission_ids, enabled, description, created_at, updated_at, previous_secret_until

-- name: list_webhooks
SELECT id, url, events, mission_ids, enabled, description, created_at, updated_at, previous_secret_until
  FROM webhooks WHERE project_id = %(project_id)s ORDER BY created_at, id

-- name: get_webhook
SELECT id, url, events, mission_ids, enabled, description, created_at, updated_at, previous_secret_until
  FROM webhooks WHERE project_id = %(project_id)s AND id = %(id)s

-- name: lock_webhook
SELECT id, url, events, mission_ids, enabled, description, created_at, updated_at, previous_secret_until
  FROM webhooks WHERE project_id = %(project_id)s AND id = %(id)s FOR UPDATE

-- name: update_webhook
-- Every field is written (the caller merged the change into the current row); the secret only when
-- %(secret)s is not NULL (a rotation): then the old one keeps signing until %(previous_until)s
-- (NULL: not at all). (SET expressions read the row as it was: secret there is the old one.)
UPDATE webhooks
   SET url = %(url)s, events = %(events)s, mission_ids = %(mission_ids)s, enabled = %(enabled)s,
       description = %(description)s, secret = coalesce(%(secret)s, secret), updated_at = %(now)s,
       previous_secret = CASE WHEN %(secret)s::text IS NULL THEN previous_secret
                              WHEN %(previous_until)s::timestamptz IS NULL THEN NULL ELSE secret END,
       previous_secret_until = CASE WHEN %(secret)s::text IS NULL THEN previous_secret_until
                                    ELSE %(previous_until)s::timestamptz END
 WHERE project_id = %(project_id)s AND id = %(id)s
RETURNING id, url, events, mission_ids, enabled, description, created_at, updated_at, previous_secret_until

-- name: delete_webhook
-- Its deliveries and their attempts go with it (ON DELETE CASCADE): nothing more is sent.
DELETE FROM webhooks WHERE project_id = %(project_id)s AND id = %(id)s RETURNING id

-- name: missions_of_project
-- Which of these mission ids belong to the project (a webhook's mission filter names only its own).
SELECT id FROM missions WHERE project_id = %(project_id)s AND id = ANY (%(ids)s)

-- name: list_deliveries
-- A webhook's deliveries, newest first, after the keyset cursor %(before)s (a seq; NULL: from the
-- newest), each with its attempts in order; with %(only)s, that one delivery.
SELECT d.seq, d.id, d.event_id, d.run_id, d.mission_id, d.type, d.status, d.attempts, d.next_attempt_at,
       d.created_at, d.finished_at,
       (SELECT coalesce(jsonb_agg(jsonb_build_object(
                   'attempt', a.attempt,
                   'startedAt', to_char(a.started_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"'), 'durationMs', a.duration_ms,
                   'statusCode', a.status_code, 'response', a.response, 'error', a.error) ORDER BY a.attempt),
                '[]'::jsonb)
          FROM webhook_attempts a WHERE a.delivery_id = d.id) AS attempt_list
  FROM webhook_deliveries d
 WHERE d.webhook_id = %(webhook_id)s AND (%(before)s::bigint IS NULL OR d.seq < %(before)s::bigint)
   AND (%(only)s::text IS NULL OR d.id = %(only)s::text)
 ORDER BY d.seq DESC
 LIMIT %(limit)s

-- name: resend_delivery
-- Make a delivery due now again (whatever its status); its message goes after commit.
UPDATE webhook_deliveries
   SET status = 'pending', next_attempt_at = %(now)s, sent_at = %(now)s, finished_at = NULL
 WHERE webhook_id = %(webhook_id)s AND id = %(id)s
RETURNING id

-- name: claim_delivery
-- A due delivery of an enabled webhook, taken for one attempt: it is not due again before
-- %(lease_until)s (a worker that dies mid-attempt leaves it to the tick then). No row when it is
-- not due (sent twice, already delivered, its webhook disabled or deleted).
UPDATE webhook_deliveries d
   SET attempts = d.attempts + 1, next_attempt_at = %(lease_until)s
  FROM webhooks w
 WHERE d.id = %(id)s AND w.id = d.webhook_id AND w.enabled AND d.status = 'pending'
   AND d.next_attempt_at <= %(now)s
RETURNING d.id, d.webhook_id, d.event_id, d.run_id, d.mission_id, d.type, d.data, d.attempts, d.created_at,
          w.url, w.secret, CASE WHEN w.previous_secret_until > %(now)s THEN w.previous_secret END AS previous_secret

-- name: settle_delivery
-- One attempt's result, and what follows: delivered, due again at %(next_attempt_at)s, or failed.
WITH attempt AS (
    INSERT INTO webhook_attempts (delivery_id, attempt, started_at, duration_ms, status_code, response, error)
    VALUES (%(id)s, %(attempt)s, %(started_at)s, %(duration_ms)s, %(status_code)s, %(response)s, %(error)s)
    ON CONFLICT (delivery_id, attempt) DO NOTHING
)
UPDATE webhook_deliveries
   SET status = %(status)s, next_attempt_at = %(next_attempt_at)s, sent_at = NULL,
       finished_at = CASE WHEN %(status)s = 'pending' THEN NULL ELSE %(now)s END
 WHERE id = %(id)s AND attempts = %(attempt)s AND status = 'pending'

-- name: take_due_deliveries
-- The tick: pending deliveries of enabled webhooks that are due and whose message, if one was sent,
-- went out before %(sent_before)s; their sent_at moves to now (the caller sends them).
UPDATE webhook_deliveries SET sent_at = %(now)s
 WHERE id IN (
    SELECT d.id FROM webhook_deliveries d JOIN webhooks w ON w.id = d.webhook_id
     WHERE d.status = 'pending' AND d.next_attempt_at <= %(now)s AND w.enabled
       AND (d.sent_at IS NULL OR d.sent_at <= %(sent_before)s)
     ORDER BY d.next_attempt_at
     LIMIT %(limit)s
       FOR UPDATE OF d SKIP LOCKED
 )
RETURNING id
