//! API sign-ins: starting a refresh-token family once credentials are
//! proven, rotating it (with reuse detection, the grace window and the idle
//! timeout), ending it, and authenticating the access tokens it issues.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use secrecy::ExposeSecret;

use super::audit::Audit;
use super::mfa::MfaPolicy;
use super::notifier::Notifier;
use super::tokens::{
    self, AccessClaims, AccessToken, Authentication, SignedRefresh, TokenError, Tokens,
};
use super::{count_login, span, AuthSettings, ClientContext, ServiceError, MAX_TOKEN_LEN};
use crate::clock::Clock;
use crate::domain::{AuditEvent, EmergencyUse, TokenHash, User, UserId};
use crate::storage::{
    EmergencyStore, NewRefreshToken, RefreshTokenRecord, RefreshTokenStore, Rotation, UserStore,
    WebSessionStore,
};

type Result<T> = std::result::Result<T, ServiceError>;

/// What a successful sign-in (or refresh) hands back to the caller.
#[derive(Debug)]
pub struct LoginOutcome {
    pub user: User,
    pub access: AccessToken,
    pub refresh: SignedRefresh,
    /// The refresh-token family this sign-in belongs to.
    pub refresh_family: String,
    /// How and when the sign-in was proven (what the tokens carry as
    /// `amr` and `auth_time`): the portal keeps it for step-up.
    pub auth: Authentication,
}

impl std::fmt::Debug for SignedRefresh {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SignedRefresh")
            .field("jti", &self.jti)
            .field("expires_at", &self.expires_at)
            .finish_non_exhaustive()
    }
}

/// Whether a cut-off of the user's tokens came after this access token was
/// issued. Versions decide exactly; a token from before versions existed
/// (no `tv`) also falls back to comparing its `iat` with the cut-off.
fn issued_before_cut_off(claims: &AccessClaims, user: &User) -> bool {
    let behind = claims.tv.unwrap_or(0) < user.token_version;
    let legacy_behind = claims.tv.is_none()
        && user
            .tokens_valid_after
            .is_some_and(|cut| claims.iat < cut.timestamp());
    behind || legacy_behind
}

/// Who a Bearer access token speaks for, and of which sign-in.
#[derive(Debug)]
pub struct Authenticated {
    pub user: User,
    /// The refresh family (sign-in) the token was issued for.
    pub session: Option<String>,
    /// How and when that sign-in was proven.
    pub auth: Authentication,
    /// An enrolment token (MFA_REQUIRED_ROLES): the user must add a second
    /// factor, and only the enrolment routes accept it.
    pub enrolling: bool,
}

/// How long an enrolment token lasts: scanning a QR code and typing the
/// first code (or registering a passkey) takes longer than a code, and the
/// enrolment routes also need the sign-in within REAUTH_WINDOW.
pub const ENROLMENT_TTL: Duration = Duration::from_secs(600);

/// A password-proven sign-in of a user who must add a second factor first
/// (MFA_REQUIRED_ROLES, MFA_REQUIRED_FOR_ALL): an enrolment token, which
/// only the enrolment routes accept, instead of a session.
#[derive(Debug)]
pub struct EnrolmentGrant {
    pub user: User,
    pub token: AccessToken,
}

/// What a refresh answers.
#[derive(Debug)]
pub enum Refreshed {
    /// A new access token (and the rotated refresh token).
    Complete(LoginOutcome),
    /// The policy now asks this user for a second factor they do not have:
    /// the sign-in lives on (the refresh token was rotated as usual, so
    /// nobody is locked out), but its new token is an enrolment token.
    EnrolmentRequired {
        refresh: SignedRefresh,
        enrolment: EnrolmentGrant,
    },
}

pub struct Sessions {
    users: Arc<dyn UserStore>,
    refresh_tokens: Arc<dyn RefreshTokenStore>,
    /// A portal sign-in's page session ends with its family.
    web_sessions: Arc<dyn WebSessionStore>,
    tokens: Tokens,
    audit: Audit,
    notifier: Arc<Notifier>,
    clock: Arc<dyn Clock>,
    /// Who must have a second factor: a refresh of such a user without one
    /// answers an enrolment token.
    policy: Arc<MfaPolicy>,
    /// Emergency access windows: a token issued while one is open carries
    /// the `emergency` claim, and such a token dies when its window ends.
    emergency: Arc<dyn EmergencyStore>,
    /// How recent a sign-in must be for a sensitive change (step-up).
    reauth_window: Duration,
    refresh_ttl: Duration,
    /// An API sign-in unused for this long is over (automatic log-off).
    refresh_idle: Duration,
    /// How long a rotated refresh token may still be presented by a second
    /// tab before it counts as stolen; zero means strict single use.
    refresh_reuse_grace: Duration,
}

