ALTER TABLE "player_bans" ADD COLUMN "device_id" text;--> statement-breakpoint
ALTER TABLE "player_bans" ADD CONSTRAINT "player_bans_device_id_unique" UNIQUE("device_id");