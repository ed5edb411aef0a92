-- Projects, API keys, missions and their tasks, plus the run tables the execution engine writes.

CREATE TABLE projects (
    id          text PRIMARY KEY,
    name        text NOT NULL UNIQUE,
    created_at  timestamptz NOT NULL DEFAULT now()
);

-- Keys are stored as SHA-256 digests of the secret; the prefix is kept to tell keys apart in lists.
CREATE TABLE api_keys (
    id           text PRIMARY KEY,
    project_id   text NOT NULL REFERENCES projects (id) ON DELETE CASCADE,
    key_hash     bytea NOT NULL UNIQUE,
    prefix       text NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT now(),
    revoked_at   timestamptz
);

-- Non-volatile team agents are kept per project and can be assigned by name from any mission.
CREATE TABLE agents (
    project_id  text NOT NULL REFERENCES projects (id) ON DELETE CASCADE,
    name        text NOT NULL,
    document    jsonb NOT NULL,
    updated_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (project_id, name)
);

-- document: the mission document without its tasks (camelCase, as served by the API).
CREATE TABLE missions (
    id               text PRIMARY KEY,
    project_id       text NOT NULL REFERENCES projects (id) ON DELETE CASCADE,
    name             text NOT NULL,
    status           text NOT NULL,
    document         jsonb NOT NULL,
    execution_count  integer NOT NULL DEFAULT 0,
    latest_run_id    text,
    next_run_at      timestamptz,
    created_at       timestamptz NOT NULL DEFAULT now(),
    updated_at       timestamptz NOT NULL DEFAULT now(),
    UNIQUE (project_id, name)
);
CREATE INDEX missions_project_status ON missions (project_id, status, created_at);
CREATE INDEX missions_next_run_at ON missions (next_run_at) WHERE next_run_at IS NOT NULL;

-- document: the task document (camelCase) without id; position keeps the order of creation.
CREATE TABLE tasks (
    id          text PRIMARY KEY,
    mission_id  text NOT NULL REFERENCES missions (id) ON DELETE CASCADE,
    position    integer NOT NULL,
    title       text NOT NULL,
    document    jsonb NOT NULL,
    UNIQUE (mission_id, title)
);
CREATE INDEX tasks_mission_position ON tasks (mission_id, position);

-- One execution of a mission. spec is the mission document frozen at start (tasks included).
CREATE TABLE runs (
    id              text PRIMARY KEY,
    mission_id      text NOT NULL REFERENCES missions (id) ON DELETE CASCADE,
    number          integer NOT NULL,
    status          text NOT NULL,
    pause_reason    text,
    pause_message   text,
    failure_reason  text,
    spec            jsonb NOT NULL,
    state           jsonb NOT NULL,
    version         bigint NOT NULL DEFAULT 0,
    deadline_at     timestamptz,
    created_at      timestamptz NOT NULL DEFAULT now(),
    started_at      timestamptz,
    finished_at     timestamptz,
    UNIQUE (mission_id, number)
);
CREATE INDEX runs_mission_number ON runs (mission_id, number DESC);
CREATE INDEX runs_active ON runs (status) WHERE status IN ('active', 'paused');

-- One try of one task in one run. The primary key is the delivery guarantee: a worker claims
-- (run, task, attempt) before running the agent, so a second delivery finds it claimed.
CREATE TABLE attempts (
    run_id        text NOT NULL REFERENCES runs (id) ON DELETE CASCADE,
    task_id       text NOT NULL,
    attempt       integer NOT NULL,
    status        text NOT NULL,
    agent         text,
    model         text,
    worker        text,
    prompt        text,
    output        text,
    error         text,
    score         double precision,
    assessment    jsonb,
    tokens_in     integer NOT NULL DEFAULT 0,
    tokens_out    integer NOT NULL DEFAULT 0,
    cost_usd      double precision NOT NULL DEFAULT 0,
    created_at    timestamptz NOT NULL DEFAULT now(),
    sent_at       timestamptz,
    claimed_at    timestamptz,
    heartbeat_at  timestamptz,
    finished_at   timestamptz,
    PRIMARY KEY (run_id, task_id, attempt)
);
CREATE INDEX attempts_running ON attempts (heartbeat_at) WHERE status = 'running';
CREATE INDEX attempts_queued ON attempts (created_at) WHERE status = 'queued';

-- Timers (retry backoff, deadlines, timeouts) fired by the beat tick.
CREATE TABLE timers (
    id       bigserial PRIMARY KEY,
    run_id   text NOT NULL REFERENCES runs (id) ON DELETE CASCADE,
    kind     text NOT NULL,
    key      text NOT NULL,
    due_at   timestamptz NOT NULL,
    payload  jsonb NOT NULL DEFAULT '{}',
    UNIQUE (run_id, kind, key)
);
CREATE INDEX timers_due ON timers (due_at);

-- The event log: every state change of a run, in commit order per run. SSE replays from here.
CREATE TABLE events (
    id          bigserial PRIMARY KEY,
    run_id      text NOT NULL REFERENCES runs (id) ON DELETE CASCADE,
    mission_id  text NOT NULL,
    type        text NOT NULL,
    data        jsonb NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX events_run_id ON events (run_id, id);
