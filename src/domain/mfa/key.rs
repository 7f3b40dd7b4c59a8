//! MFA_ENCRYPTION_KEY and what it protects: authenticator secrets and the
//! access-token signing keys (issue 20) sealed at rest, and the key
//! recovery codes are hashed under.
//!
//! A TOTP secret must be readable by the service (it computes the expected
//! code), so unlike a password it cannot be hashed: it is encrypted with
//! XChaCha20-Poly1305, whose random 192-bit nonces never collide however
//! many secrets one key seals. The key lives outside the database, so a
//! dump or a backup of it alone reveals no secret. Each use gets its own
//! key, derived with HKDF-SHA256 under a label, so the sealing key and the
//! recovery-code key are never the same bytes.

use std::fmt;

use base64::Engine;
use chacha20poly1305::aead::{Aead, AeadCore, KeyInit, OsRng, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use hmac::{Hmac, Mac};
use rand::RngCore;
use secrecy::zeroize::Zeroizing;
use secrecy::{ExposeSecret, SecretBox};
use sha2::Sha256;

use super::totp::TotpSecret;
use crate::domain::UserId;

/// HKDF `info` of the key that seals TOTP secrets.
const SEAL_LABEL: &[u8] = b"clinic-auth mfa totp-secret seal v1";
/// HKDF `info` of the key that seals access-token signing keys (issue 20).
const SIGNING_KEY_LABEL: &[u8] = b"clinic-auth access-token signing-key seal v1";
/// HKDF `info` of the key recovery codes are hashed under.
const RECOVERY_LABEL: &[u8] = b"clinic-auth mfa recovery-code hash v1";
/// Written in front of every sealed secret, so that a later format (another
/// cipher, a rotated key) can be told apart from this one.
const BLOB_VERSION: &str = "v1:";
const NONCE_LEN: usize = 24;

/// MFA_ENCRYPTION_KEY: 32 random bytes. Whoever holds the database but not
/// this key can neither read an authenticator secret nor check a guess at
/// a recovery code. `Debug` prints no byte of it (`SecretBox` redacts) and
/// the memory is wiped when it is dropped.
#[derive(Debug)]
pub struct MfaKey(SecretBox<[u8; 32]>);

impl MfaKey {
    /// Exactly 64 hex characters (what `openssl rand -hex 32` prints),
    /// decoded straight into wiped memory.
    pub fn from_hex(text: &str) -> Option<Self> {
        let mut parsed = false;
        let key = SecretBox::init_with_mut(|key: &mut [u8; 32]| {
            parsed = hex::decode_to_slice(text.trim(), key).is_ok();
        });
        parsed.then_some(Self(key))
    }

    /// A fresh random key (development, when none is configured).
    pub fn generate() -> Self {
        Self(SecretBox::init_with_mut(|key: &mut [u8; 32]| {
            OsRng.fill_bytes(key)
        }))
    }

    /// The key as 64 hex characters, for the development key file only.
    pub fn to_hex(&self) -> String {
        hex::encode(self.0.expose_secret())
    }

    /// The 32-byte key for one use, named by `label`.
    fn derive(&self, label: &[u8]) -> SecretBox<[u8; 32]> {
        let hkdf = hkdf::Hkdf::<Sha256>::new(None, self.0.expose_secret());
        SecretBox::init_with_mut(|key: &mut [u8; 32]| {
            hkdf.expand(label, key)
                .expect("32 bytes is a valid HKDF-SHA256 output length")
        })
    }

    /// The cipher under the key derived for `label`.
    fn cipher(&self, label: &[u8]) -> XChaCha20Poly1305 {
        XChaCha20Poly1305::new_from_slice(self.derive(label).expose_secret())
            .expect("XChaCha20-Poly1305 takes a 32-byte key")
    }

    /// HMAC-SHA256 under the recovery-code key, for [`super::RecoveryCode`].
    pub(super) fn recovery_mac(&self) -> Hmac<Sha256> {
        <Hmac<Sha256> as Mac>::new_from_slice(self.derive(RECOVERY_LABEL).expose_secret())
            .expect("HMAC takes a key of any length")
    }

    /// Seals `secret` for `user`: a fresh nonce each time, and the user id
    /// as associated data, so a sealed secret copied onto another user's
    /// row does not open there (it would otherwise let whoever can write
    /// the database give a victim an authenticator they control).
    pub fn seal(&self, secret: &TotpSecret, user: &UserId) -> SealedTotpSecret {
        SealedTotpSecret(self.seal_with(
            SEAL_LABEL,
            secret.expose_bytes(),
            user.as_str().as_bytes(),
        ))
    }

    /// The secret `sealed` holds, when it was sealed with this key for
    /// `user` and not altered since.
    pub fn open(&self, sealed: &SealedTotpSecret, user: &UserId) -> Result<TotpSecret, SealError> {
        let plain = self.open_with(SEAL_LABEL, &sealed.0, user.as_str().as_bytes())?;
        TotpSecret::from_bytes(&plain).ok_or(SealError::UnknownFormat)
    }

    /// Seals an access-token signing key's private half (PKCS#8 DER, issue
    /// 20) under its own derived key, with the `kid` as associated data: a
    /// sealed key copied onto another key's record does not open there, so
    /// whoever can write the database cannot make the service sign with a
    /// key of theirs under a published kid.
    pub fn seal_signing_key(&self, pkcs8: &[u8], kid: &str) -> String {
        self.seal_with(SIGNING_KEY_LABEL, pkcs8, kid.as_bytes())
    }

    /// The PKCS#8 DER that [`Self::seal_signing_key`] sealed for `kid`.
    pub fn open_signing_key(
        &self,
        sealed: &str,
        kid: &str,
    ) -> Result<Zeroizing<Vec<u8>>, SealError> {
        self.open_with(SIGNING_KEY_LABEL, sealed, kid.as_bytes())
    }

    /// `v1:` then base64 of a fresh nonce, the ciphertext and the tag,
    /// under the key derived for `label`, binding `aad`.
    fn seal_with(&self, label: &[u8], msg: &[u8], aad: &[u8]) -> String {
        let nonce = XChaCha20Poly1305::generate_nonce(&mut OsRng);
        let sealed = self
            .cipher(label)
            .encrypt(&nonce, Payload { msg, aad })
            .expect("XChaCha20-Poly1305 seals any message of this size");
        let blob = [&nonce[..], &sealed[..]].concat();
        format!(
            "{BLOB_VERSION}{}",
            base64::engine::general_purpose::STANDARD.encode(blob)
        )
    }

    /// What [`Self::seal_with`] sealed under `label` for `aad`, in memory
    /// that is wiped when dropped.
    fn open_with(
        &self,
        label: &[u8],
        sealed: &str,
        aad: &[u8],
    ) -> Result<Zeroizing<Vec<u8>>, SealError> {
        let encoded = sealed
            .strip_prefix(BLOB_VERSION)
            .ok_or(SealError::UnknownFormat)?;
        let blob = base64::engine::general_purpose::STANDARD
            .decode(encoded)
            .map_err(|_| SealError::UnknownFormat)?;
        if blob.len() <= NONCE_LEN {
            return Err(SealError::UnknownFormat);
        }
        let (nonce, body) = blob.split_at(NONCE_LEN);
        let nonce: [u8; NONCE_LEN] = nonce.try_into().expect("split at the nonce's length");
        self.cipher(label)
            .decrypt(&XNonce::from(nonce), Payload { msg: body, aad })
            .map(Zeroizing::new)
            .map_err(|_| SealError::DoesNotOpen)
    }
}

impl Clone for MfaKey {
    fn clone(&self) -> Self {
        Self(SecretBox::init_with_mut(|key: &mut [u8; 32]| {
            key.copy_from_slice(self.0.expose_secret())
        }))
    }
}

/// Why a sealed secret did not open. Neither says anything about the key
/// or the secret: the caller logs it and answers 500.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SealError {
    /// Not a blob this version writes (damaged, or from a later version).
    #[error("the sealed secret is not in a format this version reads")]
    UnknownFormat,
    /// Sealed with another key, for another user, or altered.
    #[error("the sealed secret does not open with MFA_ENCRYPTION_KEY for this record (another key, another record's value, or altered)")]
    DoesNotOpen,
}

