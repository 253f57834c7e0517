CREATE TABLE "game_sessions" (
	"id" text PRIMARY KEY NOT NULL,
	"queue" text,
	"region" text,
	"rules" text NOT NULL,
	"roster" jsonb NOT NULL,
	"status" text NOT NULL,
	"created_at" timestamp with time zone DEFAULT now() NOT NULL,
	"ended_at" timestamp with time zone
);
--> statement-breakpoint
CREATE TABLE "match_results" (
	"session_id" text PRIMARY KEY NOT NULL,
	"queue" text,
	"rules" text NOT NULL,
	"result" jsonb NOT NULL,
	"rating_changes" jsonb NOT NULL,
	"created_at" timestamp with time zone DEFAULT now() NOT NULL
);
--> statement-breakpoint
CREATE TABLE "queues" (
	"id" text PRIMARY KEY NOT NULL,
	"config" jsonb NOT NULL,
	"version" integer DEFAULT 1 NOT NULL,
	"created_at" timestamp with time zone DEFAULT now() NOT NULL,
	"updated_at" timestamp with time zone DEFAULT now() NOT NULL
);
--> statement-breakpoint
CREATE TABLE "session_logs" (
	"session_id" text NOT NULL,
	"seq" integer NOT NULL,
	"record" jsonb NOT NULL,
	CONSTRAINT "session_logs_session_id_seq_pk" PRIMARY KEY("session_id","seq")
);
--> statement-breakpoint
CREATE INDEX "game_sessions_status_idx" ON "game_sessions" USING btree ("status","created_at");