impl Sessions {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        users: Arc<dyn UserStore>,
        refresh_tokens: Arc<dyn RefreshTokenStore>,
        web_sessions: Arc<dyn WebSessionStore>,
        tokens: Tokens,
        audit: Audit,
        notifier: Arc<Notifier>,
        clock: Arc<dyn Clock>,
        policy: Arc<MfaPolicy>,
        emergency: Arc<dyn EmergencyStore>,
        settings: &AuthSettings,
    ) -> Self {
        Self {
            users,
            refresh_tokens,
            web_sessions,
            tokens,
            audit,
            notifier,
            clock,
            policy,
            emergency,
            reauth_window: settings.reauth_window,
            refresh_ttl: settings.refresh_ttl,
            refresh_idle: settings.refresh_idle,
            refresh_reuse_grace: settings.refresh_reuse_grace,
        }
    }

    /// Starts the session of a user whose credentials were just proven
    /// (`auth` says how): a new refresh family, its first access token,
    /// `login_success` naming the factors used.
    pub async fn start(
        &self,
        user: User,
        submitted_email: &str,
        auth: Authentication,
        client: &ClientContext,
    ) -> Result<LoginOutcome> {
        // Every way in (password, second step, registration) ends here: an
        // account disabled meanwhile gets no session.
        if user.is_disabled() {
            return Err(ServiceError::AccountDisabled);
        }
        let factors = format!("factors={}", auth.amr.join(","));
        let outcome = self.start_family(user, &auth, client).await?;
        count_login("success");
        let entry = self
            .audit
            .entry(AuditEvent::LoginSuccess, client)
            .email(submitted_email);
        self.audit
            .record(entry.user(&outcome.user.id).detail(factors))
            .await?;
        tracing::info!(user_id = %outcome.user.id, "login succeeded");
        Ok(outcome)
    }

    /// A password-proven sign-in of a user the policy asks for a second
    /// factor they do not have yet: no refresh family (nothing to refresh
    /// until enrolment is done), an enrolment token, and `login_success`
    /// saying the sign-in is limited to enrolment.
    pub async fn start_enrolment(
        &self,
        user: User,
        submitted_email: &str,
        auth: Authentication,
        client: &ClientContext,
    ) -> Result<EnrolmentGrant> {
        let token =
            self.tokens
                .issue_enrolment(&user, None, &auth, self.clock.now(), ENROLMENT_TTL)?;
        count_login("enrolment_required");
        let entry = self
            .audit
            .entry(AuditEvent::LoginSuccess, client)
            .email(submitted_email)
            .user(&user.id)
            .detail(format!("factors={} enrolment_only", auth.amr.join(",")));
        self.audit.record(entry).await?;
        tracing::info!(user_id = %user.id, "login limited to second-factor enrolment");
        Ok(EnrolmentGrant { user, token })
    }

    /// An access token for `user`'s sign-in `session`: with the
    /// `emergency` claim while an emergency access window of theirs is
    /// open (cut to what is left of it), else a plain one. A window that
    /// ended stays out of every later token: nothing renews it.
    pub async fn access_token(
        &self,
        user: &User,
        session: Option<&str>,
        auth: &Authentication,
    ) -> Result<AccessToken> {
        // Only those who may break the glass can have a window: everyone
        // else (nearly every sign-in and refresh) costs no extra read, and a
        // withdrawn permission drops the claim at the next refresh.
        if !user.may_break_glass() {
            return self.plain_token(user, session, auth);
        }
        let now = self.clock.now();
        match self.emergency.open_emergency_use(&user.id).await? {
            Some(window) if window.is_active(now) => {
                self.emergency_token(user, session, auth, &window)
            }
            _ => self.plain_token(user, session, auth),
        }
    }

    /// An access token carrying emergency access `window`.
    pub fn emergency_token(
        &self,
        user: &User,
        session: Option<&str>,
        auth: &Authentication,
        window: &EmergencyUse,
    ) -> Result<AccessToken> {
        Ok(self
            .tokens
            .issue_emergency(user, session, auth, self.clock.now(), window)?)
    }

    /// An access token without the emergency claim.
    pub fn plain_token(
        &self,
        user: &User,
        session: Option<&str>,
        auth: &Authentication,
    ) -> Result<AccessToken> {
        Ok(self
            .tokens
            .issue_access(user, session, auth, self.clock.now())?)
    }

    /// Step-up for sensitive changes (the password now; admin actions that
    /// change something, when there are any): a stolen access token or an
    /// unattended signed-in computer is not enough, the sign-in must be at
    /// most REAUTH_WINDOW old.
    pub fn require_recent(&self, who: &Authenticated) -> Result<()> {
        who.auth.ensure_recent(self.reauth_window, self.clock.now())
    }

    /// Whether the policy asks this user for a second factor they do not
    /// have yet.
    pub async fn must_enrol(&self, user: &User) -> Result<bool> {
        Ok(self.policy.must_enrol(user).await?)
    }

    /// The second factor the user has (RFC 8176 method), if any.
    pub async fn enrolled_factor(&self, user: &User) -> Result<Option<&'static str>> {
        Ok(self.policy.enrolled_factor(user).await?)
    }

    async fn start_family(
        &self,
        user: User,
        auth: &Authentication,
        client: &ClientContext,
    ) -> Result<LoginOutcome> {
        let now = self.clock.now();
        let family = tokens::new_id();
        let expires_at = now + span(self.refresh_ttl);
        let refresh = self
            .tokens
            .issue_refresh(&user.id, &family, auth, expires_at, now)?;
        self.refresh_tokens
            .insert_refresh_token(&refresh_record(&user.id, &family, &refresh, client, now))
            .await?;
        let access = self.access_token(&user, Some(&family), auth).await?;
        Ok(LoginOutcome {
            user,
            access,
            refresh,
            refresh_family: family,
            auth: auth.clone(),
        })
    }

    /// Rotates a refresh token: the presented one is retired and a child in
    /// the same family (with the family's original expiry) replaces it.
    pub async fn refresh(
        &self,
        presented: Option<&str>,
        client: &ClientContext,
    ) -> Result<Refreshed> {
        let raw = presented
            .filter(|t| t.len() <= MAX_TOKEN_LEN)
            .ok_or(ServiceError::InvalidRefreshToken)?;
        let claims = self
            .tokens
            .verify_refresh(raw)
            .map_err(|_| ServiceError::InvalidRefreshToken)?;
        // A rotation acknowledged with 503 (its record not stored) would
        // leave the client holding a retired token, which its retry after
        // the grace window presents as a replay: refuse before rotating
        // while the trail cannot be written.
        self.audit.ready()?;
        let now = self.clock.now();
        let user_id = UserId::new(claims.sub);
        let presented_hash = TokenHash::of(raw);
        // Each rotation issues a new token, so `iat` is the sign-in's last
        // use: past the idle timeout, it ends like an idle portal session.
        // But a token that was already replaced is a replay, whatever else
        // is true of it: a thief who waits out the idle timeout must still
        // be caught, so such a token goes on to the rotation, which judges
        // it. Only this rare path reads the record; the common one does not.
        let idle = now.timestamp().saturating_sub(claims.iat);
        if idle > i64::try_from(self.refresh_idle.as_secs()).unwrap_or(i64::MAX)
            && self
                .refresh_tokens
                .find_refresh_token(&presented_hash)
                .await?
                .is_none_or(|token| token.replaced_by.is_none())
        {
            let ended = self
                .refresh_tokens
                .revoke_refresh_family(&user_id, &claims.fam, now)
                .await?;
            if ended > 0 {
                let entry = self
                    .audit
                    .entry(AuditEvent::SessionRevoked, client)
                    .user(&user_id);
                self.audit.record(entry.detail("idle_timeout")).await?;
            }
            tracing::info!(user_id = %user_id, idle_seconds = idle, "refresh refused: sign-in idle too long");
            return Err(ServiceError::InvalidRefreshToken);
        }
        let expires_at =
            DateTime::from_timestamp(claims.exp, 0).ok_or(ServiceError::InvalidRefreshToken)?;
        let child =
            self.tokens
                .issue_refresh(&user_id, &claims.fam, &claims.auth, expires_at, now)?;
        let record = refresh_record(&user_id, &claims.fam, &child, client, now);
        let grace = span(self.refresh_reuse_grace);
        let (rotated, sibling) = match self
            .refresh_tokens
            .rotate_refresh_token(&presented_hash, now, grace, &record)
            .await?
        {
            Rotation::Rotated(rotated) => (rotated, false),
            Rotation::GraceSibling(rotated) => {
                tracing::info!(user_id = %user_id, "refresh within the reuse grace: sibling issued");
                (rotated, true)
            }
            Rotation::ReuseDetected { token, revoked } => {
                self.on_refresh_reuse(&token, revoked, client).await?;
                return Err(ServiceError::InvalidRefreshToken);
            }
            Rotation::Rejected => {
                tracing::info!(user_id = %user_id, "refresh rejected: token not active");
                return Err(ServiceError::InvalidRefreshToken);
            }
        };
        // A token whose account was deleted, or that names another user
        // than its record (a forged `sub` cannot pass the signature, but
        // the store is the authority), signs nobody in.
        let user = rotated
            .owner
            .filter(|owner| owner.id == rotated.retired.user_id && owner.id == user_id)
            // Disabling revokes every family; this covers a rotation that
            // raced it.
            .filter(|owner| !owner.is_disabled())
            .ok_or(ServiceError::InvalidRefreshToken)?;
        // A policy turned on after this sign-in began: the session is not
        // ended (that would lock out someone who cannot enrol from here),
        // but it reaches only enrolment until the user has a factor.
        let enrolling = self.policy.must_enrol(&user).await?;
        let access = if enrolling {
            self.tokens.issue_enrolment(
                &user,
                Some(&claims.fam),
                &claims.auth,
                now,
                ENROLMENT_TTL,
            )?
        } else {
            self.access_token(&user, Some(&claims.fam), &claims.auth)
                .await?
        };
        let mut entry = self.audit.entry(AuditEvent::Refresh, client).user(&user.id);
        if sibling {
            // Two tokens of one sign-in now live side by side: worth telling
            // apart from a plain rotation when reading the trail.
            entry = entry.detail("grace_sibling");
        } else if enrolling {
            entry = entry.detail("enrolment_only");
        }
        self.audit.record(entry).await?;
        if enrolling {
            return Ok(Refreshed::EnrolmentRequired {
                refresh: child,
                enrolment: EnrolmentGrant {
                    user,
                    token: access,
                },
            });
        }
        Ok(Refreshed::Complete(LoginOutcome {
            user,
            access,
            refresh: child,
            refresh_family: claims.fam,
            auth: claims.auth,
        }))
    }

    /// A token rotated away long ago came back: whoever holds it copied it
    /// (ASVS 10.4.5). The store already revoked its family; when that ended
    /// a live family, the user's access tokens die too (the thief may hold
    /// one from the same family) and the owner is told.
    async fn on_refresh_reuse(
        &self,
        token: &RefreshTokenRecord,
        revoked: u64,
        client: &ClientContext,
    ) -> Result<()> {
        metrics::counter!(crate::metrics::REFRESH_REUSE).increment(1);
        tracing::warn!(
            user_id = %token.user_id,
            family = %token.family_id,
            revoked,
            "replaced refresh token presented again: family revoked"
        );
        let entry = self
            .audit
            .entry(AuditEvent::RefreshReuseDetected, client)
            .user(&token.user_id)
            .detail(format!("family={} revoked={revoked}", token.family_id));
        // The thief's access tokens are cut and the owner told even when
        // the record is late; the answer still waits for it.
        let recorded = self.audit.record(entry).await;
        if revoked == 0 {
            // The family had already ended (signed out, or an earlier
            // replay): nothing more to stop, nobody to alarm again.
            return recorded;
        }
        self.users
            .cut_access_tokens(&token.user_id, self.clock.now())
            .await?;
        if let Some(user) = self.users.find_user_by_id(&token.user_id).await? {
            let device = token
                .user_agent
                .clone()
                .unwrap_or_else(|| "unknown device".to_owned());
            self.notifier.session_ended(&user, device).await;
        }
        recorded
    }

    /// Revokes the presented refresh token. Junk or nothing is fine: the
    /// caller is signed out either way.
    pub async fn logout(&self, presented: Option<&str>, client: &ClientContext) -> Result<()> {
        if let Some(raw) = presented.filter(|t| t.len() <= MAX_TOKEN_LEN) {
            if let Ok(claims) = self.tokens.verify_refresh(raw) {
                // The whole sign-in ends, not just this token: a second tab's
                // sibling (REFRESH_REUSE_GRACE), the access tokens it issued
                // (their `sid`) and, for a portal sign-in, its page session
                // go with it: one sign-in, one end.
                let user_id = UserId::new(claims.sub);
                let revoked = self
                    .refresh_tokens
                    .revoke_refresh_family(&user_id, &claims.fam, self.clock.now())
                    .await?;
                let pages = self
                    .web_sessions
                    .delete_family_web_sessions(&user_id, &claims.fam)
                    .await?;
                // Ending a sign-in that had already ended changes nothing:
                // recording it would let anyone holding an old cookie fill
                // the audit trail.
                if revoked + pages > 0 {
                    let entry = self.audit.entry(AuditEvent::Logout, client).user(&user_id);
                    self.audit.record(entry).await?;
                }
            }
        }
        Ok(())
    }

    /// The user behind a Bearer access token, and the sign-in (refresh
    /// family) it was issued for. A token issued before the user's
    /// `tokens_valid_after` (sign-out everywhere, password change or reset)
    /// is refused, so those take effect at once, not when tokens expire.
    ///
    /// An enrolment token is refused with `MfaEnrolmentRequired`: only
    /// [`Self::authenticate_enrolment`] (the enrolment routes) takes it.
    pub async fn authenticate(&self, access_token: &str) -> Result<Authenticated> {
        let who = self.authenticate_enrolment(access_token).await?;
        if who.enrolling {
            return Err(ServiceError::MfaEnrolmentRequired);
        }
        Ok(who)
    }

    /// Like [`Self::authenticate`], also accepting an enrolment token
    /// (`enrolling` says which): for the routes that add a second factor.
    pub async fn authenticate_enrolment(&self, access_token: &str) -> Result<Authenticated> {
        let invalid = || ServiceError::InvalidAccessToken(TokenError::Invalid);
        let claims = self
            .tokens
            .verify_bearer_reloading(access_token)
            .await
            .map_err(ServiceError::InvalidAccessToken)?;
        let user_id = UserId::new(claims.sub.clone());
        // The sign-in the token belongs to must still be alive (ASVS 7.4.1):
        // signing out of it, ending it from another device, or its
        // replay-detected revocation ends its access tokens at once. Both
        // lookups run side by side.
        let session_alive = async {
            match &claims.sid {
                Some(family) => {
                    self.refresh_tokens
                        .refresh_family_alive(&user_id, family, self.clock.now())
                        .await
                }
                None => Ok(true),
            }
        };
        // A token of an emergency access window dies when the window is
        // ended early (its expiry already bounds `exp`); only such tokens
        // pay for the lookup.
        let window_open = async {
            match &claims.emergency {
                Some(claim) => Ok(self
                    .emergency
                    .find_emergency_use(&claim.reason_id)
                    .await?
                    .is_some_and(|window| {
                        window.user_id == user_id && window.is_active(self.clock.now())
                    })),
                None => Ok::<_, crate::storage::StoreError>(true),
            }
        };
        let (user, alive, window_open) = tokio::join!(
            self.users.find_user_by_id(&user_id),
            session_alive,
            window_open
        );
        let user = user?.ok_or_else(invalid)?;
        if !alive? || !window_open? {
            return Err(invalid());
        }
        if issued_before_cut_off(&claims, &user) || user.is_disabled() {
            return Err(invalid());
        }
        Ok(Authenticated {
            enrolling: claims.is_enrolment(),
            user,
            session: claims.sid,
            auth: claims.auth,
        })
    }

    /// A fresh access token for a user still signed in on `session`, e.g.
    /// after a password change refused the old ones. It carries
    /// `token_version`, the version that change set: should another cut-off
    /// have followed it, the fresh token dies with the rest.
    pub async fn fresh_access(
        &self,
        user_id: &UserId,
        session: Option<&str>,
        auth: &Authentication,
        token_version: u64,
    ) -> Result<AccessToken> {
        let mut user = self
            .users
            .find_user_by_id(user_id)
            .await?
            .ok_or(ServiceError::InvalidAccessToken(TokenError::Invalid))?;
        user.token_version = token_version;
        Ok(self
            .tokens
            .issue_access(&user, session, auth, self.clock.now())?)
    }

    /// The user a portal session names (`None` once deleted).
    pub async fn user_by_id(&self, id: &UserId) -> Result<Option<User>> {
        Ok(self.users.find_user_by_id(id).await?)
    }
}

fn refresh_record(
    user_id: &UserId,
    family: &str,
    refresh: &SignedRefresh,
    client: &ClientContext,
    now: DateTime<Utc>,
) -> NewRefreshToken {
    NewRefreshToken {
        user_id: user_id.clone(),
        jti: refresh.jti.clone(),
        token_hash: TokenHash::of(refresh.token.expose_secret()),
        family_id: family.to_owned(),
        user_agent: client.user_agent.clone(),
        ip_address: client.ip.map(|ip| ip.to_string()),
        expires_at: refresh.expires_at,
        created_at: now,
    }
}
