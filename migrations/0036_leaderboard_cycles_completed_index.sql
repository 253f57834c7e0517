-- In a transaction of its own (see 0035): writes of leaderboard_cycles (archive pages) wait while
-- it builds, nothing else does. With many boards of short cycles, build it by hand first without
-- blocking them (docs/operating.md); this then finds it there.
CREATE INDEX IF NOT EXISTS "leaderboard_cycles_completed_at_idx" ON "leaderboard_cycles" USING btree ("completed_at");
