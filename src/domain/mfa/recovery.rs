//! Recovery codes: single-use codes a user keeps on paper, for the day the
//! phone is lost.
//!
//! A code is 10 characters of Crockford's base32 (digits and lowercase
//! letters without i, l, o and u), so 50 random bits, shown as
//! `xxxxx-xxxxx`. What the user types back is forgiven the usual slips:
//! case, blanks and dashes are ignored, and i or l is read as 1, o as 0.
//!
//! Stored as HMAC-SHA256 under a key derived from MFA_ENCRYPTION_KEY and
//! bound to the user, never in clear: a database dump alone cannot be
//! turned back into codes, since without the key there is nothing to test
//! a guess against. A slow hash (argon2id) is not needed on top: its work
//! factor protects low-entropy passwords, while 2^50 guesses against a
//! keyed hash is out of reach anyway, and its cost would make every
//! recovery attempt (and every flood of wrong ones) a CPU-heavy request.

use std::fmt;

use rand::seq::SliceRandom;
use secrecy::{ExposeSecret, SecretString};
use subtle::ConstantTimeEq;

use super::MfaKey;
use crate::domain::UserId;

/// Codes in a set: enough to last years of lost phones, few enough to
/// print on one slip.
pub const RECOVERY_CODE_COUNT: usize = 10;
/// Characters in a code: 10 x 5 bits.
const CODE_CHARS: usize = 10;
/// Crockford's base32 alphabet, lowercase: no i, l, o (read as 1, 1, 0)
/// and no u.
const ALPHABET: &[u8; 32] = b"0123456789abcdefghjkmnpqrstvwxyz";

/// One recovery code, normalised (10 characters of [`ALPHABET`]). It is a
/// secret until used: `Debug` shows nothing of it and the text is wiped
/// when dropped.
pub struct RecoveryCode(SecretString);

impl RecoveryCode {
    /// A fresh set of [`RECOVERY_CODE_COUNT`] distinct codes.
    pub fn generate_set() -> Vec<RecoveryCode> {
        let mut rng = rand::rngs::OsRng;
        let mut codes: Vec<RecoveryCode> = Vec::with_capacity(RECOVERY_CODE_COUNT);
        while codes.len() < RECOVERY_CODE_COUNT {
            let text: String = (0..CODE_CHARS)
                .map(|_| char::from(*ALPHABET.choose(&mut rng).expect("a non-empty alphabet")))
                .collect();
            // Two equal codes in a set (odds 1 in 2^44) would be one code
            // counted twice; draw again rather than store it.
            if !codes.iter().any(|c| c.0.expose_secret() == text) {
                codes.push(RecoveryCode(SecretString::from(text)));
            }
        }
        codes
    }

    /// What the user typed, normalised; `None` when it cannot be a code
    /// (wrong length or a character outside the alphabet).
    pub fn parse(input: &str) -> Option<Self> {
        let mut text = String::with_capacity(CODE_CHARS);
        for c in input.chars() {
            let c = match c.to_ascii_lowercase() {
                '-' => continue,
                c if c.is_whitespace() => continue,
                'i' | 'l' => '1',
                'o' => '0',
                c if c.is_ascii() && ALPHABET.contains(&(c as u8)) => c,
                _ => return None,
            };
            text.push(c);
        }
        (text.len() == CODE_CHARS).then(|| Self(SecretString::from(text)))
    }

    /// The code as shown to the user, once: `xxxxx-xxxxx`.
    pub fn formatted(&self) -> SecretString {
        let text = self.0.expose_secret();
        let (first, second) = text.split_at(CODE_CHARS / 2);
        SecretString::from(format!("{first}-{second}"))
    }

    /// The keyed hash stored for this code of `user`. The user id is part
    /// of the input, so equal codes of two users hash apart and a hash
    /// copied onto another user matches nothing.
    pub fn hash(&self, key: &MfaKey, user: &UserId) -> RecoveryCodeHash {
        use hmac::Mac;
        let mut mac = key.recovery_mac();
        mac.update(user.as_str().as_bytes());
        mac.update(&[0]);
        mac.update(self.0.expose_secret().as_bytes());
        RecoveryCodeHash(hex::encode(mac.finalize().into_bytes()))
    }
}

impl fmt::Debug for RecoveryCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("RecoveryCode(<redacted>)")
    }
}

