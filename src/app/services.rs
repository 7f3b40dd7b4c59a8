//! Wiring the use-cases: each service gets the narrow store traits it
//! names, all of them the one store (upcast from `Arc<dyn Store>`), and the
//! shared pieces (passwords, notifier, lockout, audit, clock) it uses; and
//! the settings and the email outbox they take, from the configuration.

use std::sync::Arc;

use anyhow::Context as _;
use secrecy::SecretString;

use crate::clock::Clock;
use crate::config::Config;
use crate::domain::mfa::MfaKey;
use crate::domain::PasswordPolicy;
use crate::services::lockout::LockoutPolicy;
use crate::services::mfa::{
    MfaAccount, MfaPolicy, PasskeyCeremonies, PasskeySignIn, Passkeys, RecoveryCodes, SecondStep,
    TotpFactors,
};
use crate::services::outbox::{Outbox, OutboxSettings};
use crate::services::passwords::Passwords;
use crate::services::tokens::Tokens;
use crate::services::{
    Account, AccountStatus, Audit, AuthSettings, EmergencyAccess, EmergencyReviews, Lockout, Login,
    Notifier, PasswordChange, Recovery, Registration, Sessions, UserDirectory,
};
use crate::services::{AccountErasure, AccountSupport, AdminTrail, MfaReset, RoleChange};
use crate::storage::Store;

/// The use-cases, each handed the narrow store traits it names (all of
/// them the one store, upcast) and the shared pieces it uses.
pub(super) struct Services {
    pub(super) sessions: Arc<Sessions>,
    pub(super) login: Arc<Login>,
    pub(super) registration: Arc<Registration>,
    pub(super) recovery: Arc<Recovery>,
    pub(super) account: Arc<Account>,
    pub(super) second_step: Arc<SecondStep>,
    pub(super) mfa: Arc<MfaAccount>,
    pub(super) passkeys: Arc<Passkeys>,
    pub(super) passkey_sign_in: Arc<PasskeySignIn>,
    pub(super) account_status: Arc<AccountStatus>,
    pub(super) emergency_access: Arc<EmergencyAccess>,
    pub(super) emergency_reviews: Arc<EmergencyReviews>,
    pub(super) user_directory: Arc<UserDirectory>,
    pub(super) role_change: Arc<RoleChange>,
    pub(super) account_support: Arc<AccountSupport>,
    pub(super) mfa_reset: Arc<MfaReset>,
    pub(super) account_erasure: Arc<AccountErasure>,
    pub(super) invitations: Arc<crate::services::Invitations>,
    pub(super) invitation_acceptance: Arc<crate::services::InvitationAcceptance>,
}

