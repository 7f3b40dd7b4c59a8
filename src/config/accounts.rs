//! What an account must meet: the password policy's minimum length and
//! whether sign-in waits for a verified email address.

use serde::Deserialize;

use super::{err, values, ConfigError, Vars};

#[derive(Debug, Clone)]
pub struct AccountsConfig {
    pub password_min_length: usize,
    /// Refuse sign-in until the email address is verified.
    pub require_verified_email: bool,
}

#[derive(Default, Deserialize)]
#[serde(default, rename_all = "SCREAMING_SNAKE_CASE")]
struct AccountsVars {
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
        Ok(Self {
            password_min_length,
            require_verified_email: v.require_verified_email.unwrap_or(false),
        })
    }
}
