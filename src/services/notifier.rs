//! What the use-cases tell people by email: single-use links (reset,
//! verification) and notices (password changed, session ended, sign-in
//! paused). It owns the branded contents and queues each message in the
//! outbox, which delivers it in the background.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};

use super::outbox::{self, Outbox, PendingEmail, Recipient};
use super::{span, AuthSettings, ServiceError};
use crate::clock::Clock;
use crate::domain::token::random_token;
use crate::domain::{TokenHash, User};
use crate::email::sealed::Content;
use crate::storage::{
    EmailQueueStore, LoginThrottleStore, NewLink, NewQueuedEmail, QueuedLink, StoreError,
    TokenPurpose,
};

type Result<T> = std::result::Result<T, ServiceError>;

/// The page a verification link opens.
const VERIFY_PAGE: &str = "verify-email";
/// The page a reset link opens.
const RESET_PAGE: &str = "reset-password";

/// When something happened, for people: "24 Nov 2026, 09:15 UTC". Taken
/// when the event happens, not when a retry finally sends the notice.
fn human_time(t: DateTime<Utc>) -> String {
    t.format("%d %b %Y, %H:%M UTC").to_string()
}

pub struct Notifier {
    outbox: Arc<Outbox>,
    queue: Arc<dyn EmailQueueStore>,
    /// The per-account email count reuses the login-throttle counter.
    quota: Arc<dyn LoginThrottleStore>,
    clock: Arc<dyn Clock>,
    app_url: String,
    reset_ttl: Duration,
    verification_ttl: Duration,
    mail_per_account_per_hour: u32,
}

impl Notifier {
    pub fn new(
        outbox: Arc<Outbox>,
        queue: Arc<dyn EmailQueueStore>,
        quota: Arc<dyn LoginThrottleStore>,
        clock: Arc<dyn Clock>,
        settings: &AuthSettings,
    ) -> Self {
        Self {
            outbox,
            queue,
            quota,
            clock,
            app_url: settings.app_url.clone(),
            reset_ttl: settings.reset_ttl,
            verification_ttl: settings.verification_ttl,
            mail_per_account_per_hour: settings.mail_per_account_per_hour,
        }
    }

    /// Tells the owner their password changed (ASVS 6.3.7): queued before
    /// the answer, sent in the background.
    pub async fn password_changed(&self, user: &User) {
        let content = Content::PasswordChanged {
            when: human_time(self.clock.now()),
        };
        self.notice(user, content).await;
    }

    /// Tells the owner a sign-in of theirs on `device` was ended because a
    /// replaced refresh token came back.
    pub async fn session_ended(&self, user: &User, device: String) {
        let content = Content::SessionEnded {
            when: human_time(self.clock.now()),
            device,
        };
        self.notice(user, content).await;
    }

    /// Tells the owner two-step sign-in was turned on or off: if it was not
    /// them, they learn at once.
    pub async fn two_step_changed(&self, user: &User, enabled: bool) {
        let content = Content::TwoStepChanged {
            when: human_time(self.clock.now()),
            enabled,
        };
        self.notice(user, content).await;
    }

    /// Tells the owner a passkey was added or removed: a passkey signs in
    /// on its own, so one they did not add must not go unnoticed.
    pub async fn passkey_changed(&self, user: &User, name: &str, added: bool) {
        let content = Content::PasskeyChanged {
            when: human_time(self.clock.now()),
            name: name.to_owned(),
            added,
        };
        self.notice(user, content).await;
    }

    /// Tells the owner one of their recovery codes finished a sign-in, and
    /// how many are left (the last one asks for a new set).
    pub async fn recovery_code_used(&self, user: &User, left: u32) {
        let content = Content::RecoveryCodeUsed {
            when: human_time(self.clock.now()),
            left,
        };
        self.notice(user, content).await;
    }

    /// Tells every administrator at once that `user` started emergency
    /// access, lasting until `until`.
    pub async fn emergency_access_started(
        &self,
        admins: &[User],
        user: &User,
        at: DateTime<Utc>,
        until: DateTime<Utc>,
    ) {
        for admin in admins {
            let content = Content::EmergencyAccessStarted {
                when: human_time(at),
                until: human_time(until),
                user_name: user.name.as_str().to_owned(),
                user_email: user.email.as_str().to_owned(),
            };
            self.notice(admin, content).await;
        }
    }

