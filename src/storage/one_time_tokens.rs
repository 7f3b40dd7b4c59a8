//! Single-use emailed links (password reset, email verification):
//! [`OneTimeTokenStore`].

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use super::StoreResult;
use crate::domain::{TokenHash, UserId};

/// What a single-use emailed token is for. Each purpose has its own table
/// (collection), so a reset link can never verify an email or vice versa.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenPurpose {
    /// `reset_tokens`: the original service's password-reset links.
    PasswordReset,
    /// `verification_tokens`: links that confirm an email address.
    EmailVerification,
    /// `mfa_challenges`: the token that carries a password-proven sign-in
    /// to its second step (never emailed).
    MfaChallenge,
}

/// A single-use token to be stored (hash only).
#[derive(Debug, Clone)]
pub struct NewOneTimeToken {
    pub user_id: UserId,
    pub token_hash: TokenHash,
    pub expires_at: DateTime<Utc>,
    pub created_at: DateTime<Utc>,
}

/// A single-use token for a user who does not exist yet (see
/// [`NewUser::verification_link`](super::NewUser::verification_link)).
#[derive(Debug, Clone)]
pub struct NewLink {
    pub token_hash: TokenHash,
    pub expires_at: DateTime<Utc>,
    pub created_at: DateTime<Utc>,
}

impl NewLink {
    pub fn for_user(&self, user_id: &UserId) -> NewOneTimeToken {
        NewOneTimeToken {
            user_id: user_id.clone(),
            token_hash: self.token_hash.clone(),
            expires_at: self.expires_at,
            created_at: self.created_at,
        }
    }
}

#[async_trait]
pub trait OneTimeTokenStore: Send + Sync {
    /// Stores a token, replacing any earlier one of the same user and
    /// purpose so only the newest emailed link works.
    async fn replace_one_time_token(
        &self,
        purpose: TokenPurpose,
        token: &NewOneTimeToken,
    ) -> StoreResult<()>;

    /// The user a still-valid (unexpired at `now`) token belongs to, without
    /// consuming it: lets a page or a form check the link before the person
    /// types a new password.
    async fn find_one_time_token(
        &self,
        purpose: TokenPurpose,
        hash: &TokenHash,
        now: DateTime<Utc>,
    ) -> StoreResult<Option<UserId>>;

    /// Atomically consumes the token with that hash if it has not expired at
    /// `now`, returning its user. Single use: of concurrent callers at most
    /// one gets `Some`. An expired token is consumed too, and yields `None`.
    async fn consume_one_time_token(
        &self,
        purpose: TokenPurpose,
        hash: &TokenHash,
        now: DateTime<Utc>,
    ) -> StoreResult<Option<UserId>>;

    /// Deletes every outstanding token of a user for that purpose.
    async fn delete_user_one_time_tokens(
        &self,
        purpose: TokenPurpose,
        user_id: &UserId,
    ) -> StoreResult<()>;
}
