-- RATE_LIMIT_BACKEND=store: per-IP request counters shared by every
-- instance on this file. One row per limit and client, holding its current
-- fixed window; rows whose window ended are purged with the expired tokens.
CREATE TABLE rate_limits (
    limiter TEXT NOT NULL,
    client TEXT NOT NULL,
    window_start INTEGER NOT NULL,
    hits INTEGER NOT NULL,
    expires_at INTEGER NOT NULL,
    PRIMARY KEY (limiter, client)
) WITHOUT ROWID;

CREATE INDEX rate_limits_expires_at ON rate_limits (expires_at);
