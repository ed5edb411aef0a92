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
-- A page of the project's missions, oldest first (missions_project_created gives the order), with a
-- name matching an ILIKE pattern (NULL: any), each with its latest run (NULL before the first) and,
-- with %(with_cost)s, what that run's attempts spent (agents and judges, as in usage.sql). The three
-- statements below are this one for one status and/or after a keyset cursor: statements of their
-- own, as a cached plan of "x IS NULL OR ..." could use neither index well.
SELECT m.id, m.name, m.status, m.execution_count, m.document->'qualityThreshold' AS quality_threshold,
       m.created_at, (SELECT count(*) FROM tasks t WHERE t.mission_id = m.id) AS task_count,
       m.next_run_at, r.id AS run_id, r.number AS run_number, r.status AS run_status,
       r.started_at AS run_started_at, r.finished_at AS run_finished_at,
       CASE WHEN %(with_cost)s AND r.id IS NOT NULL THEN
           (SELECT coalesce(sum(a.cost_usd + a.judge_cost_usd), 0)::double precision
              FROM attempts a WHERE a.run_id = r.id)
       END AS run_cost_usd
  FROM missions m
  LEFT JOIN runs r ON r.id = m.latest_run_id
 WHERE m.project_id = %(project_id)s
   AND (%(name_like)s::text IS NULL OR m.name ILIKE %(name_like)s)
 ORDER BY m.created_at, m.id
 LIMIT %(limit)s OFFSET %(offset)s

-- name: list_missions_with_status
-- list_missions for missions of one status (missions_project_status).
SELECT m.id, m.name, m.status, m.execution_count, m.document->'qualityThreshold' AS quality_threshold,
       m.created_at, (SELECT count(*) FROM tasks t WHERE t.mission_id = m.id) AS task_count,
       m.next_run_at, r.id AS run_id, r.number AS run_number, r.status AS run_status,
       r.started_at AS run_started_at, r.finished_at AS run_finished_at,
       CASE WHEN %(with_cost)s AND r.id IS NOT NULL THEN
           (SELECT coalesce(sum(a.cost_usd + a.judge_cost_usd), 0)::double precision
              FROM attempts a WHERE a.run_id = r.id)
       END AS run_cost_usd
  FROM missions m
  LEFT JOIN runs r ON r.id = m.latest_run_id
 WHERE m.project_id = %(project_id)s AND m.status = %(status)s
   AND (%(name_like)s::text IS NULL OR m.name ILIKE %(name_like)s)
 ORDER BY m.created_at, m.id
 LIMIT %(limit)s OFFSET %(offset)s

-- name: list_missions_after
-- The page of the project's missions after a cursor (created_at, id) of the previous page: read in
-- the order of missions_project_created, so a deep page costs what the first one does.
SELECT m.id, m.name, m.status, m.execution_count, m.document->'qualityThreshold' AS quality_threshold,
       m.created_at, (SELECT count(*) FROM tasks t WHERE t.mission_id = m.id) AS task_count,
       m.next_run_at, r.id AS run_id, r.number AS run_number, r.status AS run_status,
       r.started_at AS run_started_at, r.finished_at AS run_finished_at,
       CASE WHEN %(with_cost)s AND r.id IS NOT NULL THEN
           (SELECT coalesce(sum(a.cost_usd + a.judge_cost_usd), 0)::double precision
              FROM attempts a WHERE a.run_id = r.id)
       END AS run_cost_usd
  FROM missions m
  LEFT JOIN runs r ON r.id = m.latest_run_id
 WHERE m.project_id = %(project_id)s AND (m.created_at, m.id) > (%(created_at)s, %(id)s)
   AND (%(name_like)s::text IS NULL OR m.name ILIKE %(name_like)s)
 ORDER BY m.created_at, m.id
 LIMIT %(limit)s

-- name: list_missions_with_status_after
-- list_missions_after for missions of one status (missions_project_status).
SELECT m.id, m.name, m.status, m.execution_count, m.document->'qualityThreshold' AS quality_threshold,
       m.created_at, (SELECT count(*) FROM tasks t WHERE t.mission_id = m.id) AS task_count,
       m.next_run_at, r.id AS run_id, r.number AS run_number, r.status AS run_status,
       r.started_at AS run_started_at, r.finished_at AS run_finished_at,
       CASE WHEN %(with_cost)s AND r.id IS NOT NULL THEN
           (SELECT coalesce(sum(a.cost_usd + a.judge_cost_usd), 0)::double precision
              FROM attempts a WHERE a.run_id = r.id)
       END AS run_cost_usd
  FROM missions m
  LEFT JOIN runs r ON r.id = m.latest_run_id
 WHERE m.project_id = %(project_id)s AND m.status = %(status)s AND (m.created_at, m.id) > (%(created_at)s, %(id)s)
   AND (%(name_like)s::text IS NULL OR m.name ILIKE %(name_like)s)
 ORDER BY m.created_at, m.id
 LIMIT %(limit)s

-- name: list_resumable_missions
-- The project's paused missions, with why their latest run paused and, with %(detail)s, what it
-- waits for: its run-level state (gate and checkpoint statuses), its gates and checkpoints, the
-- states of its tasks awaiting approval or that a gate judges (in the run's task order), and since
-- when it has been paused (its first "paused" mission:status event after the last other one).
SELECT m.id, m.name, m.status, r.pause_reason, r.pause_message, r.id AS run_id, r.number AS run_number,
       CASE WHEN %(detail)s THEN
           (SELECT min(e.created_at) FROM events e
             WHERE e.run_id = r.id AND e.type = 'mission:status' AND e.data->>'status' = 'paused'
               AND e.id > coalesce((SELECT max(x.id) FROM events x
                                     WHERE x.run_id = r.id AND x.type = 'mission:status'
                                       AND x.data->>'status' <> 'paused'), 0))
       END AS paused_at,
       CASE WHEN %(detail)s THEN r.state END AS run_state,
       CASE WHEN %(detail)s THEN coalesce(r.spec->'qualityGates', '[]'::jsonb) END AS gates,
       CASE WHEN %(detail)s THEN coalesce(r.spec->'checkpoints', '[]'::jsonb) END AS checkpoints,
       CASE WHEN %(detail)s THEN
           (SELECT coalesce(jsonb_agg(rt.state ORDER BY s.n), '[]'::jsonb)
              FROM jsonb_array_elements(r.spec->'tasks') WITH ORDINALITY AS s(task, n)
              JOIN run_tasks rt ON rt.run_id = r.id AND rt.task_id = s.task->>'id'
             WHERE rt.state->>'status' = 'awaiting_approval'
                OR s.task->>'title' IN (
                    SELECT jsonb_array_elements_text(g->'afterTasks')
                      FROM jsonb_array_elements(coalesce(r.spec->'qualityGates', '[]'::jsonb)) AS g))
       END AS tasks
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
