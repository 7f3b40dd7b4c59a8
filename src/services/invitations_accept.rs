//! Accepting an invitation (issue 19): the invitee opens the emailed link,
//! chooses a password, and has an account with the invited role, its
//! address verified (the link proved the mailbox), and is signed in.
//!
//! Opening the link only looks the invitation up ([`InvitationAcceptance::
//! check`]): mail scanners open links, and must not burn them. Submitting
//! the form takes the invitation atomically (single use) and creates the
//! user. The sign-in goes through `Sessions` as a password sign-in does,
//! so MFA_REQUIRED_ROLES applies: a role that must have a second factor is
//! signed in for enrolment only.
//!
//! An invitation works only while the administrator who sent it is still
//! an active administrator: offboarding an admin voids what they sent.

use std::sync::Arc;

use super::audit::Audit;
use super::login::SignIn;
use super::passwords::Passwords;
use super::sessions::Sessions;
use super::tokens::Authentication;
use super::{AuthSettings, ClientContext, ServiceError, MAX_TOKEN_LEN};
use crate::clock::Clock;
use crate::domain::{AuditEvent, Password, PasswordPolicy, PersonName, TokenHash};
use crate::storage::{Invitation, InvitationStore, NewUser, StoreError, UserStore};

type Result<T> = std::result::Result<T, ServiceError>;

pub struct InvitationAcceptance {
    invitations: Arc<dyn InvitationStore>,
    users: Arc<dyn UserStore>,
    passwords: Arc<Passwords>,
    sessions: Arc<Sessions>,
    audit: Audit,
    clock: Arc<dyn Clock>,
    password_policy: PasswordPolicy,
}

impl InvitationAcceptance {
    pub fn new(
        invitations: Arc<dyn InvitationStore>,
        users: Arc<dyn UserStore>,
        passwords: Arc<Passwords>,
        sessions: Arc<Sessions>,
        audit: Audit,
        clock: Arc<dyn Clock>,
        settings: &AuthSettings,
    ) -> Self {
        Self {
            invitations,
            users,
            passwords,
            sessions,
            audit,
            clock,
            password_policy: settings.password_policy,
        }
    }

    /// The invitation behind a link, without using it. `InvalidInvitation`
    /// for an unknown, expired, used or revoked link, or one whose sender
    /// is no longer an active administrator.
    pub async fn check(&self, token: &str) -> Result<Invitation> {
        let hash = token_hash(token)?;
        let invitation = self
            .invitations
            .find_invitation_by_token(&hash, self.clock.now())
            .await?
            .ok_or(ServiceError::InvalidInvitation)?;
        let sender = self.users.find_user_by_id(&invitation.invited_by).await?;
        match sender {
            Some(admin) if admin.role.is_admin() && !admin.is_disabled() => Ok(invitation),
            _ => Err(ServiceError::InvalidInvitation),
        }
    }

    /// Creates the invited account with `name` and `password` and signs it
    /// in. `Validation` (the link still works) for a bad name or a password
    /// the policy refuses; `InvalidInvitation` as for
    /// [`InvitationAcceptance::check`], or when a concurrent accept won;
    /// `EmailTaken` when the address got an account meanwhile (the
    /// invitation is then used up).
    pub async fn accept(
        &self,
        token: &str,
        name: &str,
        password: &Password,
        client: &ClientContext,
    ) -> Result<SignIn> {
        self.audit.ready()?;
        let invitation = self.check(token).await?;
        let mut errors = Vec::new();
        let name = PersonName::parse(name).map_err(|e| errors.push(e)).ok();
        let hash = self
            .passwords
            .check_and_hash_new(
                password,
                &self.password_policy,
                Some(&invitation.email),
                "password",
            )
            .await?
            .map_err(|e| errors.push(e))
            .ok();
        let (Some(name), Some(password_hash)) = (name, hash) else {
            return Err(ServiceError::Validation(errors));
        };
        let now = self.clock.now();
        // Single use: of two submits of the same link, one gets it.
        let invitation = self
            .invitations
            .take_invitation(&token_hash(token)?, now)
            .await?
            .ok_or(ServiceError::InvalidInvitation)?;
        let new_user = NewUser {
            email: invitation.email.clone(),
            name,
            password_hash,
            role: invitation.role.clone(),
            verified: true,
            created_at: now,
            verification_link: None,
        };
        let user = match self.users.create_user(&new_user).await {
            Ok(user) => user,
            Err(StoreError::Conflict) => return Err(ServiceError::EmailTaken),
            Err(e) => return Err(e.into()),
        };
        let entry = self
            .audit
            .entry(AuditEvent::InvitationAccepted, client)
            .user(&user.id)
            .email(user.email.as_str())
            .detail(format!(
                "invited_by={} invitation={} role={}",
                invitation.invited_by, invitation.id, invitation.role
            ));
        self.audit.record(entry).await?;
        tracing::info!(user_id = %user.id, invitation = %invitation.id, "invitation accepted");
        // The password was chosen just now: that proves it, as a
        // registration's does.
        let email = user.email.as_str().to_owned();
        let auth = Authentication::password(now);
        if self.sessions.must_enrol(&user).await? {
            let grant = self
                .sessions
                .start_enrolment(user, &email, auth, client)
                .await?;
            return Ok(SignIn::EnrolmentRequired(Box::new(grant)));
        }
        let outcome = self.sessions.start(user, &email, auth, client).await?;
        Ok(SignIn::Complete(Box::new(outcome)))
    }
}

/// The stored form of a link's token; junk is refused before hashing.
fn token_hash(token: &str) -> Result<TokenHash> {
    let token = token.trim();
    if token.is_empty() || token.len() > MAX_TOKEN_LEN {
        return Err(ServiceError::InvalidInvitation);
    }
    Ok(TokenHash::of(token))
}
