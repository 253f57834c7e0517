CREATE TABLE "queue_claims" (
	"queue" text NOT NULL,
	"player_id" text NOT NULL,
	"version" bigint NOT NULL,
	"regions" jsonb NOT NULL,
	"claimed_at" timestamp with time zone DEFAULT now() NOT NULL,
	CONSTRAINT "queue_claims_queue_player_id_pk" PRIMARY KEY("queue","player_id")
);
