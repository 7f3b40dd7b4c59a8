-- One row, rewritten every few seconds by the write probe behind /health
-- (issue 16): `SELECT 1` on a reader proves only that the file can be read,
-- and a node whose disk is full or whose database went read-only must tell
-- its load balancer that it cannot take writes.
CREATE TABLE health_probe (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    probed_at INTEGER NOT NULL
);
