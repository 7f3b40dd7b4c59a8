//! MFA_ENCRYPTION_KEY at start-up: the configured key, or in development
//! one generated into the data directory, as the audit key is.

use anyhow::Context;

use super::load_or_create_file;
use crate::config::Config;
use crate::domain::mfa::MfaKey;

const MFA_KEY_FILE: &str = "mfa-key";

/// The configured MFA_ENCRYPTION_KEY, or (development only, when none is
/// set) a key generated once and kept in the data directory, so enrolled
/// authenticators still open after a restart. Config validation already
/// refused production without one.
pub fn mfa_key(config: &Config) -> anyhow::Result<MfaKey> {
    if let Some(key) = &config.mfa.mfa_encryption_key {
        return Ok(key.clone());
    }
    let path = config.data_dir().join(MFA_KEY_FILE);
    let text = load_or_create_file(&path, || format!("{}\n", MfaKey::generate().to_hex()))?;
    // Never replaced when damaged: a new key would leave every enrolled
    // authenticator secret and recovery code unusable.
    let key = MfaKey::from_hex(&text).with_context(|| {
        format!(
            "{} is damaged (it must hold 64 hex characters); restore it from a backup",
            path.display()
        )
    })?;
    tracing::warn!(
        file = %path.display(),
        "MFA_ENCRYPTION_KEY not set: sealing authenticator secrets with the generated development key from this file; \
         set MFA_ENCRYPTION_KEY (and APP_ENV=production) before going live"
    );
    Ok(key)
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
