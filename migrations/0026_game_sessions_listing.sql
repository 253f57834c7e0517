CREATE INDEX IF NOT EXISTS "game_sessions_created_idx" ON "game_sessions" USING btree ("created_at","id");--> statement-breakpoint
CREATE INDEX IF NOT EXISTS "game_sessions_queue_idx" ON "game_sessions" USING btree ("queue","created_at");--> statement-breakpoint
CREATE INDEX IF NOT EXISTS "game_sessions_roster_idx" ON "game_sessions" USING gin ("roster" jsonb_path_ops);