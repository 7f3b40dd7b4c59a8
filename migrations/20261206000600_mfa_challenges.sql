-- The sign-in challenges of two-step sign-in (issue 18): after the right
-- password, the client holds a random token (stored here only as its hash)
-- until it sends the second factor. One per user: a new sign-in attempt
-- replaces the previous one, so a challenge is bound to its attempt.
CREATE TABLE mfa_challenges (
    id         INTEGER PRIMARY KEY,
    user_id    TEXT NOT NULL UNIQUE REFERENCES users (id) ON DELETE CASCADE,
    token_hash TEXT NOT NULL UNIQUE,
    expires_at INTEGER NOT NULL,
    created_at INTEGER NOT NULL
);
CREATE INDEX mfa_challenges_expires_at ON mfa_challenges (expires_at);
