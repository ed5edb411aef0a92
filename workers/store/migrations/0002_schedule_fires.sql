-- Every fire of a mission's schedule, once: the unique (mission, fire time) is what keeps two
-- beat processes, or a tick repeated after a crash, from starting two runs for one fire.
CREATE TABLE schedule_fires (
    mission_id  text NOT NULL REFERENCES missions (id) ON DELETE CASCADE,
    fire_at     timestamptz NOT NULL,
    status      text NOT NULL,          -- 'started' or 'skipped'
    reason      text,                   -- why skipped: 'missed', 'caught_up', 'overlap'
    run_id      text REFERENCES runs (id) ON DELETE SET NULL,
    recorded_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (mission_id, fire_at)
);
