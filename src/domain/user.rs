//! The user aggregate as the services see it.

use std::fmt;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::{EmailAddress, PasswordHash, PersonName};

/// A user's unique, stable identifier (HIPAA 164.312(a)(2)(i)).
///
/// Opaque to everything but the store that minted it: a MongoDB ObjectId in
/// hex, or a UUID for SQLite.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct UserId(String);

impl UserId {
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for UserId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// What a user may do. Self-registration always yields `Doctor`; `Admin` is
/// granted only by an operator.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Doctor,
    Admin,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Doctor => "doctor",
            Role::Admin => "admin",
        }
    }

    pub fn parse(value: &str) -> Option<Self> {
        match value {
            "doctor" => Some(Role::Doctor),
            "admin" => Some(Role::Admin),
            _ => None,
        }
    }
}

/// A stored user. `Debug` is safe to print: the hash type redacts itself.
#[derive(Debug, Clone)]
pub struct User {
    pub id: UserId,
    pub email: EmailAddress,
    pub name: PersonName,
    pub role: Role,
    pub verified: bool,
    pub password_hash: PasswordHash,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    /// When the user's access tokens were last cut off (sign-out
    /// everywhere, a password change or reset, a role change).
    pub tokens_valid_after: Option<DateTime<Utc>>,
    /// Raised by one at every cut-off. Access tokens and portal sessions
    /// carry the version they were issued under and are refused once it is
    /// behind: exact, where comparing whole-second `iat` with the cut-off's
    /// instant let a token of the same second through.
    pub token_version: u64,
}
