//! Authentication use-cases: register, login, refresh, logout, current user,
//! forgot and reset password.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use secrecy::ExposeSecret;

use super::audit::Audit;
use super::lockout::{self, LockoutPolicy};
use super::outbox::{self, Outbox};
use super::passwords::{Passwords, Verification};
use super::tokens::{AccessToken, SignedRefresh, Tokens};
use super::verification::VERIFY_PAGE;
use super::{ClientContext, ServiceError};
use crate::clock::Clock;
use crate::domain::token::random_token;
use crate::domain::{
    AuditEvent, EmailAddress, FieldError, Password, PasswordPolicy, PersonName, Role, TokenHash,
    User, UserId,
};
use crate::email::sealed::Content;
use crate::storage::{
    NewLink, NewRefreshToken, NewUser, QueuedLink, RefreshTokenRecord, Rotation, Store, StoreError,
    TokenPurpose,
};

type Result<T> = std::result::Result<T, ServiceError>;

/// Reset tokens are 43 base64url characters; anything far longer is junk
/// and not worth hashing.
const MAX_TOKEN_LEN: usize = 4096;

/// The settings the use-cases depend on.
#[derive(Debug, Clone)]
pub struct AuthSettings {
    pub app_name: String,
    pub app_url: String,
    pub refresh_ttl: Duration,
    pub reset_ttl: Duration,
    pub password_policy: PasswordPolicy,
    /// An API sign-in unused for this long is over (automatic log-off).
    pub refresh_idle: Duration,
    /// How long a rotated refresh token may still be presented by a second
    /// tab before it counts as stolen; zero means strict single use.
    pub refresh_reuse_grace: Duration,
    pub lockout: LockoutPolicy,
    /// Refuse sign-in (403) until the email address is verified.
    pub require_verified_email: bool,
    pub verification_ttl: Duration,
    /// Reset and verification emails per account per hour, whatever the
    /// IPs asking.
    pub mail_per_account_per_hour: u32,
}

pub struct RegisterInput {
    pub name: String,
    pub email: String,
    pub password: Password,
}

/// What a successful sign-in (or refresh) hands back to the caller.
#[derive(Debug)]
pub struct LoginOutcome {
    pub user: User,
    pub access: AccessToken,
    pub refresh: SignedRefresh,
    /// The refresh-token family this sign-in belongs to.
    pub refresh_family: String,
}

impl std::fmt::Debug for SignedRefresh {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SignedRefresh")
            .field("jti", &self.jti)
            .field("expires_at", &self.expires_at)
            .finish_non_exhaustive()
    }
}

pub struct AuthService {
    store: Arc<dyn Store>,
    passwords: Passwords,
    tokens: Tokens,
    outbox: Arc<Outbox>,
    settings: AuthSettings,
    audit: Audit,
    clock: Arc<dyn Clock>,
}

/// A registration's name and email, each parsed if valid, and what is wrong
/// with the others.
fn parse_identity(
    name: &str,
    email: &str,
) -> (Option<PersonName>, Option<EmailAddress>, Vec<FieldError>) {
    let mut errors = Vec::new();
    let name = PersonName::parse(name).map_err(|e| errors.push(e)).ok();
    let email = EmailAddress::parse(email).map_err(|e| errors.push(e)).ok();
    (name, email, errors)
}

fn count_login(outcome: &'static str) {
    metrics::counter!(crate::metrics::LOGINS, "outcome" => outcome).increment(1);
}

/// When something happened, for people: "24 Nov 2026, 09:15 UTC". Taken
/// when the event happens, not when a retry finally sends the notice.
fn human_time(t: DateTime<Utc>) -> String {
    t.format("%d %b %Y, %H:%M UTC").to_string()
}

pub(super) fn chrono_duration(d: Duration) -> chrono::Duration {
    chrono::Duration::from_std(d).unwrap_or(chrono::Duration::MAX)
}

/// Whether a cut-off of the user's tokens came after this access token was
/// issued. Versions decide exactly; a token from before versions existed
/// (no `tv`) also falls back to comparing its `iat` with the cut-off.
fn issued_before_cut_off(claims: &super::tokens::AccessClaims, user: &User) -> bool {
    let behind = claims.tv.unwrap_or(0) < user.token_version;
    let legacy_behind = claims.tv.is_none()
        && user
            .tokens_valid_after
            .is_some_and(|cut| claims.iat < cut.timestamp());
    behind || legacy_behind
}

