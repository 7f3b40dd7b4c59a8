//! How much one client or one account may ask for: the per-IP rate limits
//! (and where their counters live), the sign-in lockout, and the emails one
//! account may be sent per hour.

use std::time::Duration;

use serde::Deserialize;

use super::store::rate_limit_backend;
use super::{err, values, ConfigError, Database, RateLimitBackend, Vars};

#[derive(Debug, Clone)]
pub struct LimitsConfig {
    pub rate_limit_auth_per_min: u32,
    pub rate_limit_global_per_min: u32,
    /// IPv6 clients are rate limited per network of this many bits
    /// (RATE_LIMIT_IPV6_PREFIX): one /64 is usually one site or host.
    pub rate_limit_ipv6_prefix: u8,
    /// Where the per-IP rate-limit counters live (RATE_LIMIT_BACKEND).
    pub rate_limit_backend: RateLimitBackend,
    /// Failed sign-ins per email within `login_failure_window` before the
    /// email is locked (LOGIN_MAX_FAILURES).
    pub login_max_failures: u32,
    pub login_failure_window: Duration,
    /// First lock's length; each further lock doubles it, up to the max.
    pub login_lockout: Duration,
    pub login_lockout_max: Duration,
    /// Reset and verification emails one account may be sent per hour,
    /// whatever the IPs asking (MAIL_PER_ACCOUNT_PER_HOUR).
    pub mail_per_account_per_hour: u32,
}

#[derive(Default, Deserialize)]
#[serde(default, rename_all = "SCREAMING_SNAKE_CASE")]
struct LimitsVars {
    #[serde(deserialize_with = "values::number")]
    rate_limit_auth_per_min: Option<u32>,
    #[serde(deserialize_with = "values::number")]
    rate_limit_global_per_min: Option<u32>,
    #[serde(deserialize_with = "values::number")]
    rate_limit_ipv6_prefix: Option<u8>,
    rate_limit_backend: Option<String>,
    #[serde(deserialize_with = "values::number")]
    login_max_failures: Option<u32>,
    #[serde(deserialize_with = "values::duration")]
    login_failure_window: Option<Duration>,
    #[serde(deserialize_with = "values::duration")]
    login_lockout: Option<Duration>,
    #[serde(deserialize_with = "values::duration")]
    login_lockout_max: Option<Duration>,
    #[serde(deserialize_with = "values::number")]
    mail_per_account_per_hour: Option<u32>,
}

impl LimitsConfig {
    pub(super) fn read(vars: &Vars, database: &Database) -> Result<Self, ConfigError> {
        let v: LimitsVars = vars.read()?;
        let limits = Self {
            rate_limit_auth_per_min: v.rate_limit_auth_per_min.unwrap_or(10),
            rate_limit_global_per_min: v.rate_limit_global_per_min.unwrap_or(300),
            rate_limit_ipv6_prefix: v.rate_limit_ipv6_prefix.unwrap_or(64),
            rate_limit_backend: rate_limit_backend(v.rate_limit_backend, database)?,
            login_max_failures: v.login_max_failures.unwrap_or(5),
            login_failure_window: v
                .login_failure_window
                .unwrap_or(Duration::from_secs(15 * 60)),
            login_lockout: v.login_lockout.unwrap_or(Duration::from_secs(60)),
            login_lockout_max: v.login_lockout_max.unwrap_or(Duration::from_secs(3600)),
            mail_per_account_per_hour: v.mail_per_account_per_hour.unwrap_or(3),
        };
        for (var, value) in [
            ("RATE_LIMIT_AUTH_PER_MIN", limits.rate_limit_auth_per_min),
            (
                "RATE_LIMIT_GLOBAL_PER_MIN",
                limits.rate_limit_global_per_min,
            ),
            ("LOGIN_MAX_FAILURES", limits.login_max_failures),
            // Zero would make a password reset impossible, not safer.
            (
                "MAIL_PER_ACCOUNT_PER_HOUR",
                limits.mail_per_account_per_hour,
            ),
        ] {
            if value == 0 {
                return Err(err(var, "must be at least 1"));
            }
        }
        if !(1..=128).contains(&limits.rate_limit_ipv6_prefix) {
            return Err(err(
                "RATE_LIMIT_IPV6_PREFIX",
                "must be a prefix length between 1 and 128",
            ));
        }
        for (var, value) in [
            ("LOGIN_FAILURE_WINDOW", limits.login_failure_window),
            ("LOGIN_LOCKOUT", limits.login_lockout),
        ] {
            if value.is_zero() {
                return Err(err(var, "must be longer than zero"));
            }
        }
        if limits.login_lockout_max < limits.login_lockout {
            return Err(err("LOGIN_LOCKOUT_MAX", "must be at least LOGIN_LOCKOUT"));
        }
        Ok(limits)
    }
}
