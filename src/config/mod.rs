//! Typed settings, read from the environment (and an optional `.env`) once
//! at start-up and validated there, so a bad value stops the process with one
//! line naming the variable instead of failing later mid-request.
//!
//! One section per concern, each in its own file: the variables it reads
//! (a serde struct that figment fills from the environment), their defaults
//! and the checks between them. The variable names are the ones the Python
//! service used and the README documents; they never change.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use figment::providers::Serialized;
use figment::Figment;
use serde::de::DeserializeOwned;
use serde::Deserialize;

mod accounts;
mod audit;
mod limits;
mod mail;
mod metrics;
mod mfa;
mod server;
mod sessions;
mod store;
mod tokens;
mod values;

pub use accounts::{AccountsConfig, RegistrationMode};
pub use audit::AuditConfig;
pub use limits::LimitsConfig;
pub use mail::{MailConfig, MailTransport};
pub use metrics::MetricsConfig;
pub use mfa::MfaConfig;
pub use server::{RefreshSameSite, ServerConfig};
pub use sessions::SessionsConfig;
pub use store::{redacted_uri, Database, RateLimitBackend, SqliteSynchronous, StoreConfig};
pub use tokens::{TokensConfig, MIN_SECRET_BYTES};
pub use values::parse_duration;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Environment {
    Development,
    Production,
}

/// The whole configuration, one field per section. `Debug` is safe to log:
/// secrets print redacted.
#[derive(Debug, Clone)]
pub struct Config {
    /// APP_ENV: production demands real secrets and logs JSON lines.
    pub environment: Environment,
    pub server: ServerConfig,
    pub store: StoreConfig,
    pub tokens: TokensConfig,
    pub audit: AuditConfig,
    pub mfa: MfaConfig,
    pub mail: MailConfig,
    pub limits: LimitsConfig,
    pub accounts: AccountsConfig,
    pub sessions: SessionsConfig,
    pub metrics: MetricsConfig,
}

/// A configuration problem, always naming the variable at fault.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{var}: {message}")]
pub struct ConfigError {
    pub var: String,
    pub message: String,
}

fn err(var: &str, message: impl Into<String>) -> ConfigError {
    ConfigError {
        var: var.to_owned(),
        message: message.into(),
    }
}

/// The variables as set, for the sections to read their own from. Each
/// section is a serde struct whose fields are the variables' names; the
/// readers in `values` refuse a bad value with the documented message, and
/// figment says which variable held it.
struct Vars(Figment, BTreeSet<String>);

impl Vars {
    /// Empty values count as unset, as in a `.env` copied from the example,
    /// and surrounding blanks are not part of a value.
    fn new(vars: impl IntoIterator<Item = (String, String)>) -> Self {
        let (set, blank): (BTreeMap<String, String>, BTreeMap<String, String>) = vars
            .into_iter()
            .map(|(k, v)| (k, v.trim().to_owned()))
            .partition(|(_, v)| !v.is_empty());
        Self(
            Figment::from(Serialized::defaults(set)),
            blank.into_keys().collect(),
        )
    }

    /// Set, but to nothing: for the one variable whose empty value means
    /// something of its own (MFA_REQUIRED_ROLES: no role), not the default.
    fn is_blank(&self, var: &str) -> bool {
        self.1.contains(var)
    }

    fn read<T: DeserializeOwned>(&self) -> Result<T, ConfigError> {
        self.0.extract().map_err(|e| {
            let var = e
                .path
                .last()
                .cloned()
                .unwrap_or_else(|| "configuration".into());
            let message = match e.kind {
                figment::error::Kind::Message(message) => message,
                other => other.to_string(),
            };
            ConfigError { var, message }
        })
    }
}

#[derive(Default, Deserialize)]
#[serde(default, rename_all = "SCREAMING_SNAKE_CASE")]
struct EnvironmentVars {
    app_env: Option<String>,
}

impl Config {
    /// Reads the process environment, after loading `.env` from the working
    /// directory when there is one (real environment variables win).
    pub fn from_env() -> Result<Self, ConfigError> {
        match dotenvy::dotenv() {
            Ok(_) => {}
            Err(e) if e.not_found() => {}
            Err(e) => return Err(err(".env", format!("cannot read the file: {e}"))),
        }
        // A variable that is not UTF-8 counts as unset, as `env::var` has it.
        Self::from_vars(
            std::env::vars_os()
                .filter_map(|(k, v)| Some((k.into_string().ok()?, v.into_string().ok()?))),
        )
    }

    /// Builds a configuration from explicit key/value pairs, as tests do.
    pub fn from_pairs(pairs: &[(&str, &str)]) -> Result<Self, ConfigError> {
        Self::from_vars(
            pairs
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned())),
        )
    }

    /// Reads every section, in the order the README lists them, so the
    /// first variable at fault is the one reported.
    pub fn from_vars(
        vars: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Self, ConfigError> {
        let vars = Vars::new(vars);
        let environment = match vars.read::<EnvironmentVars>()?.app_env.as_deref() {
            None | Some("development") => Environment::Development,
            Some("production") => Environment::Production,
            Some(other) => {
                return Err(err(
                    "APP_ENV",
                    format!("expected development or production, got {other:?}"),
                ))
            }
        };
        let server = ServerConfig::read(&vars)?;
        let store = StoreConfig::read(&vars)?;
        let tokens = TokensConfig::read(&vars, environment)?;
        let audit = AuditConfig::read(&vars, environment, &store.data_dir)?;
        let mfa = MfaConfig::read(&vars, environment)?;
        let mail = MailConfig::read(&vars)?;
        let limits = LimitsConfig::read(&vars, &store.database)?;
        let accounts = AccountsConfig::read(&vars)?;
        if let Some(unknown) = mfa
            .required_roles
            .iter()
            .find(|role| !accounts.roles.contains(role))
        {
            return Err(err(
                "MFA_REQUIRED_ROLES",
                format!(
                    "unknown role {:?}: this clinic's roles are {} (ROLES), or leave it empty for none",
                    unknown.as_str(),
                    accounts.roles.names()
                ),
            ));
        }
        let sessions = SessionsConfig::read(&vars)?;
        let metrics = MetricsConfig::read(&vars)?;
        Ok(Self {
            environment,
            server,
            store,
            tokens,
            audit,
            mfa,
            mail,
            limits,
            accounts,
            sessions,
            metrics,
        })
    }

    /// True when the public URL is https: cookies get `Secure` and a prefix,
    /// responses get HSTS.
    pub fn is_https(&self) -> bool {
        self.server.is_https()
    }

    pub fn is_production(&self) -> bool {
        self.environment == Environment::Production
    }

    /// The directory for generated secrets.
    pub fn data_dir(&self) -> &Path {
        &self.store.data_dir
    }
}

#[cfg(test)]
mod tests;
