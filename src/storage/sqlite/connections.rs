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
//!
//! A lease also knows whether its connection is in a known state: a caller
//! can stop waiting half-way through a command (a request future dropped
//! because its client hung up) or between the statements of a transaction.
//! Such a connection may still be inside that transaction, and the next
//! caller's BEGIN would fail; it is closed instead (SQLite rolls back what a
//! closed connection left uncommitted) and the next lease opens a fresh one.

use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use futures_util::future::BoxFuture;
use futures_util::stream::BoxStream;
use futures_util::{FutureExt, StreamExt};
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
            marks: Marks::default(),
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
    marks: Marks,
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

    /// The connection and the lease's marks, borrowed apart so a query's
    /// future can hold the one and set the other.
    fn parts(&mut self) -> Result<(&mut SqliteConnection, &Marks), sqlx::Error> {
        match self.conn.as_mut() {
            Some(conn) => Ok((conn, &self.marks)),
            None => Err(sqlx::Error::PoolClosed),
        }
    }

    /// Drops the connection instead of handing it out again.
    pub fn discard(&mut self) {
        self.marks.broken.store(true, Ordering::Relaxed);
    }
}

impl Drop for Lease<'_> {
    fn drop(&mut self) {
        let reusable = self.marks.reusable();
        if let Some(conn) = self.conn.take().filter(|_| reusable) {
            let mut idle = self.home.idle.lock().unwrap_or_else(|p| p.into_inner());
            idle.push(conn);
        }
    }
}

/// What a lease knows about its connection's state. Atomics only because a
/// query's boxed future must be `Send`; one task uses a lease at a time.
#[derive(Default)]
struct Marks {
    /// The connection's thread is gone, or its owner said to drop it.
    broken: AtomicBool,
    /// A command was sent and its answer not read to the end.
    in_flight: AtomicBool,
    /// A BEGIN ran and no COMMIT or ROLLBACK has since.
    in_transaction: AtomicBool,
}

impl Marks {
    fn reusable(&self) -> bool {
        !(self.broken.load(Ordering::Relaxed)
            || self.in_flight.load(Ordering::Relaxed)
            || self.in_transaction.load(Ordering::Relaxed))
    }

    /// Before `sql` is sent. Our transactions are written out as plain
    /// BEGIN … COMMIT / ROLLBACK statements (never sqlx's `begin`), so the
    /// text says where one starts and ends.
    fn sending(&self, sql: &str) {
        self.in_flight.store(true, Ordering::Relaxed);
        if Statements::of(sql).begins {
            self.in_transaction.store(true, Ordering::Relaxed);
        }
    }

    /// Once the answer to `sql` has been read to its end.
    fn answered(&self, sql: &str, result: Result<(), &sqlx::Error>) {
        let statements = Statements::of(sql);
        match result {
            Ok(()) if statements.ends => self.in_transaction.store(false, Ordering::Relaxed),
            Ok(()) => {}
            Err(err) => {
                if matches!(err, sqlx::Error::WorkerCrashed) {
                    self.broken.store(true, Ordering::Relaxed);
                }
                // A ROLLBACK that failed either found no transaction or
                // left the connection to be discarded by its caller; a
                // lone BEGIN that failed began nothing.
                if statements.only_rollback || statements.only_begin {
                    self.in_transaction.store(false, Ordering::Relaxed);
                }
            }
        }
        self.in_flight.store(false, Ordering::Relaxed);
    }
}

/// How a command's text opens or closes a transaction.
struct Statements {
    begins: bool,
    ends: bool,
    only_begin: bool,
    only_rollback: bool,
}

impl Statements {
    fn of(sql: &str) -> Self {
        let text = sql.trim().trim_end_matches(';').trim_end();
        let first = text.split_whitespace().next().unwrap_or("");
        let last = text.rsplit([';', ' ', '\n']).next().unwrap_or("");
        let is = |word: &str, keyword: &str| word.eq_ignore_ascii_case(keyword);
        let single = !text.contains(';');
        Self {
            begins: is(first, "BEGIN"),
            ends: is(last, "COMMIT") || is(last, "ROLLBACK") || is(first, "ROLLBACK"),
            only_begin: single && is(first, "BEGIN"),
            only_rollback: single && is(first, "ROLLBACK"),
        }
    }
}

