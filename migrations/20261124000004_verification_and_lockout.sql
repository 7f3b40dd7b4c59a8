-- Email-verification links: same shape as reset_tokens, its own table so a
-- link made for one purpose can never serve the other.
CREATE TABLE verification_tokens (
    id         INTEGER PRIMARY KEY,
    user_id    TEXT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    token_hash TEXT NOT NULL UNIQUE,
    expires_at INTEGER NOT NULL,
    created_at INTEGER NOT NULL
);
CREATE INDEX verification_tokens_user_id ON verification_tokens (user_id);
CREATE INDEX verification_tokens_expires_at ON verification_tokens (expires_at);

-- Failed sign-ins per submitted email (hashed), for account lockout. Not
-- tied to users: unknown addresses are throttled exactly like known ones.
CREATE TABLE login_throttles (
    key_hash          TEXT PRIMARY KEY NOT NULL,
    failures          INTEGER NOT NULL,
    window_started_at INTEGER NOT NULL,
    locked_until      INTEGER,
    lock_count        INTEGER NOT NULL DEFAULT 0
) WITHOUT ROWID;
