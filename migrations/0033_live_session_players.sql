CREATE TABLE "live_session_players" (
	"player_id" text NOT NULL,
	"created_at" timestamp with time zone NOT NULL,
	"session_id" text NOT NULL,
	CONSTRAINT "live_session_players_player_id_created_at_session_id_pk" PRIMARY KEY("player_id","created_at","session_id")
);
--> statement-breakpoint
CREATE INDEX "live_session_players_session_idx" ON "live_session_players" USING btree ("session_id");--> statement-breakpoint
-- Kept by PostgreSQL as sessions are listed, end and (by hand) are deleted, whichever version of
-- the Worker writes them (one from before this migration, during a deployment, too).
CREATE OR REPLACE FUNCTION "live_session_players_of_session"() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  IF TG_OP = 'DELETE' THEN
    DELETE FROM live_session_players WHERE session_id = OLD.id;
  ELSIF NEW.status = 'live' THEN
    IF TG_OP = 'INSERT' OR OLD.status IS DISTINCT FROM 'live' THEN
      INSERT INTO live_session_players (player_id, created_at, session_id)
      SELECT p->>'playerId', NEW.created_at, NEW.id FROM jsonb_array_elements(NEW.roster) p
      ON CONFLICT DO NOTHING;
    END IF;
  ELSIF TG_OP = 'UPDATE' AND OLD.status = 'live' THEN
    DELETE FROM live_session_players WHERE session_id = NEW.id;
  END IF;
  RETURN NULL;
END $$;
--> statement-breakpoint
CREATE OR REPLACE TRIGGER "game_sessions_live_players"
  AFTER INSERT OR UPDATE OF status OR DELETE ON "game_sessions"
  FOR EACH ROW EXECUTE FUNCTION "live_session_players_of_session"();
--> statement-breakpoint
-- The sessions live now (few: a row per match being played), in the transaction that made the
-- trigger, so none is listed or ends between the two.
INSERT INTO "live_session_players" ("player_id", "created_at", "session_id")
SELECT p->>'playerId', s.created_at, s.id FROM "game_sessions" s, jsonb_array_elements(s.roster) p
WHERE s.status = 'live'
ON CONFLICT DO NOTHING;
