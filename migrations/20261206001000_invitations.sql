-- Invitations (issue 19): an administrator invites {email, name, role}; the
-- emailed link lets the invitee choose a password. A row exists only while
-- the invitation is open (pending or expired): accepting or revoking it
-- deletes it, so the history lives in the audit trail (invitation_sent,
-- _resent, _revoked, _accepted) and no used token hash lingers. One open
-- invitation per address (UNIQUE email); the token is stored hashed only.
CREATE TABLE invitations (
    id           TEXT PRIMARY KEY NOT NULL,
    email        TEXT NOT NULL UNIQUE,
    name         TEXT NOT NULL,
    role         TEXT NOT NULL,
    token_hash   TEXT NOT NULL UNIQUE,
    invited_by   TEXT NOT NULL,
    created_at   INTEGER NOT NULL,
    expires_at   INTEGER NOT NULL,
    resend_count INTEGER NOT NULL DEFAULT 0,
    last_sent_at INTEGER NOT NULL
) WITHOUT ROWID;