impl AuthService {
    pub fn new(
        store: Arc<dyn Store>,
        passwords: Passwords,
        tokens: Tokens,
        outbox: Arc<Outbox>,
        settings: AuthSettings,
        audit: Audit,
        clock: Arc<dyn Clock>,
    ) -> Self {
        Self {
            store,
            passwords,
            tokens,
            outbox,
            settings,
            audit,
            clock,
        }
    }

    /// Now, by the app's clock.
    pub(super) fn now(&self) -> DateTime<Utc> {
        self.clock.now()
    }

    pub(super) fn audit(&self) -> &Audit {
        &self.audit
    }

    pub fn settings(&self) -> &AuthSettings {
        &self.settings
    }

    pub(super) fn store(&self) -> &dyn Store {
        self.store.as_ref()
    }

    pub(super) fn passwords(&self) -> &Passwords {
        &self.passwords
    }

    pub(super) fn password_policy(&self) -> &PasswordPolicy {
        &self.settings.password_policy
    }

    pub(super) fn refresh_ttl(&self) -> chrono::Duration {
        chrono_duration(self.settings.refresh_ttl)
    }

    /// Queues a notice (no link) to `user`, before the caller answers; the
    /// outbox sends it in the background, so a slow or failing mail server
    /// changes no answer. The change the notice is about has already
    /// happened, so a database that refuses the notice does not undo or
    /// fail it: the loss is logged and counted
    /// (`clinic_auth_emails_dropped_total{reason="not_queued"}`).
    pub(super) async fn queue_notice(&self, user: &User, content: Content) {
        let kind = content.kind();
        let queued = async {
            let email = self.outbox.letter(user.into(), content, None)?;
            self.store
                .queue_email(&email)
                .await
                .map_err(ServiceError::from)?;
            Ok::<_, ServiceError>(())
        }
        .await;
        match queued {
            Ok(()) => self.outbox.queued(),
            Err(e) => {
                outbox::count_dropped("not_queued");
                tracing::error!(user_id = %user.id, email = kind, error = ?e, "email not queued");
            }
        }
    }

    /// Stores a fresh single-use link for `purpose` (replacing the user's
    /// previous one) together with the queued message that carries it.
    pub(super) async fn queue_link(
        &self,
        user: &User,
        purpose: TokenPurpose,
        content: impl FnOnce(String) -> Content,
    ) -> Result<()> {
        let page = match purpose {
            TokenPurpose::PasswordReset => "reset-password",
            TokenPurpose::EmailVerification => VERIFY_PAGE,
        };
        let (link, url) = self.fresh_link(purpose, page);
        let queued = QueuedLink {
            purpose,
            token_hash: link.token_hash.clone(),
        };
        let email = self
            .outbox
            .letter(user.into(), content(url), Some(queued))?;
        self.store
            .replace_link_and_queue(purpose, &link.for_user(&user.id), &email)
            .await?;
        self.outbox.queued();
        Ok(())
    }

    /// Counts one `what` email to `user` against MAIL_PER_ACCOUNT_PER_HOUR
    /// and says whether it may go. The per-IP limits do not stop a botnet
    /// from flooding one mailbox with links, so the count is per account
    /// and kept in the store (shared by every instance). It reuses the
    /// login-throttle counter (an hour-long window from the first email)
    /// under a key no submitted email can produce. Callers answer the same
    /// either way, so the limit reveals nothing.
    pub(super) async fn mail_allowed(
        &self,
        user: &User,
        what: &'static str,
    ) -> std::result::Result<bool, StoreError> {
        let now = self.clock.now();
        let key = TokenHash::of(&format!("mail-quota:{}", user.id));
        let sent = self
            .store
            .add_login_failure(&key, now, now - chrono::Duration::hours(1))
            .await?;
        if sent.failures <= self.settings.mail_per_account_per_hour {
            return Ok(true);
        }
        metrics::counter!(crate::metrics::EMAILS_SUPPRESSED, "email" => what).increment(1);
        tracing::warn!(
            user_id = %user.id,
            email = what,
            "email not sent: the account reached MAIL_PER_ACCOUNT_PER_HOUR"
        );
        Ok(false)
    }

