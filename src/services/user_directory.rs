//! The administrator's view of the accounts (issue 19): find users (by
//! email or name prefix, role, status; a page at a time) and see one in
//! full: sessions, lock, factors, recent audit events. Read-only; the
//! actions live in their own use-cases.

use std::sync::Arc;

use chrono::{DateTime, Utc};

use super::account::{Account, SessionInfo};
use super::lockout::{key_of, Lockout};
use super::mfa::MfaPolicy;
use super::{CurrentSession, ServiceError};
use crate::domain::{AuditEvent, AuditRecord, Role, User, UserId};
use crate::storage::{AuditQuery, AuditStore, MfaStore, UserQuery, UserStore};

type Result<T> = std::result::Result<T, ServiceError>;

/// How many rows one listing reads at the most while looking for matches
/// of a status the users table cannot filter (locked, no second factor):
/// past it the page ends short, with a `next` to go on from, so one
/// request stays bounded however rare the matches are.
const MAX_SCANNED: usize = 1000;

/// How many of a user's audit events the detail shows.
pub const RECENT_EVENTS: u32 = 20;

/// Where an account stands, as the list shows it: `disabled` wins over
/// `locked`, which wins over `active`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum AccountState {
    Active,
    /// Sign-in paused after too many failures (until `locked_until`).
    Locked,
    /// Offboarded by an administrator.
    Disabled,
}

/// The `status` filter of the list.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StatusFilter {
    /// Neither disabled nor locked.
    Active,
    Disabled,
    /// Not disabled, and sign-in is paused now.
    Locked,
    /// The email address is not verified yet.
    Unverified,
    /// Neither a confirmed authenticator nor a passkey.
    NoSecondFactor,
}

impl StatusFilter {
    /// The spellings the API takes.
    pub const NAMES: &'static str = "active, disabled, locked, unverified, no_second_factor";

    pub fn parse(value: &str) -> Option<Self> {
        Some(match value {
            "active" => Self::Active,
            "disabled" => Self::Disabled,
            "locked" => Self::Locked,
            "unverified" => Self::Unverified,
            "no_second_factor" => Self::NoSecondFactor,
            _ => return None,
        })
    }

    /// The part the users table decides; the rest is [`Self::admits`].
    fn narrow(self, query: &mut UserQuery) {
        match self {
            Self::Active | Self::Locked => query.disabled = Some(false),
            Self::Disabled => query.disabled = Some(true),
            Self::Unverified => query.verified = Some(false),
            Self::NoSecondFactor => {}
        }
    }

    fn admits(self, row: &UserRow) -> bool {
        match self {
            Self::Active => row.state == AccountState::Active,
            Self::Locked => row.state == AccountState::Locked,
            Self::NoSecondFactor => !row.second_factor,
            Self::Disabled | Self::Unverified => true,
        }
    }
}

/// What to list.
#[derive(Debug, Clone, Default)]
pub struct UserFilter {
    /// Matched against the start of the email or name, ignoring case.
    pub prefix: Option<String>,
    pub role: Option<Role>,
    pub status: Option<StatusFilter>,
    /// Only users whose email sorts after this one (the previous page's
    /// last).
    pub after_email: Option<String>,
    /// 1..=[`crate::storage::USER_PAGE_MAX`]; the caller validates it.
    pub limit: u32,
}

/// One account in the list.
#[derive(Debug, Clone)]
pub struct UserRow {
    pub user: User,
    pub state: AccountState,
    pub locked_until: Option<DateTime<Utc>>,
    /// A confirmed authenticator or a passkey.
    pub second_factor: bool,
    pub last_sign_in_at: Option<DateTime<Utc>>,
}

/// A page of the list, by email ascending.
#[derive(Debug)]
pub struct UserPage {
    pub users: Vec<UserRow>,
    /// The email to continue after; `None` when nothing more matches.
    pub next: Option<String>,
}

/// The sign-in lock of one account.
#[derive(Debug, Clone)]
pub struct LockState {
    pub locked_until: Option<DateTime<Utc>>,
    /// Failed sign-ins in the current window.
    pub failures: u32,
}

/// One passkey, without its credential.
#[derive(Debug, Clone)]
pub struct PasskeySummary {
    pub id: String,
    pub name: String,
    pub created_at: DateTime<Utc>,
    pub last_used_at: Option<DateTime<Utc>>,
}

/// The second factors of one account.
#[derive(Debug, Clone)]
pub struct Factors {
    /// A confirmed authenticator app.
    pub totp: bool,
    pub recovery_codes_left: u32,
    pub passkeys: Vec<PasskeySummary>,
}

/// One account in full.
#[derive(Debug)]
pub struct UserDetail {
    pub row: UserRow,
    pub sessions: Vec<SessionInfo>,
    pub lock: LockState,
    pub factors: Factors,
    /// Newest first, at most [`RECENT_EVENTS`].
    pub recent_events: Vec<AuditRecord>,
}

pub struct UserDirectory {
    users: Arc<dyn UserStore>,
    mfa: Arc<dyn MfaStore>,
    /// Read here (last sign-in, recent events); written only through Audit.
    trail: Arc<dyn AuditStore>,
    lockout: Arc<Lockout>,
    policy: Arc<MfaPolicy>,
    /// The user's sessions, listed as they see them on their own page.
    account: Arc<Account>,
}

