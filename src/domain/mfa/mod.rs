//! Two-step sign-in, the parts that need neither a database nor a clock of
//! their own (issue 18): authenticator-app codes (TOTP, RFC 6238) and the
//! `otpauth://` URI and QR code that carry a secret to a phone
//! ([`totp`]), the sealing of those secrets at rest under
//! MFA_ENCRYPTION_KEY ([`key`]), and single-use recovery codes
//! ([`recovery`]). Time is always an argument: the services pass their
//! injected clock's now.

mod key;
mod qr;
mod recovery;
mod totp;

pub use key::{MfaKey, SealError, SealedTotpSecret};
pub use qr::qr_svg;
pub use recovery::{RecoveryCode, RecoveryCodeHash, RECOVERY_CODE_COUNT};
pub use totp::{otpauth_uri, TimeStep, TotpSecret, TOTP_DIGITS, TOTP_STEP_SECONDS};
