-- Guests' device ids are stored as their SHA-256 (lowercase hex of the UTF-8 bytes), as the guest
-- route now writes and looks them up: the device id is a guest's only credential, so the table
-- must not hold it in the clear. Rows written before this are converted once.
UPDATE "players" SET "device_id" = encode(sha256(convert_to("device_id", 'UTF8')), 'hex') WHERE "device_id" IS NOT NULL;
