//! The audit trail's key and its signed checkpoints: AUDIT_KEY keys the
//! chain, AUDIT_CHECKPOINT_FILE holds the signed heads outside the database.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use super::{err, values, ConfigError, Environment, Vars};
use crate::domain::AuditKey;

#[derive(Debug, Clone)]
pub struct AuditConfig {
    /// Keys the audit chain and signs its checkpoints (AUDIT_KEY). `None`
    /// means "generate and persist one" (development only).
    pub audit_key: Option<AuditKey>,
    /// Where signed checkpoints of the audit chain are appended
    /// (AUDIT_CHECKPOINT_FILE, default `<DATA_DIR>/audit-checkpoints`).
    pub audit_checkpoint_file: PathBuf,
    /// How often the chain's head is checkpointed while it moves
    /// (AUDIT_CHECKPOINT_INTERVAL).
    pub audit_checkpoint_interval: Duration,
}

#[derive(Default, Deserialize)]
#[serde(default, rename_all = "SCREAMING_SNAKE_CASE")]
struct AuditVars {
    audit_key: Option<String>,
    audit_checkpoint_file: Option<String>,
    #[serde(deserialize_with = "values::timeout")]
    audit_checkpoint_interval: Option<Duration>,
}

impl AuditConfig {
    pub(super) fn read(
        vars: &Vars,
        environment: Environment,
        data_dir: &Path,
    ) -> Result<Self, ConfigError> {
        let v: AuditVars = vars.read()?;
        Ok(Self {
            audit_key: audit_key(environment, v.audit_key)?,
            audit_checkpoint_file: v
                .audit_checkpoint_file
                .map_or_else(|| data_dir.join("audit-checkpoints"), PathBuf::from),
            audit_checkpoint_interval: v
                .audit_checkpoint_interval
                .unwrap_or(Duration::from_secs(60)),
        })
    }
}

/// AUDIT_KEY: required in production (like the JWT secrets), optional in
/// development (a key is generated into the data directory). The value is
/// never echoed: it is a secret even when malformed.
fn audit_key(
    environment: Environment,
    value: Option<String>,
) -> Result<Option<AuditKey>, ConfigError> {
    match value {
        None if environment == Environment::Production => Err(err(
            "AUDIT_KEY",
            "must be set in production: 64 hex characters (`openssl rand -hex 32`), \
             kept outside the database and its backups",
        )),
        None => Ok(None),
        Some(v) => AuditKey::from_hex(&v).map(Some).ok_or_else(|| {
            err(
                "AUDIT_KEY",
                "must be exactly 64 hex characters (32 bytes, e.g. `openssl rand -hex 32`)",
            )
        }),
    }
}
