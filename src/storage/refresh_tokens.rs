//! Refresh tokens and their rotation: [`RefreshTokenStore`], and the rule
//! every backend applies to a replayed token ([`ReplayVerdict`]).

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::{StoreError, StoreResult, StoredInstant, UserStore};
use crate::domain::{TokenHash, User, UserId};

/// A refresh token to be stored (its hash only, never the token itself).
#[derive(Debug, Clone)]
pub struct NewRefreshToken {
    pub user_id: UserId,
    pub jti: String,
    pub token_hash: TokenHash,
    /// All tokens descended from one login share a family.
    pub family_id: String,
    pub user_agent: Option<String>,
    pub ip_address: Option<String>,
    pub expires_at: DateTime<Utc>,
    pub created_at: DateTime<Utc>,
}

/// A stored refresh token.
#[derive(Debug, Clone)]
pub struct RefreshTokenRecord {
    pub user_id: UserId,
    pub jti: String,
    pub token_hash: TokenHash,
    pub family_id: String,
    pub user_agent: Option<String>,
    pub ip_address: Option<String>,
    pub revoked: bool,
    /// The jti of the token that replaced this one at rotation, if any.
    pub replaced_by: Option<String>,
    /// When it was revoked or rotated away.
    pub revoked_at: Option<DateTime<Utc>>,
    /// A replay within the grace period already got a sibling for it: a
    /// retired token gets at most one.
    pub sibling_issued: bool,
    pub expires_at: DateTime<Utc>,
    pub created_at: DateTime<Utc>,
}

/// A refresh token as both backends store it: a `refresh_tokens` row
/// (SQLite, `T = i64`) or document (MongoDB, `T = bson::DateTime`; the
/// driver adds its `_id`). The optional fields are optional because
/// documents written by the Python service do not have them.
#[derive(sqlx::FromRow, Serialize, Deserialize)]
pub(crate) struct StoredRefreshToken<T> {
    pub(crate) user_id: String,
    pub(crate) jti: String,
    pub(crate) token_hash: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) family_id: Option<String>,
    #[serde(default)]
    pub(crate) user_agent: Option<String>,
    #[serde(default)]
    pub(crate) ip_address: Option<String>,
    pub(crate) revoked: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) replaced_by: Option<String>,
    // No `default`: it would ask `T: Default`; a missing `Option` is `None`
    // anyway.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) revoked_at: Option<T>,
    /// Set on a retired token once its one grace sibling exists.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub(crate) sibling_issued: bool,
    pub(crate) expires_at: T,
    pub(crate) created_at: T,
}

impl<T: StoredInstant> StoredRefreshToken<T> {
    /// `token` as issued: active, not yet rotated.
    pub(crate) fn new(token: &NewRefreshToken) -> Self {
        Self {
            user_id: token.user_id.as_str().to_owned(),
            jti: token.jti.clone(),
            token_hash: token.token_hash.as_str().to_owned(),
            family_id: Some(token.family_id.clone()),
            user_agent: token.user_agent.clone(),
            ip_address: token.ip_address.clone(),
            revoked: false,
            replaced_by: None,
            revoked_at: None,
            sibling_issued: false,
            expires_at: T::from_utc(token.expires_at),
            created_at: T::from_utc(token.created_at),
        }
    }
}

impl<T: StoredInstant> TryFrom<StoredRefreshToken<T>> for RefreshTokenRecord {
    type Error = StoreError;

    fn try_from(stored: StoredRefreshToken<T>) -> StoreResult<Self> {
        Ok(RefreshTokenRecord {
            user_id: UserId::new(stored.user_id),
            // A token from before rotation existed (a Python service
            // document) is the only member of its own family; its jti is
            // unique, so it names that family.
            family_id: stored.family_id.unwrap_or_else(|| stored.jti.clone()),
            jti: stored.jti,
            token_hash: TokenHash::from_stored(stored.token_hash),
            user_agent: stored.user_agent,
            ip_address: stored.ip_address,
            revoked: stored.revoked,
            replaced_by: stored.replaced_by,
            revoked_at: stored.revoked_at.map(T::to_utc).transpose()?,
            sibling_issued: stored.sibling_issued,
            expires_at: stored.expires_at.to_utc()?,
            created_at: stored.created_at.to_utc()?,
        })
    }
}