/// A recovery code as stored: lowercase hex of its keyed hash. Compared in
/// constant time, so a comparison in memory says nothing about how much of
/// a hash matched.
#[derive(Debug, Clone, Eq)]
pub struct RecoveryCodeHash(String);

impl RecoveryCodeHash {
    pub fn from_stored(value: String) -> Self {
        Self(value)
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl PartialEq for RecoveryCodeHash {
    fn eq(&self, other: &Self) -> bool {
        self.0.as_bytes().ct_eq(other.0.as_bytes()).into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(byte: u8) -> MfaKey {
        MfaKey::from_hex(&hex::encode([byte; 32])).unwrap()
    }

    #[test]
    fn a_set_is_ten_distinct_codes_shown_as_two_groups_of_five() {
        let codes = RecoveryCode::generate_set();
        assert_eq!(codes.len(), RECOVERY_CODE_COUNT);
        let shown: Vec<String> = codes
            .iter()
            .map(|c| c.formatted().expose_secret().to_owned())
            .collect();
        for text in &shown {
            assert_eq!(text.len(), 11, "{text}");
            assert_eq!(&text[5..6], "-", "{text}");
            assert!(
                text.chars()
                    .all(|c| c == '-' || ALPHABET.contains(&(c as u8))),
                "{text}"
            );
        }
        let mut distinct = shown.clone();
        distinct.sort();
        distinct.dedup();
        assert_eq!(distinct.len(), RECOVERY_CODE_COUNT);
        assert_ne!(
            shown,
            RecoveryCode::generate_set()
                .iter()
                .map(|c| c.formatted().expose_secret().to_owned())
                .collect::<Vec<_>>()
        );
    }

    #[test]
    fn typed_codes_are_forgiven_case_blanks_dashes_and_lookalikes() {
        let (key, user) = (key(1), UserId::new("jane"));
        let stored = RecoveryCode::parse("ab1cd-0ef23")
            .unwrap()
            .hash(&key, &user);
        for typed in [
            "ab1cd-0ef23",
            "AB1CD0EF23",
            " ab1cd 0ef23 ",
            "abIcd-Oef23",
            "abLcd-oef23",
            "ab-1c-d0-ef-23",
        ] {
            let code = RecoveryCode::parse(typed).unwrap_or_else(|| panic!("{typed:?}"));
            assert_eq!(code.hash(&key, &user), stored, "{typed:?}");
        }
        for bad in [
            "",
            "ab1cd-0ef2",
            "ab1cd-0ef234",
            "ab1cd-0ef2u",
            "ab1cd_0ef23",
            "ab1cd-0ef2é",
        ] {
            assert!(RecoveryCode::parse(bad).is_none(), "{bad:?}");
        }
        let other = RecoveryCode::parse("ab1cd-0ef24")
            .unwrap()
            .hash(&key, &user);
        assert_ne!(other, stored);
    }

    #[test]
    fn the_stored_hash_is_keyed_and_bound_to_the_user() {
        let code = RecoveryCode::parse("ab1cd-0ef23").unwrap();
        let (jane, john) = (UserId::new("jane"), UserId::new("john"));
        let stored = code.hash(&key(1), &jane);
        assert_eq!(stored.as_str().len(), 64);
        assert_eq!(code.hash(&key(1), &jane), stored, "deterministic");
        assert_ne!(code.hash(&key(2), &jane), stored, "another key");
        assert_ne!(code.hash(&key(1), &john), stored, "another user");
        // Neither the code nor a plain hash of it is what is stored.
        assert!(!stored.as_str().contains("ab1cd"));
        let plain = hex::encode(<sha2::Sha256 as sha2::Digest>::digest(b"ab1cd0ef23"));
        assert_ne!(stored.as_str(), plain);
        assert_eq!(
            RecoveryCodeHash::from_stored(stored.as_str().to_owned()),
            stored
        );
    }

    #[test]
    fn codes_never_show_in_debug_output() {
        let code = RecoveryCode::parse("ab1cd-0ef23").unwrap();
        let printed = format!("{code:?} {:?}", RecoveryCode::generate_set());
        assert!(
            !printed.contains("ab1cd") && !printed.contains("0ef23"),
            "{printed}"
        );
        assert!(printed.contains("redacted"));
    }
}
