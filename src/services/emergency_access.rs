//! Emergency ("break-glass") access, HIPAA 164.312(a)(2)(ii): a user with
//! the permission (or an administrator) opens, after a recent sign-in and
//! with a written reason, a window of EMERGENCY_ACCESS_TTL during which
//! their access tokens carry the `emergency` claim. It is loud (an audit
//! record at start and end, every administrator emailed at once) and
//! bounded: never extended or stacked, and its tokens never outlive it.
//! The review of each use is `emergency_review.rs`.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};

use super::audit::Audit;
use super::notifier::Notifier;
use super::sessions::Sessions;
use super::tokens::{new_id, AccessToken, Authentication};
use super::{span, ClientContext, ServiceError};
use crate::clock::Clock;
use crate::domain::{AuditEvent, EmergencyEnd, EmergencyReason, EmergencyUse, User, UserId};
use crate::storage::{EmergencyStore, UserStore};

type Result<T> = std::result::Result<T, ServiceError>;

/// Unreviewed uses older than this are overdue: listed first and counted
/// in /metrics.
pub const REVIEW_DUE: chrono::Duration = chrono::Duration::hours(24);

/// How many expired uses one sweep closes; the next sweep takes the rest.
const SWEEP_BATCH: u32 = 100;

/// A started window and the access token that carries it.
pub struct EmergencyGrant {
    pub window: EmergencyUse,
    pub access: AccessToken,
}

/// Who is asking: the signed-in user, the sign-in (refresh family) their
/// token belongs to, and how that sign-in was proven.
pub struct Caller<'a> {
    pub user: &'a User,
    pub session: Option<&'a str>,
    pub auth: &'a Authentication,
}

impl<'a> From<&'a super::sessions::Authenticated> for Caller<'a> {
    fn from(who: &'a super::sessions::Authenticated) -> Self {
        Self {
            user: &who.user,
            session: who.session.as_deref(),
            auth: &who.auth,
        }
    }
}

pub struct EmergencyAccess {
    users: Arc<dyn UserStore>,
    uses: Arc<dyn EmergencyStore>,
    sessions: Arc<Sessions>,
    notifier: Arc<Notifier>,
    audit: Audit,
    clock: Arc<dyn Clock>,
    ttl: Duration,
    reauth_window: Duration,
}

