//! Self-registration and email verification: creating an account (DEFAULT_ROLE)
//! with its first verification link, and proving the person who registered
//! owns the address (so reset links and notices reach them, and
//! REQUIRE_VERIFIED_EMAIL can keep unproven accounts out).

use std::sync::Arc;

use super::audit::Audit;
use super::notifier::Notifier;
use super::outbox::Recipient;
use super::passwords::Passwords;
use super::sessions::{LoginOutcome, Sessions};
use super::tokens::Authentication;
use super::{AuthSettings, ClientContext, ServiceError, MAX_TOKEN_LEN};
use crate::clock::Clock;
use crate::domain::{
    AuditEvent, EmailAddress, FieldError, Password, PasswordPolicy, PersonName, RegistrationMode,
    Role, TokenHash, User,
};
use crate::storage::{
    EmailQueueStore, NewUser, OneTimeTokenStore, StoreError, TokenPurpose, UserStore,
};

type Result<T> = std::result::Result<T, ServiceError>;

pub struct RegisterInput {
    pub name: String,
    pub email: String,
    pub password: Password,
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

pub struct Registration {
    users: Arc<dyn UserStore>,
    /// The new user and the message carrying its link are stored together.
    queue: Arc<dyn EmailQueueStore>,
    links: Arc<dyn OneTimeTokenStore>,
    passwords: Arc<Passwords>,
    notifier: Arc<Notifier>,
    sessions: Arc<Sessions>,
    audit: Audit,
    clock: Arc<dyn Clock>,
    password_policy: PasswordPolicy,
    require_verified_email: bool,
    mode: RegistrationMode,
    /// Self-registration gets the clinic's DEFAULT_ROLE.
    role: Role,
}

impl Registration {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        users: Arc<dyn UserStore>,
        queue: Arc<dyn EmailQueueStore>,
        links: Arc<dyn OneTimeTokenStore>,
        passwords: Arc<Passwords>,
        notifier: Arc<Notifier>,
        sessions: Arc<Sessions>,
        audit: Audit,
        clock: Arc<dyn Clock>,
        settings: &AuthSettings,
    ) -> Self {
        Self {
            users,
            queue,
            links,
            passwords,
            notifier,
            sessions,
            audit,
            clock,
            password_policy: settings.password_policy,
            require_verified_email: settings.require_verified_email,
            mode: settings.registration,
            role: settings.roles.default_role().clone(),
        }
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
        if let Err(e) = self
            .passwords
            .check_new(password, &self.password_policy, email, "password")
            .await?
        {
            errors.push(e);
        }
        Ok(())
    }

    /// `RegistrationClosed` unless REGISTRATION is `open`: checked before
    /// anything else, so a closed service answers the same whatever was
    /// sent.
    pub fn ensure_open(&self) -> Result<()> {
        match self.mode {
            RegistrationMode::Open => Ok(()),
            mode => Err(ServiceError::RegistrationClosed(mode)),
        }
    }

    /// Self-registration: DEFAULT_ROLE, never verified by the caller, and
    /// only while REGISTRATION is `open`.
    pub async fn register(&self, input: RegisterInput, client: &ClientContext) -> Result<User> {
        self.ensure_open()?;
        self.audit.ready()?;
        let (name, email, mut errors) = parse_identity(&input.name, &input.email);
        let password_hash = match (&name, &email) {
            (Some(_), Some(email)) => self
                .passwords
                .check_and_hash_new(
                    &input.password,
                    &self.password_policy,
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
        let (link, letter) = self.notifier.registration_letter(Recipient {
            name: name.as_str(),
            address: email.as_str(),
            user_id: None,
        })?;
        let new_user = NewUser {
            email,
            name,
            password_hash,
            role: self.role.clone(),
            verified: false,
            created_at: self.clock.now(),
            verification_link: Some(link),
        };
        match self.queue.create_user_and_queue(&new_user, &letter).await {
            Ok(user) => {
                self.notifier.queued();
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

    /// Registers and signs the new user in, unless the address must be
    /// verified first (`None`: the link is on its way). Someone who has just
    /// chosen the password needs no second argon2 run to prove it, and a
    /// sign-in through `Login` would refuse the unverified address by
    /// mailing a second link that voids the first.
    pub async fn register_and_sign_in(
        &self,
        input: RegisterInput,
        client: &ClientContext,
    ) -> Result<Option<LoginOutcome>> {
        let user = self.register(input, client).await?;
        if self.require_verified_email && !user.verified {
            return Ok(None);
        }
        let email = user.email.as_str().to_owned();
        let auth = Authentication::password(self.clock.now());
        self.sessions
            .start(user, &email, auth, client)
            .await
            .map(Some)
    }

    /// Sends the signed-in user a new link. `AlreadyVerified` when there is
    /// nothing to prove.
    pub async fn resend_verification(&self, user: &User) -> Result<()> {
        if user.verified {
            return Err(ServiceError::AlreadyVerified);
        }
        self.notifier.send_verification(user).await
    }

    /// Consumes a verification link and marks its user verified. Single
    /// use; an unknown, used or expired token is `InvalidVerificationToken`.
    pub async fn verify_email(&self, token: &str, client: &ClientContext) -> Result<User> {
        let token = token.trim();
        if token.is_empty() || token.len() > MAX_TOKEN_LEN {
            return Err(ServiceError::InvalidVerificationToken);
        }
        let now = self.clock.now();
        let user_id = self
            .links
            .consume_one_time_token(TokenPurpose::EmailVerification, &TokenHash::of(token), now)
            .await?
            .ok_or(ServiceError::InvalidVerificationToken)?;
        let user = self
            .users
            .find_user_by_id(&user_id)
            .await?
            .filter(|user| !user.is_disabled())
            .ok_or(ServiceError::InvalidVerificationToken)?;
        if !self.users.set_verified(&user_id, now).await? {
            return Err(ServiceError::InvalidVerificationToken);
        }
        let user = User {
            verified: true,
            ..user
        };
        tracing::info!(user_id = %user.id, "email address verified");
        let entry = self
            .audit
            .entry(AuditEvent::EmailVerified, client)
            .user(&user.id);
        self.audit.record(entry.email(user.email.as_str())).await?;
        Ok(user)
    }
}
