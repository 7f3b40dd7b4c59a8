//! The user aggregate as the services see it.

use std::fmt;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::{EmailAddress, FieldError, PasswordHash, PersonName};

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

/// What a user may do: `admin`, or one of the clinic's roles (ROLES, e.g.
/// `doctor,nurse,reception,billing`). A name, not an enum, because each
/// clinic names its own; which names are allowed is configuration
/// ([`crate::config::AccountsConfig`]), checked where a role is given (sign-up,
/// the CLI, an admin). A stored role this configuration does not list is
/// still read (and reported at start-up): refusing to read the user would
/// lock them out, and only `admin` grants anything here.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(transparent)]
#[schema(value_type = String, example = "doctor")]
pub struct Role(Arc<str>);

/// The longest role name: a label, not a description.
pub const ROLE_MAX_LEN: usize = 32;

impl Role {
    /// The one role with administrative rights, whatever ROLES says.
    pub fn admin() -> Self {
        Self(Arc::from("admin"))
    }

    pub fn is_admin(&self) -> bool {
        &*self.0 == "admin"
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// A well-formed role name: 1 to 32 of `a-z`, `0-9`, `_`, `-`, starting
    /// with a letter. Case is folded so that `Nurse` and `nurse` are one
    /// role. Whether the clinic uses the role is a separate question.
    pub fn parse(value: &str) -> Option<Self> {
        let name = value.trim().to_ascii_lowercase();
        let well_formed = (1..=ROLE_MAX_LEN).contains(&name.len())
            && name.starts_with(|c: char| c.is_ascii_lowercase())
            && name
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '-');
        well_formed.then(|| Self(Arc::from(name)))
    }

    /// A role as the store holds it, unchecked: see the type's comment.
    pub fn from_stored(value: &str) -> Self {
        Self(Arc::from(value))
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Who may create an account (REGISTRATION).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RegistrationMode {
    /// Anyone who can reach the service (the default, as before).
    Open,
    /// Only through an administrator's invitation.
    Invite,
    /// Only administrators and the CLI create accounts.
    Closed,
}

/// The roles a clinic uses: `admin` plus ROLES, and the one self-registration
/// gets (DEFAULT_ROLE). Checked wherever a role is given.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Roles {
    /// `admin` first, then ROLES in the order given, without repeats.
    known: Vec<Role>,
    default: Role,
}

impl Roles {
    /// `None` when `default` is `admin` or not among `roles`: self-
    /// registration must never yield an administrator.
    pub fn new(roles: impl IntoIterator<Item = Role>, default: Role) -> Option<Self> {
        let mut known = vec![Role::admin()];
        for role in roles {
            if !known.contains(&role) {
                known.push(role);
            }
        }
        (!default.is_admin() && known.contains(&default)).then_some(Self { known, default })
    }

    /// The role self-registration gets.
    pub fn default_role(&self) -> &Role {
        &self.default
    }

    pub fn all(&self) -> &[Role] {
        &self.known
    }

    pub fn contains(&self, role: &Role) -> bool {
        self.known.contains(role)
    }

    /// The role named `name` if this clinic uses it, else a field error for
    /// `field` that lists the roles it does use.
    pub fn check(&self, field: &'static str, name: &str) -> Result<Role, FieldError> {
        Role::parse(name)
            .filter(|role| self.contains(role))
            .ok_or_else(|| {
                FieldError::new(field, format!("Role must be one of: {}.", self.names()))
            })
    }

    /// "admin, doctor, nurse": for messages.
    pub fn names(&self) -> String {
        let names: Vec<&str> = self.known.iter().map(Role::as_str).collect();
        names.join(", ")
    }
}

impl Default for Roles {
    /// Today's two roles: what a deployment that sets neither ROLES nor
    /// DEFAULT_ROLE gets.
    fn default() -> Self {
        let doctor = Role::from_stored("doctor");
        Self {
            known: vec![Role::admin(), doctor.clone()],
            default: doctor,
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
    /// Set while an administrator has disabled the account (offboarding):
    /// no sign-in, refresh, reset or link works for it.
    pub disabled_at: Option<DateTime<Utc>>,
    /// Granted by an administrator: the user may start emergency access
    /// (administrators may without it).
    pub emergency_access: bool,
}

impl User {
    pub fn is_disabled(&self) -> bool {
        self.disabled_at.is_some()
    }

    /// Whether the user may break the glass: granted the permission, or an
    /// administrator.
    pub fn may_break_glass(&self) -> bool {
        self.emergency_access || self.role.is_admin()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn role(name: &str) -> Role {
        Role::parse(name).unwrap()
    }

    #[test]
    fn role_names_are_short_lowercase_labels() {
        assert_eq!(role(" Nurse ").as_str(), "nurse");
        assert_eq!(role("front-desk_2").as_str(), "front-desk_2");
        for bad in ["", "2nd", "-x", "nurse!", "a b", "é", &"a".repeat(33)] {
            assert_eq!(Role::parse(bad), None, "{bad:?}");
        }
        assert!(role("ADMIN").is_admin());
    }

    #[test]
    fn roles_always_include_admin_and_never_default_to_it() {
        let roles = Roles::new(
            [role("doctor"), role("nurse"), role("doctor")],
            role("nurse"),
        )
        .unwrap();
        assert_eq!(roles.names(), "admin, doctor, nurse");
        assert_eq!(roles.default_role().as_str(), "nurse");
        assert!(Roles::new([role("doctor")], Role::admin()).is_none());
        assert!(Roles::new([role("doctor")], role("nurse")).is_none());
        assert_eq!(
            Roles::default(),
            Roles::new([role("doctor")], role("doctor")).unwrap()
        );
    }

    #[test]
    fn check_names_the_roles_in_use() {
        let roles = Roles::default();
        assert_eq!(roles.check("role", "Admin").unwrap(), Role::admin());
        let e = roles.check("role", "nurse").unwrap_err();
        assert_eq!(e.field, "role");
        assert_eq!(e.messages, ["Role must be one of: admin, doctor."]);
    }
}
