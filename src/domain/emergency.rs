//! Emergency ("break-glass") access, HIPAA 164.312(a)(2)(ii): a clinician
//! with the permission opens, for a fixed window, access that downstream
//! apps normally restrict. The service's part is to grant it quickly, make
//! it loud (audit, emails, a banner) and make it reviewable (each use waits
//! for another administrator's review).

use chrono::{DateTime, Utc};
use serde::Serialize;

use super::{FieldError, UserId};

/// A reason must say something a reviewer can check: a patient, a ward, a
/// situation. Twenty characters rule out "urgent" and "test".
pub const REASON_MIN_CHARS: usize = 20;
pub const REASON_MAX_CHARS: usize = 1000;
/// A review note: what the reviewer found.
pub const NOTE_MAX_CHARS: usize = 1000;

/// Why a clinician broke the glass, as they wrote it (trimmed).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EmergencyReason(String);

impl EmergencyReason {
    /// Trimmed; 20 to 1000 characters, no control characters other than
    /// line breaks.
    pub fn parse(value: &str) -> Result<Self, FieldError> {
        Ok(Self(free_text(
            "reason",
            "Reason",
            value,
            REASON_MIN_CHARS,
            REASON_MAX_CHARS,
        )?))
    }

    /// A reason as the store holds it: checked when it was given.
    pub fn from_stored(value: String) -> Self {
        Self(value)
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A reviewer's note: required, 1 to 1000 characters.
pub fn review_note(value: &str) -> Result<String, FieldError> {
    free_text("note", "Note", value, 1, NOTE_MAX_CHARS)
}

fn free_text(
    field: &'static str,
    label: &str,
    value: &str,
    min: usize,
    max: usize,
) -> Result<String, FieldError> {
    let text = value.trim();
    let chars = text.chars().count();
    if chars < min {
        let message = if min <= 1 {
            format!("{label} is required.")
        } else {
            format!("{label} must be at least {min} characters: say what the access is for.")
        };
        return Err(FieldError::new(field, message));
    }
    if chars > max {
        return Err(FieldError::new(
            field,
            format!("{label} must be at most {max} characters."),
        ));
    }
    if text
        .chars()
        .any(|c| c.is_control() && c != '\n' && c != '\r')
    {
        return Err(FieldError::new(
            field,
            format!("{label} must not contain control characters."),
        ));
    }
    Ok(text.to_owned())
}

/// How a use ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum EmergencyEnd {
    /// EMERGENCY_ACCESS_TTL passed.
    Expired,
    /// The user ended it early.
    EndedByUser,
}

impl EmergencyEnd {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Expired => "expired",
            Self::EndedByUser => "ended_by_user",
        }
    }

    pub fn parse(value: &str) -> Option<Self> {
        [Self::Expired, Self::EndedByUser]
            .into_iter()
            .find(|end| end.as_str() == value)
    }
}

/// One use of emergency access, from the start to its review.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EmergencyUse {
    /// Also the `reason_id` in the tokens it grants, so a downstream app's
    /// log points at this record.
    pub id: String,
    pub user_id: UserId,
    pub reason: EmergencyReason,
    pub started_at: DateTime<Utc>,
    /// Fixed at the start (EMERGENCY_ACCESS_TTL): never extended.
    pub expires_at: DateTime<Utc>,
    pub ended_at: Option<DateTime<Utc>>,
    pub ended_how: Option<EmergencyEnd>,
    pub review: Option<EmergencyReview>,
}

/// An administrator's review of one use.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EmergencyReview {
    pub by: UserId,
    pub at: DateTime<Utc>,
    pub note: String,
}

impl EmergencyUse {
    /// Whether it still grants access at `now`: not ended, not expired.
    pub fn is_active(&self, now: DateTime<Utc>) -> bool {
        self.ended_at.is_none() && now < self.expires_at
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_reason_says_something() {
        assert!(EmergencyReason::parse("urgent").is_err());
        assert!(EmergencyReason::parse("   urgent  urgent  urgent   ").is_ok());
        let reason =
            EmergencyReason::parse("  Patient in bed 4 unconscious, GP record needed \n").unwrap();
        assert_eq!(
            reason.as_str(),
            "Patient in bed 4 unconscious, GP record needed"
        );
        assert!(EmergencyReason::parse(&"x".repeat(REASON_MAX_CHARS + 1)).is_err());
        assert!(EmergencyReason::parse("Patient in bed 4 \u{7} unconscious now").is_err());
        assert!(EmergencyReason::parse("Patient in bed 4\nunconscious, record needed").is_ok());
    }

    #[test]
    fn a_note_is_required() {
        assert_eq!(review_note("  ").unwrap_err().field, "note");
        assert_eq!(
            review_note(" Checked with ward ").unwrap(),
            "Checked with ward"
        );
    }

    #[test]
    fn end_names_round_trip() {
        for end in [EmergencyEnd::Expired, EmergencyEnd::EndedByUser] {
            assert_eq!(EmergencyEnd::parse(end.as_str()), Some(end));
        }
    }
}
