CREATE TABLE "maintenance_cursors" (
	"job" text PRIMARY KEY NOT NULL,
	"at" timestamp with time zone NOT NULL,
	"id" text NOT NULL
);
