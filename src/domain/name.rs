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
        if trimmed.chars().any(is_invisible_format) {
            return Err(FieldError::new(
                "name",
                "Name must not contain invisible or text-direction characters.",
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

/// Characters that change how a name looks without being seen: Unicode's
/// Bidi_Control set (embeddings, overrides, isolates and the direction
/// marks), which can show staff and email readers a name in another order
/// than the one stored ("Trojan Source"), and the zero-width characters,
/// which make two different names look identical. Right-to-left letters
/// themselves are fine: the text renders in its own direction without them.
fn is_invisible_format(c: char) -> bool {
    matches!(
        c,
        '\u{061C}'
            | '\u{200E}'
            | '\u{200F}'
            | '\u{202A}'..='\u{202E}'
            | '\u{2066}'..='\u{2069}'
            | '\u{200B}'..='\u{200D}'
            | '\u{2060}'
            | '\u{FEFF}'
    )
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

    #[test]
    fn refuses_invisible_and_direction_controls() {
        let bidi = ['\u{202A}', '\u{202B}', '\u{202C}', '\u{202D}', '\u{202E}'];
        let isolates = ['\u{2066}', '\u{2067}', '\u{2068}', '\u{2069}'];
        let marks = ['\u{200E}', '\u{200F}', '\u{061C}'];
        let zero_width = ['\u{200B}', '\u{200C}', '\u{200D}', '\u{2060}', '\u{FEFF}'];
        for c in bidi
            .into_iter()
            .chain(isolates)
            .chain(marks)
            .chain(zero_width)
        {
            for name in [
                format!("Dr Jane{c}Smith"),
                format!("{c}Dr Jane"),
                format!("Jane{c}"),
            ] {
                let err = PersonName::parse(&name).expect_err(&format!("U+{:04X}", c as u32));
                assert_eq!(err.field, "name");
            }
        }
        // Right-to-left letters themselves are names like any other.
        assert!(PersonName::parse("نور الهدى").is_ok());
        assert!(PersonName::parse("שרה לוי").is_ok());
    }
}
