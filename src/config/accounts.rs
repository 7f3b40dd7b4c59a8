//! Who may have an account and what it must meet: REGISTRATION, the
//! clinic's roles (ROLES, DEFAULT_ROLE), the password policy's minimum
//! length and whether sign-in waits for a verified email address.

use serde::Deserialize;

use super::{err, values, ConfigError, Vars};
pub use crate::domain::RegistrationMode;
use crate::domain::{Role, Roles};

#[derive(Debug, Clone)]
pub struct AccountsConfig {
    pub registration: RegistrationMode,
    /// `admin` plus ROLES (default `doctor`); DEFAULT_ROLE (default
    /// `doctor`) for self-registration.
    pub roles: Roles,
    pub password_min_length: usize,
    /// Refuse sign-in until the email address is verified.
    pub require_verified_email: bool,
}

#[derive(Default, Deserialize)]
#[serde(default, rename_all = "SCREAMING_SNAKE_CASE")]
struct AccountsVars {
    registration: Option<String>,
    roles: Option<String>,
    default_role: Option<String>,
    #[serde(deserialize_with = "values::number")]
    password_min_length: Option<usize>,
    #[serde(deserialize_with = "values::flag")]
    require_verified_email: Option<bool>,
}

impl AccountsConfig {
    pub(super) fn read(vars: &Vars) -> Result<Self, ConfigError> {
        let v: AccountsVars = vars.read()?;
        let password_min_length = v.password_min_length.unwrap_or(12);
        if !(8..=64).contains(&password_min_length) {
            return Err(err(
                "PASSWORD_MIN_LENGTH",
                "must be between 8 and 64 (ASVS 6.2.1 asks for at least 8)",
            ));
        }
        let registration = match v.registration.as_deref().map(str::trim) {
            None | Some("open") => RegistrationMode::Open,
            Some("invite") => RegistrationMode::Invite,
            Some("closed") => RegistrationMode::Closed,
            Some(other) => {
                return Err(err(
                    "REGISTRATION",
                    format!("expected open, invite or closed, got {other:?}"),
                ))
            }
        };
        Ok(Self {
            registration,
            roles: read_roles(v.roles.as_deref(), v.default_role.as_deref())?,
            password_min_length,
            require_verified_email: v.require_verified_email.unwrap_or(false),
        })
    }
}

/// ROLES and DEFAULT_ROLE. Unset, they are today's `doctor`; a role named
/// twice counts once; `admin` is always there and is never the default.
fn read_roles(roles: Option<&str>, default_role: Option<&str>) -> Result<Roles, ConfigError> {
    let names: Vec<&str> = values::list(roles.unwrap_or("doctor")).collect();
    if names.is_empty() {
        return Err(err(
            "ROLES",
            "must name at least one role besides admin (e.g. doctor)",
        ));
    }
    let roles = names
        .iter()
        .map(|name| {
            Role::parse(name).ok_or_else(|| {
                err(
                    "ROLES",
                    format!(
                        "{name:?} is not a role name: 1-32 of a-z, 0-9, _ and -, starting with a letter"
                    ),
                )
            })
        })
        .collect::<Result<Vec<_>, _>>()?;
    if roles.iter().all(Role::is_admin) {
        return Err(err(
            "ROLES",
            "must name at least one role besides admin (e.g. doctor)",
        ));
    }
    let default_name = default_role.unwrap_or("doctor");
    let default = Role::parse(default_name).ok_or_else(|| {
        err(
            "DEFAULT_ROLE",
            format!("{default_name:?} is not a role name"),
        )
    })?;
    if default.is_admin() {
        return Err(err(
            "DEFAULT_ROLE",
            "must not be admin: anyone who registers would be an administrator",
        ));
    }
    Roles::new(roles, default.clone()).ok_or_else(|| {
        err(
            "DEFAULT_ROLE",
            format!("{} is not one of ROLES", default.as_str()),
        )
    })
}
