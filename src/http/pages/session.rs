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

use crate::domain::token::random_token;
use crate::domain::{TokenHash, UserId};
use crate::storage::{StoreError, WebSessionRecord, WebSessionStore};

/// The key under which [`PortalData`] lives in the session.
const KEY: &str = "portal";

/// Everything the portal remembers about a browser.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct PortalData {
    /// Per-session CSRF token, checked on every POST.
    pub csrf: String,
    pub user_id: Option<String>,
    pub signed_in_at: Option<DateTime<Utc>>,
    /// The API refresh family issued at sign-in, revoked at sign-out.
    pub refresh_family: Option<String>,
    pub user_agent: Option<String>,
    pub ip: Option<String>,
    /// A one-time notice shown on the next page ("Password changed").
    pub flash: Option<String>,
}

/// The portal's view of the tower-sessions `Session`.
pub struct Portal {
    pub session: Session,
    pub data: PortalData,
    /// The session began with this request: whatever form the browser
    /// sent was rendered for a session that has since expired.
    pub fresh: bool,
}

impl Portal {
    /// Loads the portal data, creating a CSRF token on first use.
    pub async fn load(session: Session) -> Result<Self, session_store::Error> {
        let mut data: PortalData = session
            .get(KEY)
            .await
            .map_err(|e| session_store::Error::Backend(e.to_string()))?
            .unwrap_or_default();
        let fresh = data.csrf.is_empty();
        if fresh {
            data.csrf = random_token();
            session
                .insert(KEY, &data)
                .await
                .map_err(|e| session_store::Error::Backend(e.to_string()))?;
        }
        Ok(Self {
            session,
            data,
            fresh,
        })
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
}

impl std::fmt::Debug for StoreBackedSessions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("StoreBackedSessions")
    }
}

impl StoreBackedSessions {
    pub fn new(store: Arc<dyn WebSessionStore>) -> Self {
        Self { store }
    }

    fn to_record(record: &Record) -> session_store::Result<WebSessionRecord> {
        let portal: Option<PortalData> = record
            .data
            .get(KEY)
            .and_then(|v| serde_json::from_value(v.clone()).ok());
        let portal = portal.unwrap_or_default();
        let now = Utc::now();
        let expires_at =
            DateTime::from_timestamp(record.expiry_date.unix_timestamp(), 0).unwrap_or(now);
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
                .insert_web_session(&Self::to_record(record)?)
                .await
            {
                Ok(()) => return Ok(()),
                Err(StoreError::Conflict) => record.id = Id::default(),
                Err(e) => return Err(backend(e)),
            }
        }
    }

    async fn save(&self, record: &Record) -> session_store::Result<()> {
        self.store
            .save_web_session(&Self::to_record(record)?)
            .await
            .map_err(backend)
    }

    async fn load(&self, id: &Id) -> session_store::Result<Option<Record>> {
        let Some(stored) = self
            .store
            .load_web_session(&TokenHash::of(&id.to_string()), Utc::now())
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