    /// Checks registration input without creating anything.
    pub async fn validate_registration(
        &self,
        name: &str,
        email: &str,
        password: &Password,
    ) -> Result<(PersonName, EmailAddress)> {
        let (name, email, mut errors) = parse_identity(name, email);
        self.check_new_password(password, email.as_ref(), &mut errors)
            .await?;
        match (name, email) {
            (Some(name), Some(email)) if errors.is_empty() => Ok((name, email)),
            _ => Err(ServiceError::Validation(errors)),
        }
    }

    /// Adds the policy's objections to `password` (if any) to `errors`.
    async fn check_new_password(
        &self,
        password: &Password,
        email: Option<&EmailAddress>,
        errors: &mut Vec<FieldError>,
    ) -> Result<()> {
        let policy = &self.settings.password_policy;
        if let Err(e) = self
            .passwords
            .check_new(password, policy, email, "password")
            .await?
        {
            errors.push(e);
        }
        Ok(())
    }

    /// Self-registration: always a `doctor`, never verified by the caller.
    pub async fn register(&self, input: RegisterInput, client: &ClientContext) -> Result<User> {
        self.audit.ready()?;
        let (name, email, mut errors) = parse_identity(&input.name, &input.email);
        let password_hash = match (&name, &email) {
            (Some(_), Some(email)) => self
                .passwords
                .check_and_hash_new(
                    &input.password,
                    &self.settings.password_policy,
                    Some(email),
                    "password",
                )
                .await?
                .map_err(|e| errors.push(e))
                .ok(),
            // Nothing will be created, but the answer should still list the
            // password's problems: check it without hashing it.
            _ => {
                self.check_new_password(&input.password, email.as_ref(), &mut errors)
                    .await?;
                None
            }
        };
        let (Some(name), Some(email), Some(password_hash)) = (name, email, password_hash) else {
            return Err(ServiceError::Validation(errors));
        };
        // The user, its verification link and the queued email carrying
        // the link are stored together (one commit where the store can).
        let (link, url) = self.fresh_link(TokenPurpose::EmailVerification, VERIFY_PAGE);
        let queued = QueuedLink {
            purpose: TokenPurpose::EmailVerification,
            token_hash: link.token_hash.clone(),
        };
        let new_user = NewUser {
            email,
            name,
            password_hash,
            role: Role::Doctor,
            verified: false,
            created_at: self.clock.now(),
            verification_link: Some(link),
        };
        let to = outbox::Recipient {
            name: new_user.name.as_str(),
            address: new_user.email.as_str(),
            user_id: None,
        };
        let email = self
            .outbox
            .letter(to, self.verification_content(url), Some(queued))?;
        match self.store.create_user_and_queue(&new_user, &email).await {
            Ok(user) => {
                self.outbox.queued();
                let entry = self
                    .audit
                    .entry(AuditEvent::Register, client)
                    .user(&user.id);
                self.audit.record(entry.email(user.email.as_str())).await?;
                tracing::info!(user_id = %user.id, "user registered");
                Ok(user)
            }
            Err(StoreError::Conflict) => Err(ServiceError::EmailTaken),
            Err(e) => Err(e.into()),
        }
    }

