//! Email addresses, normalised once (trimmed, lowercase) so lookups and the
//! unique index agree on what "the same address" means.

use std::fmt;

use validator::ValidateEmail;

use super::FieldError;

/// A syntactically valid email address, trimmed and lowercased.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct EmailAddress(String);

impl EmailAddress {
    /// Longest address accepted (RFC 5321 path limit).
    pub const MAX_LEN: usize = 254;

    pub fn parse(raw: &str) -> Result<Self, FieldError> {
        let normalised = raw.trim().to_lowercase();
        if normalised.is_empty() {
            return Err(FieldError::new("email", "Email is required."));
        }
        if normalised.len() > Self::MAX_LEN || !normalised.validate_email() {
            return Err(FieldError::new("email", "Enter a valid email address."));
        }
        Ok(Self(normalised))
    }

    /// Trusted constructor for values read back from our own store.
    pub fn from_stored(value: String) -> Self {
        Self(value)
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The part before the `@`, used by the password policy.
    pub fn local_part(&self) -> &str {
        self.0.split('@').next().unwrap_or_default()
    }
}

impl fmt::Display for EmailAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for EmailAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "EmailAddress({})", self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trims_and_lowercases() {
        let email = EmailAddress::parse("  Jane.Smith@Example.COM ").unwrap();
        assert_eq!(email.as_str(), "jane.smith@example.com");
        assert_eq!(email.local_part(), "jane.smith");
    }

    #[test]
    fn rejects_malformed_addresses() {
        for bad in [
            "",
            "   ",
            "jane",
            "jane@",
            "@example.com",
            "jane smith@example.com",
        ] {
            assert!(EmailAddress::parse(bad).is_err(), "{bad:?} was accepted");
        }
        let long = format!("{}@example.com", "a".repeat(250));
        assert!(EmailAddress::parse(&long).is_err());
    }
}
