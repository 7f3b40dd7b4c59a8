//! What signs the tokens and how long each kind lives: the access-token
//! algorithm (JWT_ACCESS_ALGORITHM), the JWT secrets, access and refresh
//! lifetimes, the refresh idle and reuse windows, and
//! the reset and verification links.

use std::time::Duration;

use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;

use super::{err, values, ConfigError, Environment, Vars};
use crate::domain::signing_key::AccessAlgorithm;

/// Smallest JWT secret accepted in production: HS256 keys should carry at
/// least the hash's 256 bits.
pub const MIN_SECRET_BYTES: usize = 32;

#[derive(Debug, Clone)]
pub struct TokensConfig {
    /// JWT_ACCESS_ALGORITHM: how access tokens are signed. ES256 unless
    /// set, or HS256 when only the original's JWT_ACCESS_SECRET is set (its
    /// shared-secret consumers keep verifying).
    pub access_algorithm: AccessAlgorithm,
    /// `None` means "generate and persist one" (development only); unused
    /// unless `access_algorithm` is HS256.
    pub jwt_access_secret: Option<SecretString>,
    pub jwt_refresh_secret: Option<SecretString>,
    pub jwt_access_ttl: Duration,
    /// How long a refresh family lives after sign-in, however often it is
    /// refreshed (JWT_REFRESH_EXPIRES).
    pub jwt_refresh_ttl: Duration,
    /// An API sign-in whose refresh token has not been used for this long
    /// is over (REFRESH_IDLE_TIMEOUT): the HIPAA automatic log-off for apps.
    pub refresh_idle_timeout: Duration,
    /// A rotated refresh token presented again this soon is a second tab,
    /// not a thief (REFRESH_REUSE_GRACE; zero means strict single use).
    pub refresh_reuse_grace: Duration,
    pub reset_token_ttl: Duration,
    pub verification_token_ttl: Duration,
    /// How long an invitation link works (INVITE_EXPIRES, issue 19).
    pub invite_ttl: Duration,
}

/// INVITE_EXPIRES bounds: at least an hour (someone must get to their
/// mail), at most 30 days (a forgotten link should not stay a way in).
const INVITE_TTL_MIN: Duration = Duration::from_secs(3600);
const INVITE_TTL_MAX: Duration = Duration::from_secs(30 * 86_400);

#[derive(Default, Deserialize)]
#[serde(default, rename_all = "SCREAMING_SNAKE_CASE")]
struct TokensVars {
    jwt_access_algorithm: Option<String>,
    jwt_access_secret: Option<String>,
    jwt_refresh_secret: Option<String>,
    #[serde(deserialize_with = "values::duration")]
    jwt_access_expires: Option<Duration>,
    #[serde(deserialize_with = "values::duration")]
    jwt_refresh_expires: Option<Duration>,
    #[serde(deserialize_with = "values::number")]
    reset_token_expires_min: Option<u64>,
    #[serde(deserialize_with = "values::duration")]
    refresh_idle_timeout: Option<Duration>,
    #[serde(deserialize_with = "values::duration")]
    refresh_reuse_grace: Option<Duration>,
    #[serde(deserialize_with = "values::duration")]
    verification_token_expires: Option<Duration>,
    #[serde(deserialize_with = "values::duration")]
    invite_expires: Option<Duration>,
}

