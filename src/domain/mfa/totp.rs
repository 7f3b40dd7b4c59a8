//! Authenticator-app codes (TOTP, RFC 6238) as every authenticator app
//! supports them: 6 digits, 30-second steps, HMAC-SHA1 (SHA-1's collision
//! weakness does not touch HMAC), one step of clock skew either way.
//! The code itself comes from `totp-rs`; which step matched, and so the
//! refusal of a replayed code, is ours.

use chrono::{DateTime, Utc};
use percent_encoding::{utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};
use rand::RngCore;
use secrecy::{ExposeSecret, SecretBox, SecretString};
use subtle::ConstantTimeEq;
use totp_rs::{Algorithm, Secret, TOTP};

/// Digits in a code.
pub const TOTP_DIGITS: usize = 6;
/// Seconds in a time step.
pub const TOTP_STEP_SECONDS: u64 = 30;
/// Steps accepted either side of now: a phone whose clock is off by up to
/// about 30 s, or a code typed just as it changed, still works; two steps
/// would double an attacker's odds for little gain (RFC 6238 section 5.2).
const SKEW_STEPS: u64 = 1;
/// 160 bits: the length RFC 4226 recommends, and what the apps expect.
const SECRET_BYTES: usize = 20;

/// A 30-second time step since the Unix epoch: what a code is valid for,
/// and what is stored as the last one accepted so that a code cannot be
/// used twice.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct TimeStep(u64);

impl TimeStep {
    /// The step `at` falls in; `None` before 1970 (a broken clock).
    pub fn at(at: DateTime<Utc>) -> Option<Self> {
        let seconds = u64::try_from(at.timestamp()).ok()?;
        Some(Self(seconds / TOTP_STEP_SECONDS))
    }

    /// A step read back from the store.
    pub fn from_stored(step: u64) -> Self {
        Self(step)
    }

    pub fn value(self) -> u64 {
        self.0
    }

    /// The first second of the step, which is what `totp-rs` is given.
    fn start(self) -> u64 {
        self.0 * TOTP_STEP_SECONDS
    }
}

/// An authenticator secret: 20 random bytes, held in memory that is wiped
/// when dropped. `Debug` prints nothing of it. It leaves the process only
/// sealed ([`super::MfaKey::seal`]) or, once, to the user who enrols
/// ([`Self::manual_entry_key`], [`otpauth_uri`]).
#[derive(Debug)]
pub struct TotpSecret(SecretBox<[u8; SECRET_BYTES]>);

impl TotpSecret {
    /// A fresh secret from the operating system's random source.
    pub fn generate() -> Self {
        Self(SecretBox::init_with_mut(
            |bytes: &mut [u8; SECRET_BYTES]| rand::rngs::OsRng.fill_bytes(bytes),
        ))
    }

    /// A secret of exactly 20 bytes (as unsealed from the store).
    pub(super) fn from_bytes(bytes: &[u8]) -> Option<Self> {
        let bytes: &[u8; SECRET_BYTES] = bytes.try_into().ok()?;
        Some(Self(SecretBox::init_with_mut(
            |secret: &mut [u8; SECRET_BYTES]| secret.copy_from_slice(bytes),
        )))
    }

    /// The secret behind a manual-entry key, as an authenticator app reads
    /// it when the key is typed in (tests play the app with it). `None`
    /// when it is not base32 of 20 bytes.
    pub fn from_manual_entry_key(key: &str) -> Option<Self> {
        let bytes = Secret::Encoded(key.to_owned()).to_bytes().ok()?;
        Self::from_bytes(&secrecy::zeroize::Zeroizing::new(bytes))
    }

    pub(super) fn expose_bytes(&self) -> &[u8] {
        self.0.expose_secret()
    }

    /// The secret in base32 without padding, as authenticator apps take it
    /// when typed in by hand (or scanned: it is what the URI carries).
    pub fn manual_entry_key(&self) -> SecretString {
        // An encoded `Secret` displays as its base32 text.
        SecretString::from(
            Secret::Raw(self.expose_bytes().to_vec())
                .to_encoded()
                .to_string(),
        )
    }

    /// The code for `step`, for tests that play the authenticator app.
    pub fn code_at(&self, step: TimeStep) -> String {
        generator(self.expose_bytes(), TOTP_DIGITS).generate(step.start())
    }

