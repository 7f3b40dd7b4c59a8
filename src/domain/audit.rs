//! The audit trail's vocabulary (HIPAA 164.312(b) audit controls, (c)
//! integrity): which security events exist, what one record holds, and how
//! a record is hashed into the chain.
//!
//! Every record stores a hash of its canonical content, and that content
//! includes the previous record's hash, so altering, removing or reordering
//! any stored record breaks the chain from that point on. Only non-secret
//! facts go in: never a password, a hash of one, or a raw token.
//!
//! Records are versioned ([`HashVersion`]). The first release stored plain
//! SHA-256 (v1): anyone who can write the database can recompute that after
//! changing a record, so new records are v2, an HMAC-SHA256 under
//! [`AuditKey`], a secret kept outside the database. v1 records written
//! before stay valid, so an existing chain is not broken by the upgrade.

use std::fmt;

use chrono::{DateTime, SecondsFormat, Utc};
use hmac::{Hmac, Mac};
use serde::Serialize;
use sha2::{Digest, Sha256};

type HmacSha256 = Hmac<Sha256>;

/// AUDIT_KEY: 32 random bytes that key the chain (v2 records) and sign the
/// checkpoints. Whoever can write the database but does not hold it cannot
/// produce a record or checkpoint that verifies. Never printed: `Debug` is
/// redacted and nothing else formats it except [`AuditKey::to_hex`], which
/// only writes the development key file.
#[derive(Clone, PartialEq, Eq)]
pub struct AuditKey([u8; 32]);

impl AuditKey {
    /// Exactly 64 hex characters (what `openssl rand -hex 32` prints).
    pub fn from_hex(text: &str) -> Option<Self> {
        let text = text.trim();
        if text.len() != 64 {
            return None;
        }
        let mut bytes = [0u8; 32];
        hex::decode_to_slice(text, &mut bytes).ok()?;
        Some(Self(bytes))
    }

    /// A fresh random key (development, when none is configured).
    pub fn generate() -> Self {
        use rand::RngCore;
        let mut bytes = [0u8; 32];
        rand::rngs::OsRng.fill_bytes(&mut bytes);
        Self(bytes)
    }

    /// The key as 64 hex characters, for the development key file only.
    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }

    fn mac(&self) -> HmacSha256 {
        HmacSha256::new_from_slice(&self.0).expect("HMAC takes a key of any length")
    }

    /// HMAC-SHA256 of `data` under the key, lowercase hex.
    pub fn mac_hex(&self, data: &[u8]) -> String {
        let mut mac = self.mac();
        mac.update(data);
        hex::encode(mac.finalize().into_bytes())
    }

    /// Whether `tag` (hex) is the MAC of `data`, compared in constant time.
    pub fn verify_hex(&self, data: &[u8], tag: &str) -> bool {
        let Ok(tag) = hex::decode(tag) else {
            return false;
        };
        let mut mac = self.mac();
        mac.update(data);
        mac.verify_slice(&tag).is_ok()
    }

    /// A short public name for the key (16 hex characters of a MAC of a
    /// fixed label): written beside each checkpoint so that verifying with
    /// another key says "wrong key" rather than "every line altered". It
    /// reveals nothing that helps to find the key.
    pub fn id(&self) -> String {
        self.mac_hex(b"clinic-auth audit key id")[..16].to_owned()
    }
}

impl fmt::Debug for AuditKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("AuditKey(<redacted>)")
    }
}

impl Drop for AuditKey {
    fn drop(&mut self) {
        // Freed memory does not keep the key around.
        secrecy::zeroize::Zeroize::zeroize(&mut self.0);
    }
}

/// How a record's hash was made; stored with the record (a missing value,
/// in rows and documents from the first release, means v1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub enum HashVersion {
    /// SHA-256 of the canonical content: the first release's records. Anyone
    /// can recompute it, so after the first v2 record a v1 record is a sign
    /// that the chain was rewritten.
    #[serde(rename = "v1")]
    V1,
    /// HMAC-SHA256 under AUDIT_KEY of the canonical content, which then also
    /// names its version (`"v":2`), so the two forms never digest alike.
    #[serde(rename = "v2")]
    V2,
}

impl HashVersion {
    /// The stored number.
    pub fn number(self) -> i64 {
        match self {
            HashVersion::V1 => 1,
            HashVersion::V2 => 2,
        }
    }

