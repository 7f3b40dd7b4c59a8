//! What every administrator action on an account shares (issue 19): the
//! optional reason the admin gives, checked once, and the audit record that
//! names the target, the acting admin and that reason.

use super::audit::Audit;
use super::{ClientContext, ServiceError};
use crate::domain::{AuditEvent, FieldError, User};

type Result<T> = std::result::Result<T, ServiceError>;

/// The longest reason an administrator may give (it goes into the trail).
pub const REASON_MAX_CHARS: usize = 500;

/// A reason is optional; given, it is trimmed, one line, at most
/// [`REASON_MAX_CHARS`] (one line so the trail's `detail` stays parseable).
pub fn checked_reason(reason: Option<&str>) -> Result<Option<String>> {
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

/// One administrator action, as the trail records it.
pub struct AdminAct<'a> {
    pub event: AuditEvent,
    /// The account acted on: `user_id` and `email` of the record.
    pub target: &'a User,
    pub admin: &'a User,
    /// Already [`checked_reason`]ed.
    pub reason: Option<&'a str>,
    /// What else the action wants kept (`from=doctor to=nurse`), before
    /// the reason, which comes last because it is free text.
    pub extra: Option<String>,
}

/// Records `act`, durable before the caller answers: `detail` is
/// `by=<admin id> [extra] [reason=<reason>]`.
pub async fn record(audit: &Audit, act: AdminAct<'_>, client: &ClientContext) -> Result<()> {
    let mut detail = format!("by={}", act.admin.id);
    if let Some(extra) = act.extra {
        detail.push(' ');
        detail.push_str(&extra);
    }
    if let Some(reason) = act.reason {
        detail.push_str(" reason=");
        detail.push_str(reason);
    }
    let entry = audit
        .entry(act.event, client)
        .user(&act.target.id)
        .email(act.target.email.as_str())
        .detail(detail);
    audit.record(entry).await?;
    Ok(())
}