impl fmt::Debug for Lease<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Lease")
            .field("reusable", &self.marks.reusable())
            .finish_non_exhaustive()
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
            Ok((conn, marks)) => {
                let sql = query.sql();
                marks.sending(sql);
                conn.fetch_many(query)
                    .inspect(move |item| {
                        if let Err(e) = item {
                            marks.answered(sql, Err(e));
                        }
                    })
                    .chain(futures_util::stream::poll_fn(move |_| {
                        // The stream's end: every answer has been read.
                        // Still in flight unless an error answered it.
                        if marks.in_flight.load(Ordering::Relaxed) {
                            marks.answered(sql, Ok(()));
                        }
                        std::task::Poll::Ready(None)
                    }))
                    .boxed()
            }
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
            Ok((conn, marks)) => {
                let sql = query.sql();
                marks.sending(sql);
                conn.fetch_optional(query)
                    .inspect(move |result| marks.answered(sql, result.as_ref().map(|_| ())))
                    .boxed()
            }
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

    /// The next lease's BEGIN works: no transaction was left behind.
    async fn starts_its_own_transaction(set: &Connections) {
        let mut next = set.get().await.unwrap();
        sqlx::query("BEGIN IMMEDIATE")
            .execute(&mut next)
            .await
            .expect("the next lease starts a transaction of its own");
        sqlx::query("ROLLBACK").execute(&mut next).await.unwrap();
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

    /// A caller that stops waiting in the middle of a multi-statement
    /// transaction (a request future dropped because its client hung up)
    /// must not hand the next caller a connection still inside that
    /// transaction: its BEGIN would fail ("cannot start a transaction
    /// within a transaction"), a 500.
    #[tokio::test]
    async fn a_transaction_abandoned_midway_does_not_reach_the_next_lease() {
        let dir = tempfile::tempdir().unwrap();
        let set = one_connection(&dir, 1).await;
        let mut lease = set.get().await.unwrap();
        sqlx::query("CREATE TABLE t (x)")
            .execute(&mut lease)
            .await
            .unwrap();
        // Long enough to outlive the 20 ms timeout, short enough that the
        // closed connection's thread (which holds the write lock until the
        // query ends) finishes well within the next BEGIN's 5 s busy wait
        // on a loaded 2-core machine: 5,000,000 rows took over 5 s there.
        let slow = "BEGIN IMMEDIATE; INSERT INTO t VALUES (1); \
                    WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c \
                    WHERE x < 1000000) SELECT count(*) FROM c; COMMIT";
        let abandoned = tokio::time::timeout(
            Duration::from_millis(20),
            sqlx::query(slow).execute(&mut lease),
        )
        .await;
        assert!(abandoned.is_err(), "the command outlived the timeout");
        drop(lease);
        starts_its_own_transaction(&set).await;
    }

    /// The same for a transaction whose statements run one call at a time
    /// and whose caller goes away between two of them.
    #[tokio::test]
    async fn a_transaction_left_open_between_calls_does_not_reach_the_next_lease() {
        let dir = tempfile::tempdir().unwrap();
        let set = one_connection(&dir, 1).await;
        let mut lease = set.get().await.unwrap();
        sqlx::query("BEGIN IMMEDIATE")
            .execute(&mut lease)
            .await
            .unwrap();
        drop(lease);
        starts_its_own_transaction(&set).await;
        // A command that failed part-way, whose caller left without
        // rolling back.
        let mut next = set.get().await.unwrap();
        let failed = sqlx::query("BEGIN IMMEDIATE; INSERT INTO nowhere VALUES (1); COMMIT")
            .execute(&mut next)
            .await;
        assert!(failed.is_err());
        drop(next);
        starts_its_own_transaction(&set).await;
    }

    #[test]
    fn only_a_dead_connection_thread_marks_the_lease() {
        let marks = Marks::default();
        for err in [sqlx::Error::RowNotFound, sqlx::Error::PoolTimedOut] {
            marks.sending("SELECT 1");
            marks.answered("SELECT 1", Err(&err));
        }
        assert!(marks.reusable());
        marks.sending("SELECT 1");
        marks.answered("SELECT 1", Err(&sqlx::Error::WorkerCrashed));
        assert!(!marks.reusable());
    }

    #[test]
    fn the_text_says_where_a_transaction_starts_and_ends() {
        let marks = Marks::default();
        marks.sending("BEGIN IMMEDIATE; INSERT INTO t VALUES (1); COMMIT");
        marks.answered("BEGIN IMMEDIATE; INSERT INTO t VALUES (1); COMMIT", Ok(()));
        assert!(marks.reusable(), "a whole transaction in one command");
        marks.sending("BEGIN IMMEDIATE");
        marks.answered("BEGIN IMMEDIATE", Ok(()));
        marks.sending("SELECT 1");
        marks.answered("SELECT 1", Ok(()));
        assert!(!marks.reusable(), "inside a transaction");
        marks.sending("COMMIT");
        marks.answered("COMMIT", Ok(()));
        assert!(marks.reusable(), "committed");
        let busy = sqlx::Error::PoolTimedOut;
        marks.sending("BEGIN IMMEDIATE");
        marks.answered("BEGIN IMMEDIATE", Err(&busy));
        assert!(marks.reusable(), "a failed BEGIN began nothing");
        marks.sending("BEGIN IMMEDIATE; UPDATE t SET x = 2; COMMIT");
        marks.answered("BEGIN IMMEDIATE; UPDATE t SET x = 2; COMMIT", Err(&busy));
        assert!(!marks.reusable(), "stopped part-way: until a ROLLBACK");
        marks.sending("ROLLBACK");
        marks.answered("ROLLBACK", Err(&busy));
        assert!(marks.reusable(), "rolled back, or nothing to roll back");
    }
}
