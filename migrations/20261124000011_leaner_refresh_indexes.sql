-- Refresh-token rotation is the hottest write path: every index is one
-- more B-tree page written per token, and random keys (jti, hash, family)
-- land on a different page each time. Keep only what queries use:
--   token_hash (unique)     lookups and rotation
--   (user_id, family_id)    a user's sessions; one family of a user
-- jti needs no index (it is random and only ever read back with its row),
-- and the hourly purge of expired tokens can afford a scan.
CREATE TABLE refresh_tokens_lean (
    id          INTEGER PRIMARY KEY,
    user_id     TEXT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    jti         TEXT NOT NULL,
    token_hash  TEXT NOT NULL UNIQUE,
    family_id   TEXT NOT NULL,
    user_agent  TEXT,
    ip_address  TEXT,
    revoked     INTEGER NOT NULL DEFAULT 0 CHECK (revoked IN (0, 1)),
    replaced_by TEXT,
    revoked_at  INTEGER,
    expires_at  INTEGER NOT NULL,
    created_at  INTEGER NOT NULL
);
INSERT INTO refresh_tokens_lean
    SELECT id, user_id, jti, token_hash, family_id, user_agent, ip_address, revoked,
           replaced_by, revoked_at, expires_at, created_at
    FROM refresh_tokens;
DROP TABLE refresh_tokens;
ALTER TABLE refresh_tokens_lean RENAME TO refresh_tokens;
CREATE INDEX refresh_tokens_user_family ON refresh_tokens (user_id, family_id);
