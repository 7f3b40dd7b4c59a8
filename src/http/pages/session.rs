//! Portal sessions: tower-sessions backed by the active store, and the
//! typed data the portal keeps in them.
//!
//! The store never sees a session id: records are keyed by its SHA-256, so
//! a leaked database cannot be replayed as cookies.

use std::sync::Arc;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use tower_sessions::session::{Id, Record};
use tower_sessions::session_store::{self, SessionStore};
use tower_sessions::Session;

use secrecy::{ExposeSecret, SecretString};

use super::csrf::AnonCsrf;
use crate::clock::Clock;
use crate::domain::token::random_token;
use crate::domain::{TokenHash, UserId};
use crate::services::tokens::Authentication;
use crate::storage::{StoreError, WebSessionRecord, WebSessionStore};

/// The key under which [`PortalData`] lives in the session.
const KEY: &str = "portal";

/// Everything the portal remembers about a signed-in browser. Nothing is
/// stored for a browser that has not signed in (see [`super::csrf`]).
#[derive(Clone, Default, Serialize, Deserialize)]
pub struct PortalData {
    /// Per-session CSRF token, checked on every POST.
    pub csrf: String,
    pub user_id: Option<String>,
    pub signed_in_at: Option<DateTime<Utc>>,
    /// The user's token version at sign-in (or at this session's own
    /// password change): a later cut-off raises the stored version past it
    /// and ends the session, as it refuses access tokens.
    #[serde(default)]
    pub token_version: u64,
    /// The API refresh family issued at sign-in, revoked at sign-out.
    pub refresh_family: Option<String>,
    pub user_agent: Option<String>,
    pub ip: Option<String>,
    /// A one-time notice shown on the next page ("Password changed").
    pub flash: Option<String>,
    /// How and when the user last proved who they are (sign-in, the code
    /// page, re-authentication): step-up judges sensitive forms by it.
    #[serde(default)]
    pub auth: Authentication,
    /// A password-proven sign-in waiting for its code (issue 18). Only in
    /// a session that is not signed in yet.
    #[serde(default)]
    pub second_step: Option<PendingSecondStep>,
    /// Signed in for second-factor enrolment only (MFA_REQUIRED_ROLES):
    /// every page but `/account/two-step` sends the browser there, and the
    /// session has no API refresh family, until a factor is on.
    #[serde(default)]
    pub enrolment_only: bool,
}

/// The challenge of a sign-in waiting for its second step. The token is
/// sealed with a keystream only this session's id gives: the store sees
/// the id's hash alone, so a leaked database holds no usable token.
#[derive(Clone, Serialize, Deserialize)]
pub struct PendingSecondStep {
    sealed_token: String,
    /// Where to go once signed in (already checked by `safe_next`).
    pub next: String,
}

/// XORs `data` with SHA-256("clinic-auth portal second step" | id | block)
/// blocks: sealing and opening are the same operation.
fn keystream_xor(session_id: &str, data: &[u8]) -> Vec<u8> {
    use sha2::{Digest, Sha256};
    data.chunks(32)
        .enumerate()
        .flat_map(|(block, chunk)| {
            let pad = Sha256::new()
                .chain_update(b"clinic-auth portal second step\0")
                .chain_update(session_id.as_bytes())
                .chain_update((block as u64).to_be_bytes())
                .finalize();
            chunk
                .iter()
                .zip(pad)
                .map(|(b, p)| b ^ p)
                .collect::<Vec<u8>>()
        })
        .collect()
}

impl std::fmt::Debug for PortalData {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The CSRF token is a secret of the session: never printed.
        f.debug_struct("PortalData")
            .field("user_id", &self.user_id)
            .field("signed_in_at", &self.signed_in_at)
            .field("token_version", &self.token_version)
            .field("refresh_family", &self.refresh_family)
            .field("auth", &self.auth)
            .field(
                "second_step",
                &self.second_step.as_ref().map(|_| "[pending]"),
            )
            .field("enrolment_only", &self.enrolment_only)
            .finish_non_exhaustive()
    }
}

