ALTER TABLE "players" ADD COLUMN IF NOT EXISTS "rated_at" timestamp with time zone;
