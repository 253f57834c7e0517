-- The index first: its build holds leaderboard_cycles' lock (writes wait), and the columns' lock on
-- erased_players, which every sign-in, join and result reads, is then held only for the moment
-- before this migration's commit.
CREATE INDEX IF NOT EXISTS "leaderboard_cycles_completed_at_idx" ON "leaderboard_cycles" USING btree ("completed_at");--> statement-breakpoint
ALTER TABLE "erased_players" ADD COLUMN "archive_board" text;--> statement-breakpoint
ALTER TABLE "erased_players" ADD COLUMN "archive_cycle" integer;--> statement-breakpoint
ALTER TABLE "erased_players" ADD COLUMN "archive_cleared" boolean DEFAULT false NOT NULL;
