CREATE INDEX "party_tickets_byte_order_idx" ON "party_tickets" USING btree ("party_id" collate "C","ticket_id" collate "C");--> statement-breakpoint
CREATE INDEX "party_tickets_noted_at_idx" ON "party_tickets" USING btree ("noted_at");--> statement-breakpoint
CREATE INDEX IF NOT EXISTS "queue_claims_player_idx" ON "queue_claims" USING btree ("player_id");