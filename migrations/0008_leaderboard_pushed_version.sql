ALTER TABLE "leaderboards" ADD COLUMN "pushed_version" integer DEFAULT 0 NOT NULL;--> statement-breakpoint
-- Boards stored before: taken as acknowledged (each PUT answered an error if its push failed).
UPDATE "leaderboards" SET "pushed_version" = "version";
