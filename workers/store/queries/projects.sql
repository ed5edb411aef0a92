-- Projects and their API keys (workers/store/projects.py). Keys are stored as SHA-256 digests
-- (key_hash), never in the clear; prefix keeps the first characters of a key to recognise it by.

-- name: insert_project
-- No row when a project of that name exists (created concurrently, or before).
INSERT INTO projects (id, name) VALUES (%(id)s, %(name)s) ON CONFLICT (name) DO NOTHING RETURNING id

-- name: project_by_name
SELECT id, name, rate_limit, rate_limit_burst FROM projects WHERE name = %(name)s

-- name: set_project_rate_limit
-- NULL values: the server's settings.
UPDATE projects SET rate_limit = %(rate_limit)s, rate_limit_burst = %(rate_limit_burst)s
 WHERE name = %(name)s
RETURNING id, name, rate_limit, rate_limit_burst

-- name: insert_api_key
INSERT INTO api_keys (id, project_id, key_hash, prefix, name)
VALUES (%(id)s, %(project_id)s, %(key_hash)s, %(prefix)s, %(name)s)
RETURNING id, prefix, name, created_at, last_used_at, revoked_at

-- name: live_api_key
-- A key that is not revoked, looked up by its digest (the caller compares the digest in constant
-- time), with its project's rate limit and whether its last use is worth recording again.
SELECT k.id, k.project_id, k.key_hash, k.prefix, p.rate_limit, p.rate_limit_burst,
       (k.last_used_at IS NULL OR k.last_used_at < now() - interval '60 seconds') AS use_is_stale
  FROM api_keys k JOIN projects p ON p.id = k.project_id
 WHERE k.key_hash = %(key_hash)s AND k.revoked_at IS NULL

-- name: touch_api_key
-- Records a key's use at most once a minute (concurrent requests of other processes write nothing).
UPDATE api_keys SET last_used_at = now()
 WHERE id = %(id)s AND (last_used_at IS NULL OR last_used_at < now() - interval '60 seconds')

-- name: list_api_keys
SELECT id, prefix, name, created_at, last_used_at, revoked_at
  FROM api_keys WHERE project_id = %(project_id)s ORDER BY created_at, id

-- name: revoke_api_key
-- Revokes a key of the project (an already revoked one keeps its time); no row for another project's.
UPDATE api_keys SET revoked_at = coalesce(revoked_at, now())
 WHERE project_id = %(project_id)s AND id = %(id)s
RETURNING id, prefix, name, created_at, last_used_at, revoked_at
