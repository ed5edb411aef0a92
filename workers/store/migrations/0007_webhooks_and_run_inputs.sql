-- Webhooks: signed deliveries of a project's run events to a URL of its own (docs/webhooks.md).
-- events lists the event names to send; mission_ids narrows them to some missions (NULL: every
-- mission). secret is the signing key (whsec_<base64>), needed in clear to sign each delivery.
CREATE TABLE webhooks (
    id           text PRIMARY KEY,
    project_id   text NOT NULL REFERENCES projects (id) ON DELETE CASCADE,
    url          text NOT NULL,
    events       text[] NOT NULL,
    mission_ids  text[],
    secret       text NOT NULL,
    enabled      boolean NOT NULL DEFAULT true,
    description  text,
    created_at   timestamptz NOT NULL DEFAULT now(),
    updated_at   timestamptz NOT NULL DEFAULT now()
);
-- The outbox insert of every coordinator step probes this for the run's project.
CREATE INDEX webhooks_project_enabled ON webhooks (project_id) WHERE enabled;

-- The outbox: one row per (webhook, event) to send, written by the statement that logs the event.
-- id is the Standard Webhooks message id (webhook-id header, the same on every attempt); seq orders
-- a webhook's deliveries for keyset paging. status: pending, delivered or failed. A pending row is
-- due at next_attempt_at; sent_at is when a message for it last went to the broker.
CREATE TABLE webhook_deliveries (
    seq              bigserial NOT NULL UNIQUE,
    id               text PRIMARY KEY,
    webhook_id       text NOT NULL REFERENCES webhooks (id) ON DELETE CASCADE,
    event_id         bigint NOT NULL,
    run_id           text NOT NULL,
    mission_id       text NOT NULL,
    type             text NOT NULL,
    data             jsonb NOT NULL,
    status           text NOT NULL DEFAULT 'pending',
    attempts         integer NOT NULL DEFAULT 0,
    next_attempt_at  timestamptz,
    sent_at          timestamptz,
    created_at       timestamptz NOT NULL DEFAULT now(),
    finished_at      timestamptz,
    UNIQUE (webhook_id, event_id)
);
CREATE INDEX webhook_deliveries_due ON webhook_deliveries (next_attempt_at) WHERE status = 'pending';
CREATE INDEX webhook_deliveries_page ON webhook_deliveries (webhook_id, seq);
-- /metrics counts the deliveries not delivered (pending, failed) through this, never the delivered bulk.
CREATE INDEX webhook_deliveries_undelivered ON webhook_deliveries (status) WHERE status <> 'delivered';

-- Each try of a delivery: the response status and the first characters of its body, or the error.
CREATE TABLE webhook_attempts (
    delivery_id  text NOT NULL REFERENCES webhook_deliveries (id) ON DELETE CASCADE,
    attempt      integer NOT NULL,
    started_at   timestamptz NOT NULL,
    duration_ms  integer NOT NULL,
    status_code  integer,
    response     text,
    error        text,
    PRIMARY KEY (delivery_id, attempt)
);

-- Per-run inputs: the data given to POST /execute (or by the schedule) for this run only, as given;
-- the run's spec holds the mission data with it merged in.
ALTER TABLE runs ADD COLUMN input jsonb;
