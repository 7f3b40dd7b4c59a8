-- Offboarding (issue 19): a disabled account keeps its row (audit records
-- point at it) but cannot sign in, refresh, reset its password or use a
-- link. NULL = active.
ALTER TABLE users ADD COLUMN disabled_at INTEGER;
