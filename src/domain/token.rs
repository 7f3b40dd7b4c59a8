//! Hashes of bearer secrets (refresh and reset tokens).
//!
//! Only the hash is ever stored: a leaked database must not hand out working
//! tokens. SHA-256 is enough here (unlike passwords) because the tokens are
//! 256-bit random values, not something a person chose.

use rand::RngCore;
use sha2::{Digest, Sha256};

/// SHA-256 of a raw token, as lowercase hex (the original's `token_hash`).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct TokenHash(String);

impl TokenHash {
    pub fn of(raw_token: &str) -> Self {
        Self(hex::encode(Sha256::digest(raw_token.as_bytes())))
    }

    pub fn from_stored(value: String) -> Self {
        Self(value)
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A fresh URL-safe random secret with 256 bits of entropy.
pub fn random_token() -> String {
    use base64::Engine;
    let mut bytes = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hash_is_sha256_hex_and_tokens_are_unique() {
        assert_eq!(
            TokenHash::of("abc").as_str(),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        let a = random_token();
        assert_eq!(a.len(), 43);
        assert_ne!(a, random_token());
    }
}
