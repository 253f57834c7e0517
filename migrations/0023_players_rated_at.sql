ALTER TABLE "players" ADD COLUMN IF NOT EXISTS "rated_at" timestamp with time zone;--> statement-breakpoint
-- Players rated before this column: their last change is the best time known (an admin's later
-- rename makes it later, so their deviation grows less, never more, than it should).
UPDATE "players" SET "rated_at" = "updated_at" WHERE "rated_at" IS NULL AND "rating_deviation" < 350;
