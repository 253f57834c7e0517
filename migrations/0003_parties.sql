CREATE TABLE "parties" (
	"id" text PRIMARY KEY NOT NULL,
	"leader" text NOT NULL,
	"ticket_id" text,
	"created_at" timestamp with time zone DEFAULT now() NOT NULL,
	"updated_at" timestamp with time zone DEFAULT now() NOT NULL
);
--> statement-breakpoint
CREATE TABLE "party_invites" (
	"party_id" text NOT NULL,
	"player_id" text NOT NULL,
	"invited_at" timestamp with time zone DEFAULT now() NOT NULL,
	"expires_at" timestamp with time zone NOT NULL,
	CONSTRAINT "party_invites_party_id_player_id_pk" PRIMARY KEY("party_id","player_id")
);
--> statement-breakpoint
CREATE TABLE "party_members" (
	"player_id" text PRIMARY KEY NOT NULL,
	"party_id" text NOT NULL,
	"joined_at" timestamp with time zone DEFAULT now() NOT NULL
);
--> statement-breakpoint
ALTER TABLE "party_invites" ADD CONSTRAINT "party_invites_party_id_parties_id_fk" FOREIGN KEY ("party_id") REFERENCES "public"."parties"("id") ON DELETE cascade ON UPDATE no action;--> statement-breakpoint
ALTER TABLE "party_members" ADD CONSTRAINT "party_members_party_id_parties_id_fk" FOREIGN KEY ("party_id") REFERENCES "public"."parties"("id") ON DELETE cascade ON UPDATE no action;--> statement-breakpoint
CREATE INDEX "party_invites_player_idx" ON "party_invites" USING btree ("player_id","expires_at");--> statement-breakpoint
CREATE INDEX "party_invites_expires_idx" ON "party_invites" USING btree ("expires_at");--> statement-breakpoint
CREATE INDEX "party_members_party_idx" ON "party_members" USING btree ("party_id","joined_at");