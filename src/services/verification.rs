//! Email verification: proving the person who registered owns the address
//! (so reset links and notices reach them, and REQUIRE_VERIFIED_EMAIL can
//! keep unproven accounts out).

use super::auth::AuthService;
use super::{ClientContext, ServiceError};
use crate::domain::{AuditEvent, TokenHash, User};
use crate::email::sealed::Content;
use crate::storage::TokenPurpose;

type Result<T> = std::result::Result<T, ServiceError>;

/// The page a verification link opens.
pub(super) const VERIFY_PAGE: &str = "verify-email";

/// Verification tokens are 43 base64url characters; longer input is junk.
const MAX_TOKEN_LEN: usize = 4096;

impl AuthService {
    /// Stores a fresh verification link for `user` (the previous one stops
    /// working) with the queued email that carries it; past the account's hourly
    /// email limit, does nothing (the link already emailed keeps working).
    pub(super) async fn send_verification(&self, user: &User) -> Result<()> {
        if !self.mail_allowed(user, "verify_email").await? {
            return Ok(());
        }
        self.queue_link(user, TokenPurpose::EmailVerification, |link| {
            self.verification_content(link)
        })
        .await
    }

    /// What a verification email with `link` says.
    pub(super) fn verification_content(&self, link: String) -> Content {
        Content::VerifyEmail {
            link,
            expires_hours: self.settings().verification_ttl.as_secs().div_ceil(3600),
        }
    }

    /// Sends the signed-in user a new link. `AlreadyVerified` when there is
    /// nothing to prove.
    pub async fn resend_verification(&self, user: &User) -> Result<()> {
        if user.verified {
            return Err(ServiceError::AlreadyVerified);
        }
        self.send_verification(user).await
    }

    /// Consumes a verification link and marks its user verified. Single
    /// use; an unknown, used or expired token is `InvalidVerificationToken`.
    pub async fn verify_email(&self, token: &str, client: &ClientContext) -> Result<User> {
        let token = token.trim();
        if token.is_empty() || token.len() > MAX_TOKEN_LEN {
            return Err(ServiceError::InvalidVerificationToken);
        }
        let now = self.now();
        let user_id = self
            .store()
            .consume_one_time_token(TokenPurpose::EmailVerification, &TokenHash::of(token), now)
            .await?
            .ok_or(ServiceError::InvalidVerificationToken)?;
        if !self.store().set_verified(&user_id, now).await? {
            return Err(ServiceError::InvalidVerificationToken);
        }
        let user = self
            .store()
            .find_user_by_id(&user_id)
            .await?
            .ok_or(ServiceError::InvalidVerificationToken)?;
        tracing::info!(user_id = %user.id, "email address verified");
        let entry = self
            .audit()
            .entry(AuditEvent::EmailVerified, client)
            .user(&user.id);
        self.audit()
            .record(entry.email(user.email.as_str()))
            .await?;
        Ok(user)
    }
}
