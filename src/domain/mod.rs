//! Domain types: values that have been parsed and are known to be valid.
//!
//! Anything that crosses from the outside world (HTTP bodies, pages, the CLI)
//! into the services is turned into one of these first, so the services never
//! have to wonder whether an email is lowercase or a password long enough.

pub mod audit;
pub mod email;
pub mod emergency;
pub mod jwt_crypto;
pub mod mfa;
pub mod name;
pub mod password;
pub mod signing_key;
pub mod token;
pub mod user;

pub use audit::{AuditEvent, AuditKey, AuditOutcome, AuditRecord, HashVersion, NewAuditEvent};
pub use email::EmailAddress;
pub use emergency::{EmergencyEnd, EmergencyReason, EmergencyReview, EmergencyUse};
pub use name::PersonName;
pub use password::{Password, PasswordHash, PasswordPolicy};
pub use token::TokenHash;
pub use user::{RegistrationMode, Role, Roles, User, UserId};

/// A validation failure for one field, with every reason it failed.
///
/// Kept as a list because a user fixing a form wants to see all the problems
/// at once, not one per round trip.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldError {
    pub field: std::borrow::Cow<'static, str>,
    pub messages: Vec<String>,
}

impl FieldError {
    pub fn new(
        field: impl Into<std::borrow::Cow<'static, str>>,
        message: impl Into<String>,
    ) -> Self {
        Self {
            field: field.into(),
            messages: vec![message.into()],
        }
    }
}
