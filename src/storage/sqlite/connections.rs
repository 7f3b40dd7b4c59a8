//! A fixed set of SQLite connections, handed out without sqlx's pool.
//!
//! sqlx's `Pool` tests every connection as it comes back: it spawns a task
//! that pings the connection before it is idle again. For SQLite a ping is
//! a round trip to the connection's own thread, so every store call cost two
//! round trips and a task instead of one round trip, and the single writer
//! stayed busy with the ping while the next write waited for it. A local file
//! does not drop connections, so here a connection goes straight back to the
//! idle list. What the ping guarded against, a connection whose thread has
//! died, is caught where it shows: a query through a [`Lease`] that fails
//! with `WorkerCrashed` marks it, and that connection is dropped rather than
//! reused; the next lease opens a fresh one.

use std::fmt;
use std::sync::Mutex;
use std::time::Duration;

use futures_util::future::BoxFuture;
use futures_util::stream::BoxStream;
use futures_util::{FutureExt, StreamExt, TryFutureExt, TryStreamExt};
use sqlx::sqlite::{SqliteConnectOptions, SqliteQueryResult, SqliteRow, SqliteStatement};
use sqlx::{ConnectOptions, Describe, Either, Execute, Executor, Sqlite, SqliteConnection};
use tokio::sync::{Semaphore, SemaphorePermit};

pub(super) struct Connections {
    /// Connections not leased out; the most recently used on top, so the
    /// busy ones stay warm and the rest idle.
    idle: Mutex<Vec<SqliteConnection>>,
    /// One per connection, open or not yet opened.
    permits: Semaphore,
    options: SqliteConnectOptions,
    acquire_timeout: Duration,
}

impl Connections {
    /// Up to `size` connections with `options`, the first opened now (so a
    /// database that cannot be opened fails at start-up), the others when
    /// first needed.
    pub async fn open(
        options: SqliteConnectOptions,
        size: usize,
        acquire_timeout: Duration,
    ) -> Result<Self, sqlx::Error> {
        let first = options.connect().await?;
        Ok(Self {
            idle: Mutex::new(vec![first]),
            permits: Semaphore::new(size),
            options,
            acquire_timeout,
        })
    }

    /// A connection for one call or one transaction; back when dropped.
    /// `PoolTimedOut` when none comes free within the acquire timeout.
    pub async fn get(&self) -> Result<Lease<'_>, sqlx::Error> {
        let permit = tokio::time::timeout(self.acquire_timeout, self.permits.acquire())
            .await
            .map_err(|_| sqlx::Error::PoolTimedOut)?
            .map_err(|_| sqlx::Error::PoolClosed)?;
        let idle = self.idle.lock().unwrap_or_else(|p| p.into_inner()).pop();
        let conn = match idle {
            Some(conn) => conn,
            None => self.options.connect().await?,
        };
        Ok(Lease {
            conn: Some(conn),
            broken: false,
            home: self,
            _permit: permit,
        })
    }
}

/// A leased connection. Use `&mut lease` as the executor of one statement,
/// or [`Lease::conn`] for a transaction.
pub(super) struct Lease<'a> {
    /// `None` only inside `drop`.
    conn: Option<SqliteConnection>,
    broken: bool,
    home: &'a Connections,
    // Released after `drop` has put the connection back.
    _permit: SemaphorePermit<'a>,
}

impl Lease<'_> {
    /// The connection itself, for `begin` and the migrator. Errors there
    /// are not watched for a dead connection thread.
    pub fn conn(&mut self) -> Result<&mut SqliteConnection, sqlx::Error> {
        self.conn.as_mut().ok_or(sqlx::Error::PoolClosed)
    }

    /// The connection and the lease's mark, borrowed apart so a query's
    /// future can hold the one and set the other.
    fn parts(&mut self) -> Result<(&mut SqliteConnection, &mut bool), sqlx::Error> {
        match self.conn.as_mut() {
            Some(conn) => Ok((conn, &mut self.broken)),
            None => Err(sqlx::Error::PoolClosed),
        }
    }

    /// Drops the connection instead of handing it out again.
    pub fn discard(&mut self) {
        self.broken = true;
    }
}

impl Drop for Lease<'_> {
    fn drop(&mut self) {
        if let Some(conn) = self.conn.take().filter(|_| !self.broken) {
            let mut idle = self.home.idle.lock().unwrap_or_else(|p| p.into_inner());
            idle.push(conn);
        }
    }
}

impl fmt::Debug for Lease<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Lease")
            .field("broken", &self.broken)
            .finish_non_exhaustive()
    }
}

