//! Refresh-token rotation with group commit.
//!
//! Every rotation writes (retire the old token, store its child), and SQLite
//! has one writer. Done one by one, each rotation held the writer connection
//! across several hand-offs between the async workers and sqlx's connection
//! thread, and throughput stayed flat however many clients refreshed at once:
//! the machine idled between hand-offs. Here one task owns the queue of
//! rotations and runs whatever is waiting as one batch: one transaction, one
//! UPDATE that retires every presented token that is still active, one INSERT
//! of the children of those it retired, one commit. Under load a batch holds
//! many rotations; alone, a rotation is a batch of one.
//!
//! Only the common case is batched. A token that was not active (a replay,
//! an expired or unknown token) comes back as `None` and the store decides
//! what it means on its own, outside the batch.

use std::sync::LazyLock;

use chrono::{DateTime, Utc};
use sqlx::{FromRow, SqlitePool};
use tokio::sync::{mpsc, oneshot};

use super::{map_err, millis, RefreshRow, REFRESH_COLUMNS};
use crate::domain::TokenHash;
use crate::storage::{NewRefreshToken, RefreshTokenRecord, StoreError, StoreResult};

/// Rotations in one transaction at most: bounds the statements' parameters
/// (3 and 8 per rotation) and how long one batch holds the writer.
const BATCH_MAX: usize = 64;

/// Rotations waiting for the batcher; senders wait when it is full.
const QUEUE: usize = 1024;

pub(super) struct Job {
    pub old_hash: TokenHash,
    pub now: DateTime<Utc>,
    pub replacement: NewRefreshToken,
    /// `Some(retired)` when the token was active and its child is stored.
    pub reply: oneshot::Sender<StoreResult<Option<RefreshTokenRecord>>>,
}

/// Starts the batcher on `writer`. It stops when every sender is dropped.
///
/// It runs on a thread of its own rather than as a task among the request
/// handlers: a batch is four hand-offs to the writer's thread while it holds
/// the writer, and on the shared runtime each wake-up waits behind queued
/// requests.
pub(super) fn spawn(writer: SqlitePool) -> std::io::Result<mpsc::Sender<Job>> {
    let (tx, rx) = mpsc::channel(QUEUE);
    crate::background::spawn_dedicated("sqlite-rotations", run(writer, rx))?;
    Ok(tx)
}

async fn run(writer: SqlitePool, mut rx: mpsc::Receiver<Job>) {
    let mut jobs = Vec::with_capacity(BATCH_MAX);
    while let Some(first) = rx.recv().await {
        jobs.push(first);
        while jobs.len() < BATCH_MAX {
            match rx.try_recv() {
                Ok(job) => jobs.push(job),
                Err(_) => break,
            }
        }
        match rotate(&writer, &jobs).await {
            Ok(results) => {
                for (job, result) in jobs.drain(..).zip(results) {
                    let _ = job.reply.send(Ok(result));
                }
            }
            // A batch fails as a whole (database gone, or one child
            // conflicting): run each alone so only the culprit fails.
            Err(err) if jobs.len() == 1 => {
                if let Some(job) = jobs.pop() {
                    let _ = job.reply.send(Err(err));
                }
            }
            Err(_) => {
                for job in jobs.drain(..) {
                    let result = rotate(&writer, std::slice::from_ref(&job))
                        .await
                        .map(|mut one| one.pop().flatten());
                    let _ = job.reply.send(result);
                }
            }
        }
    }
}

/// Rotates `jobs` in one transaction; one result per job, in order.
async fn rotate(writer: &SqlitePool, jobs: &[Job]) -> StoreResult<Vec<Option<RefreshTokenRecord>>> {
    let mut tx = writer.begin().await.map_err(map_err)?;
    // Each job's own `now` judges its token and stamps its retirement. When
    // two jobs present the same token, SQLite retires it for one of them;
    // `replaced_by` says which, and the other finds it inactive.
    let mut update = sqlx::query(&UPDATE_SQL[jobs.len() - 1]);
    for job in jobs {
        update = update
            .bind(job.old_hash.as_str())
            .bind(&job.replacement.jti)
            .bind(millis(job.now));
    }
    let retired = update.fetch_all(&mut *tx).await.map_err(map_err)?;
    let mut results: Vec<Option<RefreshTokenRecord>> = jobs.iter().map(|_| None).collect();
    for row in &retired {
        let record = RefreshTokenRecord::try_from(RefreshRow::from_row(row).map_err(map_err)?)?;
        let index = jobs
            .iter()
            .position(|job| Some(&job.replacement.jti) == record.replaced_by.as_ref())
            .ok_or_else(|| StoreError::Other(anyhow::anyhow!("retired token matches no job")))?;
        results[index] = Some(record);
    }
    let children: Vec<&NewRefreshToken> = jobs
        .iter()
        .zip(&results)
        .filter(|(_, retired)| retired.is_some())
        .map(|(job, _)| &job.replacement)
        .collect();
    if !children.is_empty() {
        let mut insert = sqlx::query(&INSERT_SQL[children.len() - 1]);
        for child in children {
            insert = insert
                .bind(child.user_id.as_str())
                .bind(&child.jti)
                .bind(child.token_hash.as_str())
                .bind(&child.family_id)
                .bind(&child.user_agent)
                .bind(&child.ip_address)
                .bind(millis(child.expires_at))
                .bind(millis(child.created_at));
        }
        insert.execute(&mut *tx).await.map_err(map_err)?;
    }
    tx.commit().await.map_err(map_err)?;
    Ok(results)
}

/// The retiring UPDATE for 1..=BATCH_MAX jobs, each `(old hash, child jti,
/// now)`; made once, so each size is one prepared statement.
static UPDATE_SQL: LazyLock<Vec<String>> = LazyLock::new(|| {
    (1..=BATCH_MAX)
        .map(|n| {
            let jobs = vec!["(?, ?, ?)"; n].join(", ");
            let returning = REFRESH_COLUMNS
                .split(", ")
                .map(|c| format!("refresh_tokens.{c}"))
                .collect::<Vec<_>>()
                .join(", ");
            format!(
                "UPDATE refresh_tokens SET revoked = 1, replaced_by = job.column2, \
                 revoked_at = job.column3 FROM (VALUES {jobs}) AS job \
                 WHERE refresh_tokens.token_hash = job.column1 AND refresh_tokens.revoked = 0 \
                 AND refresh_tokens.expires_at > job.column3 RETURNING {returning}"
            )
        })
        .collect()
});

/// The children's INSERT for 1..=BATCH_MAX rows.
static INSERT_SQL: LazyLock<Vec<String>> = LazyLock::new(|| {
    (1..=BATCH_MAX)
        .map(|n| {
            let rows = vec!["(?, ?, ?, ?, ?, ?, 0, ?, ?)"; n].join(", ");
            format!(
                "INSERT INTO refresh_tokens (user_id, jti, token_hash, family_id, user_agent, \
                 ip_address, revoked, expires_at, created_at) VALUES {rows}"
            )
        })
        .collect()
});