impl Services {
    pub(super) fn build(
        store: &Arc<dyn Store>,
        tokens: Tokens,
        outbox: &Arc<Outbox>,
        audit: &Audit,
        clock: &Arc<dyn Clock>,
        settings: &AuthSettings,
        mfa_key: MfaKey,
    ) -> anyhow::Result<Self> {
        let passwords = Arc::new(
            Passwords::for_this_machine().context("cannot start the password hashing threads")?,
        );
        let notifier = Arc::new(Notifier::new(
            Arc::clone(outbox),
            store.clone(),
            store.clone(),
            Arc::clone(clock),
            settings,
        ));
        let lockout = Arc::new(Lockout::new(
            store.clone(),
            settings.lockout.clone(),
            audit.clone(),
            Arc::clone(&notifier),
            Arc::clone(clock),
        ));
        let policy = Arc::new(MfaPolicy::new(
            store.clone(),
            settings.mfa_required_roles.clone(),
            settings.mfa_required_for_all,
        ));
        let sessions = Arc::new(Sessions::new(
            store.clone(),
            store.clone(),
            store.clone(),
            tokens,
            audit.clone(),
            Arc::clone(&notifier),
            Arc::clone(clock),
            Arc::clone(&policy),
            store.clone(),
            settings,
        ));
        let recovery_codes = Arc::new(RecoveryCodes::new(
            store.clone(),
            mfa_key.clone(),
            Arc::clone(clock),
        ));
        let totp = Arc::new(TotpFactors::new(
            store.clone(),
            mfa_key,
            Arc::clone(clock),
            settings.app_name.clone(),
            Arc::clone(&recovery_codes),
        ));
        let second_step = Arc::new(SecondStep::new(
            store.clone(),
            store.clone(),
            store.clone(),
            Arc::clone(&totp),
            Arc::clone(&recovery_codes),
            Arc::clone(&lockout),
            Arc::clone(&sessions),
            Arc::clone(&notifier),
            audit.clone(),
            Arc::clone(clock),
            store.clone(),
        ));
        let ceremonies = Arc::new(PasskeyCeremonies::new(
            &settings.app_name,
            &settings.app_url,
            store.clone(),
            Arc::clone(clock),
        )?);
        let passkeys = Arc::new(Passkeys::new(
            Arc::clone(&ceremonies),
            store.clone(),
            Arc::clone(&notifier),
            audit.clone(),
            Arc::clone(clock),
            settings.reauth_window,
        ));
        let passkey_sign_in = Arc::new(PasskeySignIn::new(
            ceremonies,
            store.clone(),
            store.clone(),
            store.clone(),
            Arc::clone(&lockout),
            Arc::clone(&sessions),
            audit.clone(),
            Arc::clone(clock),
        ));
        let mfa = Arc::new(MfaAccount::new(
            Arc::clone(&totp),
            Arc::clone(&recovery_codes),
            Arc::clone(&passwords),
            Arc::clone(&lockout),
            Arc::clone(&notifier),
            audit.clone(),
            Arc::clone(clock),
            settings.reauth_window,
        ));
        let login = Arc::new(Login::new(
            store.clone(),
            Arc::clone(&passwords),
            Arc::clone(&lockout),
            Arc::clone(&sessions),
            Arc::clone(&second_step),
            Arc::clone(&notifier),
            audit.clone(),
            Arc::clone(clock),
            settings,
        ));
        let registration = Arc::new(Registration::new(
            store.clone(),
            store.clone(),
            store.clone(),
            Arc::clone(&passwords),
            Arc::clone(&notifier),
            Arc::clone(&sessions),
            audit.clone(),
            Arc::clone(clock),
            settings,
        ));
        let password_change = Arc::new(PasswordChange::new(
            store.clone(),
            store.clone(),
            store.clone(),
            store.clone(),
            Arc::clone(&notifier),
            audit.clone(),
            Arc::clone(clock),
        ));
        let emergency_access = Arc::new(EmergencyAccess::new(
            store.clone(),
            store.clone(),
            Arc::clone(&sessions),
            Arc::clone(&notifier),
            audit.clone(),
            Arc::clone(clock),
            settings.emergency_access_ttl,
            settings.reauth_window,
        ));
        let emergency_reviews = Arc::new(EmergencyReviews::new(
            store.clone(),
            store.clone(),
            Arc::clone(&emergency_access),
            audit.clone(),
            Arc::clone(clock),
        ));
        let invitations = Arc::new(crate::services::Invitations::new(
            store.clone(),
            store.clone(),
            Arc::clone(&notifier),
            audit.clone(),
            Arc::clone(clock),
            settings,
        ));
        let invitation_acceptance = Arc::new(crate::services::InvitationAcceptance::new(
            store.clone(),
            store.clone(),
            Arc::clone(&passwords),
            Arc::clone(&sessions),
            audit.clone(),
            Arc::clone(clock),
            settings,
        ));
        let recovery = Arc::new(Recovery::new(
            store.clone(),
            store.clone(),
            Arc::clone(&passwords),
            Arc::clone(&lockout),
            Arc::clone(&notifier),
            Arc::clone(&password_change),
            audit.clone(),
            Arc::clone(clock),
            settings,
        ));
        let account_status = Arc::new(AccountStatus::new(
            store.clone(),
            store.clone(),
            Arc::clone(&password_change),
            audit.clone(),
            Arc::clone(clock),
        ));
        let account = Arc::new(Account::new(
            store.clone(),
            store.clone(),
            Arc::clone(&passwords),
            Arc::clone(&lockout),
            Arc::clone(&password_change),
            audit.clone(),
            Arc::clone(clock),
            settings,
        ));
        let user_directory = Arc::new(UserDirectory::new(
            store.clone(),
            store.clone(),
            store.clone(),
            Arc::clone(&lockout),
            policy,
            Arc::clone(&account),
        ));
        let admin_trail = AdminTrail::new(store.clone(), audit.clone());
        let role_change = Arc::new(RoleChange::new(
            store.clone(),
            settings.roles.clone(),
            admin_trail.clone(),
        ));
        let account_support = Arc::new(AccountSupport::new(
            Arc::clone(&lockout),
            Arc::clone(&password_change),
            Arc::clone(&notifier),
            admin_trail.clone(),
        ));
        let mfa_reset = Arc::new(MfaReset::new(
            store.clone(),
            store.clone(),
            Arc::clone(&password_change),
            notifier,
            admin_trail.clone(),
        ));
        let account_erasure = Arc::new(AccountErasure::new(
            store.clone(),
            passwords,
            lockout,
            Arc::clone(&account_status),
            Arc::clone(&mfa_reset),
            admin_trail,
        ));
        Ok(Self {
            sessions,
            login,
            registration,
            recovery,
            account,
            second_step,
            mfa,
            passkeys,
            passkey_sign_in,
            account_status,
            emergency_access,
            emergency_reviews,
            user_directory,
            role_change,
            account_support,
            mfa_reset,
            account_erasure,
            invitations,
            invitation_acceptance,
        })
    }
}

