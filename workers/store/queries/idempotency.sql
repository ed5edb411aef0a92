-- Stored responses of requests sent with an Idempotency-Key (workers/store/idempotency.py). Every
-- statement is scoped to the project: another project's key is another key.

-- name: claim_idempotency_key
-- Claims the key for a request about to run, with a lease: a new key, an expired one, or one whose
-- first request (the same request) stopped holding it without an answer (its process died). No row
-- when the key is taken: the caller reads what holds it.
INSERT INTO idempotency_keys AS k (project_id, key, request_hash, locked_until, expires_at)
VALUES (%(project_id)s, %(key)s, %(request_hash)s, now() + make_interval(secs => %(lease)s),
        now() + make_interval(secs => %(ttl)s))
ON CONFLICT (project_id, key) DO UPDATE
   SET request_hash = EXCLUDED.request_hash, status = NULL, headers = '{}', body = NULL,
       locked_until = EXCLUDED.locked_until, created_at = now(), expires_at = EXCLUDED.expires_at
 WHERE k.expires_at <= now()
    OR (k.status IS NULL AND k.locked_until <= now() AND k.request_hash = EXCLUDED.request_hash)
RETURNING k.key

-- name: claim_commits_asynchronously
-- The claim's commit need not wait for its WAL to reach the disk: if the request's work commits,
-- that (synchronous) commit flushes the claim's WAL before it; if the request writes nothing, the
-- answer is stored with a synchronous commit. A claim lost by a Postgres crash had nothing after it.
SET LOCAL synchronous_commit = off

-- name: select_idempotency_key
SELECT request_hash, status, headers, body, locked_until > now() AS locked, expires_at > now() AS live
  FROM idempotency_keys
 WHERE project_id = %(project_id)s AND key = %(key)s

-- name: finish_idempotency_key
-- Stores the answer of the request that holds the key (nothing when its lease was taken over).
UPDATE idempotency_keys SET status = %(status)s, headers = %(headers)s, body = %(body)s, locked_until = NULL
 WHERE project_id = %(project_id)s AND key = %(key)s AND request_hash = %(request_hash)s AND status IS NULL

-- name: release_idempotency_key
-- Gives the key up without an answer (the request failed before or without doing its work).
DELETE FROM idempotency_keys
 WHERE project_id = %(project_id)s AND key = %(key)s AND request_hash = %(request_hash)s AND status IS NULL

-- name: delete_expired_idempotency_keys
-- One small batch of expired keys (the tick calls it until a batch comes back short).
DELETE FROM idempotency_keys
 WHERE (project_id, key) IN (
       SELECT project_id, key FROM idempotency_keys WHERE expires_at <= %(now)s
        ORDER BY expires_at LIMIT %(limit)s FOR UPDATE SKIP LOCKED)
