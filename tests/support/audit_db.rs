//! Raw access to the stored audit trail, as an insider with write access to
//! the database file (SQLite) or the database (MongoDB) has it: no AUDIT_KEY,
//! no service code, only the records and the published record format.
#![allow(dead_code)]

use chrono::{DateTime, SecondsFormat, Utc};
use clinic_auth::storage::sqlite::AUDIT_COLUMNS;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// `prev_hash` of the first record.
pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// One stored record, read straight from the database: a SQLite row by the
/// crate's own column names, a MongoDB document by the same field names.
#[derive(Debug, Clone, sqlx::FromRow, Serialize, Deserialize)]
pub struct RawRecord {
    #[serde(rename = "_id")]
    pub event_id: String,
    pub seq: i64,
    #[sqlx(rename = "time")]
    #[serde(rename = "time", with = "bson_millis")]
    pub time_ms: i64,
    pub event: String,
    pub outcome: String,
    pub user_id: Option<String>,
    pub email: Option<String>,
    pub ip: Option<String>,
    pub user_agent: Option<String>,
    pub request_id: Option<String>,
    pub detail: Option<String>,
    pub prev_hash: String,
    pub hash: String,
}

/// Unix milliseconds as the BSON date MongoDB stores.
mod bson_millis {
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    pub fn serialize<S: Serializer>(ms: &i64, s: S) -> Result<S::Ok, S::Error> {
        bson::DateTime::from_millis(*ms).serialize(s)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<i64, D::Error> {
        Ok(bson::DateTime::deserialize(d)?.timestamp_millis())
    }
}

/// The record format the first release documented (plain SHA-256 over this
/// JSON, fields in this order), written out here the way an insider would
/// rather than borrowed from the service's code.
#[derive(Serialize)]
struct LegacyCanonical<'a> {
    seq: i64,
    time: String,
    event: &'a str,
    user_id: Option<&'a str>,
    email: Option<&'a str>,
    ip: Option<&'a str>,
    user_agent: Option<&'a str>,
    request_id: Option<&'a str>,
    outcome: &'a str,
    detail: Option<&'a str>,
    prev_hash: &'a str,
}

impl RawRecord {
    /// A record as the first release would have stored it.
    pub fn legacy(seq: i64, user: &str) -> Self {
        let time_ms = Utc::now().timestamp_millis() - 3_600_000 + seq;
        Self {
            event_id: uuid::Uuid::new_v4().simple().to_string(),
            seq,
            time_ms,
            event: "login_success".into(),
            outcome: "success".into(),
            user_id: Some(user.to_owned()),
            email: Some(format!("{user}@example.com")),
            ip: Some("192.0.2.1".into()),
            user_agent: Some("legacy".into()),
            request_id: Some(format!("legacy-{seq}")),
            detail: None,
            prev_hash: String::new(),
            hash: String::new(),
        }
    }

    /// SHA-256 of the legacy canonical form: all it takes without the key.
    pub fn legacy_hash(&self) -> String {
        let time = DateTime::<Utc>::from_timestamp_millis(self.time_ms)
            .unwrap()
            .to_rfc3339_opts(SecondsFormat::Millis, true);
        let canonical = LegacyCanonical {
            seq: self.seq,
            time,
            event: &self.event,
            user_id: self.user_id.as_deref(),
            email: self.email.as_deref(),
            ip: self.ip.as_deref(),
            user_agent: self.user_agent.as_deref(),
            request_id: self.request_id.as_deref(),
            outcome: &self.outcome,
            detail: self.detail.as_deref(),
            prev_hash: &self.prev_hash,
        };
        hex::encode(Sha256::digest(
            serde_json::to_string(&canonical).unwrap().as_bytes(),
        ))
    }
}

/// Re-links and re-hashes `records` (in seq order) with plain SHA-256,
/// starting after a record whose hash is `prev`.
pub fn rehash_legacy(records: &mut [RawRecord], prev: &str) {
    let mut prev = prev.to_owned();
    for record in records {
        record.prev_hash.clone_from(&prev);
        record.hash = record.legacy_hash();
        prev.clone_from(&record.hash);
    }
}

/// A raw handle on the database, as an attacker with access to it has.
pub enum Raw {
    Sqlite(sqlx::SqlitePool),
    Mongo(mongodb::Collection<bson::Document>),
}

impl Raw {
    /// Opens the database named by `DATABASE_URL` or `MONGO_URI`.
    pub async fn open(url: &(String, String)) -> Self {
        if url.0 == "DATABASE_URL" {
            Raw::Sqlite(sqlx::SqlitePool::connect(&url.1).await.unwrap())
        } else {
            let client = mongodb::Client::with_uri_str(&url.1).await.unwrap();
            Raw::Mongo(
                client
                    .default_database()
                    .unwrap()
                    .collection("audit_events"),
            )
        }
    }

