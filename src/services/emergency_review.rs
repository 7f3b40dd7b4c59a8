//! The review of emergency access (issue 19): each use waits in a queue
//! until an administrator other than its user reads the reason and writes
//! what they found; and the per-user permission to break the glass, which
//! administrators grant and withdraw.

use std::collections::HashMap;
use std::sync::Arc;

use super::audit::Audit;
use super::emergency_access::EmergencyAccess;
use super::{ClientContext, ServiceError};
use crate::clock::Clock;
use crate::domain::emergency::review_note;
use crate::domain::{AuditEvent, EmergencyReview, EmergencyUse, User, UserId};
use crate::storage::{EmergencyFilter, EmergencyStore, UserStore, EMERGENCY_PAGE_MAX};

type Result<T> = std::result::Result<T, ServiceError>;

pub struct EmergencyReviews {
    users: Arc<dyn UserStore>,
    uses: Arc<dyn EmergencyStore>,
    access: Arc<EmergencyAccess>,
    audit: Audit,
    clock: Arc<dyn Clock>,
}

impl EmergencyReviews {
    pub fn new(
        users: Arc<dyn UserStore>,
        uses: Arc<dyn EmergencyStore>,
        access: Arc<EmergencyAccess>,
        audit: Audit,
        clock: Arc<dyn Clock>,
    ) -> Self {
        Self {
            users,
            uses,
            access,
            audit,
            clock,
        }
    }

    /// Uses in `filter`'s order, at most `limit` (capped), each with its
    /// user (`None` if it could not be read). Windows that have passed are
    /// closed first, so the list says how each one ended.
    pub async fn list(
        &self,
        filter: EmergencyFilter,
        limit: u32,
    ) -> Result<Vec<(EmergencyUse, Option<User>)>> {
        self.access.sweep().await?;
        let uses = self
            .uses
            .list_emergency_uses(filter, limit.clamp(1, EMERGENCY_PAGE_MAX))
            .await?;
        // A handful of people break the glass: one read per distinct user.
        let mut users: HashMap<UserId, Option<User>> = HashMap::new();
        for used in &uses {
            if !users.contains_key(&used.user_id) {
                let user = self.users.find_user_by_id(&used.user_id).await?;
                users.insert(used.user_id.clone(), user);
            }
        }
        Ok(uses
            .into_iter()
            .map(|used| {
                let user = users.get(&used.user_id).cloned().flatten();
                (used, user)
            })
            .collect())
    }

    /// Records `admin`'s review of use `id`. Only another administrator
    /// may review a use (403); a use is reviewed once (409).
    pub async fn review(
        &self,
        id: &str,
        note: &str,
        admin: &User,
        client: &ClientContext,
    ) -> Result<EmergencyUse> {
        let note = review_note(note).map_err(|field| ServiceError::Validation(vec![field]))?;
        let found = self
            .uses
            .find_emergency_use(id)
            .await?
            .ok_or(ServiceError::NotFound)?;
        if found.user_id == admin.id {
            return Err(ServiceError::OwnEmergencyReview);
        }
        if found.review.is_some() {
            return Err(ServiceError::AlreadyReviewed);
        }
        self.audit.ready()?;
        let review = EmergencyReview {
            by: admin.id.clone(),
            at: self.clock.now(),
            note,
        };
        if !self.uses.review_emergency_use(id, &review).await? {
            return Err(ServiceError::AlreadyReviewed);
        }
        let entry = self
            .audit
            .entry(AuditEvent::EmergencyAccessReviewed, client)
            .user(&found.user_id)
            .detail(format!("use={id} by={} note={}", admin.id, review.note));
        self.audit.record(entry).await?;
        self.access.observe().await;
        Ok(EmergencyUse {
            review: Some(review),
            ..found
        })
    }

    /// Grants or withdraws `target`'s permission to break the glass,
    /// audited with the acting admin. Answers the user as it now is.
    pub async fn set_permission(
        &self,
        target: &UserId,
        allowed: bool,
        admin: &User,
        client: &ClientContext,
    ) -> Result<User> {
        self.audit.ready()?;
        let user = self
            .users
            .find_user_by_id(target)
            .await?
            .ok_or(ServiceError::NotFound)?;
        if user.emergency_access == allowed {
            return Ok(user);
        }
        if !self
            .users
            .set_emergency_access(&user.id, allowed, self.clock.now())
            .await?
        {
            return Err(ServiceError::NotFound);
        }
        let entry = self
            .audit
            .entry(AuditEvent::EmergencyPermissionChanged, client)
            .user(&user.id)
            .email(user.email.as_str())
            .detail(format!(
                "by={} emergency_access={}",
                admin.id,
                if allowed { "granted" } else { "withdrawn" }
            ));
        self.audit.record(entry).await?;
        Ok(User {
            emergency_access: allowed,
            ..user
        })
    }
}
