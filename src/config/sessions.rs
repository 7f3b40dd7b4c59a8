//! Portal sessions: when a signed-in browser is signed out for being idle
//! (the HIPAA automatic log-off) or simply for being old; and how long an
//! emergency access window lasts.

use std::time::Duration;

use serde::Deserialize;

use super::{err, values, ConfigError, Vars};

#[derive(Debug, Clone)]
pub struct SessionsConfig {
    /// Portal sign-out after this long without a request (HIPAA automatic
    /// log-off).
    pub session_idle_timeout: Duration,
    /// Portal sign-out this long after sign-in, however active.
    pub session_max_lifetime: Duration,
    /// EMERGENCY_ACCESS_TTL (default 60 minutes, at most 12 hours): how
    /// long emergency access lasts once started; never extended.
    pub emergency_access_ttl: Duration,
}

#[derive(Default, Deserialize)]
#[serde(default, rename_all = "SCREAMING_SNAKE_CASE")]
struct SessionsVars {
    #[serde(deserialize_with = "values::duration")]
    session_idle_timeout: Option<Duration>,
    #[serde(deserialize_with = "values::duration")]
    session_max_lifetime: Option<Duration>,
    #[serde(deserialize_with = "values::duration")]
    emergency_access_ttl: Option<Duration>,
}

impl SessionsConfig {
    pub(super) fn read(vars: &Vars) -> Result<Self, ConfigError> {
        let v: SessionsVars = vars.read()?;
        let session_idle_timeout = v
            .session_idle_timeout
            .unwrap_or(Duration::from_secs(15 * 60));
        let session_max_lifetime = v
            .session_max_lifetime
            .unwrap_or(Duration::from_secs(12 * 3600));
        if session_idle_timeout.is_zero() {
            return Err(err("SESSION_IDLE_TIMEOUT", "must be longer than zero"));
        }
        if session_max_lifetime < session_idle_timeout {
            return Err(err(
                "SESSION_MAX_LIFETIME",
                "must be at least SESSION_IDLE_TIMEOUT",
            ));
        }
        let emergency_access_ttl = v
            .emergency_access_ttl
            .unwrap_or(Duration::from_secs(60 * 60));
        // Break-glass is for the situation at hand, not a shift's worth of
        // standing access.
        if emergency_access_ttl.is_zero() || emergency_access_ttl > Duration::from_secs(12 * 3600) {
            return Err(err(
                "EMERGENCY_ACCESS_TTL",
                "must be longer than zero and at most 12h",
            ));
        }
        Ok(Self {
            session_idle_timeout,
            session_max_lifetime,
            emergency_access_ttl,
        })
    }
}