/// The portal's view of the tower-sessions `Session`.
pub struct Portal {
    pub session: Session,
    pub data: PortalData,
    /// The CSRF token of forms shown before sign-in.
    anon: AnonCsrf,
    /// The signed-in user's open emergency access window, looked up for
    /// this request (never stored in the session): every page shows the
    /// banner while it lasts.
    pub emergency: Option<crate::domain::EmergencyUse>,
}

impl Portal {
    /// Loads the portal data. Only reads: a browser that has not signed in
    /// gets no stored session, however many pages it views.
    pub async fn load(session: Session, anon: AnonCsrf) -> Result<Self, session_store::Error> {
        let data: PortalData = session
            .get(KEY)
            .await
            .map_err(|e| session_store::Error::Backend(e.to_string()))?
            .unwrap_or_default();
        Ok(Self {
            session,
            data,
            anon,
            emergency: None,
        })
    }

    /// The CSRF token this browser's forms carry and its POSTs must return:
    /// the session's own once signed in, the anonymous one before.
    pub fn csrf(&self) -> &str {
        if self.data.user_id.is_some() && !self.data.csrf.is_empty() {
            &self.data.csrf
        } else {
            &self.anon.token
        }
    }

    /// The browser came without its anonymous CSRF cookie: a form it sends
    /// was rendered for a cookie it no longer has (e.g. the browser was
    /// restarted), so nothing it sent can be trusted, but nothing was done
    /// either.
    pub fn lost_its_form_cookie(&self) -> bool {
        self.data.user_id.is_none() && self.anon.fresh
    }

    /// Makes this browser's session a signed-in one: a new session id (no
    /// fixation) and a new CSRF token. The caller fills in the rest.
    pub async fn begin_sign_in(&mut self) -> Result<(), tower_sessions::session::Error> {
        self.session.cycle_id().await?;
        self.data.csrf = random_token();
        Ok(())
    }

    /// Keeps a password-proven sign-in's challenge until the code comes:
    /// a fresh session id (nothing from before the password carries over)
    /// holding only the sealed token and where to go next.
    pub async fn begin_second_step(
        &mut self,
        token: &SecretString,
        next: &str,
    ) -> Result<(), session_store::Error> {
        let backend =
            |e: tower_sessions::session::Error| session_store::Error::Backend(e.to_string());
        self.session.cycle_id().await.map_err(backend)?;
        self.data = PortalData::default();
        // Saved once first: the sealing key is the id the store assigns.
        self.save().await?;
        self.session.save().await.map_err(backend)?;
        let id = self
            .session
            .id()
            .ok_or_else(|| session_store::Error::Backend("session has no id".to_owned()))?;
        let sealed = keystream_xor(&id.to_string(), token.expose_secret().as_bytes());
        self.data.second_step = Some(PendingSecondStep {
            sealed_token: hex::encode(sealed),
            next: next.to_owned(),
        });
        self.save().await
    }

    /// The waiting challenge's token, if this session holds one.
    pub fn second_step_token(&self) -> Option<SecretString> {
        let pending = self.data.second_step.as_ref()?;
        let id = self.session.id()?;
        let sealed = hex::decode(&pending.sealed_token).ok()?;
        let token = String::from_utf8(keystream_xor(&id.to_string(), &sealed)).ok()?;
        Some(SecretString::from(token))
    }

    pub async fn save(&self) -> Result<(), session_store::Error> {
        self.session
            .insert(KEY, &self.data)
            .await
            .map_err(|e| session_store::Error::Backend(e.to_string()))
    }

    /// The hash the store keys this session by (None before it is saved).
    pub fn id_hash(&self) -> Option<TokenHash> {
        self.session.id().map(|id| TokenHash::of(&id.to_string()))
    }

    pub fn user_id(&self) -> Option<UserId> {
        self.data.user_id.clone().map(UserId::new)
    }
}

/// tower-sessions store over the service's [`WebSessionStore`].
#[derive(Clone)]
pub struct StoreBackedSessions {
    store: Arc<dyn WebSessionStore>,
    /// Idle expiry is judged by it, in the store and here.
    clock: Arc<dyn Clock>,
}

impl std::fmt::Debug for StoreBackedSessions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("StoreBackedSessions")
    }
}

