CREATE TABLE "party_tickets" (
	"party_id" text NOT NULL,
	"ticket_id" text NOT NULL,
	"noted_at" timestamp with time zone DEFAULT now() NOT NULL,
	CONSTRAINT "party_tickets_party_id_ticket_id_pk" PRIMARY KEY("party_id","ticket_id")
);
--> statement-breakpoint
ALTER TABLE "party_tickets" ADD CONSTRAINT "party_tickets_party_id_parties_id_fk" FOREIGN KEY ("party_id") REFERENCES "public"."parties"("id") ON DELETE cascade ON UPDATE no action;--> statement-breakpoint
-- Tickets noted before this table existed: the latest one per party, so a membership change after
-- the upgrade still cancels it.
INSERT INTO "party_tickets" ("party_id", "ticket_id") SELECT "id", "ticket_id" FROM "parties" WHERE "ticket_id" IS NOT NULL;