    /// The step whose code `code` is, among now's and one either side of
    /// it, and later than `last_accepted` (the user's last accepted step,
    /// `None` before the first code): a code used once is refused for the
    /// rest of its window and so is any older one. `None` when it matches
    /// no such step, or is not 6 digits (blanks inside are ignored, as
    /// users copy "123 456"). Every candidate is compared in constant time.
    pub fn verify(
        &self,
        code: &str,
        now: DateTime<Utc>,
        last_accepted: Option<TimeStep>,
    ) -> Option<TimeStep> {
        let code: String = code.chars().filter(|c| !c.is_whitespace()).collect();
        if code.len() != TOTP_DIGITS || !code.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        let now = TimeStep::at(now)?;
        let generator = generator(self.expose_bytes(), TOTP_DIGITS);
        let mut matched = None;
        for step in now.0.saturating_sub(SKEW_STEPS)..=now.0 + SKEW_STEPS {
            let step = TimeStep(step);
            let same = generator
                .generate(step.start())
                .as_bytes()
                .ct_eq(code.as_bytes());
            if bool::from(same) && last_accepted.is_none_or(|last| step > last) {
                matched = Some(step);
            }
        }
        matched
    }
}

/// `totp-rs` set up for SHA-1 and 30-second steps. Skew 0: we try each
/// step ourselves so that we know which one matched.
fn generator(secret: &[u8], digits: usize) -> TOTP {
    TOTP::new(
        Algorithm::SHA1,
        digits,
        0,
        TOTP_STEP_SECONDS,
        secret.to_vec(),
    )
    .expect("6 to 8 digits and a secret of at least 128 bits")
}

/// What RFC 3986 leaves unreserved, and `@` (allowed in a path and a
/// query, and left as it is so that apps which show the label undecoded
/// still show the email); everything else in a label or a query value is
/// percent-encoded (a space as `%20`, never `+`, which some apps show).
const URI_COMPONENT: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~')
    .remove(b'@');

