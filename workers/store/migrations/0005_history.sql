-- Costs that stay flat as history grows, and retention (workers/store/retention.py).
--
-- Keyset pages of a project's missions (oldest first, by created_at then id), with or without a
-- status: the index gives the order, so a deep page costs what the first one does.
DROP INDEX missions_project_status;
CREATE INDEX missions_project_status ON missions (project_id, status, created_at, id);
CREATE INDEX missions_project_created ON missions (project_id, created_at, id);

-- A reconnecting stream asks whether its run ended at or before the id it has seen: one probe of
-- the run's mission:done event instead of a walk over the run's events.
CREATE INDEX events_run_done ON events (run_id, id) WHERE type = 'mission:done';

-- Retention: finished runs in the order they finished, and those whose events or attempts'
-- prompts and outputs have not been pruned yet (the partial indexes shrink as the tick prunes).
ALTER TABLE runs ADD COLUMN events_pruned boolean NOT NULL DEFAULT false;
ALTER TABLE runs ADD COLUMN outputs_pruned boolean NOT NULL DEFAULT false;
CREATE INDEX runs_finished ON runs (finished_at) WHERE finished_at IS NOT NULL;
CREATE INDEX runs_events_unpruned ON runs (finished_at) WHERE finished_at IS NOT NULL AND NOT events_pruned;
CREATE INDEX runs_outputs_unpruned ON runs (finished_at) WHERE finished_at IS NOT NULL AND NOT outputs_pruned;

-- Deleting a run sets its schedule fires' run_id to NULL: without an index Postgres would scan
-- schedule_fires for every run deleted (by retention, or with its mission).
CREATE INDEX schedule_fires_run ON schedule_fires (run_id) WHERE run_id IS NOT NULL;
