//! Per-account lockout (ASVS 6.3.1) that cannot be turned into an
//! enumeration oracle or a cheap way to keep someone out for long.
//!
//! Failures are counted per submitted email string, whether or not an
//! account has it, so a locked answer says nothing about existence. A lock
//! starts short and doubles with each further lock, capped; a success or a
//! completed password reset forgets everything. The per-IP rate limits stay
//! in front of this: they bound how fast anyone can guess at all.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};

use super::audit::Audit;
use super::notifier::Notifier;
use super::{span, ClientContext, ServiceError};
use crate::clock::Clock;
use crate::domain::{AuditEvent, EmailAddress, TokenHash, User};
use crate::storage::{LoginThrottle, LoginThrottleStore};

/// When to lock and for how long.
#[derive(Debug, Clone)]
pub struct LockoutPolicy {
    /// Failures within `window` that lock the email.
    pub max_failures: u32,
    pub window: Duration,
    /// The first lock's length; each further one doubles it.
    pub first_lock: Duration,
    pub max_lock: Duration,
}

impl LockoutPolicy {
    /// How long the `nth` lock (1 for the first) lasts.
    pub fn lock_length(&self, nth: u32) -> Duration {
        let doublings = nth.saturating_sub(1).min(31);
        self.first_lock
            .checked_mul(1 << doublings)
            .unwrap_or(self.max_lock)
            .min(self.max_lock)
    }

    /// The lock to start now, given the state after the latest failure:
    /// `None` while the failures stay under the limit.
    pub fn lock_after(&self, state: &LoginThrottle) -> Option<Duration> {
        (state.failures >= self.max_failures).then(|| self.lock_length(state.lock_count + 1))
    }
}

/// The time left on a lock, if `state` is locked at `now`.
pub fn remaining(state: Option<&LoginThrottle>, now: DateTime<Utc>) -> Option<Duration> {
    let until = state?.locked_until?;
    (until > now).then(|| (until - now).to_std().unwrap_or_default())
}

/// The throttle key of a submitted email: the normalised address when it
/// parses (so "Ann@Clinic.org " and "ann@clinic.org" share a count, and a
/// reset can clear the owner's key), else the trimmed, lowercased string.
/// Only its SHA-256 is stored, so the table holds no addresses.
pub fn key(submitted: &str) -> TokenHash {
    match EmailAddress::parse(submitted) {
        Ok(email) => key_of(&email),
        Err(_) => TokenHash::of(&format!(
            "login-throttle:{}",
            submitted.trim().to_lowercase()
        )),
    }
}

/// The key of an account's own address (for clearing it after a reset).
pub fn key_of(email: &EmailAddress) -> TokenHash {
    TokenHash::of(&format!("login-throttle:{}", email.as_str()))
}

/// The per-email lock as sign-in and the password change use it.
pub struct Lockout {
    throttles: Arc<dyn LoginThrottleStore>,
    policy: LockoutPolicy,
    audit: Audit,
    notifier: Arc<Notifier>,
    clock: Arc<dyn Clock>,
}

impl Lockout {
    pub fn new(
        throttles: Arc<dyn LoginThrottleStore>,
        policy: LockoutPolicy,
        audit: Audit,
        notifier: Arc<Notifier>,
        clock: Arc<dyn Clock>,
    ) -> Self {
        Self {
            throttles,
            policy,
            audit,
            notifier,
            clock,
        }
    }

    /// The stored failures and lock of `key`, if any.
    pub async fn state(&self, key: &TokenHash) -> Result<Option<LoginThrottle>, ServiceError> {
        Ok(self.throttles.login_throttle(key).await?)
    }

    /// The time left on the lock in `state`, if it is locked now.
    pub fn remaining(&self, state: Option<&LoginThrottle>) -> Option<Duration> {
        remaining(state, self.clock.now())
    }

    /// Forgets the failures and lock of `key` (a success, a completed reset).
    pub async fn clear(&self, key: &TokenHash) -> Result<(), ServiceError> {
        Ok(self.throttles.clear_login_throttle(key).await?)
    }

