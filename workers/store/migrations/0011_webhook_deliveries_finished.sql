-- Retention of webhook deliveries (workers/store/retention.py): a finished delivery (delivered, or
-- failed for good) is a copy of its event, deleted once events are no longer kept; the tick finds
-- the oldest finished ones by this index, however many are kept.
CREATE INDEX webhook_deliveries_finished ON webhook_deliveries (finished_at) WHERE finished_at IS NOT NULL;
