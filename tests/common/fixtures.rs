//! Values the storage suites build again and again: now at the stores'
//! precision and users to create. Plain data with no harness behind it, so
//! a suite that does without the harness (`mongo_store.rs`) can include
//! this file alone.
#![allow(dead_code)]

use chrono::{DateTime, Duration, DurationRound, Utc};
use clinic_auth::domain::{EmailAddress, PasswordHash, PersonName, Role, TokenHash};
use clinic_auth::storage::{NewLink, NewUser};

/// Now, at the millisecond precision the stores keep (SQLite's integer
/// milliseconds, BSON dates), so values compare equal after a round trip.
pub fn now() -> DateTime<Utc> {
    Utc::now()
        .duration_trunc(Duration::milliseconds(1))
        .unwrap()
}

/// An unverified doctor with `email`, without a link, created now. The
/// hash is a well-formed argon2id one that no test ever checks.
pub fn new_user(email: &str) -> NewUser {
    NewUser {
        email: EmailAddress::parse(email).unwrap(),
        name: PersonName::parse("Dr Jane Smith").unwrap(),
        password_hash: PasswordHash::new("$argon2id$v=19$m=19456,t=2,p=1$c2FsdA$aGFzaA".into()),
        role: Role::parse("doctor").unwrap(),
        verified: false,
        created_at: now(),
        verification_link: None,
    }
}

/// [`new_user`] with a registration's first email-verification link, whose
/// token is `raw`, valid for a day.
pub fn new_user_with_link(email: &str, raw: &str) -> NewUser {
    NewUser {
        verification_link: Some(NewLink {
            token_hash: TokenHash::of(raw),
            expires_at: now() + Duration::hours(24),
            created_at: now(),
        }),
        ..new_user(email)
    }
}