    /// Checks the credentials and starts a new refresh-token family.
    ///
    /// Unknown email and wrong password are indistinguishable, in answer and
    /// in time: an unknown email still pays for one argon2 verification.
    pub async fn login(
        &self,
        email: &str,
        password: &Password,
        client: &ClientContext,
    ) -> Result<LoginOutcome> {
        let mut errors = Vec::new();
        if email.trim().is_empty() {
            errors.push(FieldError::new("email", "Email is required."));
        }
        if password.expose().is_empty() {
            errors.push(FieldError::new("password", "Password is required."));
        }
        if !errors.is_empty() {
            return Err(ServiceError::Validation(errors));
        }
        // Every outcome from here on is audited; while the trail cannot be
        // written, refuse before hashing or changing anything.
        self.audit.ready()?;
        // Checked before any password work, for known and unknown emails
        // alike, so a locked answer is cheap and reveals nothing.
        let throttle_key = lockout::key(email);
        let throttle = self.store.login_throttle(&throttle_key).await?;
        if let Some(retry_after) = lockout::remaining(throttle.as_ref(), self.clock.now()) {
            count_login("locked");
            tracing::info!("login refused: email locked after failed attempts");
            let entry = self
                .audit
                .entry(AuditEvent::LoginFailure, client)
                .email(email);
            self.audit.record(entry.detail("account_locked")).await?;
            return Err(ServiceError::AccountLocked { retry_after });
        }
        let user = match EmailAddress::parse(email) {
            Ok(email) => self.store.find_user_by_email(&email).await?,
            Err(_) => None,
        };
        let Some(user) = user else {
            self.passwords.verify_dummy(password).await?;
            count_login("invalid_credentials");
            let entry = self
                .audit
                .entry(AuditEvent::LoginFailure, client)
                .email(email);
            // Counted even when the record times out: a guess answered with
            // 503 still counts towards the lock.
            let recorded = self.audit.record(entry).await;
            self.count_failure(&throttle_key, email, None, client)
                .await?;
            recorded?;
            return Err(ServiceError::InvalidCredentials);
        };
        match self.passwords.verify(password, &user.password_hash).await? {
            Verification::Invalid => {
                count_login("invalid_credentials");
                let entry = self
                    .audit
                    .entry(AuditEvent::LoginFailure, client)
                    .email(email);
                let recorded = self.audit.record(entry.user(&user.id)).await;
                tracing::info!(user_id = %user.id, "login failed: wrong password");
                self.count_failure(&throttle_key, email, Some(&user), client)
                    .await?;
                recorded?;
                Err(ServiceError::InvalidCredentials)
            }
            Verification::Valid { needs_rehash } => {
                if needs_rehash {
                    self.upgrade_hash(&user, password).await;
                }
                if throttle.is_some() {
                    self.store.clear_login_throttle(&throttle_key).await?;
                }
                if self.settings.require_verified_email && !user.verified {
                    count_login("unverified");
                    tracing::info!(user_id = %user.id, "login refused: email not verified");
                    let entry = self
                        .audit
                        .entry(AuditEvent::LoginFailure, client)
                        .email(email);
                    let entry = entry.user(&user.id).detail("email_unverified");
                    self.audit.record(entry).await?;
                    // The person cannot reach the Bearer-only resend route
                    // without signing in, so the refusal sends a fresh link.
                    self.send_verification(&user).await?;
                    return Err(ServiceError::EmailUnverified);
                }
                self.signed_in(user, email, client).await
            }
        }
    }

    /// Registers and signs the new user in, unless the address must be
    /// verified first (`None`: the link is on its way). Someone who has just
    /// chosen the password needs no second argon2 run to prove it, and a
    /// sign-in through `login` would refuse the unverified address by
    /// mailing a second link that voids the first.
    pub async fn register_and_sign_in(
        &self,
        input: RegisterInput,
        client: &ClientContext,
    ) -> Result<Option<LoginOutcome>> {
        let user = self.register(input, client).await?;
        if self.settings.require_verified_email && !user.verified {
            return Ok(None);
        }
        let email = user.email.as_str().to_owned();
        self.signed_in(user, &email, client).await.map(Some)
    }

    /// Starts the session of a user whose credentials were just proven.
    async fn signed_in(
        &self,
        user: User,
        submitted_email: &str,
        client: &ClientContext,
    ) -> Result<LoginOutcome> {
        let outcome = self.start_family(user, client).await?;
        count_login("success");
        let entry = self
            .audit
            .entry(AuditEvent::LoginSuccess, client)
            .email(submitted_email);
        self.audit.record(entry.user(&outcome.user.id)).await?;
        tracing::info!(user_id = %outcome.user.id, "login succeeded");
        Ok(outcome)
    }

