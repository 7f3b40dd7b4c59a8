//! Passwords as people choose them, and their stored hashes.
//!
//! The policy follows NIST SP 800-63B / ASVS 6.2: length over composition,
//! refuse guessable passwords, never truncate. Nothing here hashes: that is
//! CPU-heavy and lives in `services::passwords`.

use std::fmt;

use secrecy::{ExposeSecret, SecretString};

use super::{EmailAddress, FieldError};

/// The most characters a password may have; argon2 has no limit of its own,
/// this just bounds the work an attacker can make us do.
pub const MAX_PASSWORD_CHARS: usize = 128;

/// Local parts shorter than this are too common as substrings ("jo", "dr")
/// to be a meaningful signal that the password is derived from the address.
const MIN_LOCAL_PART_CHECK: usize = 3;

#[derive(Debug, Clone, Copy)]
pub struct PasswordPolicy {
    pub min_chars: usize,
}

/// A password that has not been checked against the policy: what someone
/// typed to sign in. Its `Debug` never shows the value.
pub struct Password(SecretString);

impl Password {
    pub fn new(raw: String) -> Self {
        Self(SecretString::from(raw))
    }

    pub fn expose(&self) -> &str {
        self.0.expose_secret()
    }

    /// Checks a new password against the policy, returning every problem.
    ///
    /// `email` (when known) must not appear in the password; `field` names the
    /// form field the messages belong to.
    pub fn check_new(
        &self,
        policy: &PasswordPolicy,
        email: Option<&EmailAddress>,
        field: &'static str,
    ) -> Result<(), FieldError> {
        let raw = self.expose();
        let chars = raw.chars().count();
        let mut messages = Vec::new();
        if chars < policy.min_chars {
            messages.push(format!(
                "Password must be at least {} characters.",
                policy.min_chars
            ));
        }
        if chars > MAX_PASSWORD_CHARS {
            messages.push(format!(
                "Password must be at most {MAX_PASSWORD_CHARS} characters."
            ));
        }
        let lowered = raw.to_lowercase();
        if let Some(local) = email.map(EmailAddress::local_part) {
            if local.chars().count() >= MIN_LOCAL_PART_CHECK && lowered.contains(local) {
                messages.push("Password must not contain your email address.".to_owned());
            }
        }
        if messages.is_empty() && is_guessable(raw, email) {
            messages.push(
                "This password is too common or easy to guess. Try a longer phrase.".to_owned(),
            );
        }
        if messages.is_empty() {
            Ok(())
        } else {
            Err(FieldError {
                field: field.into(),
                messages,
            })
        }
    }
}

impl fmt::Debug for Password {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Password([REDACTED])")
    }
}

/// zxcvbn carries a frequency list of ~30,000 common passwords plus
/// dictionaries, keyboard patterns and l33t substitutions; a score below 3
/// means fewer than ~10^10 guesses, which an offline attacker exhausts.
fn is_guessable(raw: &str, email: Option<&EmailAddress>) -> bool {
    let mut inputs = Vec::new();
    if let Some(email) = email {
        inputs.push(email.as_str());
        inputs.push(email.local_part());
    }
    u8::from(zxcvbn::zxcvbn(raw, &inputs).score()) < 3
}

/// A stored password hash (argon2id PHC string, or a legacy bcrypt hash from
/// the original service). `Debug` redacts it so it cannot leak into logs.
#[derive(Clone)]
pub struct PasswordHash(SecretString);

impl PasswordHash {
    pub fn new(phc: String) -> Self {
        Self(SecretString::from(phc))
    }

    pub fn expose(&self) -> &str {
        self.0.expose_secret()
    }
}

impl fmt::Debug for PasswordHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("PasswordHash([REDACTED])")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> PasswordPolicy {
        PasswordPolicy { min_chars: 12 }
    }

    fn check(raw: &str, email: &str) -> Result<(), FieldError> {
        let email = EmailAddress::parse(email).unwrap();
        Password::new(raw.into()).check_new(&policy(), Some(&email), "password")
    }

    #[test]
    fn accepts_the_original_sample_password() {
        check("Str0ng!Pass123", "jane@example.com").unwrap();
    }

    #[test]
    fn rejects_short_long_common_and_email_derived() {
        assert!(check("short1!A", "jane@example.com").is_err());
        assert!(check(&"x".repeat(129), "jane@example.com").is_err());
        assert!(check("password1234", "jane@example.com").is_err());
        assert!(check("123456789012", "jane@example.com").is_err());
        assert!(check("janejanejane#2025", "janejane@example.com").is_err());
        let err = check("password1234", "password@example.com").unwrap_err();
        assert!(err.messages[0].contains("email"));
    }

    #[test]
    fn counts_characters_not_bytes() {
        // 12 characters, 24 bytes: long enough.
        check("ßñüéøåçðþæœğ", "jane@example.com").unwrap();
    }

    #[test]
    fn debug_never_shows_secrets() {
        let p = Password::new("Str0ng!Pass123".into());
        let h = PasswordHash::new("$argon2id$v=19$secret".into());
        assert!(!format!("{p:?}{h:?}").contains("Str0ng") && !format!("{h:?}").contains("argon2"));
    }
}
