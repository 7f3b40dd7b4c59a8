//! Who must have a second factor (MFA_REQUIRED_ROLES, MFA_REQUIRED_FOR_ALL)
//! and whether they have one yet. A user the policy covers who has none is
//! not refused: their sign-in is limited to enrolment (an enrolment token on
//! the API, an "enrolment only" portal session) until they have one, so
//! turning the policy on never locks anyone out.

use std::sync::Arc;

use super::MfaError;
use crate::domain::{Role, User};
use crate::storage::MfaStore;

pub struct MfaPolicy {
    store: Arc<dyn MfaStore>,
    roles: Vec<Role>,
    for_all: bool,
}

impl MfaPolicy {
    pub fn new(store: Arc<dyn MfaStore>, roles: Vec<Role>, for_all: bool) -> Self {
        Self {
            store,
            roles,
            for_all,
        }
    }

    /// Whether the policy asks this user for a second factor at all (their
    /// role, or everyone).
    pub fn covers(&self, user: &User) -> bool {
        self.for_all || self.roles.contains(&user.role)
    }

    /// Whether the user must enrol before signing in fully: covered by the
    /// policy and without a factor it counts. Reads the store only for
    /// covered users, so the policy costs nothing to the others.
    pub async fn must_enrol(&self, user: &User) -> Result<bool, MfaError> {
        Ok(self.covers(user) && self.enrolled_factor(user).await?.is_none())
    }

    /// The second factor the user has, as an RFC 8176 method: `otp` for a
    /// confirmed authenticator, else `pop` (proof of possession of a key)
    /// for a passkey, which is a complete second factor of its own; `None`
    /// without either (a pending authenticator does not count).
    pub async fn enrolled_factor(&self, user: &User) -> Result<Option<&'static str>, MfaError> {
        let totp = self.store.totp_factor(&user.id).await?;
        if totp.is_some_and(|f| f.confirmed) {
            return Ok(Some("otp"));
        }
        let passkeys = self.store.passkeys(&user.id).await?;
        Ok((!passkeys.is_empty()).then_some("pop"))
    }
}
