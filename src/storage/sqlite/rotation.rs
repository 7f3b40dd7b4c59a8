//! Refresh-token rotation with group commit.
//!
//! Every rotation writes (retire the old token, store its child), and SQLite
//! has one writer. Done one by one, each rotation held the writer connection
//! across several hand-offs between the async workers and sqlx's connection
//! thread, and throughput stayed flat however many clients refreshed at once:
//! the machine idled between hand-offs. Here one task owns the queue of
//! rotations and runs whatever is waiting as one batch, and a batch is one
//! command to the writer's thread: one transaction with one UPDATE that
//! retires every presented token that is still active, one INSERT of the
//! children of those it retired, one read of their owners. Under load a
//! batch holds many rotations; alone, a rotation is a batch of one.
//!
//! Only the common case is batched. A token that was not active (a replay,
//! an expired or unknown token) comes back as `None` and the store decides
//! what it means on its own, outside the batch.

use std::sync::LazyLock;

use chrono::{DateTime, Utc};
use std::sync::Arc;

use sqlx::{Column, FromRow, Row};
use tokio::sync::{mpsc, oneshot};

use super::connections::{Connections, Lease};
use super::millis;
use super::refresh_tokens::{bind_new_refresh, RefreshRow, REFRESH_COLUMNS};
use super::users::{UserRow, USER_COLUMNS};
use crate::domain::{TokenHash, User};
use crate::storage::{NewRefreshToken, RefreshTokenRecord, Rotated, StoreError, StoreResult};

/// Rotations in one transaction at most: bounds the statements' parameters
/// (13 per rotation) and how long one batch holds the writer.
const BATCH_MAX: usize = 64;

/// Rotations waiting for the batcher; senders wait when it is full.
const QUEUE: usize = 1024;

pub(super) struct Job {
    pub old_hash: TokenHash,
    pub now: DateTime<Utc>,
    pub replacement: NewRefreshToken,
    /// `Some` when the token was active and its child is stored.
    pub reply: oneshot::Sender<StoreResult<Option<Rotated>>>,
}

/// Starts the batcher on `writer`. It stops when every sender is dropped.
///
/// It runs on a thread of its own rather than as a task among the request
/// handlers: it holds the writer while a batch runs, and on the shared
/// runtime its wake-up would wait behind queued requests.
pub(super) fn spawn(writer: Arc<Connections>) -> std::io::Result<mpsc::Sender<Job>> {
    let (tx, rx) = mpsc::channel(QUEUE);
    crate::background::spawn_dedicated("sqlite-rotations", run(writer, rx))?;
    Ok(tx)
}

async fn run(writer: Arc<Connections>, mut rx: mpsc::Receiver<Job>) {
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
                    let _ = job.reply.send(result);
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
                        .and_then(|mut one| one.pop().unwrap_or(Ok(None)));
                    let _ = job.reply.send(result);
                }
            }
        }
    }
}

/// Rotates `jobs` in one transaction; one result per job, in order.
///
/// The whole transaction is one command to the writer's thread: BEGIN, the
/// UPDATE that retires the presented tokens (RETURNING them), the INSERT of
/// the children of exactly those it retired (a child whose parent now names
/// it in `replaced_by`), the read of their owners, COMMIT. Each command is a
/// round trip to sqlx's thread and back; as BEGIN, UPDATE, INSERT, COMMIT
/// plus an owner read per rotation on the reader pool, they were about a
/// fifth of a refresh's CPU (see BENCHMARKS.md).
async fn rotate(
    writer: &Connections,
    jobs: &[Job],
) -> StoreResult<Vec<StoreResult<Option<Rotated>>>> {
    let mut conn = writer.get().await?;
    let rows = run_batch(&mut conn, jobs).await;
    if rows.is_err() {
        // The next batch opens a transaction of its own.
        super::roll_back(&mut conn).await;
    }
    let (retired, owners) = rows?;
    // What the rows say is judged per rotation from here: a stored value
    // this version cannot read fails that rotation, not its batch (which
    // has committed).
    let mut results: Vec<StoreResult<Option<Rotated>>> = jobs.iter().map(|_| Ok(None)).collect();
    for row in retired {
        let index = jobs
            .iter()
            .position(|job| Some(&job.replacement.jti) == row.replaced_by.as_ref())
            .ok_or_else(|| StoreError::Other(anyhow::anyhow!("retired token matches no job")))?;
        // The owner named by the stored record, not by the presented claims:
        // the service refuses the rotation when the two differ.
        let owner = owners.iter().find(|u| u.id == row.user_id).cloned();
        results[index] = RefreshTokenRecord::try_from(row).and_then(|retired| {
            let owner = owner.map(User::try_from).transpose()?;
            Ok(Some(Rotated { retired, owner }))
        });
    }
    Ok(results)
}

