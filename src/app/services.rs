//! Wiring the use-cases: each service gets the narrow store traits it
//! names, all of them the one store (upcast from `Arc<dyn Store>`), and the
//! shared pieces (passwords, notifier, lockout, audit, clock) it uses.

use std::sync::Arc;

use anyhow::Context as _;

use crate::clock::Clock;
use crate::services::outbox::Outbox;
use crate::services::passwords::Passwords;
use crate::services::tokens::Tokens;
use crate::services::{
    Account, Audit, AuthSettings, Lockout, Login, Notifier, Recovery, Registration, Sessions,
};
use crate::storage::Store;

/// The use-cases, each handed the narrow store traits it names (all of
/// them the one store, upcast) and the shared pieces it uses.
pub(super) struct Services {
    pub(super) sessions: Arc<Sessions>,
    pub(super) login: Arc<Login>,
    pub(super) registration: Arc<Registration>,
    pub(super) recovery: Arc<Recovery>,
    pub(super) account: Arc<Account>,
}

impl Services {
    pub(super) fn build(
        store: &Arc<dyn Store>,
        tokens: Tokens,
        outbox: &Arc<Outbox>,
        audit: &Audit,
        clock: &Arc<dyn Clock>,
        settings: &AuthSettings,
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
        let sessions = Arc::new(Sessions::new(
            store.clone(),
            store.clone(),
            store.clone(),
            tokens,
            audit.clone(),
            Arc::clone(&notifier),
            Arc::clone(clock),
            settings,
        ));
        let login = Arc::new(Login::new(
            store.clone(),
            Arc::clone(&passwords),
            Arc::clone(&lockout),
            Arc::clone(&sessions),
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
        let recovery = Arc::new(Recovery::new(
            store.clone(),
            store.clone(),
            store.clone(),
            store.clone(),
            Arc::clone(&passwords),
            Arc::clone(&lockout),
            Arc::clone(&notifier),
            audit.clone(),
            Arc::clone(clock),
            settings,
        ));
        let account = Arc::new(Account::new(
            store.clone(),
            store.clone(),
            store.clone(),
            store.clone(),
            passwords,
            lockout,
            notifier,
            audit.clone(),
            Arc::clone(clock),
            settings,
        ));
        Ok(Self {
            sessions,
            login,
            registration,
            recovery,
            account,
        })
    }
}
