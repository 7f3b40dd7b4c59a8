//! An account created directly by the operator (`clinic-auth user create`,
//! issue 19): for the first administrator, when nobody can sign in yet to
//! send an invitation, and for scripts.
//!
//! The account exists at once (so `user set-role` and `user disable` work
//! on it), verified, with the invited role and no usable password: its
//! hash is of 256 random bits nobody ever sees. What comes back is a
//! one-time set-password link: a password-reset link (the existing reset
//! page and its rules, single use, stored hashed) that lives INVITE_EXPIRES
//! rather than the reset link's minutes, since it goes to someone who is
//! not waiting for it. Reusing the reset link rather than an invitation
//! keeps one way to set a password on an existing account. With `--email`
//! the link is emailed instead (queued in the outbox, in the invitation's
//! words; the running service sends it).

use std::sync::Arc;
use std::time::Duration;

use super::audit::Audit;
use super::invitations::{parse_invitee, InviteInput};
use super::notifier::Notifier;
use super::passwords::Passwords;
use super::{span, AuthSettings, ClientContext, ServiceError};
use crate::clock::Clock;
use crate::domain::token::random_token;
use crate::domain::{AuditEvent, Password, Roles, TokenHash, User};
use crate::storage::{
    NewOneTimeToken, NewUser, OneTimeTokenStore, StoreError, TokenPurpose, UserStore,
};

type Result<T> = std::result::Result<T, ServiceError>;

/// The page the set-password link opens (the reset page).
const SET_PASSWORD_PAGE: &str = "reset-password";

/// A created account and its set-password link (`None` when it was
/// emailed). No `Debug`: the link is as good as a password until used.
pub struct CreatedAccount {
    pub user: User,
    pub link: Option<String>,
    pub expires: Duration,
}

pub struct DirectAccounts {
    users: Arc<dyn UserStore>,
    links: Arc<dyn OneTimeTokenStore>,
    passwords: Arc<Passwords>,
    notifier: Arc<Notifier>,
    audit: Audit,
    clock: Arc<dyn Clock>,
    roles: Roles,
    app_url: String,
    ttl: Duration,
}

impl DirectAccounts {
    pub fn new(
        users: Arc<dyn UserStore>,
        links: Arc<dyn OneTimeTokenStore>,
        passwords: Arc<Passwords>,
        notifier: Arc<Notifier>,
        audit: Audit,
        clock: Arc<dyn Clock>,
        settings: &AuthSettings,
    ) -> Self {
        Self {
            users,
            links,
            passwords,
            notifier,
            audit,
            clock,
            roles: settings.roles.clone(),
            app_url: settings.app_url.clone(),
            ttl: settings.invite_ttl,
        }
    }

    /// Creates the account and its set-password link. `Validation` for a
    /// bad email or name or a role the clinic does not use; `EmailTaken`
    /// when the address has an account. Audited as `register` with
    /// `by=cli role=<role>`.
    pub async fn create(
        &self,
        input: &InviteInput,
        send_email: bool,
        client: &ClientContext,
    ) -> Result<CreatedAccount> {
        let (email, name, role) = parse_invitee(input, &self.roles)?;
        self.audit.ready()?;
        // A password nobody knows: the account cannot be signed in to
        // until its owner sets one through the link.
        let password_hash = self.passwords.hash(&Password::new(random_token())).await?;
        let now = self.clock.now();
        let new_user = NewUser {
            email,
            name,
            password_hash,
            role,
            verified: true,
            created_at: now,
            verification_link: None,
        };
        let user = match self.users.create_user(&new_user).await {
            Ok(user) => user,
            Err(StoreError::Conflict) => return Err(ServiceError::EmailTaken),
            Err(e) => return Err(e.into()),
        };
        let link = if send_email {
            self.notifier.send_set_password(&user, self.ttl).await?;
            None
        } else {
            let token = random_token();
            let link = NewOneTimeToken {
                user_id: user.id.clone(),
                token_hash: TokenHash::of(&token),
                expires_at: now + span(self.ttl),
                created_at: now,
            };
            self.links
                .replace_one_time_token(TokenPurpose::PasswordReset, &link)
                .await?;
            Some(format!(
                "{}/{SET_PASSWORD_PAGE}?token={token}",
                self.app_url
            ))
        };
        let entry = self
            .audit
            .entry(AuditEvent::Register, client)
            .user(&user.id)
            .email(user.email.as_str())
            .detail(format!("by=cli role={}", user.role));
        self.audit.record(entry).await?;
        Ok(CreatedAccount {
            link,
            expires: self.ttl,
            user,
        })
    }
}
