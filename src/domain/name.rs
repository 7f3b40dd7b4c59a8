//! A person's display name as staff see it in the portal and in emails.

use super::FieldError;

/// A name of 1 to 100 characters after trimming.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PersonName(String);

impl PersonName {
    pub const MAX_CHARS: usize = 100;

    pub fn parse(raw: &str) -> Result<Self, FieldError> {
        let trimmed = raw.trim();
        if trimmed.is_empty() {
            return Err(FieldError::new("name", "Name is required."));
        }
        if trimmed.chars().count() > Self::MAX_CHARS {
            return Err(FieldError::new(
                "name",
                format!("Name must be at most {} characters.", Self::MAX_CHARS),
            ));
        }
        if trimmed.chars().any(char::is_control) {
            return Err(FieldError::new(
                "name",
                "Name must not contain control characters.",
            ));
        }
        Ok(Self(trimmed.to_owned()))
    }

    pub fn from_stored(value: String) -> Self {
        Self(value)
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trims_and_bounds_length() {
        assert_eq!(
            PersonName::parse("  Dr Jane  ").unwrap().as_str(),
            "Dr Jane"
        );
        assert!(PersonName::parse("   ").is_err());
        assert!(PersonName::parse(&"é".repeat(100)).is_ok());
        assert!(PersonName::parse(&"é".repeat(101)).is_err());
        assert!(PersonName::parse("Jane\u{0}").is_err());
    }
}