/// A rotation that stored the replacement.
#[derive(Debug)]
pub struct Rotated {
    /// The presented token, as it was retired.
    pub retired: RefreshTokenRecord,
    /// Its owner as stored now (`None` when the account is gone), read in
    /// the same round trip so the caller can issue the access token.
    pub owner: Option<User>,
}

/// What presenting a refresh token for rotation did.
#[derive(Debug)]
pub enum Rotation {
    /// The token was active: it is retired and the replacement stored.
    Rotated(Rotated),
    /// The token had been rotated away less than the grace period ago (two
    /// tabs refreshing at once), had no sibling yet, and its family is still
    /// alive: the replacement is stored as a sibling of the token that
    /// replaced it, and the retired token is marked as having one.
    GraceSibling(Rotated),
    /// The token had been rotated away longer ago than the grace period, or
    /// already got its one sibling: someone replayed it. Every active token
    /// of its family is revoked and nothing is stored. Carries the replayed
    /// record and how many tokens the family lost.
    ReuseDetected {
        token: RefreshTokenRecord,
        revoked: u64,
    },
    /// Unknown, expired, or revoked other than by rotation: nothing changed.
    Rejected,
}

/// What a backend does with a presented token that was not active.
#[derive(Debug, PartialEq, Eq)]
pub enum ReplayVerdict {
    /// Unknown state, expired, or revoked other than by rotation.
    Reject,
    /// Rotated away within the grace period and no sibling yet: one
    /// sibling, if the family lives. The backend marks the retired token as
    /// it stores the sibling, so of concurrent replays only one gets it and
    /// the others revoke the family.
    SiblingIfFamilyAlive,
    /// Rotated away before the grace period, or its sibling already issued:
    /// revoke the family.
    RevokeFamily,
}

impl RefreshTokenRecord {
    /// The one rule both backends apply to a replayed token (see
    /// [`Rotation`]); they differ only in how they act on it.
    pub fn replay_verdict(&self, now: DateTime<Utc>, grace: chrono::Duration) -> ReplayVerdict {
        let (Some(_), Some(rotated_at)) = (&self.replaced_by, self.revoked_at) else {
            return ReplayVerdict::Reject;
        };
        if self.expires_at <= now {
            ReplayVerdict::Reject
        } else if grace > chrono::Duration::zero()
            && now - rotated_at <= grace
            && !self.sibling_issued
        {
            ReplayVerdict::SiblingIfFamilyAlive
        } else {
            ReplayVerdict::RevokeFamily
        }
    }
}

/// The steps of acting on a replay, which each backend takes its own way
/// (SQLite inside one transaction, MongoDB as single-document writes).
#[async_trait]
pub(crate) trait ReplaySteps: Send {
    /// Whether the family of `token` still has an active token.
    async fn family_alive(&mut self, token: &RefreshTokenRecord) -> StoreResult<bool>;

    /// Stores the replacement as the one grace sibling of `token` and marks
    /// `token` as having it. False, with nothing stored, when another replay
    /// marked it first.
    async fn issue_sibling(&mut self, token: &RefreshTokenRecord) -> StoreResult<bool>;

    /// Revokes every active token of the family of `token`; returns how
    /// many.
    async fn revoke_family(&mut self, token: &RefreshTokenRecord) -> StoreResult<u64>;
}

