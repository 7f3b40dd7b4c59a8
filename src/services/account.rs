//! What a signed-in user does with their account: see and end sessions,
//! change the password. Shared by the portal pages and the JSON API.
//!
//! "Session" here means either a browser session of the portal or an API
//! refresh-token family (an app or SPA signed in). A portal sign-in also
//! issues an API family for same-site SPAs; that family is shown and ended
//! together with its browser session.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};

use super::audit::Audit;
use super::lockout::Lockout;
use super::password_change::PasswordChange;
use super::passwords::{Passwords, Verification};
use super::{span, AuthSettings, ClientContext, CurrentSession, ServiceError};
use crate::clock::Clock;
use crate::domain::{AuditEvent, Password, PasswordPolicy, TokenHash, User, UserId};
use crate::storage::{RefreshTokenStore, WebSessionStore};

type Result<T> = std::result::Result<T, ServiceError>;

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum SessionKind {
    /// Signed in on the portal pages.
    Browser,
    /// An app or SPA holding a refresh token.
    Api,
}

/// One place the user is signed in.
#[derive(Debug, Clone, serde::Serialize, utoipa::ToSchema)]
pub struct SessionInfo {
    /// Opaque handle for ending it; not a credential.
    pub id: String,
    pub kind: SessionKind,
    pub user_agent: Option<String>,
    pub ip_address: Option<String>,
    pub created_at: DateTime<Utc>,
    pub last_used_at: DateTime<Utc>,
    /// The session making this request.
    pub current: bool,
}

const WEB_PREFIX: &str = "web_";
const API_PREFIX: &str = "api_";

pub struct Account {
    refresh_tokens: Arc<dyn RefreshTokenStore>,
    web_sessions: Arc<dyn WebSessionStore>,
    passwords: Arc<Passwords>,
    /// The current password is checked under the sign-in lock.
    lockout: Arc<Lockout>,
    /// Storing the new password and what follows it; also ends the other
    /// sessions for "sign out everywhere".
    password_change: Arc<PasswordChange>,
    audit: Audit,
    clock: Arc<dyn Clock>,
    password_policy: PasswordPolicy,
    /// A family ends this long after its sign-in (to show when it began).
    refresh_ttl: Duration,
}

