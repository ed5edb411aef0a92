-- Mission documents and their tasks (workers/store/missions.py), and the project agents a mission's
-- team names. Every read of a mission is scoped to its project: another project's mission is not found.

-- name: select_mission
-- A mission with its latest run's status, pause and failure reasons, and that run's task states.
SELECT m.id, m.project_id, m.name, m.status, m.document, m.execution_count, m.latest_run_id,
       m.next_run_at, m.created_at, m.updated_at,
       r.status AS run_status, r.pause_reason, r.pause_message, r.failure_reason,
       (SELECT jsonb_agg(rt.state) FROM run_tasks rt WHERE rt.run_id = m.latest_run_id) AS run_tasks
  FROM missions m
  LEFT JOIN runs r ON r.id = m.latest_run_id
 WHERE m.project_id = %(project_id)s AND m.id = %(mission_id)s

-- name: lock_mission
-- select_mission, with the mission row locked: a change of the document reads it under its lock.
SELECT m.id, m.project_id, m.name, m.status, m.document, m.execution_count, m.latest_run_id,
       m.next_run_at, m.created_at, m.updated_at,
       r.status AS run_status, r.pause_reason, r.pause_message, r.failure_reason,
       (SELECT jsonb_agg(rt.state) FROM run_tasks rt WHERE rt.run_id = m.latest_run_id) AS run_tasks
  FROM missions m
  LEFT JOIN runs r ON r.id = m.latest_run_id
 WHERE m.project_id = %(project_id)s AND m.id = %(mission_id)s
   FOR UPDATE OF m

-- name: select_mission_tasks
SELECT id, title, position, document FROM tasks WHERE mission_id = %(mission_id)s ORDER BY position

-- name: select_mission_to_run
-- A mission about to run, locked: its row, its tasks in order and the names of its project's
-- agents, in one round trip (not its latest run's task states, which a new run does not need).
SELECT m.id, m.project_id, m.name, m.status, m.document, m.execution_count, m.latest_run_id, m.next_run_at,
       m.created_at, m.updated_at,
       (SELECT coalesce(jsonb_agg(jsonb_build_object('id', t.id, 'title', t.title, 'document', t.document)
                                  ORDER BY t.position), '[]'::jsonb)
          FROM tasks t WHERE t.mission_id = m.id) AS tasks,
       ARRAY(SELECT a.name FROM agents a WHERE a.project_id = m.project_id) AS project_agents
  FROM missions m
 WHERE m.project_id = %(project_id)s AND m.id = %(mission_id)s
   FOR UPDATE OF m

-- name: list_missions
-- A page of the project's missions, optionally of one status (NULL: any), oldest first.
SELECT m.id, m.name, m.status, m.execution_count, m.document->'qualityThreshold' AS quality_threshold,
       (SELECT count(*) FROM tasks t WHERE t.mission_id = m.id) AS task_count
  FROM missions m
 WHERE m.project_id = %(project_id)s AND (%(status)s::text IS NULL OR m.status = %(status)s)
 ORDER BY m.created_at, m.id
 LIMIT %(limit)s OFFSET %(offset)s

-- name: list_resumable_missions
-- The project's paused missions, with why their latest run paused.
SELECT m.id, m.name, m.status, r.pause_reason, r.pause_message
  FROM missions m JOIN runs r ON r.id = m.latest_run_id
 WHERE m.project_id = %(project_id)s AND m.status = 'paused'
 ORDER BY m.updated_at, m.id

-- name: insert_mission
-- No row when the project already has a mission of that name.
INSERT INTO missions (id, project_id, name, status, document, next_run_at)
VALUES (%(id)s, %(project_id)s, %(name)s, %(status)s, %(document)s, %(next_run_at)s)
ON CONFLICT (project_id, name) DO NOTHING
RETURNING id

-- name: insert_task
INSERT INTO tasks (id, mission_id, position, title, document)
VALUES (%(id)s, %(mission_id)s, %(position)s, %(title)s, %(document)s)

-- name: mission_name_taken
-- Another mission of the project already has the name.
SELECT 1 FROM missions WHERE project_id = %(project_id)s AND name = %(name)s AND id <> %(mission_id)s

-- name: update_mission
UPDATE missions SET name = %(name)s, document = %(document)s, status = %(status)s, next_run_at = %(next_run_at)s,
       updated_at = now()
 WHERE id = %(mission_id)s

-- name: update_mission_document
UPDATE missions SET document = %(document)s, updated_at = now() WHERE id = %(mission_id)s

-- name: touch_mission
-- A change of the mission's tasks: the mission itself changed.
UPDATE missions SET updated_at = now() WHERE id = %(mission_id)s

-- name: delete_mission
DELETE FROM missions WHERE id = %(mission_id)s

-- name: update_task
UPDATE tasks SET title = %(title)s, document = %(document)s WHERE id = %(id)s AND mission_id = %(mission_id)s

-- name: delete_task
DELETE FROM tasks WHERE id = %(task_id)s AND mission_id = %(mission_id)s

-- name: project_agent_names
SELECT name FROM agents WHERE project_id = %(project_id)s
