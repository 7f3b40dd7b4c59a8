//! Erasing a disabled account (issue 19): users are never hard-deleted
//! (audit records keep pointing at them, HIPAA 164.312(b)), but a former
//! colleague's name and email need not stay. `DELETE
//! /api/admin/users/{id}` replaces them (`deleted-<id>@invalid.example`,
//! "Deleted user"), replaces the password hash with one of a random
//! secret nobody holds, and removes the factors, links and sessions; the
//! id stays. Only a disabled account: erasing is the last step of
//! offboarding, never the first.

use std::sync::Arc;

use super::account_status::AccountStatus;
use super::admin_trail::AdminTrail;
use super::lockout::{key_of, Lockout};
use super::mfa_reset::MfaReset;
use super::passwords::Passwords;
use super::{ClientContext, ServiceError};
use crate::domain::token::random_token;
use crate::domain::{AuditEvent, EmailAddress, Password, PersonName, User, UserId};
use crate::storage::UserStore;

type Result<T> = std::result::Result<T, ServiceError>;

/// The name an erased account keeps.
pub const ERASED_NAME: &str = "Deleted user";

pub struct AccountErasure {
    users: Arc<dyn UserStore>,
    passwords: Arc<Passwords>,
    lockout: Arc<Lockout>,
    /// Ends the sessions and voids the links, as disabling did.
    status: Arc<AccountStatus>,
    /// Removes the factors.
    mfa_reset: Arc<MfaReset>,
    trail: AdminTrail,
}

impl AccountErasure {
    pub fn new(
        users: Arc<dyn UserStore>,
        passwords: Arc<Passwords>,
        lockout: Arc<Lockout>,
        status: Arc<AccountStatus>,
        mfa_reset: Arc<MfaReset>,
        trail: AdminTrail,
    ) -> Self {
        Self {
            users,
            passwords,
            lockout,
            status,
            mfa_reset,
            trail,
        }
    }

    /// Anonymises `target` on `admin`'s word. `AccountNotDisabled` while
    /// it is active; erasing an erased account again changes nothing
    /// more and succeeds. The audit record keeps the address it had (the
    /// trail is append-only; that is its point).
    pub async fn erase(
        &self,
        target: &UserId,
        reason: Option<&str>,
        admin: &User,
        client: &ClientContext,
    ) -> Result<User> {
        let (user, reason) = self.trail.open(target, reason).await?;
        if !user.is_disabled() {
            return Err(ServiceError::AccountNotDisabled);
        }
        let email =
            EmailAddress::parse(&format!("deleted-{}@invalid.example", user.id)).map_err(|_| {
                ServiceError::Internal(anyhow::anyhow!("an erased address did not parse"))
            })?;
        let name = PersonName::parse(ERASED_NAME).map_err(|_| {
            ServiceError::Internal(anyhow::anyhow!("the erased name did not parse"))
        })?;
        let hash = self
            .passwords
            .hash(&Password::new(random_token()))
            .await
            .map_err(ServiceError::Internal)?;
        let now = self.trail.now();
        if !self
            .users
            .anonymise_user(&user.id, &email, &name, &hash, now)
            .await?
        {
            return Err(ServiceError::NotFound);
        }
        self.mfa_reset.remove_factors(&user.id).await?;
        self.status.end_everything(&user.id).await?;
        // The old address's failed-sign-in count is about nobody now.
        self.lockout.clear(&key_of(&user.email)).await?;
        self.trail
            .record(
                AuditEvent::AccountAnonymised,
                &user,
                admin,
                reason.as_deref(),
                None,
                client,
            )
            .await?;
        tracing::info!(user_id = %user.id, admin_id = %admin.id, "account anonymised");
        self.trail.find(target).await
    }
}
