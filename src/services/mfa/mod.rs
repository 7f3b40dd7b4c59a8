//! Two-step sign-in (issue 18): the use-cases of second factors, one file
//! each. They report [`MfaError`]; the routes that will call them map it
//! to answers.

/// What the signed-in user manages: status, on, off, new recovery codes.
pub mod account;
/// Signing in with a passkey, alone or as the second step.
pub mod passkey_sign_in;
/// Passkeys: add, list, rename, remove; the WebAuthn relying party.
pub mod passkeys;
/// Who must have a second factor (MFA_REQUIRED_ROLES), and whether they do.
pub mod policy;
/// Recovery codes: regenerate, use one, count.
pub mod recovery_codes;
/// The second step of a sign-in: the challenge token and its answer.
pub mod sign_in;
/// Authenticator app: enrol (setup, confirm) and check a code.
pub mod totp;

pub use account::{MfaAccount, MfaStatus};
pub use passkey_sign_in::PasskeySignIn;
pub use passkeys::{CeremonyStart, PasskeyCeremonies, Passkeys};
pub use policy::MfaPolicy;
pub use recovery_codes::RecoveryCodes;
pub use sign_in::{MfaChallenge, SecondFactor, SecondStep};
pub use totp::{TotpFactors, TotpSetup};

use crate::domain::mfa::SealError;
use crate::storage::StoreError;

/// Why a second-factor use-case failed.
#[derive(Debug, thiserror::Error)]
pub enum MfaError {
    /// The user already has a confirmed authenticator: setting up another
    /// needs removing that one first (with a code and the password).
    #[error("an authenticator is already enabled")]
    AlreadyEnabled,
    /// Confirming without a pending setup, or a setup replaced meanwhile
    /// (another tab): start again.
    #[error("no authenticator setup is waiting for confirmation")]
    NothingToConfirm,
    /// A sign-in step for a user without a confirmed authenticator.
    #[error("no authenticator is enabled")]
    NotEnabled,
    /// Not the code of now (give or take a step), not one of the user's
    /// recovery codes, or already used.
    #[error("the code is wrong or was already used")]
    WrongCode,
    /// The stored secret does not open: MFA_ENCRYPTION_KEY changed, or the
    /// row was altered or copied from another user. A 500, never the user's
    /// fault.
    #[error("the stored authenticator secret cannot be used")]
    Sealed(#[from] SealError),
    /// The passkey ceremony (its options) is unknown, expired, already
    /// answered, or another user's: ask for new options.
    #[error("the passkey request expired or was already used")]
    CeremonyInvalid,
    /// The authenticator's answer does not verify (wrong origin or RP id,
    /// bad signature, no user verification, unknown passkey, a signature
    /// counter that went back).
    #[error("the passkey was not accepted")]
    PasskeyRefused,
    /// This authenticator's passkey is already registered.
    #[error("this passkey is already registered")]
    PasskeyExists,
    /// The user has no passkey with that id.
    #[error("no such passkey")]
    PasskeyNotFound,
    /// APP_URL cannot be a WebAuthn relying party (an IP address): the
    /// service runs without passkeys.
    #[error("passkeys are unavailable for this APP_URL")]
    PasskeysUnavailable,
    /// APP_NAME and the email are too long for a QR code.
    #[error("the enrolment QR code cannot be drawn")]
    QrCode,
    #[error(transparent)]
    Store(#[from] StoreError),
}
