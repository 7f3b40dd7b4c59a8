//! Administration: granting roles and reading the audit trail. Called by
//! the `clinic-auth` CLI and the admin API; who may call it is decided
//! there (the CLI runs with the operator's access to the configuration, the
//! API only for the `admin` role).

use std::sync::Arc;

use super::audit::Audit;
use super::{ClientContext, ServiceError};
use crate::domain::{AuditEvent, AuditRecord, EmailAddress, Role, User};
use crate::storage::{AuditQuery, AuditStore, UserStore};

type Result<T> = std::result::Result<T, ServiceError>;

/// One page of the audit trail, newest first.
#[derive(Debug)]
pub struct AuditPage {
    pub events: Vec<AuditRecord>,
    /// The cursor for the next (older) page; `None` on the last page.
    pub next: Option<u64>,
}

pub struct AdminService {
    users: Arc<dyn UserStore>,
    /// Read here; written only through `audit`.
    trail: Arc<dyn AuditStore>,
    audit: Audit,
}

impl AdminService {
    pub fn new(users: Arc<dyn UserStore>, trail: Arc<dyn AuditStore>, audit: Audit) -> Self {
        Self {
            users,
            trail,
            audit,
        }
    }

    /// Gives the user with `email` the role `role`, records `role_changed`
    /// and refuses every access token issued so far (they carry the old
    /// role). `Ok(None)` when no such user exists.
    pub async fn set_role(
        &self,
        email: &str,
        role: Role,
        client: &ClientContext,
    ) -> Result<Option<User>> {
        let email = EmailAddress::parse(email).map_err(|e| ServiceError::Validation(vec![e]))?;
        let Some(user) = self.users.find_user_by_email(&email).await? else {
            return Ok(None);
        };
        let now = self.audit.clock().now();
        if !self.users.set_user_role(&user.id, &role, now, now).await? {
            return Ok(None);
        }
        self.audit
            .record(
                self.audit
                    .entry(AuditEvent::RoleChanged, client)
                    .user(&user.id)
                    .email(user.email.as_str())
                    .detail(format!("from={} to={}", user.role.as_str(), role.as_str())),
            )
            .await?;
        tracing::info!(user_id = %user.id, role = role.as_str(), "role changed");
        Ok(self.users.find_user_by_id(&user.id).await?)
    }

    /// A page of audit records matching `query` (its limit already checked
    /// against [`crate::storage::AUDIT_PAGE_MAX`]).
    pub async fn audit_page(&self, mut query: AuditQuery) -> Result<AuditPage> {
        let limit = query.limit as usize;
        // One extra tells whether another page exists.
        query.limit += 1;
        let mut events = self.trail.query_audit_events(&query).await?;
        let next = if events.len() > limit {
            events.truncate(limit);
            events.last().map(|r| r.seq)
        } else {
            None
        };
        Ok(AuditPage { events, next })
    }
}
