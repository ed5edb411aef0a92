-- Scheduled missions: the indexed next_run_at of missions, and schedule_fires, one row per fire under
-- a unique (mission, fire time), so that two beats or a repeated tick never start two runs for one fire.

-- name: due_missions
SELECT id FROM missions WHERE next_run_at <= %(now)s ORDER BY next_run_at LIMIT %(limit)s

-- name: lock_due_mission
-- A due mission, locked; skipped while another tick holds it, gone once it was advanced.
SELECT id, project_id, status, next_run_at, document FROM missions
 WHERE id = %(id)s AND next_run_at <= %(now)s
   FOR UPDATE SKIP LOCKED

-- name: record_fire
INSERT INTO schedule_fires (mission_id, fire_at, status, reason, recorded_at)
VALUES (%(mission_id)s, %(fire_at)s, %(status)s, %(reason)s, %(now)s)
ON CONFLICT (mission_id, fire_at) DO NOTHING
RETURNING 1

-- name: skip_fire
UPDATE schedule_fires SET status = 'skipped', reason = %(reason)s WHERE mission_id = %(mission_id)s AND fire_at = %(fire_at)s

-- name: set_fire_run
UPDATE schedule_fires SET run_id = %(run_id)s WHERE mission_id = %(mission_id)s AND fire_at = %(fire_at)s

-- name: clear_next_run
UPDATE missions SET next_run_at = NULL WHERE id = %(id)s

-- name: advance_schedule
-- The next fire of a mission, and its status when the schedule ran out (NULL: unchanged).
UPDATE missions SET next_run_at = %(next_run_at)s, status = coalesce(%(status)s, status), updated_at = %(now)s
 WHERE id = %(id)s

-- name: list_fires
SELECT fire_at, status, reason, run_id, recorded_at FROM schedule_fires
 WHERE mission_id = %(mission_id)s ORDER BY fire_at DESC LIMIT %(limit)s OFFSET %(offset)s

-- name: list_fires_after
-- The page of a mission's fires before %(fire_at)s (a cursor), newest first (the primary key's order).
SELECT fire_at, status, reason, run_id, recorded_at FROM schedule_fires
 WHERE mission_id = %(mission_id)s AND fire_at < %(fire_at)s ORDER BY fire_at DESC LIMIT %(limit)s