/// The `otpauth://totp/` URI authenticator apps scan (Google's Key URI
/// Format): the label is `issuer:account`, and the issuer is repeated as a
/// parameter, which newer apps prefer. `issuer` is APP_NAME and `account`
/// the user's email, each percent-encoded (so a `:` in APP_NAME cannot be
/// taken for the separator). It carries the secret: a secret itself.
pub fn otpauth_uri(secret: &TotpSecret, issuer: &str, account: &str) -> SecretString {
    let issuer = utf8_percent_encode(issuer, URI_COMPONENT);
    let account = utf8_percent_encode(account, URI_COMPONENT);
    SecretString::from(format!(
        "otpauth://totp/{issuer}:{account}?secret={}&issuer={issuer}\
         &algorithm=SHA1&digits={TOTP_DIGITS}&period={TOTP_STEP_SECONDS}",
        secret.manual_entry_key().expose_secret()
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 6238 Appendix B's SHA-1 key: the ASCII digits 1 to 0, twice.
    const RFC_KEY: &[u8] = b"12345678901234567890";

    /// Appendix B, SHA-1 rows: (Unix time, 8-digit TOTP).
    const RFC_VECTORS: [(i64, &str); 6] = [
        (59, "94287082"),
        (1_111_111_109, "07081804"),
        (1_111_111_111, "14050471"),
        (1_234_567_890, "89005924"),
        (2_000_000_000, "69279037"),
        (20_000_000_000, "65353130"),
    ];

    fn at(seconds: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(seconds, 0).unwrap()
    }

    fn rfc_secret() -> TotpSecret {
        TotpSecret::from_bytes(RFC_KEY).unwrap()
    }

    #[test]
    fn our_generator_gives_the_rfc_6238_sha1_vectors() {
        for (time, expected) in RFC_VECTORS {
            let step = TimeStep::at(at(time)).unwrap();
            assert_eq!(
                generator(RFC_KEY, 8).generate(step.start()),
                expected,
                "t={time}"
            );
        }
    }

    #[test]
    fn six_digit_codes_of_the_rfc_vectors_verify_at_their_step() {
        let secret = rfc_secret();
        for (time, expected) in RFC_VECTORS {
            let six = &expected[2..];
            let step = TimeStep::at(at(time)).unwrap();
            assert_eq!(secret.code_at(step), six, "t={time}");
            assert_eq!(secret.verify(six, at(time), None), Some(step), "t={time}");
            let spaced = format!("{} {}", &six[..3], &six[3..]);
            assert_eq!(
                secret.verify(&spaced, at(time), None),
                Some(step),
                "t={time}"
            );
        }
    }

    #[test]
    fn one_step_of_skew_is_accepted_and_two_are_refused() {
        let secret = TotpSecret::generate();
        let now = at(1_750_000_005);
        let step = TimeStep::at(now).unwrap();
        for (offset, accepted) in [
            (-2_i64, false),
            (-1, true),
            (0, true),
            (1, true),
            (2, false),
        ] {
            let other = TimeStep(step.0.checked_add_signed(offset).unwrap());
            let code = secret.code_at(other);
            let expected = accepted.then_some(other);
            assert_eq!(secret.verify(&code, now, None), expected, "offset {offset}");
        }
    }

    #[test]
    fn a_code_is_refused_once_its_step_or_a_later_one_was_accepted() {
        let secret = TotpSecret::generate();
        let now = at(1_750_000_005);
        let step = TimeStep::at(now).unwrap();
        let code = secret.code_at(step);
        let accepted = secret.verify(&code, now, None).unwrap();
        assert_eq!(secret.verify(&code, now, Some(accepted)), None, "replay");
        assert_eq!(
            secret.verify(&code, now + chrono::Duration::seconds(20), Some(accepted)),
            None,
            "replay later in the window"
        );
        let previous = secret.code_at(TimeStep(step.0 - 1));
        assert_eq!(
            secret.verify(&previous, now, Some(accepted)),
            None,
            "older code"
        );
        let next = secret.code_at(TimeStep(step.0 + 1));
        assert_eq!(
            secret.verify(&next, now, Some(accepted)),
            Some(TimeStep(step.0 + 1)),
            "the next step's code still works"
        );
    }

    #[test]
    fn malformed_and_wrong_codes_are_refused() {
        let secret = rfc_secret();
        let now = at(59);
        assert_eq!(secret.verify("287082", now, None), TimeStep::at(now));
        for bad in [
            "",
            "28708",
            "2870822",
            "28708a",
            "287-082",
            "２８７０８２",
            "000000",
        ] {
            assert_eq!(secret.verify(bad, now, None), None, "{bad:?}");
        }
        let other = TotpSecret::generate();
        let code = secret.code_at(TimeStep::at(now).unwrap());
        assert_ne!(other.code_at(TimeStep::at(now).unwrap()), code);
        assert_eq!(other.verify(&code, now, None), None, "another secret");
        assert_eq!(secret.verify("287082", at(-30), None), None, "before 1970");
    }

    #[test]
    fn secrets_are_20_random_bytes_never_printed() {
        let (a, b) = (TotpSecret::generate(), TotpSecret::generate());
        assert_eq!(a.expose_bytes().len(), 20);
        assert_ne!(a.expose_bytes(), b.expose_bytes());
        assert!(TotpSecret::from_bytes(&[0; 19]).is_none());
        assert!(TotpSecret::from_bytes(&[0; 21]).is_none());
        let key = a.manual_entry_key();
        assert_eq!(key.expose_secret().len(), 32, "160 bits in base32");
        assert!(!format!("{a:?}").contains(key.expose_secret()));
        assert!(!format!("{a:?}").contains(&hex::encode(a.expose_bytes())));
        let back = TotpSecret::from_manual_entry_key(key.expose_secret()).unwrap();
        assert_eq!(back.expose_bytes(), a.expose_bytes());
        assert!(TotpSecret::from_manual_entry_key("not base32!").is_none());
        assert!(
            TotpSecret::from_manual_entry_key("GEZDGNBV").is_none(),
            "too short"
        );
        // RFC 4648 base32 of the RFC key, as apps decode it.
        assert_eq!(
            rfc_secret().manual_entry_key().expose_secret(),
            "GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ"
        );
    }

    #[test]
    fn the_otpauth_uri_names_the_app_and_the_user_percent_encoded() {
        let uri = otpauth_uri(
            &rfc_secret(),
            "Clinic Auth: North & Co",
            "jane+mfa@example.com",
        );
        assert_eq!(
            uri.expose_secret(),
            "otpauth://totp/Clinic%20Auth%3A%20North%20%26%20Co:jane%2Bmfa@example.com\
             ?secret=GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ&issuer=Clinic%20Auth%3A%20North%20%26%20Co\
             &algorithm=SHA1&digits=6&period=30"
        );
        let parsed = url::Url::parse(uri.expose_secret()).unwrap();
        assert_eq!(parsed.scheme(), "otpauth");
        let issuer = parsed.query_pairs().find(|(k, _)| k == "issuer").unwrap().1;
        assert_eq!(issuer, "Clinic Auth: North & Co");
    }
}