impl StoreBackedSessions {
    pub fn new(store: Arc<dyn WebSessionStore>, clock: Arc<dyn Clock>) -> Self {
        Self { store, clock }
    }

    fn to_record(&self, record: &Record) -> session_store::Result<WebSessionRecord> {
        let portal: Option<PortalData> = record
            .data
            .get(KEY)
            .and_then(|v| serde_json::from_value(v.clone()).ok());
        let portal = portal.unwrap_or_default();
        let now = self.clock.now();
        // The session layer sets the expiry by the system time (now plus
        // the idle timeout); the same distance from our clock's now is what
        // the store compares with it.
        let left = record.expiry_date - time::OffsetDateTime::now_utc();
        let expiry = now + chrono::Duration::milliseconds(left.whole_milliseconds() as i64);
        let expires_at = DateTime::from_timestamp(expiry.timestamp(), 0).unwrap_or(now);
        Ok(WebSessionRecord {
            id_hash: TokenHash::of(&record.id.to_string()),
            user_id: portal.user_id.map(UserId::new),
            data: serde_json::to_string(&record.data)
                .map_err(|e| session_store::Error::Encode(e.to_string()))?,
            user_agent: portal.user_agent,
            ip_address: portal.ip,
            refresh_family: portal.refresh_family,
            created_at: now,
            last_used_at: now,
            expires_at,
        })
    }
}

fn backend(err: StoreError) -> session_store::Error {
    session_store::Error::Backend(err.to_string())
}

#[async_trait]
impl SessionStore for StoreBackedSessions {
    async fn create(&self, record: &mut Record) -> session_store::Result<()> {
        // 128-bit random ids practically never collide; if one does, draw again.
        loop {
            match self
                .store
                .insert_web_session(&self.to_record(record)?)
                .await
            {
                Ok(()) => return Ok(()),
                Err(StoreError::Conflict) => record.id = Id::default(),
                Err(e) => return Err(backend(e)),
            }
        }
    }

    /// Updates the session only while it is still stored and alive. The
    /// session layer saves after every response (activity restarts the idle
    /// timer), including responses to requests that began before the
    /// session was ended: an upsert there would bring an ended session back
    /// to life. A save that finds nothing means the session is over.
    async fn save(&self, record: &Record) -> session_store::Result<()> {
        let updated = self
            .store
            .update_web_session(&self.to_record(record)?, self.clock.now())
            .await
            .map_err(backend)?;
        if !updated {
            tracing::debug!("session ended while a request was in flight; not saved");
        }
        Ok(())
    }

    async fn load(&self, id: &Id) -> session_store::Result<Option<Record>> {
        let Some(stored) = self
            .store
            .load_web_session(&TokenHash::of(&id.to_string()), self.clock.now())
            .await
            .map_err(backend)?
        else {
            return Ok(None);
        };
        let data = serde_json::from_str(&stored.data)
            .map_err(|e| session_store::Error::Decode(e.to_string()))?;
        let expiry_date = time::OffsetDateTime::from_unix_timestamp(stored.expires_at.timestamp())
            .map_err(|e| session_store::Error::Decode(e.to_string()))?;
        Ok(Some(Record {
            id: *id,
            data,
            expiry_date,
        }))
    }

    async fn delete(&self, id: &Id) -> session_store::Result<()> {
        self.store
            .delete_web_session(&TokenHash::of(&id.to_string()))
            .await
            .map(|_| ())
            .map_err(backend)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_output_never_shows_the_csrf_token() {
        let data = PortalData {
            csrf: "csrf-secret-value".to_owned(),
            user_id: Some("u1".to_owned()),
            ..PortalData::default()
        };
        let printed = format!("{data:?}");
        assert!(!printed.contains("csrf-secret-value"), "{printed}");
        let sealed = keystream_xor("session-id", b"challenge-token");
        assert_ne!(sealed, b"challenge-token");
        assert_eq!(keystream_xor("session-id", &sealed), b"challenge-token");
        assert_ne!(keystream_xor("other-id", &sealed), b"challenge-token");
        assert!(printed.contains("u1"), "{printed}");
    }
}
