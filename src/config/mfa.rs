//! Two-step sign-in (issue 18): MFA_ENCRYPTION_KEY, which seals the
//! authenticator secrets at rest and keys the recovery-code hashes;
//! REAUTH_WINDOW, how recent a sign-in must be to change a factor; and the
//! policy of who must have a second factor (MFA_REQUIRED_ROLES,
//! MFA_REQUIRED_FOR_ALL).

use std::time::Duration;

use serde::Deserialize;

use super::{err, values, ConfigError, Environment, Vars};
use crate::domain::mfa::MfaKey;
use crate::domain::Role;

const VAR: &str = "MFA_ENCRYPTION_KEY";

#[derive(Debug, Clone)]
pub struct MfaConfig {
    /// MFA_ENCRYPTION_KEY. `None` means "generate and persist one"
    /// (development only).
    pub mfa_encryption_key: Option<MfaKey>,
    /// REAUTH_WINDOW (default 10 minutes): turning on, removing or
    /// changing a second factor needs a sign-in at most this old (step-up).
    pub reauth_window: Duration,
    /// MFA_REQUIRED_ROLES (default `admin`; set but empty: no role): users
    /// of these roles must have a second factor, and until they do a
    /// sign-in reaches only the enrolment routes and page.
    pub required_roles: Vec<Role>,
    /// MFA_REQUIRED_FOR_ALL (default false): every user must.
    pub required_for_all: bool,
}

#[derive(Default, Deserialize)]
#[serde(default, rename_all = "SCREAMING_SNAKE_CASE")]
struct MfaVars {
    mfa_encryption_key: Option<String>,
    #[serde(deserialize_with = "values::duration")]
    reauth_window: Option<Duration>,
    mfa_required_roles: Option<String>,
    #[serde(deserialize_with = "values::flag")]
    mfa_required_for_all: Option<bool>,
}

impl MfaConfig {
    /// Required in production, like AUDIT_KEY: a generated key kept beside
    /// the database would travel with its backups, and losing it makes
    /// every enrolled authenticator unreadable. The value is never echoed:
    /// it is a secret even when malformed.
    pub(super) fn read(vars: &Vars, environment: Environment) -> Result<Self, ConfigError> {
        let v: MfaVars = vars.read()?;
        let mfa_encryption_key = v
            .mfa_encryption_key
            .map(|text| {
                MfaKey::from_hex(&text).ok_or_else(|| {
                    err(
                        VAR,
                        "must be exactly 64 hex characters (32 bytes, e.g. `openssl rand -hex 32`)",
                    )
                })
            })
            .transpose()?;
        if mfa_encryption_key.is_none() && environment == Environment::Production {
            return Err(err(
                VAR,
                "must be set in production: 64 hex characters (`openssl rand -hex 32`), \
                 kept outside the database and its backups",
            ));
        }
        let reauth_window = v.reauth_window.unwrap_or(Duration::from_secs(10 * 60));
        if reauth_window.is_zero() {
            return Err(err("REAUTH_WINDOW", "must be longer than zero"));
        }
        let required_roles = match v.mfa_required_roles {
            Some(raw) => required_roles(&raw)?,
            // Empty is a choice of its own (no role), not "use the default".
            None if vars.is_blank("MFA_REQUIRED_ROLES") => Vec::new(),
            None => vec![Role::admin()],
        };
        Ok(Self {
            mfa_encryption_key,
            reauth_window,
            required_roles,
            required_for_all: v.mfa_required_for_all.unwrap_or(false),
        })
    }
}

/// A comma-separated list of role names, each listed once. Whether the
/// clinic uses them (ROLES) is checked once both are read
/// ([`super::Config::from_vars`]).
fn required_roles(raw: &str) -> Result<Vec<Role>, ConfigError> {
    let mut roles = Vec::new();
    for name in values::list(raw) {
        let role = Role::parse(name).ok_or_else(|| {
            err(
                "MFA_REQUIRED_ROLES",
                format!(
                    "unknown role {name:?}: expected comma-separated role names, or empty for none"
                ),
            )
        })?;
        if !roles.contains(&role) {
            roles.push(role);
        }
    }
    Ok(roles)
}

