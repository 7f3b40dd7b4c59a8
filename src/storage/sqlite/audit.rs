//! `audit_events` on SQLite: the [`AuditStore`], one hash chain appended
//! in transactions on the writer.

use async_trait::async_trait;

use super::connections::Lease;
use super::{millis, roll_back, SqliteStore};
use crate::domain::audit::GENESIS_HASH;
use crate::domain::{AuditEvent, AuditKey, AuditRecord, NewAuditEvent};
use crate::storage::audit::StoredAuditRecord;
use crate::storage::{AuditQuery, AuditStore, ChainLink, StoreError, StoreResult};

/// Rows per INSERT statement: 14 parameters each stays far below SQLite's
/// limit of 32,766.
const AUDIT_ROWS_PER_INSERT: usize = 500;

/// An `audit_events` row.
type AuditRow = StoredAuditRecord<i64>;

/// The columns of a stored audit record, in the order the store reads and
/// writes them. Public so that a tool reading the table directly (the
/// test suite's insider in `tests/support/audit_db.rs`) names the same
/// columns instead of keeping a copy of the list.
pub const AUDIT_COLUMNS: &str = "event_id, seq, time, event, outcome, user_id, email, ip, \
     user_agent, request_id, detail, version, prev_hash, hash";

fn seq_param(seq: u64) -> i64 {
    i64::try_from(seq).unwrap_or(i64::MAX)
}

#[async_trait]
impl AuditStore for SqliteStore {
    async fn append_audit_events(
        &self,
        events: &[NewAuditEvent],
        key: &AuditKey,
    ) -> StoreResult<Vec<ChainLink>> {
        if events.is_empty() {
            return Ok(Vec::new());
        }
        let mut writer = self.write().await?;
        let appended = append_audit(&mut writer, events, key).await;
        if appended.is_err() {
            // Whatever state the failure left (SQLite may already have
            // rolled the transaction back itself, e.g. on a full disk), the
            // connection goes back outside a transaction, or is replaced.
            roll_back(&mut writer).await;
        }
        appended
    }

    async fn query_audit_events(&self, query: &AuditQuery) -> StoreResult<Vec<AuditRecord>> {
        let rows: Vec<AuditRow> = sqlx::query_as(&format!(
            "SELECT {AUDIT_COLUMNS} FROM audit_events \
             WHERE (?1 IS NULL OR user_id = ?1) AND (?2 IS NULL OR event = ?2) \
             AND (?3 IS NULL OR time >= ?3) AND (?4 IS NULL OR time < ?4) \
             AND (?5 IS NULL OR seq < ?5) ORDER BY seq DESC LIMIT ?6"
        ))
        .bind(&query.user_id)
        .bind(query.event.map(AuditEvent::as_str))
        .bind(query.since.map(millis))
        .bind(query.until.map(millis))
        .bind(query.before_seq.map(seq_param))
        .bind(i64::from(query.limit))
        .fetch_all(&mut self.read().await?)
        .await?;
        rows.into_iter().map(AuditRecord::try_from).collect()
    }

    async fn audit_events_after(&self, after: u64, limit: u32) -> StoreResult<Vec<AuditRecord>> {
        let rows: Vec<AuditRow> = sqlx::query_as(&format!(
            "SELECT {AUDIT_COLUMNS} FROM audit_events WHERE seq > ? ORDER BY seq LIMIT ?"
        ))
        .bind(seq_param(after))
        .bind(i64::from(limit))
        .fetch_all(&mut self.read().await?)
        .await?;
        rows.into_iter().map(AuditRecord::try_from).collect()
    }
}

