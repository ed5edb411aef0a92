-- Real agents: what an attempt produced besides its output, and what judging it cost.
-- outcomes: files the agent wrote through its tools, [{"type": "file", "path": ..., "characters": n}].
-- judge_*: tokens and cost of the assessment's judge calls, kept apart from the agent's own
-- tokens_in/tokens_out/cost_usd; totals add both.
ALTER TABLE attempts
    ADD COLUMN outcomes         jsonb NOT NULL DEFAULT '[]',
    ADD COLUMN judge_model      text,
    ADD COLUMN judge_tokens_in  integer NOT NULL DEFAULT 0,
    ADD COLUMN judge_tokens_out integer NOT NULL DEFAULT 0,
    ADD COLUMN judge_cost_usd   double precision NOT NULL DEFAULT 0;
