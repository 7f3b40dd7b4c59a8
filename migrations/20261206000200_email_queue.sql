-- The durable email outbox (issue 16). A message is written in the same
-- transaction as the change that causes it (a reset or verification link
-- with its token, a notice with its request) and sent by a background
-- sender, with retries, so a mail server that is down or hangs loses
-- nothing.
--
-- `payload` is sealed (XChaCha20-Poly1305 under a key derived from
-- JWT_REFRESH_SECRET): the address and the link never sit here in clear.
-- `link_hash` is the SHA-256 of the link's token (as in reset_tokens and
-- verification_tokens), so the sender can check that the link is still
-- current before sending it.
--
-- `due_at` is also the lease: claiming a message pushes it into the future
-- and tags it with `claimed_by`, so one UPDATE hands a message to exactly
-- one sender, and a sender that dies gives it back when the lease runs out.
CREATE TABLE email_queue (
    id TEXT PRIMARY KEY NOT NULL,
    kind TEXT NOT NULL,
    user_id TEXT,
    link_purpose TEXT,
    link_hash TEXT,
    payload BLOB NOT NULL,
    created_at INTEGER NOT NULL,
    due_at INTEGER NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    claimed_by TEXT
);
CREATE INDEX email_queue_due_at ON email_queue (due_at);
