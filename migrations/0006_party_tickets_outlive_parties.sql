ALTER TABLE "party_tickets" DROP CONSTRAINT "party_tickets_party_id_parties_id_fk";