    /// Counts a failed sign-in against the submitted email and starts a lock
    /// when it reaches the limit. The owner of an existing account hears
    /// about each lock once, from whichever request started it.
    pub(super) async fn count_failure(
        &self,
        key: &TokenHash,
        submitted_email: &str,
        user: Option<&User>,
        client: &ClientContext,
    ) -> Result<()> {
        let policy = &self.settings.lockout;
        let now = self.clock.now();
        let state = self
            .store
            .add_login_failure(key, now, now - chrono_duration(policy.window))
            .await?;
        let Some(length) = policy.lock_after(&state) else {
            return Ok(());
        };
        if !self
            .store
            .lock_login(key, now + chrono_duration(length), now)
            .await?
        {
            return Ok(());
        }
        metrics::counter!(crate::metrics::ACCOUNT_LOCKS).increment(1);
        tracing::warn!(
            user_id = user.map(|u| u.id.as_str()),
            lock_seconds = length.as_secs(),
            "sign-in locked after repeated failures"
        );
        let mut entry = self
            .audit
            .entry(AuditEvent::AccountLocked, client)
            .email(submitted_email)
            .detail(format!("lock_seconds={}", length.as_secs()));
        if let Some(user) = user {
            entry = entry.user(&user.id);
        }
        self.audit.record(entry).await?;
        if let Some(user) = user {
            let content = Content::AccountLocked {
                when: human_time(now),
                minutes: length.as_secs().div_ceil(60),
            };
            self.queue_notice(user, content).await;
        }
        Ok(())
    }

    /// Replaces a legacy (bcrypt) or weaker hash while the plaintext is at
    /// hand. A failure here must not fail the login: the old hash still works.
    async fn upgrade_hash(&self, user: &User, password: &Password) {
        let result = async {
            let hash = self.passwords.hash(password).await?;
            self.store
                .set_password_hash(&user.id, &hash, self.clock.now())
                .await?;
            Ok::<_, ServiceError>(())
        }
        .await;
        match result {
            Ok(()) => tracing::info!(user_id = %user.id, "password hash upgraded to argon2id"),
            Err(e) => {
                tracing::warn!(user_id = %user.id, error = %e, "password hash upgrade failed")
            }
        }
    }

    async fn start_family(&self, user: User, client: &ClientContext) -> Result<LoginOutcome> {
        let now = self.clock.now();
        let family = super::tokens::new_id();
        let expires_at = now + chrono_duration(self.settings.refresh_ttl);
        let refresh = self
            .tokens
            .issue_refresh(&user.id, &family, expires_at, now)?;
        self.store
            .insert_refresh_token(&self.refresh_record(&user.id, &family, &refresh, client, now))
            .await?;
        let access = self.tokens.issue_access(&user, Some(&family), now)?;
        Ok(LoginOutcome {
            user,
            access,
            refresh,
            refresh_family: family,
        })
    }

