-- Keyed audit records (issue 15): which way each record's hash was made.
--
-- 1 = plain SHA-256 of the canonical content (every record stored before
-- this migration), 2 = HMAC-SHA256 under AUDIT_KEY, a secret kept outside
-- the database, so that someone who can write this file can no longer
-- rewrite records and recompute their hashes. Existing rows take the
-- default and keep verifying as they are; the application writes 2.
-- Adding a column fires no trigger, and the append-only triggers stay.
ALTER TABLE audit_events ADD COLUMN version INTEGER NOT NULL DEFAULT 1;
