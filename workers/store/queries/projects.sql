-- Projects and their API keys (workers/store/projects.py). Keys are stored as SHA-256 digests
-- (key_hash), never in the clear; prefix keeps the first characters of a key to recognise it by.

-- name: insert_project
-- No row when a project of that name exists (created concurrently, or before).
INSERT INTO projects (id, name) VALUES (%(id)s, %(name)s) ON CONFLICT (name) DO NOTHING RETURNING id

-- name: project_by_name
SELECT id FROM projects WHERE name = %(name)s

-- name: insert_api_key
INSERT INTO api_keys (id, project_id, key_hash, prefix) VALUES (%(id)s, %(project_id)s, %(key_hash)s, %(prefix)s)

-- name: live_api_key
-- A key that is not revoked, looked up by its digest (the caller compares the digest in constant time).
SELECT project_id, key_hash, id, prefix FROM api_keys WHERE key_hash = %(key_hash)s AND revoked_at IS NULL
