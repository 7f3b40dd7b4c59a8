-- Emergency ("break-glass") access (issue 19, HIPAA 164.312(a)(2)(ii)).

-- Granted per user by an administrator (administrators have it anyway).
ALTER TABLE users ADD COLUMN emergency_access INTEGER NOT NULL DEFAULT 0
    CHECK (emergency_access IN (0, 1));

-- Every use, from its start to an administrator's review. Never deleted
-- with its user (users are anonymised, not deleted): the review record is
-- the point.
CREATE TABLE emergency_uses (
    id          TEXT PRIMARY KEY NOT NULL,
    user_id     TEXT NOT NULL REFERENCES users (id),
    reason      TEXT NOT NULL,
    started_at  INTEGER NOT NULL,
    -- Fixed at the start: a use is never extended.
    expires_at  INTEGER NOT NULL,
    ended_at    INTEGER,
    ended_how   TEXT CHECK (ended_how IN ('expired', 'ended_by_user')),
    reviewed_at INTEGER,
    reviewed_by TEXT,
    review_note TEXT
);
-- One open use per user: a second start is refused, not stacked.
CREATE UNIQUE INDEX emergency_uses_open ON emergency_uses (user_id) WHERE ended_at IS NULL;
-- The review queue, oldest first.
CREATE INDEX emergency_uses_review ON emergency_uses (reviewed_at, started_at);
-- The sweep that closes uses whose window passed.
CREATE INDEX emergency_uses_expiry ON emergency_uses (expires_at) WHERE ended_at IS NULL;
