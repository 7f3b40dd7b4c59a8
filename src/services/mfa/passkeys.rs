//! Passkeys (WebAuthn, issue 18) as the signed-in user manages them: add
//! one (options, then the authenticator's answer), list, rename, remove.
//! Also the piece both this and the passkey sign-in share:
//! [`PasskeyCeremonies`], the relying party (RP id and origin from
//! APP_URL) and the server-side state between options and answer.

use std::sync::Arc;
use std::time::Duration;

use secrecy::SecretString;
use sha2::{Digest, Sha256};
use webauthn_rs::prelude::{
    CreationChallengeResponse, CredentialID, Passkey as WebauthnPasskey, PasskeyRegistration,
    RegisterPublicKeyCredential, Url, Uuid, Webauthn, WebauthnBuilder,
};

use webauthn_rs_proto::ResidentKeyRequirement;

use super::MfaError;
use crate::clock::Clock;
use crate::domain::token::random_token;
use crate::domain::{AuditEvent, FieldError, TokenHash, User, UserId};
use crate::services::audit::Audit;
use crate::services::notifier::Notifier;
use crate::services::sessions::Authenticated;
use crate::services::{span, ClientContext, ServiceError, MAX_TOKEN_LEN};
use crate::storage::{CeremonyKind, MfaStore, Passkey, PasskeyCeremony, StoreError};

type Result<T> = std::result::Result<T, ServiceError>;

/// How long the browser (and the person at it) has between the options and
/// the authenticator's answer: WebAuthn's own timeout is 5 minutes.
pub const CEREMONY_TTL: Duration = Duration::from_secs(300);

/// The longest passkey name, in characters.
pub const MAX_NAME_CHARS: usize = 64;

/// The name a passkey gets when the user gives none. webauthn-rs does not
/// expose the authenticator's AAGUID for unattested passkeys, and naming
/// it would need the FIDO metadata service: a plain default it is.
pub const DEFAULT_NAME: &str = "Passkey";

/// The relying party and the server half of each ceremony. A ceremony's
/// state (the challenge) is stored under the hash of a random handle, bound
/// to its user, expires by the injected clock and is taken by its answer:
/// never sent to, nor trusted from, the client.
pub struct PasskeyCeremonies {
    /// `None` when APP_URL cannot be a relying party (an IP address has no
    /// RP id): the service still runs, without passkeys.
    webauthn: Option<Webauthn>,
    store: Arc<dyn MfaStore>,
    clock: Arc<dyn Clock>,
}

/// Options to hand to `navigator.credentials.create()`/`get()`, with the
/// handle that names the waiting ceremony.
pub struct CeremonyStart<T> {
    pub handle: SecretString,
    pub options: T,
    pub expires_in: u64,
}

impl PasskeyCeremonies {
    /// The relying party for `app_url`: its host is the RP id, its origin
    /// the only origin accepted.
    pub fn new(
        app_name: &str,
        app_url: &str,
        store: Arc<dyn MfaStore>,
        clock: Arc<dyn Clock>,
    ) -> anyhow::Result<Self> {
        use anyhow::Context as _;
        let origin = Url::parse(app_url).context("APP_URL is not a URL")?;
        let rp_id = origin
            .host_str()
            .context("APP_URL has no host to serve as the passkey RP id")?
            .to_owned();
        let webauthn = WebauthnBuilder::new(&rp_id, &origin)
            .and_then(|b| b.rp_name(app_name).timeout(CEREMONY_TTL).build());
        // An IP address cannot be an RP id. Refusing to start would make an
        // IP-addressed install unusable for a feature it cannot have; it
        // runs without passkeys and says so.
        let webauthn = match webauthn {
            Ok(webauthn) => Some(webauthn),
            Err(e) => {
                tracing::warn!(app_url, error = %e, "passkeys are off: APP_URL must be a host name (not an IP address) to serve as the WebAuthn relying party");
                None
            }
        };
        Ok(Self {
            webauthn,
            store,
            clock,
        })
    }

    pub(crate) fn webauthn(&self) -> Result<&Webauthn> {
        self.webauthn
            .as_ref()
            .ok_or_else(|| MfaError::PasskeysUnavailable.into())
    }

    /// Stores `state` as a ceremony of `kind` for `user`; returns the
    /// handle (given to the client once, stored only hashed).
    pub(crate) async fn begin(
        &self,
        kind: CeremonyKind,
        user: Option<&UserId>,
        state: &impl serde::Serialize,
    ) -> Result<(SecretString, u64)> {
        let handle = random_token();
        let now = self.clock.now();
        let state = serde_json::to_string(state)
            .map_err(|e| ServiceError::Internal(anyhow::Error::new(e).context("passkey state")))?;
        self.store
            .put_passkey_ceremony(&PasskeyCeremony {
                handle: TokenHash::of(&handle),
                kind,
                user_id: user.cloned(),
                state,
                created_at: now,
                expires_at: now + span(CEREMONY_TTL),
            })
            .await?;
        Ok((SecretString::from(handle), CEREMONY_TTL.as_secs()))
    }

