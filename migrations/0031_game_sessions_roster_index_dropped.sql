-- 0026 as first written (2026-12-05, replaced within the hour) built this GIN index on every
-- roster; nothing reads it, and each session insert paid for it.
DROP INDEX IF EXISTS "game_sessions_roster_idx";