    /// Tells `user` an administrator removed the second factors of
    /// `owner`'s account: the owner themself, or an administrator (who
    /// hears whose), so a reset nobody asked for does not go unnoticed.
    pub async fn mfa_reset(&self, user: &User, owner: &User) {
        let content = Content::MfaReset {
            when: human_time(self.clock.now()),
            account: (user.id != owner.id).then(|| owner.email.as_str().to_owned()),
        };
        self.notice(user, content).await;
    }

    /// Tells the owner sign-in is paused for `length` since `at`.
    pub async fn account_locked(&self, user: &User, at: DateTime<Utc>, length: Duration) {
        let content = Content::AccountLocked {
            when: human_time(at),
            minutes: length.as_secs().div_ceil(60),
        };
        self.notice(user, content).await;
    }

    /// Queues a notice (no link) to `user`, before the caller answers; the
    /// outbox sends it in the background, so a slow or failing mail server
    /// changes no answer. The change the notice is about has already
    /// happened, so a database that refuses the notice does not undo or
    /// fail it: the loss is logged and counted
    /// (`clinic_auth_emails_dropped_total{reason="not_queued"}`).
    async fn notice(&self, user: &User, content: Content) {
        let kind = content.kind();
        let queued = async {
            let email = self.outbox.letter(user.into(), content, None)?;
            self.queue
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

    /// Stores a fresh verification link for `user` (the previous one stops
    /// working) with the queued email that carries it; past the account's
    /// hourly email limit, does nothing (the link already emailed keeps
    /// working).
    pub async fn send_verification(&self, user: &User) -> Result<()> {
        if !self.allowed(user, "verify_email").await? {
            return Ok(());
        }
        self.send_link(user, EmailedLink::Verification, |link| {
            self.verification_content(link)
        })
        .await
    }

    /// Stores a fresh reset link for `user` with the queued email that
    /// carries it (the caller has checked the account's email limit).
    pub async fn send_reset(&self, user: &User) -> Result<()> {
        let expires_minutes = self.reset_ttl.as_secs() / 60;
        self.send_link(user, EmailedLink::Reset, |link| Content::PasswordReset {
            link,
            expires_minutes,
        })
        .await
    }

    /// A registration's verification link and the message carrying it, to
    /// be stored with the new user (see `create_user_and_queue`); call
    /// [`Notifier::queued`] once they are.
    pub fn registration_letter(&self, to: Recipient<'_>) -> Result<(NewLink, NewQueuedEmail)> {
        let (link, url) = self.fresh_link(EmailedLink::Verification);
        let queued = QueuedLink {
            purpose: TokenPurpose::EmailVerification,
            token_hash: link.token_hash.clone(),
        };
        let email = self
            .outbox
            .letter(to, self.verification_content(url), Some(queued))?;
        Ok((link, email))
    }

    /// A message was stored by the caller: send it now.
    pub fn queued(&self) {
        self.outbox.queued();
    }

    /// Marks a request that will queue a message from a task of its own,
    /// so tests waiting for the outbox to settle wait for it too.
    pub fn will_queue(&self) -> PendingEmail {
        self.outbox.will_queue()
    }

    /// What a verification email with `link` says.
    fn verification_content(&self, link: String) -> Content {
        Content::VerifyEmail {
            link,
            expires_hours: self.verification_ttl.as_secs().div_ceil(3600),
        }
    }

    /// Stores a fresh single-use link for `purpose` (replacing the user's
    /// previous one) together with the queued message that carries it.
    async fn send_link(
        &self,
        user: &User,
        kind: EmailedLink,
        content: impl FnOnce(String) -> Content,
    ) -> Result<()> {
        let purpose = kind.purpose();
        let (link, url) = self.fresh_link(kind);
        let queued = QueuedLink {
            purpose,
            token_hash: link.token_hash.clone(),
        };
        let email = self
            .outbox
            .letter(user.into(), content(url), Some(queued))?;
        self.queue
            .replace_link_and_queue(purpose, &link.for_user(&user.id), &email)
            .await?;
        self.outbox.queued();
        Ok(())
    }

    /// A new single-use link for `purpose`: what to store (its hash) and
    /// the URL to email (the token itself, never stored).
    fn fresh_link(&self, kind: EmailedLink) -> (NewLink, String) {
        let token = random_token();
        let now = self.clock.now();
        let (ttl, page) = match kind {
            EmailedLink::Reset => (self.reset_ttl, RESET_PAGE),
            EmailedLink::Verification => (self.verification_ttl, VERIFY_PAGE),
            EmailedLink::SetPassword(ttl) => (ttl, RESET_PAGE),
        };
        let link = NewLink {
            token_hash: TokenHash::of(&token),
            expires_at: now + span(ttl),
            created_at: now,
        };
        (link, format!("{}/{page}?token={token}", self.app_url))
    }

    /// Counts one `what` email to `user` against MAIL_PER_ACCOUNT_PER_HOUR
    /// and says whether it may go. The per-IP limits do not stop a botnet
    /// from flooding one mailbox with links, so the count is per account
    /// and kept in the store (shared by every instance). It reuses the
    /// login-throttle counter (an hour-long window from the first email)
    /// under a key no submitted email can produce. Callers answer the same
    /// either way, so the limit reveals nothing.
    pub async fn allowed(
        &self,
        user: &User,
        what: &'static str,
    ) -> std::result::Result<bool, StoreError> {
        Ok(self.count_email(user, what).await?.is_none())
    }

    /// [`Notifier::allowed`] for a caller that says why nothing was sent
    /// (an administrator's request): `None` when the email may go, else
    /// how long until the account's hour-long window is over.
    pub async fn count_email(
        &self,
        user: &User,
        what: &'static str,
    ) -> std::result::Result<Option<Duration>, StoreError> {
        let now = self.clock.now();
        let hour = chrono::Duration::hours(1);
        let key = TokenHash::of(&format!("mail-quota:{}", user.id));
        let sent = self.quota.add_login_failure(&key, now, now - hour).await?;
        if sent.failures <= self.mail_per_account_per_hour {
            return Ok(None);
        }
        metrics::counter!(crate::metrics::EMAILS_SUPPRESSED, "email" => what).increment(1);
        tracing::warn!(
            user_id = %user.id,
            email = what,
            "email not sent: the account reached MAIL_PER_ACCOUNT_PER_HOUR"
        );
        let left = (sent.window_started_at + hour - now).to_std();
        Ok(Some(left.unwrap_or_default()))
    }

    /// Queues an invitation (issue 19) to someone who has no account yet.
    /// The caller stored `token`'s hash with the invitation. The message
    /// carries no `QueuedLink` (those are the one-time-token links): a
    /// message still queued when its invitation is revoked or resent goes
    /// out with a dead link, which the page refuses.
    pub async fn invitation(
        &self,
        to: Recipient<'_>,
        token: &str,
        role: &str,
        expires: Duration,
    ) -> Result<()> {
        let content = Content::Invitation {
            link: format!("{}/{INVITE_PAGE}?token={token}", self.app_url),
            role: role.to_owned(),
            expires_hours: expires.as_secs().div_ceil(3600),
        };
        let email = self.outbox.letter(to, content, None)?;
        self.queue.queue_email(&email).await?;
        self.outbox.queued();
        Ok(())
    }
}

impl Notifier {
    /// Emails the owner of an account made by `clinic-auth user create
    /// --email` a link to choose their first password: a reset link (the
    /// outbox checks it is still current before each attempt) valid `ttl`,
    /// in the invitation's words.
    pub async fn send_set_password(&self, user: &User, ttl: Duration) -> Result<()> {
        let role = user.role.as_str().to_owned();
        let expires_hours = ttl.as_secs().div_ceil(3600);
        self.send_link(user, EmailedLink::SetPassword(ttl), |link| {
            Content::Invitation {
                link,
                role,
                expires_hours,
            }
        })
        .await
    }
}

/// The page an invitation link opens.
pub const INVITE_PAGE: &str = "invite";

/// The one-time tokens that travel by email. A sign-in challenge token
/// (`TokenPurpose::MfaChallenge`) goes back in the sign-in answer instead,
/// so the type leaves no way to email one.
#[derive(Clone, Copy)]
enum EmailedLink {
    Reset,
    Verification,
    /// A new account's first password (`clinic-auth user create --email`):
    /// a reset link that lives this long.
    SetPassword(Duration),
}

impl EmailedLink {
    fn purpose(self) -> TokenPurpose {
        match self {
            Self::Reset | Self::SetPassword(_) => TokenPurpose::PasswordReset,
            Self::Verification => TokenPurpose::EmailVerification,
        }
    }
}
