CREATE TABLE "leaderboard_archive" (
	"leaderboard_id" text NOT NULL,
	"cycle" integer NOT NULL,
	"player_id" text NOT NULL,
	"rank" integer NOT NULL,
	"score" double precision NOT NULL,
	"subscore" double precision NOT NULL,
	"name" text,
	"metadata" jsonb,
	"submitted_at" timestamp with time zone NOT NULL,
	CONSTRAINT "leaderboard_archive_leaderboard_id_cycle_player_id_pk" PRIMARY KEY("leaderboard_id","cycle","player_id")
);
--> statement-breakpoint
CREATE TABLE "leaderboard_cycles" (
	"leaderboard_id" text NOT NULL,
	"cycle" integer NOT NULL,
	"starts_at" timestamp with time zone NOT NULL,
	"ends_at" timestamp with time zone NOT NULL,
	"entries" integer NOT NULL,
	"archived_rows" integer DEFAULT 0 NOT NULL,
	"completed_at" timestamp with time zone,
	CONSTRAINT "leaderboard_cycles_leaderboard_id_cycle_pk" PRIMARY KEY("leaderboard_id","cycle")
);
--> statement-breakpoint
CREATE TABLE "leaderboards" (
	"id" text PRIMARY KEY NOT NULL,
	"config" jsonb NOT NULL,
	"version" integer DEFAULT 1 NOT NULL,
	"created_at" timestamp with time zone DEFAULT now() NOT NULL,
	"updated_at" timestamp with time zone DEFAULT now() NOT NULL
);
--> statement-breakpoint
CREATE TABLE "rewards" (
	"leaderboard_id" text NOT NULL,
	"cycle" integer NOT NULL,
	"player_id" text NOT NULL,
	"rank" integer NOT NULL,
	"reward" jsonb NOT NULL,
	"created_at" timestamp with time zone DEFAULT now() NOT NULL,
	CONSTRAINT "rewards_leaderboard_id_cycle_player_id_pk" PRIMARY KEY("leaderboard_id","cycle","player_id")
);
--> statement-breakpoint
CREATE UNIQUE INDEX "leaderboard_archive_rank_idx" ON "leaderboard_archive" USING btree ("leaderboard_id","cycle","rank");--> statement-breakpoint
CREATE INDEX "leaderboard_archive_player_idx" ON "leaderboard_archive" USING btree ("player_id","leaderboard_id","cycle");--> statement-breakpoint
CREATE INDEX "rewards_player_idx" ON "rewards" USING btree ("player_id","created_at");