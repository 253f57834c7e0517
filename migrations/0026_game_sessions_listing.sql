CREATE TABLE IF NOT EXISTS "session_players" (
	"player_id" text NOT NULL,
	"created_at" timestamp with time zone NOT NULL,
	"session_id" text NOT NULL,
	CONSTRAINT "session_players_player_id_created_at_session_id_pk" PRIMARY KEY("player_id","created_at","session_id")
);
--> statement-breakpoint
-- Filled by PostgreSQL as each session is listed, whichever version of the Worker lists it (a
-- version from before this migration, during a deployment, too). A roster never changes.
CREATE OR REPLACE FUNCTION "session_players_of_session"() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  INSERT INTO session_players (player_id, created_at, session_id)
  SELECT p->>'playerId', NEW.created_at, NEW.id FROM jsonb_array_elements(NEW.roster) p
  ON CONFLICT DO NOTHING;
  RETURN NULL;
END $$;
--> statement-breakpoint
CREATE OR REPLACE TRIGGER "game_sessions_players" AFTER INSERT ON "game_sessions"
  FOR EACH ROW EXECUTE FUNCTION "session_players_of_session"();
--> statement-breakpoint
-- Sessions listed before: skipped when the table was filled by hand first (docs/operating.md).
INSERT INTO "session_players" ("player_id", "created_at", "session_id")
SELECT p->>'playerId', s.created_at, s.id FROM "game_sessions" s, jsonb_array_elements(s.roster) p
WHERE NOT EXISTS (SELECT 1 FROM "session_players")
ON CONFLICT DO NOTHING;
--> statement-breakpoint
CREATE INDEX IF NOT EXISTS "game_sessions_created_idx" ON "game_sessions" USING btree ("created_at","id");--> statement-breakpoint
CREATE INDEX IF NOT EXISTS "game_sessions_queue_idx" ON "game_sessions" USING btree ("queue","created_at");
