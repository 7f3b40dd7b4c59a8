//! Where /metrics is served and who may read it.

use std::net::SocketAddr;

use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;

use super::{err, ConfigError, Vars, MIN_SECRET_BYTES};

#[derive(Debug, Clone)]
pub struct MetricsConfig {
    /// Serve /metrics on this address instead of the main listener.
    pub metrics_addr: Option<SocketAddr>,
    /// When set, /metrics answers only `Authorization: Bearer <token>`
    /// (METRICS_TOKEN); without it or METRICS_ADDR, production keeps
    /// /metrics off the main listener.
    pub metrics_token: Option<SecretString>,
}

#[derive(Default, Deserialize)]
#[serde(default, rename_all = "SCREAMING_SNAKE_CASE")]
struct MetricsVars {
    metrics_addr: Option<String>,
    metrics_token: Option<String>,
}

impl MetricsConfig {
    pub(super) fn read(vars: &Vars) -> Result<Self, ConfigError> {
        let v: MetricsVars = vars.read()?;
        let metrics_addr = match v.metrics_addr {
            None => None,
            Some(a) => Some(a.parse().map_err(|_| {
                err(
                    "METRICS_ADDR",
                    format!("expected an address like 127.0.0.1:9100, got {a:?}"),
                )
            })?),
        };
        let metrics_token = v.metrics_token.map(SecretString::from);
        if metrics_token
            .as_ref()
            .is_some_and(|t| t.expose_secret().len() < MIN_SECRET_BYTES)
        {
            // A scrape token guards the whole metrics feed: as strong as a
            // JWT secret (`openssl rand -hex 32`).
            return Err(err(
                "METRICS_TOKEN",
                format!("must be at least {MIN_SECRET_BYTES} characters"),
            ));
        }
        Ok(Self {
            metrics_addr,
            metrics_token,
        })
    }
}