/// The use-cases' part of the configuration.
pub(super) fn auth_settings(config: &Config) -> AuthSettings {
    AuthSettings {
        app_name: config.server.app_name.clone(),
        app_url: config.server.app_url.clone(),
        refresh_ttl: config.tokens.jwt_refresh_ttl,
        reset_ttl: config.tokens.reset_token_ttl,
        password_policy: PasswordPolicy {
            min_chars: config.accounts.password_min_length,
        },
        refresh_reuse_grace: config.tokens.refresh_reuse_grace,
        refresh_idle: config.tokens.refresh_idle_timeout,
        lockout: LockoutPolicy {
            max_failures: config.limits.login_max_failures,
            window: config.limits.login_failure_window,
            first_lock: config.limits.login_lockout,
            max_lock: config.limits.login_lockout_max,
        },
        require_verified_email: config.accounts.require_verified_email,
        registration: config.accounts.registration,
        roles: config.accounts.roles.clone(),
        verification_ttl: config.tokens.verification_token_ttl,
        mail_per_account_per_hour: config.limits.mail_per_account_per_hour,
        reauth_window: config.mfa.reauth_window,
        mfa_required_roles: config.mfa.required_roles.clone(),
        mfa_required_for_all: config.mfa.required_for_all,
        emergency_access_ttl: config.sessions.emergency_access_ttl,
        invite_ttl: config.tokens.invite_ttl,
    }
}

/// The email outbox over the configured transport (SMTP, or the `.eml`
/// directory without MAIL_SERVER: both go through the same queue).
pub(super) fn outbox(
    config: &Config,
    store: &Arc<dyn Store>,
    refresh_secret: &SecretString,
    clock: &Arc<dyn Clock>,
) -> anyhow::Result<Arc<Outbox>> {
    let mailer: Arc<dyn crate::email::Mailer> = Arc::from(crate::email::from_config(
        &config.mail,
        !config.is_production(),
    )?);
    let from: lettre::message::Mailbox = config
        .mail
        .from
        .parse()
        .context("MAIL_FROM is not a valid mailbox")?;
    Ok(Outbox::new(
        store.clone(),
        store.clone(),
        mailer,
        crate::email::sealed::Sealer::derive_from(refresh_secret),
        OutboxSettings {
            app_name: config.server.app_name.clone(),
            app_url: config.server.app_url.clone(),
            message_id_domain: from.email.domain().to_owned(),
            timeout: config.mail.timeout,
            retry_for: config.mail.retry_for,
            concurrency: config.mail.concurrency,
        },
        Arc::clone(clock),
    ))
}

/// What `clinic-auth user create|disable|enable` runs (issue 19): the same
/// use-cases as the service, over the same store and audit trail, with the
/// outbox the changes' notices are queued in (the running service sends
/// them).
pub(crate) struct CliServices {
    pub(crate) account_status: Arc<AccountStatus>,
    pub(crate) direct_accounts: Arc<crate::services::invitations_direct::DirectAccounts>,
}

impl CliServices {
    pub(crate) fn build(
        config: &Config,
        store: &Arc<dyn Store>,
        audit: &Audit,
    ) -> anyhow::Result<Self> {
        let clock: Arc<dyn Clock> = Arc::new(crate::clock::SystemClock);
        let settings = auth_settings(config);
        let (_, refresh_secret) = super::secrets::jwt_secrets(config)?;
        let outbox = outbox(config, store, &refresh_secret, &clock)?;
        let notifier = Arc::new(Notifier::new(
            outbox,
            store.clone(),
            store.clone(),
            Arc::clone(&clock),
            &settings,
        ));
        let password_change = Arc::new(PasswordChange::new(
            store.clone(),
            store.clone(),
            store.clone(),
            store.clone(),
            Arc::clone(&notifier),
            audit.clone(),
            Arc::clone(&clock),
        ));
        let passwords =
            Arc::new(Passwords::new(1).context("cannot start the password hashing thread")?);
        Ok(Self {
            account_status: Arc::new(AccountStatus::new(
                store.clone(),
                store.clone(),
                password_change,
                audit.clone(),
                Arc::clone(&clock),
            )),
            direct_accounts: Arc::new(crate::services::invitations_direct::DirectAccounts::new(
                store.clone(),
                store.clone(),
                passwords,
                notifier,
                audit.clone(),
                clock,
                &settings,
            )),
        })
    }
}
