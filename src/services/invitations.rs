//! Invitations as an administrator runs them (issue 19): invite `{email,
//! name, role}`, list the open ones, send one again with a new link, revoke
//! one. The invitee's side (the link's page, choosing a password) is
//! `invitations_accept.rs`.
//!
//! The link's token is emailed and never stored: the invitation keeps its
//! SHA-256. One open invitation per address: inviting an address with a
//! pending one is `InvitationPending` (send it again or revoke it instead);
//! an expired one is replaced by the new invitation. Every change is
//! audited with the acting admin (`by=<admin id>`).

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};

use super::audit::Audit;
use super::notifier::Notifier;
use super::outbox::Recipient;
use super::{span, AuthSettings, ClientContext, ServiceError};
use crate::clock::Clock;
use crate::domain::token::random_token;
use crate::domain::{AuditEvent, EmailAddress, PersonName, Role, Roles, TokenHash, User};
use crate::storage::{Invitation, InvitationStore, NewInvitation, StoreError, UserStore};

type Result<T> = std::result::Result<T, ServiceError>;

/// What an administrator asks for; each field is checked here.
pub struct InviteInput {
    pub email: String,
    pub name: String,
    pub role: String,
}

/// An open invitation and whether its link still works at the time asked.
pub struct ListedInvitation {
    pub invitation: Invitation,
    pub expired: bool,
}

pub struct Invitations {
    invitations: Arc<dyn InvitationStore>,
    users: Arc<dyn UserStore>,
    notifier: Arc<Notifier>,
    audit: Audit,
    clock: Arc<dyn Clock>,
    roles: Roles,
    ttl: Duration,
}

impl Invitations {
    pub fn new(
        invitations: Arc<dyn InvitationStore>,
        users: Arc<dyn UserStore>,
        notifier: Arc<Notifier>,
        audit: Audit,
        clock: Arc<dyn Clock>,
        settings: &AuthSettings,
    ) -> Self {
        Self {
            invitations,
            users,
            notifier,
            audit,
            clock,
            roles: settings.roles.clone(),
            ttl: settings.invite_ttl,
        }
    }

    /// Invites someone and emails them the link. `Validation` for a bad
    /// email or name or a role the clinic does not use; `EmailTaken` when
    /// the address already has an account; `InvitationPending` when it
    /// already has an unexpired invitation.
    pub async fn invite(
        &self,
        input: &InviteInput,
        admin: &User,
        client: &ClientContext,
    ) -> Result<Invitation> {
        let (email, name, role) = parse_invitee(input, &self.roles)?;
        self.audit.ready()?;
        self.ensure_no_account(&email).await?;
        let now = self.clock.now();
        if let Some(open) = self.invitations.find_invitation_by_email(&email).await? {
            if open.expires_at > now {
                return Err(ServiceError::InvitationPending);
            }
            // An expired invitation is replaced: its link is dead anyway.
            self.invitations.delete_invitation(&open.id).await?;
        }
        let token = random_token();
        let new = NewInvitation {
            email,
            name,
            role,
            token_hash: TokenHash::of(&token),
            invited_by: admin.id.clone(),
            created_at: now,
            expires_at: self.expiry(now),
        };
        let invitation = match self.invitations.create_invitation(&new).await {
            Ok(invitation) => invitation,
            // Another admin invited the same address just now.
            Err(StoreError::Conflict) => return Err(ServiceError::InvitationPending),
            Err(e) => return Err(e.into()),
        };
        if let Err(e) = self.email(&invitation, &token).await {
            // Nobody got the link: take the invitation back so the admin
            // can simply try again.
            if let Err(undo) = self.invitations.delete_invitation(&invitation.id).await {
                tracing::error!(error = ?undo, "an unsent invitation could not be removed");
            }
            return Err(e);
        }
        self.record(AuditEvent::InvitationSent, &invitation, admin, client)
            .await?;
        tracing::info!(invitation = %invitation.id, admin_id = %admin.id, "invitation sent");
        Ok(invitation)
    }

