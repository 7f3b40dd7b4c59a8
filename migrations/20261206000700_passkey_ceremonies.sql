-- Passkeys (issue 18): the server half of a WebAuthn ceremony between its
-- options and its answer (the challenge to be signed), keyed by the hash of
-- a random handle the client holds. Taken (deleted) by the answer: each
-- challenge is answered at most once; the hourly purge removes the
-- unanswered ones once expired.
CREATE TABLE passkey_ceremonies (
    handle     TEXT PRIMARY KEY NOT NULL,
    kind       TEXT NOT NULL CHECK (kind IN ('register', 'sign_in')),
    user_id    TEXT REFERENCES users (id) ON DELETE CASCADE,
    state      TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    expires_at INTEGER NOT NULL
) WITHOUT ROWID;
CREATE INDEX passkey_ceremonies_expires_at ON passkey_ceremonies (expires_at);
