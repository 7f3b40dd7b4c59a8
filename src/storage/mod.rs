//! Storage traits: what the services need from a database, and nothing more.
//!
//! Each aggregate has its own trait, in a file of its own here (`users`,
//! `refresh_tokens`, ...) and implemented in a file of the same name under
//! each backend; [`Store`] bundles them so the app can hand one
//! `Arc<dyn Store>` to the services. Backends (SQLite, MongoDB) live
//! beside this file and only `app/store.rs` picks one. Every backend must
//! pass the same conformance suite in `tests/storage.rs`.
//!
//! Rules every implementation follows:
//! - Times are UTC; expiry is always checked here in code, never left to a
//!   TTL monitor (MongoDB's runs about once a minute).
//! - Consuming a token is atomic: of two concurrent callers at most one wins.
//! - A lookup by an id the backend cannot even parse returns `Ok(None)`.

mod audit;
pub mod email_queue;
mod emergency;
mod health_probe;
mod login_throttles;
mod mfa;
pub mod mongo;
mod one_time_tokens;
mod rate_limits;
mod refresh_tokens;
pub mod sqlite;
mod users;
mod web_sessions;

pub use audit::{AuditQuery, AuditStore, ChainLink, AUDIT_PAGE_MAX};
pub use email_queue::{EmailQueueStore, NewQueuedEmail, QueueStats, QueuedEmail, QueuedLink};
pub(crate) use emergency::StoredEmergencyUse;
pub use emergency::{EmergencyFilter, EmergencyStore, EMERGENCY_PAGE_MAX};
pub use health_probe::HealthProbe;
pub use login_throttles::{LoginThrottle, LoginThrottleStore};
pub(crate) use mfa::{step_param, StoredCeremony, StoredPasskey, StoredTotp};
pub use mfa::{CeremonyKind, MfaStore, Passkey, PasskeyCeremony, TotpFactor};
pub use one_time_tokens::{NewLink, NewOneTimeToken, OneTimeTokenStore, TokenPurpose};
pub use rate_limits::RateLimitStore;
pub use refresh_tokens::{
    NewRefreshToken, RefreshTokenRecord, RefreshTokenStore, ReplayVerdict, Rotated, Rotation,
};
pub use users::{NewUser, UserQuery, UserStore, USER_PAGE_MAX};
pub use web_sessions::{WebSessionRecord, WebSessionStore};

// Invitations (issue 19).
mod invitations;
pub(crate) use invitations::StoredInvitation;
pub use invitations::{Invitation, InvitationStore, NewInvitation, INVITATIONS_LISTED_MAX};

// Access-token signing keys (issue 20).
pub(crate) mod signing_keys;
pub use signing_keys::{SigningKeyRecord, SigningKeyStore};

use async_trait::async_trait;
use chrono::{DateTime, Utc};

/// Why a store call failed, in the terms the services branch on.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// A unique constraint refused the write (duplicate email, jti, hash).
    #[error("unique constraint violated")]
    Conflict,
    /// The database cannot be reached right now; callers answer 503 and the
    /// backend is expected to recover by itself once it is back.
    #[error("database unavailable")]
    Unavailable(#[source] anyhow::Error),
    /// Anything else: a bug or corrupted data. Answered with a 500.
    #[error("storage error")]
    Other(#[source] anyhow::Error),
}

pub type StoreResult<T> = Result<T, StoreError>;

/// A count the database keeps as an i64 (failures, locks, send attempts), as
/// the u32 the services use. A value out of range, which this service never
/// writes, reads as `u32::MAX`: erring towards a lock or giving up rather
/// than towards a fresh start.
pub(crate) fn stored_count(n: i64) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}

/// An instant as a backend stores it: SQLite as Unix milliseconds (`i64`),
/// MongoDB as a BSON date. Each record's stored form (`StoredUser<_, T>`,
/// `StoredRefreshToken<T>`, ...) is declared once beside its trait, generic
/// over this, so that its field list and its conversion to the domain type
/// are the same code on both backends.
pub(crate) trait StoredInstant: Sized {
    fn from_utc(at: DateTime<Utc>) -> Self;

    /// Fails for a value no `DateTime<Utc>` can hold (damaged data).
    fn to_utc(self) -> StoreResult<DateTime<Utc>>;
}

/// Everything the services need, behind one object.
#[async_trait]
pub trait Store:
    UserStore
    + RefreshTokenStore
    + OneTimeTokenStore
    + LoginThrottleStore
    + WebSessionStore
    + MfaStore
    + AuditStore
    + EmailQueueStore
    + RateLimitStore
    + HealthProbe
    + EmergencyStore
    + InvitationStore
    + SigningKeyStore
{
    /// Deletes tokens that expired before `now`, and login throttles idle
    /// since `throttle_idle_before` (not locked and no failure since then);
    /// returns how many. Backends with their own expiry (MongoDB TTL
    /// indexes) may do less, but expired tokens must never be accepted
    /// either way.
    async fn purge_expired(
        &self,
        now: DateTime<Utc>,
        throttle_idle_before: DateTime<Utc>,
    ) -> StoreResult<u64>;

    /// A short name for logs and /health ("sqlite", "mongodb").
    fn backend(&self) -> &'static str;

    /// True when every write goes through one connection (SQLite): a
    /// background writer then runs on a thread of its own, so the writer is
    /// not held while its next step waits behind the request handlers.
    fn serialized_writes(&self) -> bool {
        false
    }
}
