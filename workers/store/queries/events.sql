-- The event log. A run's events are appended under its row lock, so within one run the id order is
-- the commit order: reading id > last_id never skips an event that commits later.

-- name: fetch_events
SELECT id, type, data, created_at
  FROM events
 WHERE run_id = %(run_id)s AND id > %(after_id)s
 ORDER BY id
 LIMIT %(limit)s

-- name: list_events
-- A page of a run's event log for the JSON list: fetch_events with each event's time.
SELECT id, type, data, created_at
  FROM events
 WHERE run_id = %(run_id)s AND id > %(after_id)s
 ORDER BY id
 LIMIT %(limit)s

-- name: done_event_at_or_before
-- The type is written out, not a parameter: that is what lets a cached (generic) plan use the
-- partial index events_run_done. Nothing may follow it (a run continued after it failed has
-- events after its first mission:done).
SELECT 1
  FROM events
 WHERE run_id = %(run_id)s AND type = 'mission:done' AND id <= %(event_id)s
   AND NOT EXISTS (SELECT 1 FROM events later WHERE later.run_id = %(run_id)s AND later.id > %(event_id)s)
 LIMIT 1

-- name: latest_event_ids
SELECT r.run_id, (SELECT max(e.id) FROM events e WHERE e.run_id = r.run_id) AS last_id
  FROM unnest(%(run_ids)s::text[]) AS r(run_id)
