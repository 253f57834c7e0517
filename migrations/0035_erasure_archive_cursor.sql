ALTER TABLE "erased_players" ADD COLUMN "archive_board" text;--> statement-breakpoint
ALTER TABLE "erased_players" ADD COLUMN "archive_cycle" integer;--> statement-breakpoint
ALTER TABLE "erased_players" ADD COLUMN "archive_cleared" boolean DEFAULT false NOT NULL;
-- The index on leaderboard_cycles is 0036's, in a transaction of its own: built here, it held the
-- columns' lock on erased_players (read by every sign-in, join and result) through the build, and
-- built first, its lock on leaderboard_cycles met an archive page's (which reads erased_players
-- first) in a deadlock. A deployment that applied 0035 as first written has it; 0036 finds it.