impl UserDirectory {
    pub fn new(
        users: Arc<dyn UserStore>,
        mfa: Arc<dyn MfaStore>,
        trail: Arc<dyn AuditStore>,
        lockout: Arc<Lockout>,
        policy: Arc<MfaPolicy>,
        account: Arc<Account>,
    ) -> Self {
        Self {
            users,
            mfa,
            trail,
            lockout,
            policy,
            account,
        }
    }

    /// A page of the users matching `filter`. The users table filters what
    /// it can (prefix, role, disabled, verified); a status it cannot
    /// (locked, no second factor) is checked here row by row, reading on
    /// in email order until the page is full, the table is exhausted, or
    /// [`MAX_SCANNED`] rows were read: then the page may be short but
    /// carries `next`, so no later match is ever hidden.
    pub async fn list(&self, filter: &UserFilter) -> Result<UserPage> {
        let limit = filter.limit as usize;
        let mut query = UserQuery {
            prefix: filter.prefix.as_deref().map(str::to_lowercase),
            role: filter.role.clone(),
            after_email: filter.after_email.clone(),
            // One more than the page tells whether another page exists.
            limit: filter.limit + 1,
            ..UserQuery::default()
        };
        if let Some(status) = filter.status {
            status.narrow(&mut query);
        }
        let mut rows = Vec::new();
        let mut scanned = 0;
        loop {
            let batch = self.users.list_users(&query).await?;
            let exhausted = batch.len() < query.limit as usize;
            for user in batch {
                scanned += 1;
                query.after_email = Some(user.email.as_str().to_owned());
                let (row, _) = self.row(user).await?;
                if filter.status.is_none_or(|s| s.admits(&row)) {
                    rows.push(row);
                }
                if rows.len() > limit {
                    rows.truncate(limit);
                    let next = rows.last().map(|r| r.user.email.as_str().to_owned());
                    return self.with_sign_ins(rows, next).await;
                }
            }
            if exhausted {
                return self.with_sign_ins(rows, None).await;
            }
            if scanned >= MAX_SCANNED {
                return self.with_sign_ins(rows, query.after_email).await;
            }
        }
    }

    /// One account in full; `NotFound` for an unknown (or malformed) id.
    pub async fn detail(&self, id: &UserId) -> Result<UserDetail> {
        let user = self
            .users
            .find_user_by_id(id)
            .await?
            .ok_or(ServiceError::NotFound)?;
        let totp = self.mfa.totp_factor(&user.id).await?;
        let factors = Factors {
            totp: totp.is_some_and(|f| f.confirmed),
            recovery_codes_left: self.mfa.recovery_codes_left(&user.id).await?,
            passkeys: self
                .mfa
                .passkeys(&user.id)
                .await?
                .into_iter()
                .map(|p| PasskeySummary {
                    id: p.id,
                    name: p.name,
                    created_at: p.created_at,
                    last_used_at: p.last_used_at,
                })
                .collect(),
        };
        let sessions = self
            .account
            .list_sessions(&user.id, &CurrentSession::default())
            .await?;
        let recent_events = self
            .trail
            .query_audit_events(&AuditQuery {
                user_id: Some(user.id.as_str().to_owned()),
                limit: RECENT_EVENTS,
                ..AuditQuery::default()
            })
            .await?;
        let (mut row, failures) = self.row(user).await?;
        row.last_sign_in_at = self.last_sign_in(&row.user.id).await?;
        let lock = LockState {
            locked_until: row.locked_until,
            failures,
        };
        Ok(UserDetail {
            row,
            sessions,
            lock,
            factors,
            recent_events,
        })
    }

    /// The row of `user` but its last sign-in (read only for the rows
    /// shown), and its failed sign-ins in the current window.
    async fn row(&self, user: User) -> Result<(UserRow, u32)> {
        let throttle = self.lockout.state(&key_of(&user.email)).await?;
        let locked_until = self
            .lockout
            .remaining(throttle.as_ref())
            .and(throttle.as_ref().and_then(|t| t.locked_until));
        let failures = throttle.map_or(0, |t| t.failures);
        let second_factor = self.policy.enrolled_factor(&user).await?.is_some();
        let state = if user.is_disabled() {
            AccountState::Disabled
        } else if locked_until.is_some() {
            AccountState::Locked
        } else {
            AccountState::Active
        };
        let row = UserRow {
            user,
            state,
            locked_until,
            second_factor,
            last_sign_in_at: None,
        };
        Ok((row, failures))
    }

    async fn with_sign_ins(
        &self,
        mut rows: Vec<UserRow>,
        next: Option<String>,
    ) -> Result<UserPage> {
        for row in &mut rows {
            row.last_sign_in_at = self.last_sign_in(&row.user.id).await?;
        }
        Ok(UserPage { users: rows, next })
    }

    /// The time of the user's newest `login_success` record. The trail is
    /// the one place that keeps every completed sign-in (password, second
    /// step, passkey, portal) for as long as the trail is kept; refresh
    /// tokens and portal sessions are purged when they expire and would
    /// forget an old sign-in. One indexed read (user, seq) per row shown.
    async fn last_sign_in(&self, user: &UserId) -> Result<Option<DateTime<Utc>>> {
        let newest = self
            .trail
            .query_audit_events(&AuditQuery {
                user_id: Some(user.as_str().to_owned()),
                event: Some(AuditEvent::LoginSuccess),
                limit: 1,
                ..AuditQuery::default()
            })
            .await?;
        Ok(newest.first().map(|r| r.time))
    }
}