impl Account {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        refresh_tokens: Arc<dyn RefreshTokenStore>,
        web_sessions: Arc<dyn WebSessionStore>,
        passwords: Arc<Passwords>,
        lockout: Arc<Lockout>,
        password_change: Arc<PasswordChange>,
        audit: Audit,
        clock: Arc<dyn Clock>,
        settings: &AuthSettings,
    ) -> Self {
        Self {
            refresh_tokens,
            web_sessions,
            passwords,
            lockout,
            password_change,
            audit,
            clock,
            password_policy: settings.password_policy,
            refresh_ttl: settings.refresh_ttl,
        }
    }

    pub async fn list_sessions(
        &self,
        user_id: &UserId,
        current: &CurrentSession,
    ) -> Result<Vec<SessionInfo>> {
        let now = self.clock.now();
        let web = self
            .web_sessions
            .list_user_web_sessions(user_id, now)
            .await?;
        let families = self
            .refresh_tokens
            .list_user_refresh_tokens(user_id, now)
            .await?;
        let linked: HashSet<&str> = web
            .iter()
            .filter_map(|s| s.refresh_family.as_deref())
            .collect();
        let mut sessions: Vec<SessionInfo> = web
            .iter()
            .map(|s| SessionInfo {
                id: format!("{WEB_PREFIX}{}", s.id_hash.as_str()),
                kind: SessionKind::Browser,
                user_agent: s.user_agent.clone(),
                ip_address: s.ip_address.clone(),
                created_at: s.created_at,
                last_used_at: s.last_used_at,
                current: current.web.as_ref() == Some(&s.id_hash),
            })
            .collect();
        let mut seen = HashSet::new();
        // Newest token first, so the first one of each family is its latest use.
        for token in &families {
            if linked.contains(token.family_id.as_str()) || !seen.insert(token.family_id.clone()) {
                continue;
            }
            sessions.push(SessionInfo {
                id: format!("{API_PREFIX}{}", token.family_id),
                kind: SessionKind::Api,
                user_agent: token.user_agent.clone(),
                ip_address: token.ip_address.clone(),
                // A family ends JWT_REFRESH_EXPIRES after its sign-in.
                created_at: token.expires_at - span(self.refresh_ttl),
                last_used_at: token.created_at,
                current: current.family.as_deref() == Some(token.family_id.as_str()),
            });
        }
        sessions.sort_by_key(|s| std::cmp::Reverse(s.last_used_at));
        Ok(sessions)
    }

    /// Ends one of the user's sessions by its handle. False when the handle
    /// names nothing of this user's.
    pub async fn end_session(
        &self,
        user_id: &UserId,
        id: &str,
        client: &ClientContext,
    ) -> Result<bool> {
        let ended = self.end_session_by_handle(user_id, id).await?;
        if ended {
            let entry = self
                .audit
                .entry(AuditEvent::SessionRevoked, client)
                .user(user_id);
            self.audit.record(entry).await?;
        }
        Ok(ended)
    }

    async fn end_session_by_handle(&self, user_id: &UserId, id: &str) -> Result<bool> {
        let now = self.clock.now();
        if let Some(hash) = id.strip_prefix(WEB_PREFIX) {
            let hash = TokenHash::from_stored(hash.to_owned());
            // Only the owner may end it: look it up among their sessions.
            let owned = self
                .web_sessions
                .list_user_web_sessions(user_id, now)
                .await?
                .into_iter()
                .find(|s| s.id_hash == hash);
            let Some(session) = owned else {
                return Ok(false);
            };
            self.end_web_session(user_id, &session.id_hash, session.refresh_family.as_deref())
                .await?;
            return Ok(true);
        }
        if let Some(family) = id.strip_prefix(API_PREFIX) {
            let revoked = self
                .refresh_tokens
                .revoke_refresh_family(user_id, family, now)
                .await?;
            // A portal sign-in's family ends with its page session, whichever
            // handle named it.
            let pages = self
                .web_sessions
                .delete_family_web_sessions(user_id, family)
                .await?;
            return Ok(revoked + pages > 0);
        }
        Ok(false)
    }

    /// Signs out of the portal: ends the browser session and its API family,
    /// and records the logout.
    pub async fn sign_out_web_session(
        &self,
        user_id: &UserId,
        id_hash: &TokenHash,
        family: Option<&str>,
        client: &ClientContext,
    ) -> Result<()> {
        self.end_web_session(user_id, id_hash, family).await?;
        let entry = self.audit.entry(AuditEvent::Logout, client).user(user_id);
        self.audit.record(entry).await?;
        Ok(())
    }

    /// Ends a browser session and the API family issued with it.
    pub async fn end_web_session(
        &self,
        user_id: &UserId,
        id_hash: &TokenHash,
        family: Option<&str>,
    ) -> Result<()> {
        self.web_sessions.delete_web_session(id_hash).await?;
        if let Some(family) = family {
            self.refresh_tokens
                .revoke_refresh_family(user_id, family, self.clock.now())
                .await?;
        }
        Ok(())
    }

    /// "Sign out everywhere": ends every session of the user except `keep`
    /// (pass the default to end all, the caller's included) and records
    /// `logout_all`. Returns how many ended.
    pub async fn end_other_sessions(
        &self,
        user_id: &UserId,
        keep: &CurrentSession,
        client: &ClientContext,
    ) -> Result<u64> {
        let ended = self
            .password_change
            .end_sessions_except(user_id, keep)
            .await?;
        let entry = self
            .audit
            .entry(AuditEvent::LogoutAll, client)
            .user(user_id);
        self.audit.record(entry).await?;
        Ok(ended.web + ended.api)
    }

    /// Changes the password after checking the current one, then ends every
    /// other session (ASVS 7.4.3). Returns the token version of the cut-off
    /// that ended them: the caller's own session carries it from now on.
    pub async fn change_password(
        &self,
        user: &User,
        current_password: &Password,
        new_password: &Password,
        keep: &CurrentSession,
        client: &ClientContext,
    ) -> Result<u64> {
        let mut errors = Vec::new();
        if current_password.expose().is_empty() {
            errors.push(crate::domain::FieldError::new(
                "current_password",
                "Enter your current password.",
            ));
        }
        if let Err(e) = self
            .passwords
            .check_new(
                new_password,
                &self.password_policy,
                Some(&user.email),
                "new_password",
            )
            .await?
        {
            errors.push(e);
        }
        if !errors.is_empty() {
            return Err(ServiceError::Validation(errors));
        }
        // Audited either way; refuse before hashing while the trail cannot
        // be written.
        self.audit.ready()?;
        // The current password is a credential check like a sign-in: the
        // same per-email lock applies (ASVS 6.3.4), so a stolen access token
        // cannot be used to guess it, and a wrong one is a login_failure.
        let key = super::lockout::key_of(&user.email);
        let throttle = self.lockout.state(&key).await?;
        if let Some(retry_after) = self.lockout.remaining(throttle.as_ref()) {
            return Err(ServiceError::AccountLocked { retry_after });
        }
        if self
            .passwords
            .verify(current_password, &user.password_hash)
            .await?
            == Verification::Invalid
        {
            return Err(self
                .lockout
                .wrong_current_password(&key, user, client, "change_password")
                .await);
        }
        if throttle.is_some() {
            self.lockout.clear(&key).await?;
        }
        let hash = self.passwords.hash(new_password).await?;
        let ended = self.password_change.store(user, &hash, keep).await?;
        // The user was deleted meanwhile: nobody is signed in any more.
        let version = ended.token_version.ok_or(ServiceError::InvalidAccessToken(
            super::tokens::TokenError::Invalid,
        ))?;
        self.password_change
            .announce(user, AuditEvent::PasswordChanged, client)
            .await?;
        tracing::info!(user_id = %user.id, "password changed");
        Ok(version)
    }
}
