ALTER TABLE "erased_players" ADD COLUMN "archive_board" text;--> statement-breakpoint
ALTER TABLE "erased_players" ADD COLUMN "archive_cycle" integer;--> statement-breakpoint
ALTER TABLE "erased_players" ADD COLUMN "archive_cleared" boolean DEFAULT false NOT NULL;--> statement-breakpoint
CREATE INDEX IF NOT EXISTS "leaderboard_cycles_completed_at_idx" ON "leaderboard_cycles" USING btree ("completed_at");