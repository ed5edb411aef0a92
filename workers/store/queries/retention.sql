-- Retention (workers/store/retention.py): finished runs' events, their attempts' prompts and outputs,
-- and whole finished runs, deleted in small batches. Every batch locks the runs it works on with
-- FOR UPDATE SKIP LOCKED (a run a step or a command holds is left for a later tick) and takes
-- only runs with finished_at set, which no active or paused run has (runs.finished_at is set with
-- a terminal status and cleared when a run becomes active again).

-- name: runs_with_events_to_prune
SELECT id FROM runs
 WHERE finished_at IS NOT NULL AND NOT events_pruned AND finished_at < %(before)s
   AND status NOT IN ('active', 'paused')
 ORDER BY finished_at
 LIMIT %(runs)s
   FOR UPDATE SKIP LOCKED

-- name: prune_events
-- At most %(limit)s events of these runs, each run's mission:done kept (a stream of the run still
-- ends); with %(all)s, that one too (the run itself goes next).
WITH doomed AS (
    SELECT id FROM events
     WHERE run_id = ANY(%(run_ids)s) AND (%(all)s OR type <> 'mission:done')
     LIMIT %(limit)s
)
DELETE FROM events e USING doomed d WHERE e.id = d.id

-- name: mark_events_pruned
UPDATE runs SET events_pruned = true WHERE id = ANY(%(run_ids)s)

-- name: runs_with_outputs_to_prune
SELECT id FROM runs
 WHERE finished_at IS NOT NULL AND NOT outputs_pruned AND finished_at < %(before)s
   AND status NOT IN ('active', 'paused')
 ORDER BY finished_at
 LIMIT %(runs)s
   FOR UPDATE SKIP LOCKED

-- name: prune_outputs
-- At most %(limit)s attempts of these runs lose their prompt and output (their usage, status and
-- score stay).
WITH doomed AS (
    SELECT run_id, task_id, attempt FROM attempts
     WHERE run_id = ANY(%(run_ids)s) AND (prompt IS NOT NULL OR output IS NOT NULL)
     LIMIT %(limit)s
)
UPDATE attempts a SET prompt = NULL, output = NULL
  FROM doomed d
 WHERE a.run_id = d.run_id AND a.task_id = d.task_id AND a.attempt = d.attempt

-- name: mark_outputs_pruned
UPDATE runs SET outputs_pruned = true WHERE id = ANY(%(run_ids)s)

-- name: runs_to_delete
-- Finished runs that are not their mission's newest (a mission always keeps its latest run).
SELECT r.id FROM runs r
 WHERE r.finished_at IS NOT NULL AND r.finished_at < %(before)s AND r.status NOT IN ('active', 'paused')
   AND EXISTS (SELECT 1 FROM runs n WHERE n.mission_id = r.mission_id AND n.number > r.number)
 ORDER BY r.finished_at
 LIMIT %(runs)s
   FOR UPDATE OF r SKIP LOCKED

-- name: delete_runs
-- With their attempts, task rows and timers (ON DELETE CASCADE; their events are gone first) and
-- their schedule fires' run_id set to NULL.
DELETE FROM runs WHERE id = ANY(%(run_ids)s)

-- name: table_sizes
-- Rows (the planner's estimate: -1 until the table is first analysed), total and index bytes.
SELECT c.relname AS name, c.reltuples::bigint AS rows, pg_total_relation_size(c.oid) AS total_bytes,
       pg_indexes_size(c.oid) AS index_bytes
  FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
 WHERE n.nspname = current_schema() AND c.relkind = 'r'
 ORDER BY pg_total_relation_size(c.oid) DESC, c.relname

-- name: retention_preview_events
SELECT count(*) AS runs, coalesce(sum((SELECT count(*) FROM events e
                                       WHERE e.run_id = r.id AND e.type <> 'mission:done')), 0)::bigint AS rows
  FROM runs r
 WHERE r.finished_at IS NOT NULL AND NOT r.events_pruned AND r.finished_at < %(before)s
   AND r.status NOT IN ('active', 'paused')

-- name: retention_preview_outputs
SELECT count(*) AS runs, coalesce(sum((SELECT count(*) FROM attempts a
                                       WHERE a.run_id = r.id AND (a.prompt IS NOT NULL OR a.output IS NOT NULL))),
                                  0)::bigint AS rows
  FROM runs r
 WHERE r.finished_at IS NOT NULL AND NOT r.outputs_pruned AND r.finished_at < %(before)s
   AND r.status NOT IN ('active', 'paused')

-- name: retention_preview_runs
SELECT count(*) AS runs,
       coalesce(sum((SELECT count(*) FROM attempts a WHERE a.run_id = r.id)), 0)::bigint AS attempts,
       coalesce(sum((SELECT count(*) FROM events e WHERE e.run_id = r.id)), 0)::bigint AS events
  FROM runs r
 WHERE r.finished_at IS NOT NULL AND r.finished_at < %(before)s AND r.status NOT IN ('active', 'paused')
   AND EXISTS (SELECT 1 FROM runs n WHERE n.mission_id = r.mission_id AND n.number > r.number)

-- name: prune_deliveries
-- At most %(limit)s webhook deliveries that finished (delivered, or failed for good) before
-- %(before)s, oldest first, with their tries (ON DELETE CASCADE): copies of their events, kept as
-- long as events are. One being sent again (reopened, or held by its worker) is skipped.
-- (The ids as an array: a join with the batch let the planner scan the whole table instead.)
DELETE FROM webhook_deliveries
 WHERE id = ANY (ARRAY(
           SELECT id FROM webhook_deliveries
            WHERE finished_at IS NOT NULL AND finished_at < %(before)s
            ORDER BY finished_at
            LIMIT %(limit)s
              FOR UPDATE SKIP LOCKED))

-- name: retention_preview_deliveries
SELECT count(*) AS rows FROM webhook_deliveries WHERE finished_at IS NOT NULL AND finished_at < %(before)s
