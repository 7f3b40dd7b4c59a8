//! What every administrator action on an account shares (issue 19): the
//! optional reason the admin gives, checked once; the target, looked up
//! once the trail is known to take records; and the audit record that
//! names the target, the acting admin and that reason. Each admin use-case
//! holds an [`AdminTrail`].

use std::sync::Arc;

use super::audit::Audit;
use super::{ClientContext, ServiceError};
use crate::domain::{AuditEvent, FieldError, User, UserId};
use crate::storage::UserStore;

type Result<T> = std::result::Result<T, ServiceError>;

/// The longest reason an administrator may give (it goes into the trail).
pub const REASON_MAX_CHARS: usize = 500;

/// Who acts: a signed-in administrator, or the operator at the command
/// line (`clinic-auth user disable|enable`), who has no account to name.
/// Recorded as `by=<admin id>` or `by=cli`.
#[derive(Debug, Clone, Copy)]
pub enum Actor<'a> {
    Admin(&'a User),
    Cli,
}

impl<'a> From<&'a User> for Actor<'a> {
    fn from(admin: &'a User) -> Self {
        Actor::Admin(admin)
    }
}

impl std::fmt::Display for Actor<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Actor::Admin(admin) => write!(f, "{}", admin.id),
            Actor::Cli => f.write_str("cli"),
        }
    }
}

#[derive(Clone)]
pub struct AdminTrail {
    users: Arc<dyn UserStore>,
    audit: Audit,
}

impl AdminTrail {
    pub fn new(users: Arc<dyn UserStore>, audit: Audit) -> Self {
        Self { users, audit }
    }

    /// What every action starts with: a reason that is acceptable, an
    /// audit trail that takes records (so nothing changes that could not
    /// be recorded), and the target as it is now (`NotFound` for an unknown
    /// or malformed id).
    pub async fn open(
        &self,
        target: &UserId,
        reason: Option<&str>,
    ) -> Result<(User, Option<String>)> {
        let reason = checked_reason(reason)?;
        self.audit.ready()?;
        Ok((self.find(target).await?, reason))
    }

    /// The account `id` names, as it is now.
    pub async fn find(&self, id: &UserId) -> Result<User> {
        self.users
            .find_user_by_id(id)
            .await?
            .ok_or(ServiceError::NotFound)
    }

    /// Records the action, durable before the caller answers: `detail` is
    /// `by=<admin id> [extra] [reason=<reason>]`, the reason last because
    /// it is free text; `extra` is what else the action keeps
    /// (`from=doctor to=nurse`).
    pub async fn record<'a>(
        &self,
        event: AuditEvent,
        target: &User,
        by: impl Into<Actor<'a>>,
        reason: Option<&str>,
        extra: Option<String>,
        client: &ClientContext,
    ) -> Result<()> {
        let mut detail = format!("by={}", by.into());
        if let Some(extra) = extra {
            detail.push(' ');
            detail.push_str(&extra);
        }
        if let Some(reason) = reason {
            detail.push_str(" reason=");
            detail.push_str(reason);
        }
        let entry = self
            .audit
            .entry(event, client)
            .user(&target.id)
            .email(target.email.as_str())
            .detail(detail);
        self.audit.record(entry).await?;
        Ok(())
    }

    /// Now, by the service's clock.
    pub fn now(&self) -> chrono::DateTime<chrono::Utc> {
        self.audit.clock().now()
    }
}

/// A reason is optional; given, it is trimmed, one line, at most
/// [`REASON_MAX_CHARS`] (one line so the trail's `detail` stays readable).
fn checked_reason(reason: Option<&str>) -> Result<Option<String>> {
    let Some(reason) = reason.map(str::trim).filter(|r| !r.is_empty()) else {
        return Ok(None);
    };
    if reason.chars().count() > REASON_MAX_CHARS || reason.chars().any(char::is_control) {
        return Err(ServiceError::Validation(vec![FieldError::new(
            "reason",
            format!("Reason must be one line of at most {REASON_MAX_CHARS} characters."),
        )]));
    }
    Ok(Some(reason.to_owned()))
}
