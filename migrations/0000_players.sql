CREATE TABLE "players" (
	"id" text PRIMARY KEY NOT NULL,
	"device_id" text,
	"name" text,
	"rating" double precision DEFAULT 1500 NOT NULL,
	"rating_deviation" double precision DEFAULT 350 NOT NULL,
	"rating_volatility" double precision DEFAULT 0.06 NOT NULL,
	"created_at" timestamp with time zone DEFAULT now() NOT NULL,
	"updated_at" timestamp with time zone DEFAULT now() NOT NULL,
	CONSTRAINT "players_device_id_unique" UNIQUE("device_id")
);
--> statement-breakpoint
CREATE INDEX "players_rating_idx" ON "players" USING btree ("rating");