/// An authenticator secret as stored: `v1:` then base64 of nonce,
/// ciphertext and tag. Safe to print and store; useless without the key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SealedTotpSecret(String);

impl SealedTotpSecret {
    pub fn from_stored(value: String) -> Self {
        Self(value)
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for SealedTotpSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(byte: u8) -> MfaKey {
        MfaKey::from_hex(&hex::encode([byte; 32])).unwrap()
    }

    #[test]
    fn the_key_is_64_hex_characters_and_never_printed() {
        let hex = "00112233445566778899aabbccddeeff".repeat(2);
        let parsed = MfaKey::from_hex(&format!(" {hex}\n")).unwrap();
        assert_eq!(parsed.to_hex(), hex);
        assert_eq!(parsed.clone().to_hex(), hex);
        for bad in [
            "",
            "0011",
            &hex[..62],
            format!("{hex}00").as_str(),
            "zz".repeat(32).as_str(),
        ] {
            assert!(MfaKey::from_hex(bad).is_none(), "{bad:?}");
        }
        let printed = format!("{parsed:?}");
        assert!(
            !printed.contains("0011") && !printed.contains("ccdd"),
            "{printed}"
        );
        assert_ne!(MfaKey::generate().to_hex(), MfaKey::generate().to_hex());
    }

    #[test]
    fn a_sealed_secret_opens_only_with_its_key_for_its_user() {
        let (jane, john) = (UserId::new("jane"), UserId::new("john"));
        let secret = TotpSecret::generate();
        let sealed = key(1).seal(&secret, &jane);
        assert!(sealed.as_str().starts_with("v1:"), "{sealed}");
        let opened = key(1).open(&sealed, &jane).unwrap();
        assert_eq!(opened.expose_bytes(), secret.expose_bytes());

        assert_eq!(
            key(2).open(&sealed, &jane).unwrap_err(),
            SealError::DoesNotOpen,
            "another key"
        );
        assert_eq!(
            key(1).open(&sealed, &john).unwrap_err(),
            SealError::DoesNotOpen,
            "copied to another user"
        );
        // Every byte of nonce, ciphertext and tag is covered.
        let blob = base64::engine::general_purpose::STANDARD
            .decode(&sealed.as_str()[3..])
            .unwrap();
        for i in 0..blob.len() {
            let mut altered = blob.clone();
            altered[i] ^= 0x01;
            let altered = SealedTotpSecret::from_stored(format!(
                "v1:{}",
                base64::engine::general_purpose::STANDARD.encode(altered)
            ));
            assert_eq!(
                key(1).open(&altered, &jane).unwrap_err(),
                SealError::DoesNotOpen,
                "byte {i}"
            );
        }
        for damaged in [
            "",
            "v1:",
            "v1:AAAA",
            "v2:AAAA",
            &sealed.as_str()[3..],
            "v1:not base64!",
        ] {
            let damaged = SealedTotpSecret::from_stored(damaged.into());
            assert_eq!(
                key(1).open(&damaged, &jane).unwrap_err(),
                SealError::UnknownFormat,
                "{damaged}"
            );
        }
    }

    #[test]
    fn the_sealed_form_hides_the_secret_and_changes_every_time() {
        let user = UserId::new("jane");
        let secret = TotpSecret::generate();
        let sealed = key(1).seal(&secret, &user);
        let stored = sealed.as_str();
        let raw = base64::engine::general_purpose::STANDARD
            .decode(&stored[3..])
            .unwrap();
        let plain = secret.expose_bytes();
        assert!(
            !raw.windows(plain.len()).any(|w| w == plain),
            "raw secret in the blob"
        );
        assert!(!stored.contains(&hex::encode(plain)));
        assert!(!stored.contains(secret.manual_entry_key().expose_secret()));
        assert_ne!(sealed, key(1).seal(&secret, &user), "fresh nonce each time");
    }

    #[test]
    fn seal_and_recovery_keys_differ_from_each_other_and_from_the_key() {
        let k = key(7);
        let (seal, recovery) = (k.derive(SEAL_LABEL), k.derive(RECOVERY_LABEL));
        assert_ne!(seal.expose_secret(), recovery.expose_secret());
        let signing = k.derive(SIGNING_KEY_LABEL);
        assert_ne!(signing.expose_secret(), seal.expose_secret());
        assert_ne!(signing.expose_secret(), recovery.expose_secret());
        assert_ne!(seal.expose_secret(), k.0.expose_secret());
    }

    #[test]
    fn a_sealed_signing_key_opens_only_with_its_key_for_its_kid() {
        let der = b"pkcs8 der bytes";
        let sealed = key(1).seal_signing_key(der, "kid-a");
        assert!(sealed.starts_with("v1:"));
        assert_eq!(&key(1).open_signing_key(&sealed, "kid-a").unwrap()[..], der);
        assert_eq!(
            key(1).open_signing_key(&sealed, "kid-b").unwrap_err(),
            SealError::DoesNotOpen
        );
        assert_eq!(
            key(2).open_signing_key(&sealed, "kid-a").unwrap_err(),
            SealError::DoesNotOpen
        );
        // Not interchangeable with an authenticator secret's seal.
        let user = UserId::new("kid-a");
        let totp = SealedTotpSecret::from_stored(sealed.clone());
        assert_eq!(
            key(1).open(&totp, &user).unwrap_err(),
            SealError::DoesNotOpen
        );
    }
}