    /// The append-only triggers refuse, so the attacker drops them first.
    pub async fn defeat_triggers(&self) {
        if let Raw::Sqlite(pool) = self {
            let (left,): (i64,) = sqlx::query_as(
                "SELECT count(*) FROM sqlite_master WHERE type = 'trigger' \
                 AND name LIKE 'audit_events_no_%'",
            )
            .fetch_one(pool)
            .await
            .unwrap();
            if left == 0 {
                return;
            }
            let refused = sqlx::query("UPDATE audit_events SET ip = '10.6.6.6' WHERE seq = 1")
                .execute(pool)
                .await
                .unwrap_err();
            assert!(refused.to_string().contains("append-only"), "{refused}");
            let refused = sqlx::query("DELETE FROM audit_events WHERE seq = 1")
                .execute(pool)
                .await
                .unwrap_err();
            assert!(refused.to_string().contains("append-only"), "{refused}");
            for trigger in ["audit_events_no_update", "audit_events_no_delete"] {
                sqlx::query(&format!("DROP TRIGGER IF EXISTS {trigger}"))
                    .execute(pool)
                    .await
                    .unwrap();
            }
        }
    }

    pub async fn alter_ip(&self, seq: i64) {
        match self {
            Raw::Sqlite(pool) => {
                sqlite_on_one(
                    pool,
                    "UPDATE audit_events SET ip = '10.6.6.6' WHERE seq = ?",
                    seq,
                )
                .await
            }
            Raw::Mongo(c) => {
                let done = c
                    .update_one(
                        bson::doc! { "seq": seq },
                        bson::doc! { "$set": { "ip": "10.6.6.6" } },
                    )
                    .await
                    .unwrap();
                assert_eq!(done.modified_count, 1);
            }
        }
    }

    pub async fn delete(&self, seq: i64) {
        match self {
            Raw::Sqlite(pool) => {
                sqlite_on_one(pool, "DELETE FROM audit_events WHERE seq = ?", seq).await
            }
            Raw::Mongo(c) => {
                let done = c.delete_one(bson::doc! { "seq": seq }).await.unwrap();
                assert_eq!(done.deleted_count, 1);
            }
        }
    }

    /// Every stored record, lowest seq first.
    pub async fn records(&self) -> Vec<RawRecord> {
        match self {
            Raw::Sqlite(pool) => sqlx::query_as(&format!(
                "SELECT {AUDIT_COLUMNS} FROM audit_events ORDER BY seq"
            ))
            .fetch_all(pool)
            .await
            .unwrap(),
            Raw::Mongo(c) => {
                use futures_util::TryStreamExt;
                c.clone_with_type::<RawRecord>()
                    .find(bson::doc! {})
                    .sort(bson::doc! { "seq": 1 })
                    .await
                    .unwrap()
                    .try_collect()
                    .await
                    .unwrap()
            }
        }
    }

    /// Stores `records` the way the first release did (no record version):
    /// replaces any stored record with the same seq, adds the others.
    pub async fn put_legacy(&self, records: &[RawRecord]) {
        for record in records {
            match self {
                Raw::Sqlite(pool) => {
                    sqlx::query("DELETE FROM audit_events WHERE seq = ?")
                        .bind(record.seq)
                        .execute(pool)
                        .await
                        .unwrap();
                    sqlx::query(
                        "INSERT INTO audit_events (event_id, seq, time, event, outcome, \
                         user_id, email, ip, user_agent, request_id, detail, prev_hash, hash) \
                         VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    )
                    .bind(&record.event_id)
                    .bind(record.seq)
                    .bind(record.time_ms)
                    .bind(&record.event)
                    .bind(&record.outcome)
                    .bind(&record.user_id)
                    .bind(&record.email)
                    .bind(&record.ip)
                    .bind(&record.user_agent)
                    .bind(&record.request_id)
                    .bind(&record.detail)
                    .bind(&record.prev_hash)
                    .bind(&record.hash)
                    .execute(pool)
                    .await
                    .unwrap();
                }
                Raw::Mongo(c) => {
                    c.delete_one(bson::doc! { "seq": record.seq })
                        .await
                        .unwrap();
                    c.clone_with_type::<RawRecord>()
                        .insert_one(record)
                        .await
                        .unwrap();
                }
            }
        }
    }

    /// What an insider without the key does to hide a change: alters
    /// record `from`, then rewrites it and every later record in the legacy
    /// format with fresh plain SHA-256 hashes, so every link holds again.
    pub async fn rewrite_without_key(&self, from: i64) {
        self.defeat_triggers().await;
        let all = self.records().await;
        let prev = all
            .iter()
            .find(|r| r.seq == from - 1)
            .map_or(GENESIS.to_owned(), |r| r.hash.clone());
        let mut tail: Vec<RawRecord> = all.into_iter().filter(|r| r.seq >= from).collect();
        tail[0].ip = Some("10.6.6.6".into());
        rehash_legacy(&mut tail, &prev);
        self.put_legacy(&tail).await;
    }

    /// Removes the newest `n` records: the trail then simply ends earlier.
    pub async fn truncate(&self, n: usize) {
        self.defeat_triggers().await;
        let all = self.records().await;
        for record in all.iter().rev().take(n) {
            self.delete(record.seq).await;
        }
    }
}

/// Runs `sql` for the record `seq`, which it must touch.
async fn sqlite_on_one(pool: &sqlx::SqlitePool, sql: &str, seq: i64) {
    let done = sqlx::query(sql).bind(seq).execute(pool).await.unwrap();
    assert_eq!(done.rows_affected(), 1, "{sql}");
}
