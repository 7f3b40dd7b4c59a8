//! What follows every new password, whoever sets it: a signed-in user
//! changing theirs (`Account`) or a reset link completing (`Recovery`).
//! The new hash is stored, every other sign-in ends and the old access
//! tokens die (ASVS 7.4.3), reset links still out are void, the owner is
//! told (ASVS 6.3.7) and the trail records it. One place, so the two ways
//! to a new password cannot drift apart.
//!
//! Ending every session but one is also "sign out everywhere", which
//! `Account` reaches through [`PasswordChange::end_sessions_except`].

use std::sync::Arc;

use super::audit::Audit;
use super::notifier::Notifier;
use super::{ClientContext, CurrentSession, ServiceError};
use crate::clock::Clock;
use crate::domain::{AuditEvent, PasswordHash, User, UserId};
use crate::storage::{
    OneTimeTokenStore, RefreshTokenStore, TokenPurpose, UserStore, WebSessionStore,
};

type Result<T> = std::result::Result<T, ServiceError>;

/// What ending a user's sessions did.
#[derive(Debug, Clone, Copy)]
pub struct EndedSessions {
    /// Browser sessions of the portal ended.
    pub web: u64,
    /// API refresh tokens revoked.
    pub api: u64,
    /// The token version the cut-off of the access tokens set; `None` when
    /// the user no longer exists.
    pub token_version: Option<u64>,
}

pub struct PasswordChange {
    users: Arc<dyn UserStore>,
    refresh_tokens: Arc<dyn RefreshTokenStore>,
    web_sessions: Arc<dyn WebSessionStore>,
    /// A new password voids the reset links out.
    links: Arc<dyn OneTimeTokenStore>,
    notifier: Arc<Notifier>,
    audit: Audit,
    clock: Arc<dyn Clock>,
}

impl PasswordChange {
    pub fn new(
        users: Arc<dyn UserStore>,
        refresh_tokens: Arc<dyn RefreshTokenStore>,
        web_sessions: Arc<dyn WebSessionStore>,
        links: Arc<dyn OneTimeTokenStore>,
        notifier: Arc<Notifier>,
        audit: Audit,
        clock: Arc<dyn Clock>,
    ) -> Self {
        Self {
            users,
            refresh_tokens,
            web_sessions,
            links,
            notifier,
            audit,
            clock,
        }
    }

    /// Stores `hash` as the user's password, then ends every session of
    /// theirs but `keep` (pass the default to end all) and cuts off their
    /// access tokens.
    pub async fn store(
        &self,
        user: &User,
        hash: &PasswordHash,
        keep: &CurrentSession,
    ) -> Result<EndedSessions> {
        self.users
            .set_password_hash(&user.id, hash, self.clock.now())
            .await?;
        self.end_sessions_except(&user.id, keep).await
    }

    /// The rest, once the caller has done its own steps after [`store`]:
    /// voids the reset links still out, tells the owner, and records
    /// `event`.
    ///
    /// [`store`]: PasswordChange::store
    pub async fn announce(
        &self,
        user: &User,
        event: AuditEvent,
        client: &ClientContext,
    ) -> Result<()> {
        self.links
            .delete_user_one_time_tokens(TokenPurpose::PasswordReset, &user.id)
            .await?;
        self.notifier.password_changed(user).await;
        let entry = self.audit.entry(event, client).user(&user.id);
        self.audit.record(entry).await?;
        Ok(())
    }

    /// Ends every session of the user but `keep` (pass the default to end
    /// all, the caller's included), and cuts off their access tokens.
    pub async fn end_sessions_except(
        &self,
        user_id: &UserId,
        keep: &CurrentSession,
    ) -> Result<EndedSessions> {
        let now = self.clock.now();
        // The kept browser session's own API family stays with it.
        let mut keep_family = keep.family.clone();
        if keep_family.is_none() {
            if let Some(web) = &keep.web {
                keep_family = self
                    .web_sessions
                    .load_web_session(web, now)
                    .await?
                    .and_then(|s| s.refresh_family);
            }
        }
        let web = self
            .web_sessions
            .delete_user_web_sessions(user_id, keep.web.as_ref())
            .await?;
        let token_version = self
            .users
            .cut_access_tokens(user_id, self.clock.now())
            .await?;
        let api = self
            .refresh_tokens
            .revoke_user_refresh_tokens(user_id, keep_family.as_deref(), now)
            .await?;
        tracing::info!(user_id = %user_id, web, api, "sessions ended");
        Ok(EndedSessions {
            web,
            api,
            token_version,
        })
    }
}
