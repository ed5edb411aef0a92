-- The trace a run belongs to while tracing is on (workers/support/tracing.py): the W3C traceparent
-- of the step that began it, under the request that executed it. The beat tick and later requests
-- on the run continue that trace from here. NULL while tracing is off, and for a run begun outside
-- a sampled trace (a schedule's fire).
ALTER TABLE runs ADD COLUMN traceparent text;
