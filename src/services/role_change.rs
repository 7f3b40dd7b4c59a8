//! An administrator changes a user's role (issue 19): checked against the
//! clinic's roles, never leaving the service without an active admin, and
//! cutting the user's access tokens at once (they carry the old role).

use std::sync::Arc;

use super::admin_trail::AdminTrail;
use super::{ClientContext, ServiceError};
use crate::domain::{AuditEvent, Roles, User, UserId};
use crate::storage::UserStore;

type Result<T> = std::result::Result<T, ServiceError>;

pub struct RoleChange {
    users: Arc<dyn UserStore>,
    /// The roles this clinic uses (ROLES plus `admin`).
    roles: Roles,
    trail: AdminTrail,
}

impl RoleChange {
    pub fn new(users: Arc<dyn UserStore>, roles: Roles, trail: AdminTrail) -> Self {
        Self {
            users,
            roles,
            trail,
        }
    }

    /// Gives `target` the role named `role` on `admin`'s word (`None`:
    /// no change, the account as it is). A role the clinic does not use is
    /// a validation error on `role`; `NotFound` for an unknown user;
    /// `LastAdmin` when this would demote the last active administrator.
    /// The same role again changes nothing and succeeds.
    pub async fn change(
        &self,
        target: &UserId,
        role: Option<&str>,
        reason: Option<&str>,
        admin: &User,
        client: &ClientContext,
    ) -> Result<User> {
        let role = role
            .map(|role| self.roles.check("role", role))
            .transpose()
            .map_err(|e| ServiceError::Validation(vec![e]))?;
        let (user, reason) = self.trail.open(target, reason).await?;
        let Some(role) = role.filter(|role| *role != user.role) else {
            return Ok(user);
        };
        if user.role.is_admin()
            && !user.is_disabled()
            && self.users.count_active_admins().await? <= 1
        {
            return Err(ServiceError::LastAdmin);
        }
        let now = self.trail.now();
        if !self.users.set_user_role(&user.id, &role, now, now).await? {
            return Err(ServiceError::NotFound);
        }
        let change = format!("from={} to={}", user.role.as_str(), role.as_str());
        self.trail
            .record(
                AuditEvent::RoleChanged,
                &user,
                admin,
                reason.as_deref(),
                Some(change),
                client,
            )
            .await?;
        tracing::info!(user_id = %user.id, admin_id = %admin.id, role = role.as_str(), "role changed");
        self.trail.find(target).await
    }
}