#[cfg(test)]
mod tests {
    use crate::config::Config;
    use crate::domain::Role;

    const HEX: &str = "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff";

    fn production(mfa: Option<&str>) -> Result<Config, crate::config::ConfigError> {
        let mut pairs = vec![
            ("APP_ENV", "production"),
            ("JWT_ACCESS_SECRET", "0123456789abcdef0123456789abcdef"),
            ("JWT_REFRESH_SECRET", "fedcba9876543210fedcba9876543210"),
            (
                "AUDIT_KEY",
                "ffeeddccbbaa99887766554433221100ffeeddccbbaa99887766554433221100",
            ),
        ];
        pairs.extend(mfa.map(|key| ("MFA_ENCRYPTION_KEY", key)));
        Config::from_pairs(&pairs)
    }

    #[test]
    fn production_requires_the_key_and_development_generates_one() {
        let e = production(None).unwrap_err();
        assert_eq!(e.var, "MFA_ENCRYPTION_KEY");
        assert!(e.message.contains("openssl rand -hex 32"), "{e}");
        let c = production(Some(HEX)).unwrap();
        assert_eq!(c.mfa.mfa_encryption_key.unwrap().to_hex(), HEX);
        let c = Config::from_pairs(&[]).unwrap();
        assert!(c.mfa.mfa_encryption_key.is_none(), "generated at start-up");
    }

    #[test]
    fn the_policy_defaults_to_admins_and_empty_means_no_role() {
        let c = Config::from_pairs(&[]).unwrap();
        assert_eq!(c.mfa.required_roles, [Role::admin()]);
        assert!(!c.mfa.required_for_all);
        let c = Config::from_pairs(&[("MFA_REQUIRED_ROLES", "")]).unwrap();
        assert!(c.mfa.required_roles.is_empty());
        let c = Config::from_pairs(&[("MFA_REQUIRED_ROLES", "  ")]).unwrap();
        assert!(c.mfa.required_roles.is_empty());
        let c = Config::from_pairs(&[
            ("MFA_REQUIRED_ROLES", " Doctor , admin,doctor,"),
            ("MFA_REQUIRED_FOR_ALL", "yes"),
        ])
        .unwrap();
        assert_eq!(
            c.mfa.required_roles,
            [Role::parse("doctor").unwrap(), Role::admin()]
        );
        assert!(c.mfa.required_for_all);
        // A role of the clinic's own (ROLES) can be required too.
        let c = Config::from_pairs(&[("ROLES", "doctor,nurse"), ("MFA_REQUIRED_ROLES", "nurse")])
            .unwrap();
        assert_eq!(c.mfa.required_roles, [Role::parse("nurse").unwrap()]);
    }

    #[test]
    fn bad_policy_values_are_one_line_errors_naming_the_variable() {
        for (var, value, says) in [
            (
                "MFA_REQUIRED_ROLES",
                "admin,nurse",
                "unknown role \"nurse\"",
            ),
            ("MFA_REQUIRED_ROLES", "admins", "unknown role \"admins\""),
            ("MFA_REQUIRED_FOR_ALL", "maybe", "expected true or false"),
        ] {
            let e = Config::from_pairs(&[(var, value)]).unwrap_err();
            assert_eq!(e.var, var);
            assert!(e.message.contains(says), "{e}");
            assert_eq!(e.to_string().lines().count(), 1, "{e}");
        }
    }

    #[test]
    fn a_malformed_key_is_refused_without_being_shown() {
        for bad in [
            &HEX[..62],
            format!("{HEX}00").as_str(),
            "g".repeat(64).as_str(),
        ] {
            let e = Config::from_pairs(&[("MFA_ENCRYPTION_KEY", bad)]).unwrap_err();
            assert_eq!(e.var, "MFA_ENCRYPTION_KEY");
            assert_eq!(e.to_string().lines().count(), 1, "{e}");
            assert!(!e.to_string().contains(&bad[..16]), "{e}");
        }
        let c = Config::from_pairs(&[("MFA_ENCRYPTION_KEY", HEX)]).unwrap();
        assert!(!format!("{c:?}").contains(&HEX[..16]));
    }
}