    /// Takes the ceremony of `handle` (single use) if it is of `kind`,
    /// unexpired and belongs to `user`; returns its state.
    pub(crate) async fn finish<S: serde::de::DeserializeOwned>(
        &self,
        kind: CeremonyKind,
        handle: &str,
        user: Option<&UserId>,
    ) -> Result<S> {
        if handle.is_empty() || handle.len() > MAX_TOKEN_LEN {
            return Err(MfaError::CeremonyInvalid.into());
        }
        let ceremony = self
            .store
            .take_passkey_ceremony(&TokenHash::of(handle), kind, self.clock.now())
            .await?
            .ok_or(MfaError::CeremonyInvalid)?;
        if ceremony.user_id.as_ref() != user {
            return Err(MfaError::CeremonyInvalid.into());
        }
        serde_json::from_str(&ceremony.state)
            .map_err(|e| ServiceError::Internal(anyhow::Error::new(e).context("passkey state")))
    }
}

/// The WebAuthn user handle of a user: their id when it is a UUID (ours
/// are), else a UUID-sized digest of it; never their email.
pub(crate) fn user_handle(user: &UserId) -> Uuid {
    Uuid::parse_str(user.as_str()).unwrap_or_else(|_| {
        let digest = Sha256::digest(user.as_str().as_bytes());
        let mut bytes = [0u8; 16];
        bytes.copy_from_slice(&digest[..16]);
        Uuid::from_bytes(bytes)
    })
}

/// The stored form of a credential id (base64url, as the browser names it).
pub(crate) fn credential_key(id: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(id)
}

/// The WebAuthn library's credential of a stored passkey.
pub(crate) fn credential_of(passkey: &Passkey) -> Result<WebauthnPasskey> {
    serde_json::from_str(&passkey.credential).map_err(|e| {
        ServiceError::Internal(anyhow::Error::new(e).context("stored passkey credential"))
    })
}

pub(crate) fn serialize_credential(credential: &WebauthnPasskey) -> Result<String> {
    serde_json::to_string(credential)
        .map_err(|e| ServiceError::Internal(anyhow::Error::new(e).context("passkey credential")))
}

/// A passkey name as given: trimmed, 1 to [`MAX_NAME_CHARS`] characters,
/// no control characters. `None` (or blank) means the default.
fn parse_name(name: Option<&str>) -> Result<String> {
    let name = name.map(str::trim).unwrap_or_default();
    if name.is_empty() {
        return Ok(DEFAULT_NAME.to_owned());
    }
    if name.chars().count() > MAX_NAME_CHARS || name.chars().any(char::is_control) {
        return Err(ServiceError::Validation(vec![FieldError::new(
            "name",
            format!(
                "Name must be at most {MAX_NAME_CHARS} characters, without control characters."
            ),
        )]));
    }
    Ok(name.to_owned())
}

/// Passkeys as the signed-in user manages them.
pub struct Passkeys {
    ceremonies: Arc<PasskeyCeremonies>,
    store: Arc<dyn MfaStore>,
    notifier: Arc<Notifier>,
    audit: Audit,
    clock: Arc<dyn Clock>,
    /// How recent the sign-in behind a change must be (REAUTH_WINDOW).
    reauth_window: Duration,
}

impl Passkeys {
    pub fn new(
        ceremonies: Arc<PasskeyCeremonies>,
        store: Arc<dyn MfaStore>,
        notifier: Arc<Notifier>,
        audit: Audit,
        clock: Arc<dyn Clock>,
        reauth_window: Duration,
    ) -> Self {
        Self {
            ceremonies,
            store,
            notifier,
            audit,
            clock,
            reauth_window,
        }
    }

    /// Step-up, as for the other factors: a stolen access token must not
    /// be enough to add a way in or take one away.
    fn recent(&self, who: &Authenticated) -> Result<()> {
        who.auth.ensure_recent(self.reauth_window, self.clock.now())
    }

    /// The user's passkeys, oldest first.
    pub async fn list(&self, user: &User) -> Result<Vec<Passkey>> {
        Ok(self.store.passkeys(&user.id).await?)
    }

    /// Whether the user has at least one passkey.
    pub async fn has_any(&self, user: &UserId) -> Result<bool> {
        Ok(!self.store.passkeys(user).await?.is_empty())
    }

    /// Options for adding a passkey; the user's existing ones are excluded
    /// so one authenticator is not registered twice.
    pub async fn register_options(
        &self,
        who: &Authenticated,
    ) -> Result<CeremonyStart<CreationChallengeResponse>> {
        self.recent(who)?;
        let user = &who.user;
        let exclude: Vec<CredentialID> = self
            .store
            .passkeys(&user.id)
            .await?
            .iter()
            .map(credential_of)
            .collect::<Result<Vec<_>>>()?
            .iter()
            .map(|c| c.cred_id().clone())
            .collect();
        let (mut options, state) = self
            .ceremonies
            .webauthn()?
            .start_passkey_registration(
                user_handle(&user.id),
                user.email.as_str(),
                user.name.as_str(),
                Some(exclude),
            )
            .map_err(|e| ServiceError::Internal(anyhow::anyhow!("passkey options: {e}")))?;
        // A discoverable credential where the authenticator can keep one,
        // so the passkey signs in without a username first; a security key
        // without room for one still registers (and serves as a second
        // step). webauthn-rs 0.5 asks for none ("discouraged").
        if let Some(selection) = options.public_key.authenticator_selection.as_mut() {
            selection.resident_key = Some(ResidentKeyRequirement::Preferred);
        }
        let (handle, expires_in) = self
            .ceremonies
            .begin(CeremonyKind::Register, Some(&user.id), &state)
            .await?;
        Ok(CeremonyStart {
            handle,
            options,
            expires_in,
        })
    }