    fn refresh_record(
        &self,
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

    /// Rotates a refresh token: the presented one is retired and a child in
    /// the same family (with the family's original expiry) replaces it.
    pub async fn refresh(
        &self,
        presented: Option<&str>,
        client: &ClientContext,
    ) -> Result<LoginOutcome> {
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
        if idle > i64::try_from(self.settings.refresh_idle.as_secs()).unwrap_or(i64::MAX)
            && self
                .store
                .find_refresh_token(&presented_hash)
                .await?
                .is_none_or(|token| token.replaced_by.is_none())
        {
            let ended = self
                .store
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
        let child = self
            .tokens
            .issue_refresh(&user_id, &claims.fam, expires_at, now)?;
        let record = self.refresh_record(&user_id, &claims.fam, &child, client, now);
        let grace = chrono_duration(self.settings.refresh_reuse_grace);
        let (rotated, sibling) = match self
            .store
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
            .ok_or(ServiceError::InvalidRefreshToken)?;
        let access = self.tokens.issue_access(&user, Some(&claims.fam), now)?;
        let mut entry = self.audit.entry(AuditEvent::Refresh, client).user(&user.id);
        if sibling {
            // Two tokens of one sign-in now live side by side: worth telling
            // apart from a plain rotation when reading the trail.
            entry = entry.detail("grace_sibling");
        }
        self.audit.record(entry).await?;
        Ok(LoginOutcome {
            user,
            access,
            refresh: child,
            refresh_family: claims.fam,
        })
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
        self.revoke_access_tokens(&token.user_id).await?;
        if let Some(user) = self.store.find_user_by_id(&token.user_id).await? {
            let device = token
                .user_agent
                .clone()
                .unwrap_or_else(|| "unknown device".to_owned());
            let content = Content::SessionEnded {
                when: human_time(self.clock.now()),
                device,
            };
            self.queue_notice(&user, content).await;
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
                    .store
                    .revoke_refresh_family(&user_id, &claims.fam, self.clock.now())
                    .await?;
                let pages = self
                    .store
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
    pub async fn authenticate(&self, access_token: &str) -> Result<(User, Option<String>)> {
        let invalid = || ServiceError::InvalidAccessToken(super::tokens::TokenError::Invalid);
        let claims = self
            .tokens
            .verify_access(access_token)
            .map_err(ServiceError::InvalidAccessToken)?;
        let user_id = UserId::new(claims.sub.clone());
        // The sign-in the token belongs to must still be alive (ASVS 7.4.1):
        // signing out of it, ending it from another device, or its
        // replay-detected revocation ends its access tokens at once. Both
        // lookups run side by side.
        let session_alive = async {
            match &claims.sid {
                Some(family) => {
                    self.store
                        .refresh_family_alive(&user_id, family, self.clock.now())
                        .await
                }
                None => Ok(true),
            }
        };
        let (user, alive) = tokio::join!(self.store.find_user_by_id(&user_id), session_alive);
        let user = user?.ok_or_else(invalid)?;
        if !alive? {
            return Err(invalid());
        }
        if issued_before_cut_off(&claims, &user) {
            return Err(invalid());
        }
        Ok((user, claims.sid))
    }

    /// Refuses every access token (and portal session) of the user issued
    /// until now. Returns the user's new token version, `None` when the
    /// user is gone.
    pub(super) async fn revoke_access_tokens(&self, user_id: &UserId) -> Result<Option<u64>> {
        Ok(self
            .store
            .cut_access_tokens(user_id, self.clock.now())
            .await?)
    }

    /// A fresh access token for a user still signed in on `session`, e.g.
    /// after a password change refused the old ones. It carries
    /// `token_version`, the version that change set: should another cut-off
    /// have followed it, the fresh token dies with the rest.
    pub async fn fresh_access(
        &self,
        user_id: &UserId,
        session: Option<&str>,
        token_version: u64,
    ) -> Result<AccessToken> {
        let mut user =
            self.store
                .find_user_by_id(user_id)
                .await?
                .ok_or(ServiceError::InvalidAccessToken(
                    super::tokens::TokenError::Invalid,
                ))?;
        user.token_version = token_version;
        Ok(self.tokens.issue_access(&user, session, self.clock.now())?)
    }

    /// Starts a password reset. Answers the same whether or not the account
    /// exists: the lookup, token and email all happen in the background, so
    /// not even the response time depends on it.
    pub fn forgot_password(self: &Arc<Self>, email: &str, client: &ClientContext) -> Result<()> {
        let email = EmailAddress::parse(email).map_err(|e| ServiceError::Validation(vec![e]))?;
        let this = Arc::clone(self);
        let client = client.clone();
        let pending = self.outbox.will_queue();
        tokio::spawn(async move {
            if let Err(e) = this.send_reset_email(&email, &client).await {
                tracing::error!(error = ?e, "password reset email not queued");
            }
            drop(pending);
        });
        Ok(())
    }

    async fn send_reset_email(
        &self,
        email: &EmailAddress,
        client: &ClientContext,
    ) -> anyhow::Result<()> {
        let user = self.store.find_user_by_email(email).await?;
        let mut entry = self
            .audit
            .entry(AuditEvent::PasswordResetRequested, client)
            .email(email.as_str());
        let mut allowed = true;
        if let Some(user) = &user {
            entry = entry.user(&user.id);
            allowed = self.mail_allowed(user, "password_reset").await?;
            if !allowed {
                entry = entry.detail("mail_limit");
            }
        }
        self.audit.record(entry).await?;
        let Some(user) = user else {
            tracing::info!("password reset requested for an unknown email");
            return Ok(());
        };
        // Over the limit nothing changes, not even the stored link: the one
        // already emailed keeps working.
        if !allowed {
            return Ok(());
        }
        let expires_minutes = self.settings.reset_ttl.as_secs() / 60;
        self.queue_link(&user, TokenPurpose::PasswordReset, |link| {
            Content::PasswordReset {
                link,
                expires_minutes,
            }
        })
        .await?;
        Ok(())
    }

    /// A new single-use link for `purpose`: what to store (its hash) and
    /// the URL to email (the token itself, never stored).
    pub(super) fn fresh_link(&self, purpose: TokenPurpose, page: &str) -> (NewLink, String) {
        let token = random_token();
        let now = self.clock.now();
        let ttl = match purpose {
            TokenPurpose::PasswordReset => self.settings.reset_ttl,
            TokenPurpose::EmailVerification => self.settings.verification_ttl,
        };
        let link = NewLink {
            token_hash: TokenHash::of(&token),
            expires_at: now + chrono_duration(ttl),
            created_at: now,
        };
        (
            link,
            format!("{}/{page}?token={token}", self.settings.app_url),
        )
    }

    /// Tells the owner their password changed (ASVS 6.3.7): queued before
    /// the answer, sent in the background.
    pub(super) async fn notify_password_changed(&self, user: &User) {
        let content = Content::PasswordChanged {
            when: human_time(self.clock.now()),
        };
        self.queue_notice(user, content).await;
    }

    /// Whether a reset link is still usable (for the page behind the link).
    pub async fn reset_token_is_valid(&self, token: &str) -> Result<bool> {
        if token.is_empty() || token.len() > MAX_TOKEN_LEN {
            return Ok(false);
        }
        Ok(self
            .store
            .find_one_time_token(
                TokenPurpose::PasswordReset,
                &TokenHash::of(token),
                self.clock.now(),
            )
            .await?
            .is_some())
    }

    /// Completes a reset: sets the new password and signs the user out
    /// everywhere (every refresh token is revoked).
    pub async fn reset_password(
        &self,
        token: &str,
        password: &Password,
        client: &ClientContext,
    ) -> Result<()> {
        if token.is_empty() || token.len() > MAX_TOKEN_LEN {
            return Err(ServiceError::InvalidResetToken);
        }
        // Consuming the link is final: refuse before it while the trail
        // cannot record the reset.
        self.audit.ready()?;
        let hash = TokenHash::of(token);
        let now = self.clock.now();
        // Peek first so a password the policy rejects does not burn the link.
        let user_id = self
            .store
            .find_one_time_token(TokenPurpose::PasswordReset, &hash, now)
            .await?
            .ok_or(ServiceError::InvalidResetToken)?;
        let user = self
            .store
            .find_user_by_id(&user_id)
            .await?
            .ok_or(ServiceError::InvalidResetToken)?;
        let new_hash = self
            .passwords
            .check_and_hash_new(
                password,
                &self.settings.password_policy,
                Some(&user.email),
                "password",
            )
            .await?
            .map_err(|e| ServiceError::Validation(vec![e]))?;
        match self
            .store
            .consume_one_time_token(TokenPurpose::PasswordReset, &hash, self.clock.now())
            .await?
        {
            Some(owner) if owner == user.id => {}
            _ => return Err(ServiceError::InvalidResetToken),
        }
        let now = self.clock.now();
        self.store
            .set_password_hash(&user.id, &new_hash, now)
            .await?;
        let revoked = self
            .store
            .revoke_user_refresh_tokens(&user.id, None, now)
            .await?;
        self.store
            .delete_user_one_time_tokens(TokenPurpose::PasswordReset, &user.id)
            .await?;
        self.store.delete_user_web_sessions(&user.id, None).await?;
        // Whoever completed a reset owns the mailbox: lift any lock.
        self.store
            .clear_login_throttle(&lockout::key_of(&user.email))
            .await?;
        self.revoke_access_tokens(&user.id).await?;
        self.notify_password_changed(&user).await;
        let entry = self
            .audit
            .entry(AuditEvent::PasswordResetCompleted, client)
            .user(&user.id);
        self.audit.record(entry).await?;
        // The link reached this mailbox and came back: the same proof a
        // verification link gives, so the address counts as verified.
        if !user.verified && self.store.set_verified(&user.id, now).await? {
            let entry = self
                .audit
                .entry(AuditEvent::EmailVerified, client)
                .user(&user.id)
                .email(user.email.as_str())
                .detail("password_reset");
            self.audit.record(entry).await?;
        }
        tracing::info!(user_id = %user.id, revoked_sessions = revoked, "password reset completed");
        Ok(())
    }

    pub async fn user_by_id(&self, id: &UserId) -> Result<Option<User>> {
        Ok(self.store.find_user_by_id(id).await?)
    }

    /// True when the database answers.
    pub async fn database_ok(&self) -> bool {
        self.store.ping().await.is_ok()
    }
}
