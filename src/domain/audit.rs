//! The audit trail's vocabulary (HIPAA 164.312(b) audit controls, (c)
//! integrity): which security events exist, what one record holds, and how
//! a record is hashed into the chain.
//!
//! Every record stores the SHA-256 of its canonical content, and that content
//! includes the previous record's hash, so altering, removing or reordering
//! any stored record breaks the chain from that point on. Only non-secret
//! facts go in: never a password, a hash of one, or a raw token.

use std::fmt;

use chrono::{DateTime, SecondsFormat, Utc};
use serde::Serialize;
use sha2::{Digest, Sha256};

/// The `prev_hash` of the first record: there is nothing before it.
pub const GENESIS_HASH: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// Longest attempted email kept in a record: a failed login may carry
/// anything, and what we store must stay bounded (RFC 5321 path limit).
pub const MAX_EMAIL_CHARS: usize = 254;

/// The security events the service records.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum AuditEvent {
    Register,
    LoginSuccess,
    LoginFailure,
    AccountLocked,
    Refresh,
    RefreshReuseDetected,
    Logout,
    LogoutAll,
    SessionRevoked,
    PasswordResetRequested,
    PasswordResetCompleted,
    PasswordChanged,
    EmailVerified,
    RoleChanged,
}

impl AuditEvent {
    pub const ALL: [AuditEvent; 14] = [
        AuditEvent::Register,
        AuditEvent::LoginSuccess,
        AuditEvent::LoginFailure,
        AuditEvent::AccountLocked,
        AuditEvent::Refresh,
        AuditEvent::RefreshReuseDetected,
        AuditEvent::Logout,
        AuditEvent::LogoutAll,
        AuditEvent::SessionRevoked,
        AuditEvent::PasswordResetRequested,
        AuditEvent::PasswordResetCompleted,
        AuditEvent::PasswordChanged,
        AuditEvent::EmailVerified,
        AuditEvent::RoleChanged,
    ];

    /// The stored name; also what the admin API filters on. Never change one:
    /// stored records are hashed with it.
    pub fn as_str(self) -> &'static str {
        match self {
            AuditEvent::Register => "register",
            AuditEvent::LoginSuccess => "login_success",
            AuditEvent::LoginFailure => "login_failure",
            AuditEvent::AccountLocked => "account_locked",
            AuditEvent::Refresh => "refresh",
            AuditEvent::RefreshReuseDetected => "refresh_reuse_detected",
            AuditEvent::Logout => "logout",
            AuditEvent::LogoutAll => "logout_all",
            AuditEvent::SessionRevoked => "session_revoked",
            AuditEvent::PasswordResetRequested => "password_reset_requested",
            AuditEvent::PasswordResetCompleted => "password_reset_completed",
            AuditEvent::PasswordChanged => "password_changed",
            AuditEvent::EmailVerified => "email_verified",
            AuditEvent::RoleChanged => "role_changed",
        }
    }

    pub fn parse(value: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|e| e.as_str() == value)
    }

    /// What the event means by itself, so callers rarely have to say it.
    pub fn default_outcome(self) -> AuditOutcome {
        match self {
            AuditEvent::LoginFailure
            | AuditEvent::AccountLocked
            | AuditEvent::RefreshReuseDetected => AuditOutcome::Failure,
            _ => AuditOutcome::Success,
        }
    }
}

impl fmt::Display for AuditEvent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum AuditOutcome {
    Success,
    Failure,
}

impl AuditOutcome {
    pub fn as_str(self) -> &'static str {
        match self {
            AuditOutcome::Success => "success",
            AuditOutcome::Failure => "failure",
        }
    }

    pub fn parse(value: &str) -> Option<Self> {
        match value {
            "success" => Some(AuditOutcome::Success),
            "failure" => Some(AuditOutcome::Failure),
            _ => None,
        }
    }
}

/// One event to append; the store gives it its `seq` and hashes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewAuditEvent {
    /// Unique per event, chosen by the recorder. Lets a store without
    /// transactions (MongoDB) tell, when a batch is retried, which events
    /// already made it, so none is appended twice.
    pub id: String,
    /// Truncated to milliseconds, the precision both stores keep, so the
    /// hash computed at append matches the one recomputed on read.
    pub time: DateTime<Utc>,
    pub event: AuditEvent,
    pub outcome: AuditOutcome,
    /// The user concerned, when known.
    pub user_id: Option<String>,
    /// The email the request named (e.g. the attempted one of a failed
    /// login), at most [`MAX_EMAIL_CHARS`].
    pub email: Option<String>,
    pub ip: Option<String>,
    pub user_agent: Option<String>,
    /// The `X-Request-Id` of the request, to tie the record to the logs.
    pub request_id: Option<String>,
    /// A short, non-secret qualifier (e.g. `role=admin`).
    pub detail: Option<String>,
}