/// Appends `events` in one transaction of explicit statements on the
/// writer. Not sqlx's `begin()`: sqlx counts open transactions itself, and
/// when SQLite had already ended one (a full disk rolls the transaction
/// back), sqlx's ROLLBACK failed, its count stayed at one, and every later
/// `begin` on the connection failed: the trail stopped for good after one
/// full disk (issue 16). Here the caller rolls back (or discards the
/// connection) on any error, and SQLite's own state is the only state.
async fn append_audit(
    conn: &mut Lease<'_>,
    events: &[NewAuditEvent],
    key: &AuditKey,
) -> StoreResult<Vec<ChainLink>> {
    // IMMEDIATE takes the write lock before the head is read, so another
    // process on the same file (the CLI beside the server) cannot append
    // between our read and our insert; it waits in the busy handler. The
    // BEGIN and the read are one command to the writer's thread.
    //
    // The head, and whether this very batch is already stored: it is
    // appended in one transaction, so after an error whose commit did
    // happen, its first event is there and so are all the others.
    let heads: Vec<(Option<i64>, Option<String>, bool)> = sqlx::query_as(
        "BEGIN IMMEDIATE; \
         SELECT (SELECT seq FROM audit_events ORDER BY seq DESC LIMIT 1), \
                (SELECT hash FROM audit_events ORDER BY seq DESC LIMIT 1), \
                EXISTS (SELECT 1 FROM audit_events WHERE event_id = ?)",
    )
    .bind(&events[0].id)
    .fetch_all(&mut *conn)
    .await?;
    let Some((head_seq, head_hash, stored)) = heads.into_iter().next() else {
        return Err(StoreError::Other(anyhow::anyhow!(
            "audit_events: the head query returned no row"
        )));
    };
    let negative = || StoreError::Other(anyhow::anyhow!("audit_events: negative seq"));
    if stored {
        // Its records are consecutive from the first event's seq on.
        let links: Vec<(i64, String)> = sqlx::query_as(
            "SELECT seq, hash FROM audit_events \
             WHERE seq >= (SELECT seq FROM audit_events WHERE event_id = ?) \
             ORDER BY seq LIMIT ?",
        )
        .bind(&events[0].id)
        .bind(i64::try_from(events.len()).unwrap_or(i64::MAX))
        .fetch_all(&mut *conn)
        .await?;
        sqlx::query("COMMIT").execute(&mut *conn).await?;
        return links
            .into_iter()
            .map(|(seq, hash)| {
                let seq = u64::try_from(seq).map_err(|_| negative())?;
                Ok(ChainLink { seq, hash })
            })
            .collect();
    }
    let (mut seq, mut prev) = match (head_seq, head_hash) {
        (Some(seq), Some(hash)) => (u64::try_from(seq).map_err(|_| negative())?, hash),
        _ => (0, GENESIS_HASH.to_owned()),
    };
    let records: Vec<(&str, AuditRecord)> = events
        .iter()
        .map(|event| {
            seq += 1;
            let record = AuditRecord::chain(seq, event, &prev, key);
            prev.clone_from(&record.hash);
            (event.id.as_str(), record)
        })
        .collect();
    // Multi-row INSERTs: under load a batch is hundreds of events, and
    // each statement is a round trip to the writer thread. Chunks keep
    // within SQLite's bound on parameters (13 per row); the varying
    // text is not worth a slot in the prepared-statement cache. The last
    // one carries the COMMIT, saving a round trip.
    let chunks = records.chunks(AUDIT_ROWS_PER_INSERT).count();
    for (i, chunk) in records.chunks(AUDIT_ROWS_PER_INSERT).enumerate() {
        let values = vec!["(?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"; chunk.len()].join(", ");
        let commit = if i + 1 == chunks { "; COMMIT" } else { "" };
        let sql = format!("INSERT INTO audit_events ({AUDIT_COLUMNS}) VALUES {values}{commit}");
        let mut insert = sqlx::query(&sql).persistent(false);
        for (id, record) in chunk {
            insert = insert
                .bind(*id)
                .bind(seq_param(record.seq))
                .bind(millis(record.time))
                .bind(record.event.as_str())
                .bind(record.outcome.as_str())
                .bind(&record.user_id)
                .bind(&record.email)
                .bind(&record.ip)
                .bind(&record.user_agent)
                .bind(&record.request_id)
                .bind(&record.detail)
                .bind(record.version.number())
                .bind(&record.prev_hash)
                .bind(&record.hash);
        }
        insert.execute(&mut *conn).await?;
    }
    Ok(records
        .into_iter()
        .map(|(_, record)| ChainLink {
            seq: record.seq,
            hash: record.hash,
        })
        .collect())
}