    pub fn from_number(n: i64) -> Option<Self> {
        match n {
            1 => Some(HashVersion::V1),
            2 => Some(HashVersion::V2),
            _ => None,
        }
    }
}

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
    MfaEnabled,
    MfaDisabled,
    MfaChallengeFailed,
    RecoveryCodeUsed,
    RecoveryCodesRegenerated,
    PasskeyAdded,
    PasskeyRemoved,
    /// A passkey's signature counter went back: possibly a cloned
    /// authenticator; the sign-in was refused.
    PasskeyCounterRegression,
    AccountDisabled,
    AccountEnabled,
    EmergencyAccessStarted,
    EmergencyAccessEnded,
    EmergencyAccessReviewed,
    /// An administrator granted or withdrew a user's emergency access
    /// permission.
    EmergencyPermissionChanged,
    /// An administrator cleared the failed-sign-in lock.
    AccountUnlocked,
    /// An administrator ended every session of the account.
    SessionsRevoked,
    /// An administrator removed the account's second factors.
    MfaReset,
    /// An administrator erased a disabled account's name and email.
    AccountAnonymised,
    /// Invitations (issue 19): sent, sent again with a new link, revoked
    /// by an admin, accepted by the invitee (who then has an account).
    InvitationSent,
    InvitationResent,
    InvitationRevoked,
    InvitationAccepted,
    /// Access-token signing keys (issue 20): a new current key
    /// (`keys rotate`), retired keys removed (`keys prune` or the minute
    /// sweep). The detail names who (`by=cli`, `by=sweep`) and the kids.
    SigningKeyRotated,
    SigningKeysPruned,
}

