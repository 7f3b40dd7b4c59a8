//! Schema changes that sqlx's SQLite migrator cannot make. It runs every
//! migration inside a transaction, where `PRAGMA foreign_keys` is a no-op,
//! and rebuilding a table that others reference needs foreign keys off:
//! with them on, dropping the old table runs ON DELETE CASCADE into every
//! table that points at it, and renaming it rewrites their REFERENCES.
//! Each change here is idempotent (it looks before it acts, again inside
//! its write transaction, so instances starting together do it once).

use anyhow::Context;
use sqlx::{Executor, SqliteConnection};

/// The first release listed the two roles it knew; each clinic now names
/// its own (ROLES, issue 19).
const ROLE_CHECK_BEFORE: &str = "CHECK (role IN ('doctor', 'admin'))";
const ROLE_CHECK_AFTER: &str = "CHECK (role <> '')";

/// Lifts the users table's role CHECK by rebuilding the table (SQLite
/// cannot drop a constraint), the documented way: foreign keys off, copy
/// into a new table, drop, rename, check, commit.
pub(super) async fn lift_role_check(conn: &mut SqliteConnection) -> anyhow::Result<()> {
    if !users_table_sql(conn).await?.contains(ROLE_CHECK_BEFORE) {
        return Ok(());
    }
    conn.execute("PRAGMA foreign_keys = OFF").await?;
    let rebuilt = rebuild_users(conn).await;
    if rebuilt.is_err() {
        // Leaves the table as it was; the error says why.
        let _ = conn.execute("ROLLBACK").await;
    }
    conn.execute("PRAGMA foreign_keys = ON").await?;
    rebuilt.context("cannot lift the users table's role constraint")
}

async fn users_table_sql(conn: &mut SqliteConnection) -> anyhow::Result<String> {
    Ok(
        sqlx::query_scalar("SELECT sql FROM sqlite_schema WHERE type = 'table' AND name = 'users'")
            .fetch_one(&mut *conn)
            .await?,
    )
}

async fn rebuild_users(conn: &mut SqliteConnection) -> anyhow::Result<()> {
    conn.execute("BEGIN IMMEDIATE").await?;
    // Another instance may have done it while we waited for the lock.
    let before = users_table_sql(conn).await?;
    if !before.contains(ROLE_CHECK_BEFORE) {
        conn.execute("COMMIT").await?;
        return Ok(());
    }
    // The stored definition, columns added by later ALTERs included, with
    // only the constraint and the name changed: the copy below is by
    // position.
    let create = before
        .replacen("CREATE TABLE users (", "CREATE TABLE users_rebuilt (", 1)
        .replace(ROLE_CHECK_BEFORE, ROLE_CHECK_AFTER);
    anyhow::ensure!(
        create.starts_with("CREATE TABLE users_rebuilt ("),
        "unexpected users table definition"
    );
    conn.execute(create.as_str()).await?;
    conn.execute("INSERT INTO users_rebuilt SELECT * FROM users")
        .await?;
    conn.execute("DROP TABLE users").await?;
    conn.execute("ALTER TABLE users_rebuilt RENAME TO users")
        .await?;
    let dangling = sqlx::query("PRAGMA foreign_key_check")
        .fetch_all(&mut *conn)
        .await?;
    anyhow::ensure!(
        dangling.is_empty(),
        "{} rows would point at no user",
        dangling.len()
    );
    conn.execute("COMMIT").await?;
    Ok(())
}
