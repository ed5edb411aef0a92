-- When the judge's verdict on an attempt was recorded: with claimed_at (the agent started) and
-- finished_at (the agent finished, the assessment began) it gives each phase of an attempt its
-- time, for the attempts and report endpoints. Attempts assessed before this migration keep NULL.
ALTER TABLE attempts ADD COLUMN assessed_at timestamptz;