/// What presenting the inactive token `old` (`None`: unknown) means, and its
/// effect through `steps`: the one course both backends follow (see
/// [`Rotation`]). A grace sibling comes back without its owner, which the
/// caller reads once the effect is stored.
pub(crate) async fn act_on_replay<S: ReplaySteps>(
    steps: &mut S,
    old: Option<RefreshTokenRecord>,
    now: DateTime<Utc>,
    grace: chrono::Duration,
) -> StoreResult<Rotation> {
    let Some(old) = old else {
        return Ok(Rotation::Rejected);
    };
    match old.replay_verdict(now, grace) {
        ReplayVerdict::Reject => return Ok(Rotation::Rejected),
        ReplayVerdict::RevokeFamily => {}
        ReplayVerdict::SiblingIfFamilyAlive => {
            if !steps.family_alive(&old).await? {
                return Ok(Rotation::Rejected);
            }
            if steps.issue_sibling(&old).await? {
                return Ok(Rotation::GraceSibling(Rotated {
                    retired: old,
                    owner: None,
                }));
            }
        }
    }
    let revoked = steps.revoke_family(&old).await?;
    Ok(Rotation::ReuseDetected {
        token: old,
        revoked,
    })
}

/// Reads the owner of a grace sibling, which [`act_on_replay`] leaves out
/// so that a backend reads it once the sibling is stored.
pub(crate) async fn with_sibling_owner<U: UserStore + ?Sized>(
    users: &U,
    mut rotation: Rotation,
) -> StoreResult<Rotation> {
    if let Rotation::GraceSibling(sibling) = &mut rotation {
        sibling.owner = users.find_user_by_id(&sibling.retired.user_id).await?;
    }
    Ok(rotation)
}

#[async_trait]
pub trait RefreshTokenStore: Send + Sync {
    /// Stores a token issued at login. `Err(Conflict)` when that token (its
    /// hash) is already stored.
    async fn insert_refresh_token(&self, token: &NewRefreshToken) -> StoreResult<()>;

    /// Rotates the token with `old_hash` (see [`Rotation`] for the cases).
    ///
    /// An active token (not revoked, not expired at `now`) is retired with
    /// `replacement.jti` as its successor and `replacement` is stored; of
    /// several concurrent calls with the same hash at most one gets
    /// `Rotated`. A token rotated away at most `grace` ago whose family still
    /// has an active token gets `replacement` as a sibling, once: of several
    /// such replays (concurrent or not) exactly one gets it and the others
    /// revoke the family. A zero `grace` never gives one, so every replay
    /// revokes the family.
    async fn rotate_refresh_token(
        &self,
        old_hash: &TokenHash,
        now: DateTime<Utc>,
        grace: chrono::Duration,
        replacement: &NewRefreshToken,
    ) -> StoreResult<Rotation>;

    /// The record with that hash, whatever its state.
    async fn find_refresh_token(&self, hash: &TokenHash)
        -> StoreResult<Option<RefreshTokenRecord>>;

    /// Revokes one token. Returns true when it was active until now.
    async fn revoke_refresh_token(&self, hash: &TokenHash, now: DateTime<Utc>)
        -> StoreResult<bool>;

    /// Revokes every active token of a user, except those of the family
    /// `keep_family`; returns how many.
    async fn revoke_user_refresh_tokens(
        &self,
        user_id: &UserId,
        keep_family: Option<&str>,
        now: DateTime<Utc>,
    ) -> StoreResult<u64>;

    /// The user's active tokens (not revoked, not expired at `now`), newest
    /// first: one per live family.
    async fn list_user_refresh_tokens(
        &self,
        user_id: &UserId,
        now: DateTime<Utc>,
    ) -> StoreResult<Vec<RefreshTokenRecord>>;

    /// Whether the family (one sign-in) of this user still has an active
    /// token at `now`: the access tokens it issued die with it.
    async fn refresh_family_alive(
        &self,
        user_id: &UserId,
        family_id: &str,
        now: DateTime<Utc>,
    ) -> StoreResult<bool>;

    /// Revokes every active token of one family of this user; returns how
    /// many (0 when the family is unknown or belongs to someone else).
    async fn revoke_refresh_family(
        &self,
        user_id: &UserId,
        family_id: &str,
        now: DateTime<Utc>,
    ) -> StoreResult<u64>;
}