    /// A wrong current password from someone already signed in (changing
    /// the password, removing a factor) is a credential guess like a
    /// sign-in: recorded as a `login_failure` with `detail`, counted toward
    /// the same per-email lock, and refused. Counted even when the record
    /// times out, as at sign-in.
    pub async fn wrong_current_password(
        &self,
        key: &TokenHash,
        user: &User,
        client: &ClientContext,
        detail: &'static str,
    ) -> ServiceError {
        let entry = self
            .audit
            .entry(AuditEvent::LoginFailure, client)
            .user(&user.id)
            .email(user.email.as_str())
            .detail(detail);
        let recorded = self.audit.record(entry).await;
        if let Err(e) = self
            .count_failure(key, user.email.as_str(), Some(user), client)
            .await
        {
            return e;
        }
        match recorded {
            Err(e) => e,
            Ok(_) => ServiceError::WrongCurrentPassword,
        }
    }

    /// Counts a failed sign-in against the submitted email and starts a lock
    /// when it reaches the limit. The owner of an existing account hears
    /// about each lock once, from whichever request started it.
    pub async fn count_failure(
        &self,
        key: &TokenHash,
        submitted_email: &str,
        user: Option<&User>,
        client: &ClientContext,
    ) -> Result<(), ServiceError> {
        let now = self.clock.now();
        let state = self
            .throttles
            .add_login_failure(key, now, now - span(self.policy.window))
            .await?;
        let Some(length) = self.policy.lock_after(&state) else {
            return Ok(());
        };
        if !self
            .throttles
            .lock_login(key, now + span(length), now)
            .await?
        {
            return Ok(());
        }
        metrics::counter!(crate::metrics::ACCOUNT_LOCKS).increment(1);
        tracing::warn!(
            user_id = user.map(|u| u.id.as_str()),
            lock_seconds = length.as_secs(),
            "sign-in locked after repeated failures"
        );
        let mut entry = self
            .audit
            .entry(AuditEvent::AccountLocked, client)
            .email(submitted_email)
            .detail(format!("lock_seconds={}", length.as_secs()));
        if let Some(user) = user {
            entry = entry.user(&user.id);
        }
        self.audit.record(entry).await?;
        if let Some(user) = user {
            self.notifier.account_locked(user, now, length).await;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> LockoutPolicy {
        LockoutPolicy {
            max_failures: 5,
            window: Duration::from_secs(900),
            first_lock: Duration::from_secs(60),
            max_lock: Duration::from_secs(3600),
        }
    }

    #[test]
    fn locks_double_up_to_the_cap() {
        let p = policy();
        let minutes: Vec<u64> = (1..=9).map(|n| p.lock_length(n).as_secs() / 60).collect();
        assert_eq!(minutes, [1, 2, 4, 8, 16, 32, 60, 60, 60]);
        assert_eq!(p.lock_length(u32::MAX), Duration::from_secs(3600));
    }

    #[test]
    fn the_limit_th_failure_locks() {
        let p = policy();
        let state = |failures, lock_count| LoginThrottle {
            failures,
            window_started_at: Utc::now(),
            locked_until: None,
            lock_count,
        };
        assert_eq!(p.lock_after(&state(4, 0)), None);
        assert_eq!(p.lock_after(&state(5, 0)), Some(Duration::from_secs(60)));
        assert_eq!(p.lock_after(&state(5, 2)), Some(Duration::from_secs(240)));
    }

    #[test]
    fn keys_ignore_case_and_spaces_and_match_the_owner() {
        assert_eq!(key(" Ann@Clinic.ORG "), key("ann@clinic.org"));
        let owner = EmailAddress::parse("ann@clinic.org").unwrap();
        assert_eq!(key("ANN@clinic.org"), key_of(&owner));
        assert_eq!(key(" Not An Email "), key("not an email"));
        assert_ne!(key("ann@clinic.org"), key("bob@clinic.org"));
    }
}