    /// The open invitations, oldest first, each with whether it expired.
    pub async fn list(&self) -> Result<Vec<ListedInvitation>> {
        let now = self.clock.now();
        Ok(self
            .invitations
            .list_invitations()
            .await?
            .into_iter()
            .map(|invitation| ListedInvitation {
                expired: invitation.expires_at <= now,
                invitation,
            })
            .collect())
    }

    /// Sends the invitation again with a new link and a new expiry; the
    /// old link stops working. `NotFound` for no open invitation with that
    /// id; `EmailTaken` when the address got an account meanwhile.
    pub async fn resend(
        &self,
        id: &str,
        admin: &User,
        client: &ClientContext,
    ) -> Result<Invitation> {
        self.audit.ready()?;
        let open = self.find(id).await?;
        self.ensure_no_account(&open.email).await?;
        let token = random_token();
        let now = self.clock.now();
        let invitation = self
            .invitations
            .renew_invitation(id, &TokenHash::of(&token), self.expiry(now), now)
            .await?
            .ok_or(ServiceError::NotFound)?;
        self.email(&invitation, &token).await?;
        self.record(AuditEvent::InvitationResent, &invitation, admin, client)
            .await?;
        Ok(invitation)
    }

    /// Revokes the invitation: its link stops working. `NotFound` for no
    /// open invitation with that id.
    pub async fn revoke(&self, id: &str, admin: &User, client: &ClientContext) -> Result<()> {
        self.audit.ready()?;
        let invitation = self.find(id).await?;
        if !self.invitations.delete_invitation(id).await? {
            return Err(ServiceError::NotFound);
        }
        self.record(AuditEvent::InvitationRevoked, &invitation, admin, client)
            .await
    }

    fn expiry(&self, now: DateTime<Utc>) -> DateTime<Utc> {
        now + span(self.ttl)
    }

    async fn find(&self, id: &str) -> Result<Invitation> {
        self.invitations
            .find_invitation(id)
            .await?
            .ok_or(ServiceError::NotFound)
    }

    async fn ensure_no_account(&self, email: &EmailAddress) -> Result<()> {
        match self.users.find_user_by_email(email).await? {
            Some(_) => Err(ServiceError::EmailTaken),
            None => Ok(()),
        }
    }

    async fn email(&self, invitation: &Invitation, token: &str) -> Result<()> {
        let to = Recipient {
            name: invitation.name.as_str(),
            address: invitation.email.as_str(),
            user_id: None,
        };
        self.notifier
            .invitation(to, token, invitation.role.as_str(), self.ttl)
            .await
    }

    /// The record names the invitee's address, and in `detail` the acting
    /// admin, the invitation and the role it gives.
    async fn record(
        &self,
        event: AuditEvent,
        invitation: &Invitation,
        admin: &User,
        client: &ClientContext,
    ) -> Result<()> {
        let entry = self
            .audit
            .entry(event, client)
            .email(invitation.email.as_str())
            .detail(format!(
                "by={} invitation={} role={}",
                admin.id, invitation.id, invitation.role
            ));
        self.audit.record(entry).await?;
        Ok(())
    }
}

/// An invitee's address, name and role, each checked (the role against
/// the clinic's); every problem at once. Shared with the command line's
/// `user create` (`invitations_direct.rs`).
pub(super) fn parse_invitee(
    input: &InviteInput,
    roles: &Roles,
) -> Result<(EmailAddress, PersonName, Role)> {
    let mut errors = Vec::new();
    let email = EmailAddress::parse(&input.email)
        .map_err(|e| errors.push(e))
        .ok();
    let name = PersonName::parse(&input.name)
        .map_err(|e| errors.push(e))
        .ok();
    let role = roles
        .check("role", &input.role)
        .map_err(|e| errors.push(e))
        .ok();
    match (email, name, role) {
        (Some(email), Some(name), Some(role)) => Ok((email, name, role)),
        _ => Err(ServiceError::Validation(errors)),
    }
}