/// Marks the lease when its connection's thread is gone.
fn watch(broken: &mut bool, err: &sqlx::Error) {
    if matches!(err, sqlx::Error::WorkerCrashed) {
        *broken = true;
    }
}

impl<'c> Executor<'c> for &'c mut Lease<'_> {
    type Database = Sqlite;

    fn fetch_many<'e, 'q: 'e, E>(
        self,
        query: E,
    ) -> BoxStream<'e, Result<Either<SqliteQueryResult, SqliteRow>, sqlx::Error>>
    where
        'c: 'e,
        E: 'q + Execute<'q, Sqlite>,
    {
        match self.parts() {
            Ok((conn, broken)) => conn
                .fetch_many(query)
                .inspect_err(move |e| watch(broken, e))
                .boxed(),
            Err(e) => futures_util::stream::once(async { Err(e) }).boxed(),
        }
    }

    fn fetch_optional<'e, 'q: 'e, E>(
        self,
        query: E,
    ) -> BoxFuture<'e, Result<Option<SqliteRow>, sqlx::Error>>
    where
        'c: 'e,
        E: 'q + Execute<'q, Sqlite>,
    {
        match self.parts() {
            Ok((conn, broken)) => conn
                .fetch_optional(query)
                .inspect_err(move |e| watch(broken, e))
                .boxed(),
            Err(e) => async { Err(e) }.boxed(),
        }
    }

    fn prepare_with<'e, 'q: 'e>(
        self,
        sql: &'q str,
        parameters: &'e [sqlx::sqlite::SqliteTypeInfo],
    ) -> BoxFuture<'e, Result<SqliteStatement<'q>, sqlx::Error>>
    where
        'c: 'e,
    {
        match self.conn.as_mut() {
            Some(conn) => conn.prepare_with(sql, parameters),
            None => async { Err(sqlx::Error::PoolClosed) }.boxed(),
        }
    }

    fn describe<'e, 'q: 'e>(
        self,
        sql: &'q str,
    ) -> BoxFuture<'e, Result<Describe<Sqlite>, sqlx::Error>>
    where
        'c: 'e,
    {
        match self.conn.as_mut() {
            Some(conn) => conn.describe(sql),
            None => async { Err(sqlx::Error::PoolClosed) }.boxed(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn one_connection(dir: &tempfile::TempDir, size: usize) -> Connections {
        let options = SqliteConnectOptions::new()
            .filename(dir.path().join("c.db"))
            .create_if_missing(true);
        Connections::open(options, size, Duration::from_millis(200))
            .await
            .unwrap()
    }

    /// Whether the leased connection is the one that made the TEMP table
    /// (TEMP tables belong to one connection).
    async fn has_marker(lease: &mut Lease<'_>) -> bool {
        sqlx::query("SELECT 1 FROM marker")
            .fetch_optional(lease)
            .await
            .is_ok()
    }

    #[tokio::test]
    async fn a_returned_connection_is_reused_and_a_discarded_one_replaced() {
        let dir = tempfile::tempdir().unwrap();
        let set = one_connection(&dir, 1).await;
        let mut lease = set.get().await.unwrap();
        sqlx::query("CREATE TEMP TABLE marker (x)")
            .execute(&mut lease)
            .await
            .unwrap();
        drop(lease);
        let mut lease = set.get().await.unwrap();
        assert!(has_marker(&mut lease).await, "the same connection again");
        lease.discard();
        drop(lease);
        let mut lease = set.get().await.unwrap();
        assert!(!has_marker(&mut lease).await, "a fresh connection");
    }

    #[tokio::test]
    async fn leases_are_bounded_and_time_out() {
        let dir = tempfile::tempdir().unwrap();
        let set = one_connection(&dir, 2).await;
        let first = set.get().await.unwrap();
        let second = set.get().await.unwrap();
        let third = set.get().await;
        assert!(matches!(third, Err(sqlx::Error::PoolTimedOut)), "{third:?}");
        drop(first);
        let mut again = set.get().await.unwrap();
        sqlx::query("SELECT 1").execute(&mut again).await.unwrap();
        drop(second);
    }

    #[test]
    fn only_a_dead_connection_thread_marks_the_lease() {
        let mut broken = false;
        watch(&mut broken, &sqlx::Error::RowNotFound);
        watch(&mut broken, &sqlx::Error::PoolTimedOut);
        assert!(!broken);
        watch(&mut broken, &sqlx::Error::WorkerCrashed);
        assert!(broken);
    }
}