/// Runs `jobs`' batch (`BATCH_SQL`): the retired tokens and their owners.
async fn run_batch(
    conn: &mut Lease<'_>,
    jobs: &[Job],
) -> StoreResult<(Vec<RefreshRow>, Vec<UserRow>)> {
    // Each job's own `now` judges its token and stamps its retirement. When
    // two jobs present the same token, SQLite retires it for one of them;
    // `replaced_by` says which, and the other finds it inactive.
    let mut batch = sqlx::query(&BATCH_SQL[jobs.len() - 1]);
    for job in jobs {
        batch = batch
            .bind(job.old_hash.as_str())
            .bind(&job.replacement.jti)
            .bind(millis(job.now));
    }
    for job in jobs {
        batch = bind_new_refresh(batch.bind(job.old_hash.as_str()), &job.replacement);
    }
    for job in jobs {
        batch = batch.bind(job.replacement.user_id.as_str());
    }
    // The rows of all the statements come back together (sqlx runs every
    // statement of a query string on SQLite, binding parameters in order,
    // and stops at the first error, which leaves the transaction to the
    // caller's ROLLBACK); only the UPDATE and the owners' read return rows,
    // and a row's first column tells a retired token (`user_id`) from an
    // owner (`id`).
    let mut retired = Vec::new();
    let mut owners = Vec::new();
    for row in batch.fetch_all(conn).await? {
        if row.column(0).name() == "id" {
            owners.push(UserRow::from_row(&row)?);
        } else {
            retired.push(RefreshRow::from_row(&row)?);
        }
    }
    Ok((retired, owners))
}

/// The batch for 1..=BATCH_MAX jobs; made once, so each size is one
/// prepared statement set. Parameters: per job `(old hash, child jti, now)`
/// for the UPDATE, then per job `(old hash, the child's eight columns)` for
/// the INSERT, then per job the child's user id for the owners' read.
static BATCH_SQL: LazyLock<Vec<String>> = LazyLock::new(|| {
    let returning = REFRESH_COLUMNS
        .split(", ")
        .map(|c| format!("refresh_tokens.{c}"))
        .collect::<Vec<_>>()
        .join(", ");
    (1..=BATCH_MAX)
        .map(|n| {
            let retire = vec!["(?, ?, ?)"; n].join(", ");
            let children = vec!["(?, ?, ?, ?, ?, ?, ?, ?, ?)"; n].join(", ");
            let owners = vec!["?"; n].join(", ");
            format!(
                "BEGIN IMMEDIATE; \
                 UPDATE refresh_tokens SET revoked = 1, replaced_by = job.column2, \
                 revoked_at = job.column3 FROM (VALUES {retire}) AS job \
                 WHERE refresh_tokens.token_hash = job.column1 AND refresh_tokens.revoked = 0 \
                 AND refresh_tokens.expires_at > job.column3 RETURNING {returning}; \
                 INSERT INTO refresh_tokens (user_id, jti, token_hash, family_id, user_agent, \
                 ip_address, revoked, expires_at, created_at) \
                 SELECT child.column2, child.column3, child.column4, child.column5, \
                 child.column6, child.column7, 0, child.column8, child.column9 \
                 FROM (VALUES {children}) AS child WHERE EXISTS (SELECT 1 FROM refresh_tokens \
                 WHERE refresh_tokens.token_hash = child.column1 \
                 AND refresh_tokens.replaced_by = child.column3); \
                 SELECT {USER_COLUMNS} FROM users WHERE id IN ({owners}); \
                 COMMIT"
            )
        })
        .collect()
});
