//! The audit trail: [`AuditStore`], one hash chain appended and read back.

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use super::{StoreError, StoreResult};
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

/// The parts of a stored audit record that must make sense for it to be
/// read at all: a seq that is not negative, an event and an outcome this
/// version knows, and a hash version (`None`, a record from the first
/// release, is v1). Checked here so that every backend tells damage to the
/// trail apart the same way: as an error, never as a record verification
/// would misjudge.
pub(crate) fn checked_audit_parts(
    seq: i64,
    event: &str,
    outcome: &str,
    version: Option<i64>,
) -> StoreResult<(u64, AuditEvent, AuditOutcome, HashVersion)> {
    let damaged = |what: &str| StoreError::Other(anyhow::anyhow!("audit_events: {what}"));
    let seq = u64::try_from(seq).map_err(|_| damaged("negative seq"))?;
    let event = AuditEvent::parse(event).ok_or_else(|| damaged("unknown event"))?;
    let outcome = AuditOutcome::parse(outcome).ok_or_else(|| damaged("unknown outcome"))?;
    let version = match version {
        None => HashVersion::V1,
        Some(n) => HashVersion::from_number(n).ok_or_else(|| damaged("unknown record version"))?,
    };
    Ok((seq, event, outcome, version))
}