impl AuditEvent {
    pub const ALL: [AuditEvent; 38] = [
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
        AuditEvent::MfaEnabled,
        AuditEvent::MfaDisabled,
        AuditEvent::MfaChallengeFailed,
        AuditEvent::RecoveryCodeUsed,
        AuditEvent::RecoveryCodesRegenerated,
        AuditEvent::PasskeyAdded,
        AuditEvent::PasskeyRemoved,
        AuditEvent::PasskeyCounterRegression,
        AuditEvent::AccountDisabled,
        AuditEvent::AccountEnabled,
        AuditEvent::EmergencyAccessStarted,
        AuditEvent::EmergencyAccessEnded,
        AuditEvent::EmergencyAccessReviewed,
        AuditEvent::EmergencyPermissionChanged,
        AuditEvent::AccountUnlocked,
        AuditEvent::SessionsRevoked,
        AuditEvent::MfaReset,
        AuditEvent::AccountAnonymised,
        AuditEvent::InvitationSent,
        AuditEvent::InvitationResent,
        AuditEvent::InvitationRevoked,
        AuditEvent::InvitationAccepted,
        AuditEvent::SigningKeyRotated,
        AuditEvent::SigningKeysPruned,
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
            AuditEvent::MfaEnabled => "mfa_enabled",
            AuditEvent::MfaDisabled => "mfa_disabled",
            AuditEvent::MfaChallengeFailed => "mfa_challenge_failed",
            AuditEvent::RecoveryCodeUsed => "recovery_code_used",
            AuditEvent::RecoveryCodesRegenerated => "recovery_codes_regenerated",
            AuditEvent::PasskeyAdded => "passkey_added",
            AuditEvent::PasskeyRemoved => "passkey_removed",
            AuditEvent::PasskeyCounterRegression => "passkey_counter_regression",
            AuditEvent::AccountDisabled => "account_disabled",
            AuditEvent::AccountEnabled => "account_enabled",
            AuditEvent::EmergencyAccessStarted => "emergency_access_started",
            AuditEvent::EmergencyAccessEnded => "emergency_access_ended",
            AuditEvent::EmergencyAccessReviewed => "emergency_access_reviewed",
            AuditEvent::EmergencyPermissionChanged => "emergency_permission_changed",
            AuditEvent::AccountUnlocked => "account_unlocked",
            AuditEvent::SessionsRevoked => "sessions_revoked",
            AuditEvent::MfaReset => "mfa_reset",
            AuditEvent::AccountAnonymised => "account_anonymised",
            AuditEvent::InvitationSent => "invitation_sent",
            AuditEvent::InvitationResent => "invitation_resent",
            AuditEvent::InvitationRevoked => "invitation_revoked",
            AuditEvent::InvitationAccepted => "invitation_accepted",
            AuditEvent::SigningKeyRotated => "signing_key_rotated",
            AuditEvent::SigningKeysPruned => "signing_keys_pruned",
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
            | AuditEvent::RefreshReuseDetected
            | AuditEvent::MfaChallengeFailed
            | AuditEvent::PasskeyCounterRegression => AuditOutcome::Failure,
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
    /// How `hash` was made: `v1` plain SHA-256 (first release), `v2` keyed.
    pub version: HashVersion,
    pub prev_hash: String,
    pub hash: String,
}

/// The hashed form, with a fixed field order (serde keeps declaration
/// order) and JSON's unambiguous string escaping: no two different records
/// serialise alike. v1 has no `v` field, exactly as the first release wrote.
#[derive(Serialize)]
struct Canonical<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    v: Option<i64>,
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
    /// Chains `event` after a record whose hash is `prev_hash` (of either
    /// version: the first keyed record links to the last v1 one), as a v2
    /// record keyed with `key`.
    pub fn chain(seq: u64, event: &NewAuditEvent, prev_hash: &str, key: &AuditKey) -> Self {
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
            version: HashVersion::V2,
            prev_hash: prev_hash.to_owned(),
            hash: String::new(),
        };
        record.hash = record.keyed_hash(key);
        record
    }

    /// The canonical content that the record's hash digests.
    pub fn canonical(&self) -> String {
        let canonical = Canonical {
            v: match self.version {
                HashVersion::V1 => None,
                HashVersion::V2 => Some(2),
            },
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

    /// Plain SHA-256 of the canonical content, lowercase hex: a v1 record's
    /// hash, and all that someone without the key can compute.
    pub fn plain_hash(&self) -> String {
        hex::encode(Sha256::digest(self.canonical().as_bytes()))
    }

    /// HMAC-SHA256 of the canonical content under `key`, lowercase hex: a
    /// v2 record's hash.
    pub fn keyed_hash(&self, key: &AuditKey) -> String {
        key.mac_hex(self.canonical().as_bytes())
    }

    /// The hash this record must carry, by its version.
    pub fn expected_hash(&self, key: &AuditKey) -> String {
        match self.version {
            HashVersion::V1 => self.plain_hash(),
            HashVersion::V2 => self.keyed_hash(key),
        }
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

    fn key() -> AuditKey {
        AuditKey::from_hex(&"0f".repeat(32)).unwrap()
    }

    /// A v1 record exactly as the first release made it.
    fn legacy(seq: u64) -> AuditRecord {
        let mut record = AuditRecord::chain(seq, &event(), GENESIS_HASH, &key());
        record.version = HashVersion::V1;
        record.hash = record.plain_hash();
        record
    }

    #[test]
    fn v1_canonical_content_is_the_first_releases() {
        let record = legacy(7);
        assert_eq!(
            record.canonical(),
            format!(
                "{{\"seq\":7,\"time\":\"2023-11-14T22:13:20.123Z\",\"event\":\"login_failure\",\
                 \"user_id\":null,\"email\":\"jane@example.com\",\"ip\":\"127.0.0.1\",\
                 \"user_agent\":\"ua \\\"quoted\\\"\",\"request_id\":\"r-1\",\"outcome\":\"failure\",\
                 \"detail\":null,\"prev_hash\":\"{GENESIS_HASH}\"}}"
            )
        );
        assert_eq!(record.hash, record.expected_hash(&key()));
        let mut altered = record.clone();
        altered.ip = Some("10.0.0.1".into());
        assert_ne!(altered.expected_hash(&key()), record.hash);
        let mut moved = record.clone();
        moved.seq = 8;
        assert_ne!(moved.expected_hash(&key()), record.hash);
    }

    #[test]
    fn v2_records_are_keyed_and_every_field_counts() {
        let record = AuditRecord::chain(7, &event(), GENESIS_HASH, &key());
        assert_eq!(record.version, HashVersion::V2);
        assert!(record.canonical().starts_with("{\"v\":2,\"seq\":7,"));
        assert_eq!(record.hash, record.expected_hash(&key()));
        // Neither a plain digest nor another key's MAC passes for it.
        assert_ne!(record.hash, record.plain_hash());
        let other = AuditKey::from_hex(&"f0".repeat(32)).unwrap();
        assert_ne!(record.hash, record.expected_hash(&other));
        let mut altered = record.clone();
        altered.detail = Some("role=admin".into());
        assert_ne!(altered.expected_hash(&key()), record.hash);
        // Relabelling it v1 changes what is digested, too.
        let mut relabelled = record.clone();
        relabelled.version = HashVersion::V1;
        assert_ne!(relabelled.canonical(), record.canonical());
    }

    #[test]
    fn the_key_is_64_hex_characters_and_never_printed() {
        let hex = "0123456789abcdef".repeat(4);
        let key = AuditKey::from_hex(&hex).unwrap();
        assert_eq!(key.to_hex(), hex);
        assert_eq!(AuditKey::from_hex(&hex.to_uppercase()), Some(key.clone()));
        for bad in ["", "0123", &"g".repeat(64), &format!("{hex}00"), &hex[1..]] {
            assert_eq!(AuditKey::from_hex(bad), None, "{bad:?}");
        }
        let debug = format!("{key:?}");
        assert!(!debug.contains(&hex[..8]), "{debug}");
        assert_eq!(key.id().len(), 16);
        assert_ne!(key.id(), AuditKey::generate().id());
        let tag = key.mac_hex(b"line");
        assert!(key.verify_hex(b"line", &tag));
        assert!(!key.verify_hex(b"line!", &tag));
        assert!(!key.verify_hex(b"line", "zz"));
    }
}
