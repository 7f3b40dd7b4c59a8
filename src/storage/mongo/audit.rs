//! `audit_events` on MongoDB: the [`AuditStore`], one linear hash chain kept
//! by the unique index on `seq`.

use async_trait::async_trait;
use bson::{doc, Document};
use futures_util::TryStreamExt;

use super::{bson_date, is_duplicate_key, MongoStore};
use crate::domain::audit::GENESIS_HASH;
use crate::domain::{AuditKey, AuditRecord, NewAuditEvent};
use crate::storage::audit::StoredAuditRecord;
use crate::storage::{AuditQuery, AuditStore, ChainLink, StoreError, StoreResult};

/// An `audit_events` document.
pub(super) type AuditDoc = StoredAuditRecord<bson::DateTime>;

/// How often one event may lose the race for the next seq before the append
/// gives up (and the recorder retries later): only reached under a storm of
/// appends from many instances at once.
const AUDIT_APPEND_ATTEMPTS: usize = 100;

/// The `_id` and [`ChainLink`] of a stored audit document (projected to
/// `_id`, `seq` and `hash`).
fn audit_link(doc: &Document) -> Option<(String, ChainLink)> {
    let seq = match doc.get("seq")? {
        bson::Bson::Int64(n) => u64::try_from(*n).ok()?,
        bson::Bson::Int32(n) => u64::try_from(*n).ok()?,
        _ => return None,
    };
    let link = ChainLink {
        seq,
        hash: doc.get_str("hash").ok()?.to_owned(),
    };
    Some((doc.get_str("_id").ok()?.to_owned(), link))
}

impl MongoStore {
    /// (seq, hash) of the last record, or (0, genesis) for an empty chain.
    async fn audit_head(&self) -> StoreResult<(u64, String)> {
        let head = self
            .audit_events
            .find_one(doc! {})
            .sort(doc! { "seq": -1 })
            .await?;
        Ok(match head {
            Some(doc) => (u64::try_from(doc.seq).unwrap_or(0), doc.hash),
            None => (0, GENESIS_HASH.to_owned()),
        })
    }

    /// The link of the stored event `id`, if it is stored.
    async fn audit_event_stored(&self, id: &str) -> StoreResult<Option<ChainLink>> {
        Ok(self
            .audit_events
            .clone_with_type::<Document>()
            .find_one(doc! { "_id": id })
            .projection(doc! { "_id": 1, "seq": 1, "hash": 1 })
            .await?
            .as_ref()
            .and_then(audit_link)
            .map(|(_, link)| link))
    }

    async fn find_audit(
        &self,
        filter: Document,
        sort: i32,
        limit: u32,
    ) -> StoreResult<Vec<AuditRecord>> {
        let docs: Vec<AuditDoc> = self
            .audit_events
            .find(filter)
            .sort(doc! { "seq": sort })
            .limit(i64::from(limit))
            .await?
            .try_collect()
            .await?;
        docs.into_iter().map(AuditRecord::try_from).collect()
    }
}

#[async_trait]
impl AuditStore for MongoStore {
    async fn append_audit_events(
        &self,
        events: &[NewAuditEvent],
        key: &AuditKey,
    ) -> StoreResult<Vec<ChainLink>> {
        if events.is_empty() {
            return Ok(Vec::new());
        }
        // Without the unique seq index two instances could fork the chain.
        self.indexes.ensure().await?;
        let ids: Vec<&str> = events.iter().map(|e| e.id.as_str()).collect();
        let stored: Vec<Document> = self
            .audit_events
            .clone_with_type::<Document>()
            .find(doc! { "_id": { "$in": ids } })
            .projection(doc! { "_id": 1, "seq": 1, "hash": 1 })
            .await?
            .try_collect()
            .await?;
        let stored: std::collections::HashMap<String, ChainLink> =
            stored.iter().filter_map(audit_link).collect();
        let mut head = self.audit_head().await?;
        let mut links = Vec::with_capacity(events.len());
        for event in events {
            if let Some(link) = stored.get(&event.id) {
                links.push(link.clone());
                continue;
            }
            let mut attempts = 0;
            loop {
                let record = AuditRecord::chain(head.0 + 1, event, &head.1, key);
                match self
                    .audit_events
                    .insert_one(AuditDoc::new(&event.id, &record))
                    .await
                {
                    Ok(_) => {
                        links.push(ChainLink {
                            seq: record.seq,
                            hash: record.hash.clone(),
                        });
                        head = (record.seq, record.hash);
                        break;
                    }
                    Err(err) if is_duplicate_key(&err) => {
                        if let Some(link) = self.audit_event_stored(&event.id).await? {
                            // Our own event after all (an earlier attempt).
                            links.push(link);
                            head = self.audit_head().await?;
                            break;
                        }
                        // Another instance took this seq first.
                        attempts += 1;
                        if attempts >= AUDIT_APPEND_ATTEMPTS {
                            return Err(StoreError::Other(anyhow::anyhow!(
                                "audit append lost the race for the next seq {attempts} times"
                            )));
                        }
                        head = self.audit_head().await?;
                    }
                    Err(err) => return Err(err.into()),
                }
            }
        }
        Ok(links)
    }

    async fn query_audit_events(&self, query: &AuditQuery) -> StoreResult<Vec<AuditRecord>> {
        let mut filter = doc! {};
        if let Some(user_id) = &query.user_id {
            filter.insert("user_id", user_id.as_str());
        }
        if let Some(event) = query.event {
            filter.insert("event", event.as_str());
        }
        let mut time = doc! {};
        if let Some(since) = query.since {
            time.insert("$gte", bson_date(since));
        }
        if let Some(until) = query.until {
            time.insert("$lt", bson_date(until));
        }
        if !time.is_empty() {
            filter.insert("time", time);
        }
        if let Some(before) = query.before_seq {
            filter.insert(
                "seq",
                doc! { "$lt": i64::try_from(before).unwrap_or(i64::MAX) },
            );
        }
        self.find_audit(filter, -1, query.limit).await
    }

    async fn audit_events_after(&self, after: u64, limit: u32) -> StoreResult<Vec<AuditRecord>> {
        let after = i64::try_from(after).unwrap_or(i64::MAX);
        self.find_audit(doc! { "seq": { "$gt": after } }, 1, limit)
            .await
    }
}
