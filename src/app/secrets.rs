//! The JWT secrets and the audit key: the configured ones, or (development
//! only) ones generated once into the data directory, so tokens and the
//! audit chain survive a restart.

use std::io::Write;
use std::path::Path;

use anyhow::Context;
use secrecy::{ExposeSecret, SecretString};

use crate::config::Config;
use crate::domain::AuditKey;

const SECRETS_FILE: &str = "jwt-secrets";

/// The configured JWT secrets, or (development only, when none are set)
/// secrets generated once and kept in the data directory so tokens survive
/// a restart. Config validation already refused production without them.
pub(super) fn jwt_secrets(config: &Config) -> anyhow::Result<(SecretString, SecretString)> {
    if let (Some(a), Some(r)) = (
        &config.tokens.jwt_access_secret,
        &config.tokens.jwt_refresh_secret,
    ) {
        if config
            .tokens
            .jwt_access_secret
            .as_ref()
            .map(|s| s.expose_secret().len())
            < Some(crate::config::MIN_SECRET_BYTES)
        {
            tracing::warn!("JWT secrets shorter than 32 bytes: acceptable in development only");
        }
        return Ok((a.clone(), r.clone()));
    }
    let path = config.data_dir().join(SECRETS_FILE);
    let secrets = load_or_create_secrets(&path)?;
    tracing::warn!(
        file = %path.display(),
        "JWT_ACCESS_SECRET/JWT_REFRESH_SECRET not set: using generated development secrets from this file; \
         set both (and APP_ENV=production) before going live"
    );
    Ok(secrets)
}

fn load_or_create_secrets(path: &Path) -> anyhow::Result<(SecretString, SecretString)> {
    let parse = |text: &str| -> Option<(SecretString, SecretString)> {
        let mut lines = text.lines().map(str::trim).filter(|l| !l.is_empty());
        let access = lines.next()?.to_owned();
        let refresh = lines.next()?.to_owned();
        (access.len() >= 32 && refresh.len() >= 32 && access != refresh)
            .then(|| (SecretString::from(access), SecretString::from(refresh)))
    };
    let text = load_or_create_file(path, || {
        format!(
            "{}\n{}\n",
            crate::domain::token::random_token(),
            crate::domain::token::random_token()
        )
    })?;
    parse(&text).with_context(|| {
        format!(
            "{} is damaged; delete it to generate new secrets",
            path.display()
        )
    })
}

const AUDIT_KEY_FILE: &str = "audit-key";

/// The configured AUDIT_KEY, or (development only, when none is set) a key
/// generated once and kept in the data directory, so the chain stays
/// verifiable across restarts. Config validation already refused production
/// without one. The service and the CLI both load it here, so both key the
/// chain alike.
pub fn audit_key(config: &Config) -> anyhow::Result<AuditKey> {
    if let Some(key) = &config.audit.audit_key {
        return Ok(key.clone());
    }
    let path = config.data_dir().join(AUDIT_KEY_FILE);
    let text = load_or_create_file(&path, || format!("{}\n", AuditKey::generate().to_hex()))?;
    // Never replaced when damaged: a new key would make every keyed record
    // fail verification.
    let key = AuditKey::from_hex(&text).with_context(|| {
        format!(
            "{} is damaged (it must hold 64 hex characters); restore it from a backup",
            path.display()
        )
    })?;
    tracing::warn!(
        file = %path.display(),
        "AUDIT_KEY not set: keying the audit trail with the generated development key from this file; \
         set AUDIT_KEY (and APP_ENV=production) before going live"
    );
    Ok(key)
}

/// The text of `path`, first creating it (0600, its directory 0700) with
/// `make()` when it does not exist. Another process creating it at the same
/// moment wins, and both read what it wrote.
fn load_or_create_file(path: &Path, make: impl FnOnce() -> String) -> anyhow::Result<String> {
    match std::fs::read_to_string(path) {
        Ok(text) => return Ok(text),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e).with_context(|| format!("cannot read {}", path.display())),
    }
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        crate::private_fs::create_dir(dir)
            .with_context(|| format!("cannot create {}", dir.display()))?;
    }
    match crate::private_fs::file_options()
        .write(true)
        .create_new(true)
        .open(path)
    {
        Ok(mut file) => {
            file.write_all(make().as_bytes())?;
            file.sync_all()?;
        }
        // Another instance won the race: use what it wrote.
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(e).with_context(|| format!("cannot create {}", path.display())),
    }
    std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))
}
