-- Browser sessions for the portal (tower-sessions records). Keyed by the
-- SHA-256 of the session id: the cookie value itself is never stored.
CREATE TABLE web_sessions (
    id_hash      TEXT PRIMARY KEY NOT NULL,
    user_id      TEXT REFERENCES users (id) ON DELETE CASCADE,
    data         TEXT NOT NULL,
    user_agent   TEXT,
    ip_address   TEXT,
    -- The API refresh family issued at the same sign-in: ends with it.
    refresh_family TEXT,
    created_at   INTEGER NOT NULL,
    last_used_at INTEGER NOT NULL,
    expires_at   INTEGER NOT NULL
);
CREATE INDEX web_sessions_user_id ON web_sessions (user_id);
CREATE INDEX web_sessions_expires_at ON web_sessions (expires_at);