/// A stored record of the chain, as the admin API shows it too.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct AuditRecord {
    /// 1, 2, 3...: consecutive, so a removed record leaves a visible gap.
    pub seq: u64,
    pub time: DateTime<Utc>,
    pub event: AuditEvent,
    pub outcome: AuditOutcome,
    pub user_id: Option<String>,
    /// The email the request named (e.g. the attempted one of a failed login).
    pub email: Option<String>,
    pub ip: Option<String>,
    pub user_agent: Option<String>,
    /// The `X-Request-Id` of the request that caused it.
    pub request_id: Option<String>,
    pub detail: Option<String>,
    pub prev_hash: String,
    pub hash: String,
}

/// The hashed form, with a fixed field order (serde keeps declaration
/// order) and JSON's unambiguous string escaping: no two different records
/// serialise alike.
#[derive(Serialize)]
struct Canonical<'a> {
    seq: u64,
    time: String,
    event: &'a str,
    user_id: Option<&'a str>,
    email: Option<&'a str>,
    ip: Option<&'a str>,
    user_agent: Option<&'a str>,
    request_id: Option<&'a str>,
    outcome: &'a str,
    detail: Option<&'a str>,
    prev_hash: &'a str,
}

/// RFC 3339 in UTC with exactly three fractional digits.
pub fn canonical_time(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Millis, true)
}

impl AuditRecord {
    /// Chains `event` after a record whose hash is `prev_hash`.
    pub fn chain(seq: u64, event: &NewAuditEvent, prev_hash: &str) -> Self {
        let mut record = AuditRecord {
            seq,
            time: event.time,
            event: event.event,
            outcome: event.outcome,
            user_id: event.user_id.clone(),
            email: event.email.clone(),
            ip: event.ip.clone(),
            user_agent: event.user_agent.clone(),
            request_id: event.request_id.clone(),
            detail: event.detail.clone(),
            prev_hash: prev_hash.to_owned(),
            hash: String::new(),
        };
        record.hash = record.compute_hash();
        record
    }

    /// The canonical content that [`Self::compute_hash`] digests.
    pub fn canonical(&self) -> String {
        let canonical = Canonical {
            seq: self.seq,
            time: canonical_time(self.time),
            event: self.event.as_str(),
            user_id: self.user_id.as_deref(),
            email: self.email.as_deref(),
            ip: self.ip.as_deref(),
            user_agent: self.user_agent.as_deref(),
            request_id: self.request_id.as_deref(),
            outcome: self.outcome.as_str(),
            detail: self.detail.as_deref(),
            prev_hash: &self.prev_hash,
        };
        serde_json::to_string(&canonical).expect("strings and numbers always serialise")
    }

    /// SHA-256 of the canonical content, lowercase hex.
    pub fn compute_hash(&self) -> String {
        hex::encode(Sha256::digest(self.canonical().as_bytes()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event() -> NewAuditEvent {
        NewAuditEvent {
            id: "e1".into(),
            time: DateTime::from_timestamp_millis(1_700_000_000_123).unwrap(),
            event: AuditEvent::LoginFailure,
            outcome: AuditOutcome::Failure,
            user_id: None,
            email: Some("jane@example.com".into()),
            ip: Some("127.0.0.1".into()),
            user_agent: Some("ua \"quoted\"".into()),
            request_id: Some("r-1".into()),
            detail: None,
        }
    }

    #[test]
    fn names_round_trip() {
        for e in AuditEvent::ALL {
            assert_eq!(AuditEvent::parse(e.as_str()), Some(e));
            assert_eq!(serde_json::to_value(e).unwrap(), e.as_str());
        }
        assert_eq!(AuditEvent::parse("nope"), None);
    }

    #[test]
    fn canonical_content_is_stable_and_every_field_counts() {
        let record = AuditRecord::chain(7, &event(), GENESIS_HASH);
        assert_eq!(
            record.canonical(),
            format!(
                "{{\"seq\":7,\"time\":\"2023-11-14T22:13:20.123Z\",\"event\":\"login_failure\",\
                 \"user_id\":null,\"email\":\"jane@example.com\",\"ip\":\"127.0.0.1\",\
                 \"user_agent\":\"ua \\\"quoted\\\"\",\"request_id\":\"r-1\",\"outcome\":\"failure\",\
                 \"detail\":null,\"prev_hash\":\"{GENESIS_HASH}\"}}"
            )
        );
        assert_eq!(record.hash, record.compute_hash());
        let mut altered = record.clone();
        altered.ip = Some("10.0.0.1".into());
        assert_ne!(altered.compute_hash(), record.hash);
        let mut moved = record.clone();
        moved.seq = 8;
        assert_ne!(moved.compute_hash(), record.hash);
    }
}
