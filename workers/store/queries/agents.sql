-- The project's reusable agents (workers/store/agents.py): kept from non-volatile teams, or put
-- through /v1/agents. A mission may assign tasks to them by name.

-- name: list_agents
SELECT name, document, updated_at FROM agents WHERE project_id = %(project_id)s ORDER BY name

-- name: select_agent
SELECT name, document, updated_at FROM agents WHERE project_id = %(project_id)s AND name = %(name)s

-- name: insert_agent_if_new
-- An agent of a non-volatile team, kept in the project unless it has one of that name (the
-- caller compares the two then). Waits for a concurrent insert of the same name to commit.
INSERT INTO agents (project_id, name, document) VALUES (%(project_id)s, %(name)s, %(document)s)
ON CONFLICT (project_id, name) DO NOTHING
RETURNING name

-- name: put_agent
-- (xmax = 0: the row was inserted, not updated.)
INSERT INTO agents (project_id, name, document) VALUES (%(project_id)s, %(name)s, %(document)s)
ON CONFLICT (project_id, name) DO UPDATE SET document = EXCLUDED.document, updated_at = now()
RETURNING name, document, updated_at, (xmax = 0) AS created

-- name: delete_agent
DELETE FROM agents WHERE project_id = %(project_id)s AND name = %(name)s RETURNING name

-- name: missions_using_agent
-- The project's missions whose tasks name the agent (assignTo or retryPolicy.fallbackAgent) without
-- their own team defining it: they need the project's agent to run.
SELECT DISTINCT m.id, m.name
  FROM missions m JOIN tasks t ON t.mission_id = m.id
 WHERE m.project_id = %(project_id)s
   AND (t.document->>'assignTo' = %(name)s OR t.document->'retryPolicy'->>'fallbackAgent' = %(name)s)
   AND NOT coalesce(m.document->'team'->'agents' @> jsonb_build_array(jsonb_build_object('name', %(name)s)), false)
 ORDER BY m.name
