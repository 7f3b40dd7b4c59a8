-- The audit trail (HIPAA 164.312(b)): append-only and hash-chained.
--
-- seq is assigned by the application (1, 2, 3... with no gaps) inside the
-- writer's transaction that reads the current head, so a removed record
-- leaves a visible gap. hash = SHA-256 of the record's canonical content,
-- which includes prev_hash (the hash of record seq - 1); see
-- src/domain/audit.rs. time is Unix milliseconds, UTC.
CREATE TABLE audit_events (
    seq        INTEGER PRIMARY KEY,
    -- Chosen by the recorder; makes a retried batch idempotent.
    event_id   TEXT    NOT NULL UNIQUE,
    time       INTEGER NOT NULL,
    event      TEXT    NOT NULL,
    outcome    TEXT    NOT NULL,
    user_id    TEXT,
    email      TEXT,
    ip         TEXT,
    user_agent TEXT,
    request_id TEXT,
    detail     TEXT,
    prev_hash  TEXT    NOT NULL,
    hash       TEXT    NOT NULL
);

-- The admin queries filter on user or event and page by seq, newest first.
CREATE INDEX audit_events_user_seq ON audit_events (user_id, seq);
CREATE INDEX audit_events_event_seq ON audit_events (event, seq);
CREATE INDEX audit_events_time ON audit_events (time);

-- Append-only at the database level: the application never updates or
-- deletes a record, and these make any statement that tries fail. Someone
-- with write access to the file can still drop a trigger and then edit
-- rows; `clinic-auth audit verify` detects that through the hash chain.
CREATE TRIGGER audit_events_no_update BEFORE UPDATE ON audit_events
BEGIN
    SELECT RAISE(ABORT, 'audit_events is append-only');
END;

CREATE TRIGGER audit_events_no_delete BEFORE DELETE ON audit_events
BEGIN
    SELECT RAISE(ABORT, 'audit_events is append-only');
END;
