-- Second factors (issue 18). Nothing here is usable on its own: the
-- authenticator secret is sealed under MFA_ENCRYPTION_KEY (which never
-- enters the database), recovery codes are keyed hashes, and passkeys are
-- public keys. Everything goes with its user (ON DELETE CASCADE).

-- At most one authenticator per user; pending until a code confirms it.
CREATE TABLE mfa_totp (
    user_id      TEXT PRIMARY KEY NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    secret       TEXT NOT NULL,
    confirmed    INTEGER NOT NULL DEFAULT 0 CHECK (confirmed IN (0, 1)),
    created_at   INTEGER NOT NULL,
    confirmed_at INTEGER,
    -- The last 30-second time step whose code was accepted (no replay).
    last_step    INTEGER
) WITHOUT ROWID;

-- One row per unused code; using a code deletes its row.
CREATE TABLE mfa_recovery_codes (
    user_id    TEXT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    code_hash  TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    PRIMARY KEY (user_id, code_hash)
) WITHOUT ROWID;

CREATE TABLE passkeys (
    id            TEXT PRIMARY KEY NOT NULL,
    user_id       TEXT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    credential_id TEXT NOT NULL UNIQUE,
    name          TEXT NOT NULL,
    credential    TEXT NOT NULL,
    counter       INTEGER NOT NULL DEFAULT 0,
    created_at    INTEGER NOT NULL,
    last_used_at  INTEGER
);
CREATE INDEX passkeys_user_id ON passkeys (user_id, created_at);
