ALTER TABLE "leaderboards" ADD COLUMN "deleted_at" timestamp with time zone;--> statement-breakpoint
ALTER TABLE "leaderboards" ADD COLUMN "born_version" integer DEFAULT 1 NOT NULL;