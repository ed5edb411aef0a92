-- Clients at scale: named API keys with their last use, per-project rate limits, and stored
-- responses of requests sent with an Idempotency-Key.
ALTER TABLE api_keys
    ADD COLUMN name          text,
    ADD COLUMN last_used_at  timestamptz;
CREATE INDEX api_keys_project ON api_keys (project_id, created_at);

-- NULL: the server's MISSIONS_RATE_LIMIT / MISSIONS_RATE_LIMIT_BURST.
ALTER TABLE projects
    ADD COLUMN rate_limit        integer,
    ADD COLUMN rate_limit_burst  integer;

-- The first response to each Idempotency-Key of a project. A row with status NULL is a request
-- still in progress: it holds the key until locked_until (a lease, so that a crashed request does
-- not hold it for ever). request_hash is SHA-256 of the method, path and body: the same key with
-- another request is refused. Rows are deleted after expires_at by the tick.
CREATE TABLE idempotency_keys (
    project_id    text NOT NULL REFERENCES projects (id) ON DELETE CASCADE,
    key           text NOT NULL,
    request_hash  bytea NOT NULL,
    status        integer,
    headers       jsonb NOT NULL DEFAULT '{}',
    body          bytea,
    locked_until  timestamptz,
    created_at    timestamptz NOT NULL DEFAULT now(),
    expires_at    timestamptz NOT NULL,
    PRIMARY KEY (project_id, key)
);
CREATE INDEX idempotency_keys_expires_at ON idempotency_keys (expires_at);
