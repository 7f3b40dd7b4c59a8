//! The audit trail: [`AuditStore`], one hash chain appended and read back.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::{StoreError, StoreResult, StoredInstant};
use crate::domain::{AuditEvent, AuditKey, AuditOutcome, AuditRecord, HashVersion, NewAuditEvent};

/// Largest page [`AuditStore::query_audit_events`] is asked for.
pub const AUDIT_PAGE_MAX: u32 = 200;

/// Which audit records to read, newest first.
#[derive(Debug, Clone, Default)]
pub struct AuditQuery {
    pub user_id: Option<String>,
    pub event: Option<AuditEvent>,
    /// Inclusive lower bound on `time`.
    pub since: Option<DateTime<Utc>>,
    /// Exclusive upper bound on `time`.
    pub until: Option<DateTime<Utc>>,
    /// The cursor: only records with a smaller `seq` (the last `seq` of the
    /// previous page). A cursor on `seq` rather than an offset keeps pages
    /// stable while new records arrive at the head.
    pub before_seq: Option<u64>,
    /// 1..=[`AUDIT_PAGE_MAX`]; the caller validates it.
    pub limit: u32,
}

/// Where an appended event landed in the chain. The log copy of each event
/// carries it, so a log system off the host holds a second copy of the
/// chain's links.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChainLink {
    pub seq: u64,
    pub hash: String,
}

/// The append-only, hash-chained audit trail (`audit_events`).
#[async_trait]
pub trait AuditStore: Send + Sync {
    /// Appends `events` in order: each gets the next `seq` (1 for the first
    /// record ever) and `prev_hash` = the hash of the record before it, and
    /// is stored as a v2 record keyed with `key` ([`AuditRecord::chain`]).
    /// The key is passed in rather than held by the store so that the one
    /// secret of the chain stays with the recorder and never sits in the
    /// storage layer's state. Concurrent appenders, in this process or in
    /// other instances on the same database, still form one linear chain.
    ///
    /// Returns each event's [`ChainLink`], in the order given.
    ///
    /// Idempotent per event id: after an error, calling again with the same
    /// events appends only those not yet stored (a backend without
    /// transactions may have stored a prefix), and returns the links of all
    /// of them, those stored by the earlier attempt included.
    async fn append_audit_events(
        &self,
        events: &[NewAuditEvent],
        key: &AuditKey,
    ) -> StoreResult<Vec<ChainLink>>;

    /// Records matching `query`, highest `seq` first, at most `query.limit`.
    async fn query_audit_events(&self, query: &AuditQuery) -> StoreResult<Vec<AuditRecord>>;

    /// Up to `limit` records with `seq > after`, lowest first: the whole
    /// chain, page by page, for verification. Returns what is stored, even
    /// when it is damaged (duplicate or missing seqs).
    async fn audit_events_after(&self, after: u64, limit: u32) -> StoreResult<Vec<AuditRecord>>;
}

/// An audit record as both backends store it: an `audit_events` row
/// (SQLite, `T = i64`) or document (MongoDB, `T = bson::DateTime`), keyed
/// by the recorder's event id, which is what makes a retried append
/// idempotent without transactions.
#[derive(Debug, sqlx::FromRow, Serialize, Deserialize)]
pub(crate) struct StoredAuditRecord<T> {
    #[serde(rename = "_id")]
    pub(crate) event_id: String,
    pub(crate) seq: i64,
    pub(crate) time: T,
    pub(crate) event: String,
    pub(crate) outcome: String,
    pub(crate) user_id: Option<String>,
    pub(crate) email: Option<String>,
    pub(crate) ip: Option<String>,
    pub(crate) user_agent: Option<String>,
    pub(crate) request_id: Option<String>,
    #[serde(default)]
    pub(crate) detail: Option<String>,
    /// The record's [`HashVersion`] number; records from the first release
    /// have none in MongoDB (and 1 in SQLite), which means v1.
    #[serde(default)]
    pub(crate) version: Option<i64>,
    pub(crate) prev_hash: String,
    pub(crate) hash: String,
}

impl<T: StoredInstant> StoredAuditRecord<T> {
    /// `record`, chained from the event `event_id`, as it is stored.
    pub(crate) fn new(event_id: &str, record: &AuditRecord) -> Self {
        Self {
            event_id: event_id.to_owned(),
            seq: i64::try_from(record.seq).unwrap_or(i64::MAX),
            time: T::from_utc(record.time),
            event: record.event.as_str().to_owned(),
            outcome: record.outcome.as_str().to_owned(),
            user_id: record.user_id.clone(),
            email: record.email.clone(),
            ip: record.ip.clone(),
            user_agent: record.user_agent.clone(),
            request_id: record.request_id.clone(),
            detail: record.detail.clone(),
            version: Some(record.version.number()),
            prev_hash: record.prev_hash.clone(),
            hash: record.hash.clone(),
        }
    }
}

/// Checks what must make sense for a stored record to be read at all (a
/// seq that is not negative, an event and an outcome this version knows,
/// and a hash version), the same way on every backend, so that damage to
/// the trail is an error, never a record verification would misjudge.
impl<T: StoredInstant> TryFrom<StoredAuditRecord<T>> for AuditRecord {
    type Error = StoreError;

    fn try_from(stored: StoredAuditRecord<T>) -> StoreResult<Self> {
        let damaged = |what: &str| StoreError::Other(anyhow::anyhow!("audit_events: {what}"));
        let seq = u64::try_from(stored.seq).map_err(|_| damaged("negative seq"))?;
        let event = AuditEvent::parse(&stored.event).ok_or_else(|| damaged("unknown event"))?;
        let outcome =
            AuditOutcome::parse(&stored.outcome).ok_or_else(|| damaged("unknown outcome"))?;
        let version = match stored.version {
            None => HashVersion::V1,
            Some(n) => {
                HashVersion::from_number(n).ok_or_else(|| damaged("unknown record version"))?
            }
        };
        Ok(AuditRecord {
            seq,
            time: stored.time.to_utc()?,
            event,
            outcome,
            user_id: stored.user_id,
            email: stored.email,
            ip: stored.ip,
            user_agent: stored.user_agent,
            request_id: stored.request_id,
            detail: stored.detail,
            version,
            prev_hash: stored.prev_hash,
            hash: stored.hash,
        })
    }
}
