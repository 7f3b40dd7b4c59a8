//! Opening the configured store: the only code that names a concrete
//! backend. The service and the CLI both open it here; everything else
//! sees the storage traits.

use std::sync::Arc;

use crate::config::{Config, Database, SqliteSynchronous};
use crate::storage::mongo::MongoStore;
use crate::storage::sqlite::{self, SqliteStore};
use crate::storage::Store;

/// Opens the configured store (SQLite file, or MongoDB when MONGO_URI is set).
pub async fn open_store(config: &Config) -> anyhow::Result<Arc<dyn Store>> {
    Ok(match &config.store.database {
        Database::Sqlite { url } => {
            let synchronous = match config.store.sqlite_synchronous {
                SqliteSynchronous::Full => sqlite::SqliteSynchronous::Full,
                SqliteSynchronous::Normal => sqlite::SqliteSynchronous::Normal,
            };
            tracing::info!(synchronous = ?config.store.sqlite_synchronous, "SQLite commits");
            Arc::new(SqliteStore::connect_with(url, synchronous).await?)
        }
        Database::Mongo { uri } => Arc::new(MongoStore::connect(uri).await?),
    })
}
