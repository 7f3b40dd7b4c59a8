//! The JWT secrets and the audit key: the configured ones, or (development
//! only) ones generated once into the data directory, so tokens and the
//! audit chain survive a restart.

use std::io::Write;
use std::path::Path;

use anyhow::Context;
use secrecy::{ExposeSecret, SecretString};

use crate::config::Config;
use crate::domain::mfa::MfaKey;
use crate::domain::AuditKey;

const SECRETS_FILE: &str = "jwt-secrets";

/// The configured JWT secrets, or (development only, when none are set)
/// secrets generated once and kept in the data directory so tokens survive
/// a restart. Config validation already refused production without them.
/// The access secret is `None` when access tokens are signed with a key
/// pair (JWT_ACCESS_ALGORITHM ES256 or EdDSA) and none was configured.
pub(super) fn jwt_secrets(config: &Config) -> anyhow::Result<(Option<SecretString>, SecretString)> {
    let asymmetric = config.tokens.access_algorithm.is_asymmetric();
    match (
        &config.tokens.jwt_access_secret,
        &config.tokens.jwt_refresh_secret,
    ) {
        (Some(a), Some(r)) => {
            if a.expose_secret().len() < crate::config::MIN_SECRET_BYTES {
                tracing::warn!("JWT secrets shorter than 32 bytes: acceptable in development only");
            }
            return Ok((Some(a.clone()), r.clone()));
        }
        (None, Some(r)) if asymmetric => return Ok((None, r.clone())),
        _ => {}
    }
    let path = config.data_dir().join(SECRETS_FILE);
    let (access, refresh) = load_or_create_secrets(&path)?;
    tracing::warn!(
        file = %path.display(),
        "JWT_ACCESS_SECRET/JWT_REFRESH_SECRET not set: using generated development secrets from this file; \
         set both (and APP_ENV=production) before going live"
    );
    Ok(((!asymmetric).then_some(access), refresh))
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
    // Never replaced when damaged: a new key would make every keyed record
    // fail verification.
    development_key(
        config,
        DevelopmentKey {
            file: AUDIT_KEY_FILE,
            variable: "AUDIT_KEY",
            used_for: "keying the audit trail",
        },
        || AuditKey::generate().to_hex(),
        AuditKey::from_hex,
    )
}

const MFA_KEY_FILE: &str = "mfa-key";

/// The configured MFA_ENCRYPTION_KEY, or (development only, when none is
/// set) a key generated once and kept in the data directory, so enrolled
/// authenticators still open after a restart. Config validation already
/// refused production without one.
pub fn mfa_key(config: &Config) -> anyhow::Result<MfaKey> {
    if let Some(key) = &config.mfa.mfa_encryption_key {
        return Ok(key.clone());
    }
    // Never replaced when damaged: a new key would leave every enrolled
    // authenticator secret and recovery code unusable.
    development_key(
        config,
        DevelopmentKey {
            file: MFA_KEY_FILE,
            variable: "MFA_ENCRYPTION_KEY",
            used_for: "sealing authenticator secrets",
        },
        || MfaKey::generate().to_hex(),
        MfaKey::from_hex,
    )
}

/// Which generated development key, for the file name and the warning.
struct DevelopmentKey {
    file: &'static str,
    variable: &'static str,
    used_for: &'static str,
}

/// A 32-byte key kept as 64 hex characters in `$DATA_DIR/<file>`, made
/// once with `generate` and read back with `parse`. A damaged file stops
/// start-up: replacing it would lose what the old key protects.
fn development_key<K>(
    config: &Config,
    key: DevelopmentKey,
    generate: impl FnOnce() -> String,
    parse: impl FnOnce(&str) -> Option<K>,
) -> anyhow::Result<K> {
    let path = config.data_dir().join(key.file);
    let text = load_or_create_file(&path, || format!("{}\n", generate()))?;
    let parsed = parse(&text).with_context(|| {
        format!(
            "{} is damaged (it must hold 64 hex characters); restore it from a backup",
            path.display()
        )
    })?;
    tracing::warn!(
        file = %path.display(),
        "{} not set: {} with the generated development key from this file; \
         set {} (and APP_ENV=production) before going live",
        key.variable,
        key.used_for,
        key.variable,
    );
    Ok(parsed)
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

#[cfg(test)]
mod tests {
    use super::*;

    /// Generated once (0600), then read back unchanged; a damaged file
    /// stops start-up rather than being replaced.
    #[test]
    fn the_development_key_is_generated_once_and_kept() {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        let config = Config::from_pairs(&[("DATA_DIR", data.to_str().unwrap())]).unwrap();
        let first = mfa_key(&config).unwrap();
        assert_eq!(mfa_key(&config).unwrap().to_hex(), first.to_hex());
        let file = data.join(MFA_KEY_FILE);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&file).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        std::fs::write(&file, "damaged").unwrap();
        let err = mfa_key(&config).unwrap_err().to_string();
        assert!(err.contains("damaged"), "{err}");

        let hex = "00112233445566778899aabbccddeeff".repeat(2);
        let configured = Config::from_pairs(&[
            ("DATA_DIR", data.to_str().unwrap()),
            ("MFA_ENCRYPTION_KEY", &hex),
        ])
        .unwrap();
        assert_eq!(
            mfa_key(&configured).unwrap().to_hex(),
            hex,
            "the variable wins"
        );
    }
}