    /// Adds the passkey the authenticator made for the ceremony `handle`
    /// (its options single use, the user's own, unexpired), named `name`.
    pub async fn register(
        &self,
        who: &Authenticated,
        handle: &str,
        credential: &serde_json::Value,
        name: Option<&str>,
        client: &ClientContext,
    ) -> Result<Passkey> {
        self.recent(who)?;
        let name = parse_name(name)?;
        self.audit.ready()?;
        let user = &who.user;
        let state: PasskeyRegistration = self
            .ceremonies
            .finish(CeremonyKind::Register, handle, Some(&user.id))
            .await?;
        let answer: RegisterPublicKeyCredential =
            serde_json::from_value(credential.clone()).map_err(|_| MfaError::PasskeyRefused)?;
        let credential = self
            .ceremonies
            .webauthn()?
            .finish_passkey_registration(&answer, &state)
            .map_err(|e| {
                tracing::info!(user_id = %user.id, error = %e, "passkey registration refused");
                MfaError::PasskeyRefused
            })?;
        let now = self.clock.now();
        let passkey = Passkey {
            id: crate::services::tokens::new_id(),
            user_id: user.id.clone(),
            credential_id: credential_key(credential.cred_id().as_ref()),
            name,
            credential: serialize_credential(&credential)?,
            counter: 0,
            created_at: now,
            last_used_at: None,
        };
        match self.store.add_passkey(&passkey).await {
            Ok(()) => {}
            // The same authenticator credential, on this account or another.
            Err(StoreError::Conflict) => return Err(MfaError::PasskeyExists.into()),
            Err(e) => return Err(e.into()),
        }
        let entry = self
            .audit
            .entry(AuditEvent::PasskeyAdded, client)
            .user(&user.id)
            .detail(format!("passkey={}", passkey.id));
        self.audit.record(entry).await?;
        self.notifier
            .passkey_changed(user, &passkey.name, true)
            .await;
        Ok(passkey)
    }

    /// Renames the user's passkey `id` (no step-up: a name changes no way
    /// in). `NotFound` for an id the user does not have.
    pub async fn rename(&self, user: &User, id: &str, name: &str) -> Result<()> {
        let name = parse_name(Some(name))?;
        if self.store.rename_passkey(&user.id, id, &name).await? {
            Ok(())
        } else {
            Err(MfaError::PasskeyNotFound.into())
        }
    }

    /// Removes the user's passkey `id`: audited and emailed. `NotFound` for
    /// an id the user does not have (another user's included).
    pub async fn remove(
        &self,
        who: &Authenticated,
        id: &str,
        client: &ClientContext,
    ) -> Result<()> {
        self.recent(who)?;
        self.audit.ready()?;
        let user = &who.user;
        let name = self
            .store
            .passkeys(&user.id)
            .await?
            .into_iter()
            .find(|p| p.id == id)
            .map(|p| p.name)
            .ok_or(MfaError::PasskeyNotFound)?;
        if !self.store.delete_passkey(&user.id, id).await? {
            return Err(MfaError::PasskeyNotFound.into());
        }
        let entry = self
            .audit
            .entry(AuditEvent::PasskeyRemoved, client)
            .user(&user.id)
            .detail(format!("passkey={id}"));
        self.audit.record(entry).await?;
        self.notifier.passkey_changed(user, &name, false).await;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_default_trim_and_refuse_control_characters() {
        assert_eq!(parse_name(None).unwrap(), DEFAULT_NAME);
        assert_eq!(parse_name(Some("   ")).unwrap(), DEFAULT_NAME);
        assert_eq!(parse_name(Some(" Work laptop ")).unwrap(), "Work laptop");
        assert!(parse_name(Some("a\u{7}b")).is_err());
        assert!(parse_name(Some(&"x".repeat(MAX_NAME_CHARS + 1))).is_err());
        assert!(parse_name(Some(&"é".repeat(MAX_NAME_CHARS))).is_ok());
    }

    #[test]
    fn user_handles_are_the_uuid_or_a_stable_digest() {
        let id = UserId::new("0190c4a2e0f47c3b9a5d2e8f1a2b3c4d");
        assert_eq!(
            user_handle(&id).simple().to_string(),
            "0190c4a2e0f47c3b9a5d2e8f1a2b3c4d"
        );
        let legacy = UserId::new("u1");
        assert_eq!(user_handle(&legacy), user_handle(&legacy));
        assert_ne!(user_handle(&legacy), user_handle(&UserId::new("u2")));
    }
}