impl TokensConfig {
    pub(super) fn read(vars: &Vars, environment: Environment) -> Result<Self, ConfigError> {
        let v: TokensVars = vars.read()?;
        let jwt_access_secret = v.jwt_access_secret.map(SecretString::from);
        let jwt_refresh_secret = v.jwt_refresh_secret.map(SecretString::from);
        let access_algorithm = match v.jwt_access_algorithm.as_deref() {
            Some(text) => AccessAlgorithm::parse(text).ok_or_else(|| {
                err(
                    "JWT_ACCESS_ALGORITHM",
                    format!("expected ES256, EdDSA or HS256, got {text:?}"),
                )
            })?,
            // A deployment of the original service sets the secret and
            // nothing else: its tokens stay HS256 so its consumers, which
            // hold the secret, keep verifying.
            None if jwt_access_secret.is_some() => AccessAlgorithm::Hs256,
            None => AccessAlgorithm::Es256,
        };
        check_secrets(
            environment,
            access_algorithm,
            jwt_access_secret.as_ref(),
            jwt_refresh_secret.as_ref(),
        )?;
        let jwt_access_ttl = v.jwt_access_expires.unwrap_or(Duration::from_secs(15 * 60));
        let jwt_refresh_ttl = v
            .jwt_refresh_expires
            .unwrap_or(Duration::from_secs(7 * 86_400));
        if jwt_access_ttl.is_zero() {
            return Err(err("JWT_ACCESS_EXPIRES", "must be longer than zero"));
        }
        if jwt_refresh_ttl <= jwt_access_ttl {
            return Err(err(
                "JWT_REFRESH_EXPIRES",
                "must be longer than JWT_ACCESS_EXPIRES",
            ));
        }
        let reset_minutes = v.reset_token_expires_min.unwrap_or(30);
        if reset_minutes == 0 || reset_minutes > 24 * 60 {
            return Err(err(
                "RESET_TOKEN_EXPIRES_MIN",
                "must be between 1 and 1440 minutes",
            ));
        }
        let refresh_idle_timeout = v
            .refresh_idle_timeout
            .unwrap_or(Duration::from_secs(30 * 60));
        if refresh_idle_timeout <= jwt_access_ttl {
            return Err(err(
                "REFRESH_IDLE_TIMEOUT",
                "must be longer than JWT_ACCESS_EXPIRES, or apps that refresh when their \
                 access token expires would be signed out while in use",
            ));
        }
        let refresh_reuse_grace = v.refresh_reuse_grace.unwrap_or(Duration::from_secs(5));
        if refresh_reuse_grace > Duration::from_secs(60) {
            return Err(err(
                "REFRESH_REUSE_GRACE",
                "must be at most 60s: a longer grace lets a stolen token be replayed",
            ));
        }
        let verification_token_ttl = v
            .verification_token_expires
            .unwrap_or(Duration::from_secs(86_400));
        if verification_token_ttl.is_zero() {
            return Err(err(
                "VERIFICATION_TOKEN_EXPIRES",
                "must be longer than zero",
            ));
        }
        let invite_ttl = v.invite_expires.unwrap_or(Duration::from_secs(72 * 3600));
        if !(INVITE_TTL_MIN..=INVITE_TTL_MAX).contains(&invite_ttl) {
            return Err(err("INVITE_EXPIRES", "must be between 1h and 30days"));
        }
        Ok(Self {
            access_algorithm,
            jwt_access_secret,
            jwt_refresh_secret,
            jwt_access_ttl,
            jwt_refresh_ttl,
            refresh_idle_timeout,
            refresh_reuse_grace,
            reset_token_ttl: Duration::from_secs(reset_minutes * 60),
            verification_token_ttl,
            invite_ttl,
        })
    }
}

/// Development may leave both secrets out (they are generated); otherwise
/// both are set and differ, and production wants them strong. With an
/// asymmetric algorithm only JWT_REFRESH_SECRET is needed (access tokens
/// are signed with a stored key pair), and a JWT_ACCESS_SECRET set anyway
/// is checked all the same: it may still be what HS256 is switched back to.
fn check_secrets(
    environment: Environment,
    algorithm: AccessAlgorithm,
    access: Option<&SecretString>,
    refresh: Option<&SecretString>,
) -> Result<(), ConfigError> {
    match (access, refresh) {
        (None, None) if environment == Environment::Development => Ok(()),
        (None, _) if !algorithm.is_asymmetric() => Err(err(
            "JWT_ACCESS_SECRET",
            "must be set (at least 32 bytes, e.g. `openssl rand -hex 32`)",
        )),
        (_, None) => Err(err(
            "JWT_REFRESH_SECRET",
            "must be set (at least 32 bytes, e.g. `openssl rand -hex 32`)",
        )),
        (None, Some(r)) => {
            if environment == Environment::Production && r.expose_secret().len() < MIN_SECRET_BYTES
            {
                return Err(err(
                    "JWT_REFRESH_SECRET",
                    format!("must be at least {MIN_SECRET_BYTES} bytes in production"),
                ));
            }
            Ok(())
        }
        (Some(a), Some(r)) => {
            if environment == Environment::Production {
                for (var, secret) in [("JWT_ACCESS_SECRET", a), ("JWT_REFRESH_SECRET", r)] {
                    if secret.expose_secret().len() < MIN_SECRET_BYTES {
                        return Err(err(
                            var,
                            format!("must be at least {MIN_SECRET_BYTES} bytes in production"),
                        ));
                    }
                }
            }
            if a.expose_secret() == r.expose_secret() {
                return Err(err(
                    "JWT_REFRESH_SECRET",
                    "must differ from JWT_ACCESS_SECRET",
                ));
            }
            Ok(())
        }
    }
}