impl EmergencyAccess {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        users: Arc<dyn UserStore>,
        uses: Arc<dyn EmergencyStore>,
        sessions: Arc<Sessions>,
        notifier: Arc<Notifier>,
        audit: Audit,
        clock: Arc<dyn Clock>,
        ttl: Duration,
        reauth_window: Duration,
    ) -> Self {
        Self {
            users,
            uses,
            sessions,
            notifier,
            audit,
            clock,
            ttl,
            reauth_window,
        }
    }

    /// Breaks the glass. Refused without the permission (403), with a
    /// reason too short to review (422), with a sign-in older than
    /// REAUTH_WINDOW (401: re-enter the password, and the second factor
    /// when enrolled), and while a window is already open (409).
    pub async fn start(
        &self,
        caller: &Caller<'_>,
        reason: &str,
        client: &ClientContext,
    ) -> Result<EmergencyGrant> {
        let user = caller.user;
        if !user.may_break_glass() {
            return Err(ServiceError::EmergencyNotPermitted);
        }
        let reason = EmergencyReason::parse(reason)
            .map_err(|field| ServiceError::Validation(vec![field]))?;
        let now = self.clock.now();
        caller.auth.ensure_recent(self.reauth_window, now)?;
        // The start is only as good as its record: refuse while the trail
        // cannot be written rather than grant unrecorded access.
        self.audit.ready()?;
        // A window that passed but was not closed yet would block the new
        // one: close it first (it gets its `ended` record).
        if let Some(open) = self.uses.open_emergency_use(&user.id).await? {
            if open.is_active(now) {
                return Err(ServiceError::EmergencyActive);
            }
            self.close(&open, EmergencyEnd::Expired, &ClientContext::default())
                .await?;
        }
        let window = EmergencyUse {
            id: new_id(),
            user_id: user.id.clone(),
            reason,
            started_at: now,
            expires_at: now + span(self.ttl),
            ended_at: None,
            ended_how: None,
            review: None,
        };
        if !self.uses.start_emergency_use(&window).await? {
            // Another request of the same user won the race.
            return Err(ServiceError::EmergencyActive);
        }
        let entry = self
            .audit
            .entry(AuditEvent::EmergencyAccessStarted, client)
            .user(&user.id)
            .email(user.email.as_str())
            .detail(format!(
                "use={} until={} reason={}",
                window.id,
                window.expires_at.to_rfc3339(),
                window.reason.as_str()
            ));
        self.audit.record(entry).await?;
        metrics::counter!(crate::metrics::EMERGENCY_STARTED).increment(1);
        tracing::warn!(user_id = %user.id, use_id = %window.id, "emergency access started");
        let admins = self.users.find_active_admins().await?;
        self.notifier
            .emergency_access_started(&admins, user, window.started_at, window.expires_at)
            .await;
        self.observe().await;
        let access = self
            .sessions
            .emergency_token(user, caller.session, caller.auth, &window)?;
        Ok(EmergencyGrant { window, access })
    }

    /// Ends the caller's window early and answers an access token without
    /// the claim for the same sign-in. Tokens issued during the window are
    /// refused from now on (the Bearer check looks their window up).
    pub async fn end(&self, caller: &Caller<'_>, client: &ClientContext) -> Result<AccessToken> {
        let now = self.clock.now();
        let open = self
            .uses
            .open_emergency_use(&caller.user.id)
            .await?
            .ok_or(ServiceError::EmergencyNotActive)?;
        self.audit.ready()?;
        let how = if open.is_active(now) {
            EmergencyEnd::EndedByUser
        } else {
            EmergencyEnd::Expired
        };
        self.close(&open, how, client).await?;
        if how == EmergencyEnd::Expired {
            return Err(ServiceError::EmergencyNotActive);
        }
        self.sessions
            .plain_token(caller.user, caller.session, caller.auth)
    }

    /// The user's window if one is open now (the portal's banner).
    pub async fn active_window(&self, user: &UserId) -> Result<Option<EmergencyUse>> {
        let now = self.clock.now();
        Ok(self
            .uses
            .open_emergency_use(user)
            .await?
            .filter(|open| open.is_active(now)))
    }

    /// Closes the uses whose window has passed, each with its
    /// `emergency_access_ended` record (`how=expired`), and updates the
    /// review gauges. Run by a background task every minute and before the
    /// review queue is read, so the trail and the queue never wait for the
    /// user to come back.
    pub async fn sweep(&self) -> Result<u64> {
        let now = self.clock.now();
        let mut closed = 0;
        for open in self
            .uses
            .expired_open_emergency_uses(now, SWEEP_BATCH)
            .await?
        {
            if self
                .close(&open, EmergencyEnd::Expired, &ClientContext::default())
                .await?
            {
                closed += 1;
            }
        }
        self.observe().await;
        Ok(closed)
    }

    /// Ends `open` and records it; false when another request or instance
    /// ended it first (that one recorded it). An expired window ends at
    /// its expiry, not when it was noticed.
    async fn close(
        &self,
        open: &EmergencyUse,
        how: EmergencyEnd,
        client: &ClientContext,
    ) -> Result<bool> {
        let at = match how {
            EmergencyEnd::Expired => open.expires_at,
            EmergencyEnd::EndedByUser => self.clock.now(),
        };
        if !self.uses.end_emergency_use(&open.id, at, how).await? {
            return Ok(false);
        }
        let entry = self
            .audit
            .entry(AuditEvent::EmergencyAccessEnded, client)
            .user(&open.user_id)
            .detail(format!(
                "use={} how={} reason={}",
                open.id,
                how.as_str(),
                open.reason.as_str()
            ));
        self.audit.record(entry).await?;
        tracing::info!(user_id = %open.user_id, use_id = %open.id, how = how.as_str(), "emergency access ended");
        Ok(true)
    }

    /// Sets the review gauges: unreviewed uses, and those overdue (older
    /// than [`REVIEW_DUE`]). A store that cannot answer leaves them as they
    /// were (logged): the next sweep tries again.
    pub async fn observe(&self) {
        let now = self.clock.now();
        let counts = tokio::try_join!(
            self.uses
                .count_unreviewed_emergency_uses(now + chrono::Duration::milliseconds(1)),
            self.uses.count_unreviewed_emergency_uses(now - REVIEW_DUE),
        );
        match counts {
            Ok((all, overdue)) => {
                metrics::gauge!(crate::metrics::EMERGENCY_UNREVIEWED).set(all as f64);
                metrics::gauge!(crate::metrics::EMERGENCY_OVERDUE).set(overdue as f64);
            }
            Err(e) => tracing::warn!(error = %e, "cannot count unreviewed emergency access"),
        }
    }
}

/// Whether a use started at `started_at` is overdue for review at `now`.
pub fn overdue(started_at: DateTime<Utc>, now: DateTime<Utc>) -> bool {
    now - started_at > REVIEW_DUE
}
