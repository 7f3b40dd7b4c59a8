//! Verifying the stored chain: its links, its keyed hashes, and the signed
//! checkpoints kept outside the database.

use std::collections::BTreeMap;

use crate::domain::audit::{canonical_time, GENESIS_HASH};
use crate::domain::{AuditKey, AuditRecord, HashVersion};
use crate::services::checkpoints::Checkpoint;
use crate::storage::{AuditStore, StoreError};

/// Records read per round trip while verifying.
const VERIFY_PAGE: u32 = 1000;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChainFault {
    /// The record's content no longer matches its hash, or its link to the
    /// record before it is broken.
    Altered,
    /// A record of the sequence is not there.
    Missing,
    /// A record appears where another should (duplicate or backwards seq).
    OutOfOrder,
    /// The record's hash is one anyone can compute (plain SHA-256) where
    /// only AUDIT_KEY's holder could have made it: an unkeyed record after
    /// keyed ones, or a keyed one re-hashed without the key.
    Unkeyed,
    /// The record is not the one a signed checkpoint recorded at its seq:
    /// the chain up to it was rewritten.
    Rewritten,
    /// The chain ends before a signed checkpoint's seq: its newest records
    /// were removed.
    Truncated,
}

impl ChainFault {
    pub fn as_str(self) -> &'static str {
        match self {
            ChainFault::Altered => "altered",
            ChainFault::Missing => "missing",
            ChainFault::OutOfOrder => "out of order",
            ChainFault::Unkeyed => "recomputed without the key",
            ChainFault::Rewritten => "rewritten",
            ChainFault::Truncated => "truncated",
        }
    }
}

/// The first place the chain is broken.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChainBreak {
    pub seq: u64,
    pub fault: ChainFault,
    pub reason: String,
}

/// A whole chain: how long, its head, where its keyed records start, and
/// the newest checkpoint that vouches for it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChainSummary {
    pub records: u64,
    pub head_hash: String,
    /// The first v2 (keyed) record; those before it are v1 (legacy).
    pub first_keyed: Option<u64>,
    /// The checkpoint with the highest seq, which the chain matched.
    pub latest_checkpoint: Option<Checkpoint>,
}

/// Reads the whole chain in seq order and checks every record's hash (v1:
/// plain SHA-256; v2: HMAC under `key`) and link, that no v1 record follows
/// a v2 one, that the chain holds each of `checkpoints` (already checked
/// signatures) at its seq with its exact hash, and that it reaches the
/// highest one. `Ok(Err(..))` names the first break.
pub async fn verify_chain(
    store: &dyn AuditStore,
    key: &AuditKey,
    checkpoints: &[Checkpoint],
) -> Result<Result<ChainSummary, ChainBreak>, StoreError> {
    let mut anchors: BTreeMap<u64, Vec<&Checkpoint>> = BTreeMap::new();
    for checkpoint in checkpoints {
        anchors.entry(checkpoint.seq).or_default().push(checkpoint);
    }
    let mismatch = |seq: u64, hash: &str| {
        let checkpoint = anchors.get(&seq)?.iter().find(|c| c.head != hash)?;
        Some(ChainBreak {
            seq,
            fault: ChainFault::Rewritten,
            reason: format!(
                "record {seq} does not match the checkpoint of {}: the chain up to it was \
                 rewritten (recomputed without AUDIT_KEY, or restored from elsewhere)",
                canonical_time(checkpoint.time)
            ),
        })
    };
    if let Some(broken) = mismatch(0, GENESIS_HASH) {
        return Ok(Err(broken));
    }
    let mut expected = 1u64;
    let mut prev_hash = GENESIS_HASH.to_owned();
    let mut first_keyed = None;
    loop {
        let page = store.audit_events_after(expected - 1, VERIFY_PAGE).await?;
        if page.is_empty() {
            break;
        }
        for record in &page {
            if let Some(broken) = check(record, expected, &prev_hash, key, first_keyed.is_some())
                .or_else(|| mismatch(record.seq, &record.hash))
            {
                return Ok(Err(broken));
            }
            if record.version == HashVersion::V2 && first_keyed.is_none() {
                first_keyed = Some(record.seq);
            }
            prev_hash = record.hash.clone();
            expected += 1;
        }
    }
    let records = expected - 1;
    if let Some((&last, newest)) = anchors.range(records + 1..).next_back() {
        let removed = if records + 1 == last {
            format!("record {last} was")
        } else {
            format!("records {}..{last} were", records + 1)
        };
        return Ok(Err(ChainBreak {
            seq: records + 1,
            fault: ChainFault::Truncated,
            reason: format!(
                "{removed} removed after the checkpoint of {}",
                canonical_time(newest[0].time)
            ),
        }));
    }
    Ok(Ok(ChainSummary {
        records,
        head_hash: prev_hash,
        first_keyed,
        latest_checkpoint: anchors
            .values()
            .next_back()
            .and_then(|at| at.iter().max_by_key(|c| c.time))
            .map(|c| (*c).clone()),
    }))
}

pub(super) fn check(
    record: &AuditRecord,
    expected: u64,
    prev_hash: &str,
    key: &AuditKey,
    after_keyed: bool,
) -> Option<ChainBreak> {
    let broken = |seq, fault, reason: String| Some(ChainBreak { seq, fault, reason });
    if record.seq > expected {
        let reason = if expected + 1 == record.seq {
            format!(
                "record {expected} is missing (the next one stored is {})",
                record.seq
            )
        } else {
            format!(
                "records {expected} to {} are missing",
                record.seq.saturating_sub(1)
            )
        };
        return broken(expected, ChainFault::Missing, reason);
    }
    if record.seq < expected {
        return broken(
            record.seq,
            ChainFault::OutOfOrder,
            format!("record {} appears again after {}", record.seq, expected - 1),
        );
    }
    if record.version == HashVersion::V1 && after_keyed {
        return broken(
            record.seq,
            ChainFault::Unkeyed,
            "an unkeyed (v1) record after keyed ones: the chain was recomputed without AUDIT_KEY"
                .to_owned(),
        );
    }
    if record.expected_hash(key) != record.hash {
        if record.version == HashVersion::V2 && record.plain_hash() == record.hash {
            return broken(
                record.seq,
                ChainFault::Unkeyed,
                "its hash is a plain SHA-256, not the HMAC under AUDIT_KEY: the record was \
                 recomputed without AUDIT_KEY"
                    .to_owned(),
            );
        }
        let reason = match record.version {
            HashVersion::V1 => "its content does not match its stored hash",
            HashVersion::V2 => {
                "its content does not match its stored hash under AUDIT_KEY (the record was \
                 altered, or AUDIT_KEY is not the key it was written with)"
            }
        };
        return broken(record.seq, ChainFault::Altered, reason.to_owned());
    }
    if record.prev_hash != prev_hash {
        return broken(
            record.seq,
            ChainFault::Altered,
            format!(
                "its prev_hash does not match the hash of record {} (one of the two was rewritten)",
                record.seq - 1
            ),
        );
    }
    None
}
