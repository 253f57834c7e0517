ALTER TABLE "queues" ADD COLUMN "known_regions" text[] DEFAULT '{}'::text[] NOT NULL;--> statement-breakpoint
-- Queues stored before: the regions they have now (earlier ones were told at their change).
UPDATE "queues" SET "known_regions" = ARRAY(SELECT jsonb_array_elements_text("config"->'regions'));
