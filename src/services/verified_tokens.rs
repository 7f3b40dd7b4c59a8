//! The access tokens whose signature this instance has already checked
//! (issue 20), so a client calling with the same ES256 or EdDSA token
//! again costs a SHA-256 instead of a signature verification (about 80 µs
//! of CPU here, half of what the rest of `/me` costs: BENCHMARKS.md).
//!
//! Only the signature check is remembered. Everything else is judged again
//! on every call: `exp`, `iss`, `aud` and `typ` against the injected clock
//! and configuration, the key (a hit counts only while its `kid` is still
//! loaded, so a key deleted after a leak stops working at the next reload,
//! cached or not), and, in the session service, the sign-in, the user and
//! the token version. A hit needs the exact bytes of a token that verified:
//! the key is the token's SHA-256, so the token itself is not kept.
//!
//! Bounded: at most [`CAPACITY`] entries, each dropped after the longest
//! an access token lives. Memory is a few MiB at the most; tokens that
//! fail to verify are never remembered, so junk cannot fill it.

use std::sync::Arc;
use std::time::Duration;

use sha2::{Digest, Sha256};

use super::tokens::AccessClaims;

/// The most tokens remembered at once: every signed-in user of a large
/// clinic, several times over.
pub const CAPACITY: u64 = 10_000;

/// A token's SHA-256: what the memory is keyed by.
pub type TokenDigest = [u8; 32];

/// What one verification established.
pub struct Verified {
    /// The key that signed it.
    pub kid: String,
    pub claims: AccessClaims,
}

pub struct VerifiedTokens {
    cache: moka::sync::Cache<TokenDigest, Arc<Verified>>,
}

impl VerifiedTokens {
    /// Entries live at most `lifetime` (the access-token lifetime: a token
    /// is useless after it). The wall clock here only frees memory; expiry
    /// itself is the caller's check against the injected clock.
    pub fn new(lifetime: Duration) -> Self {
        Self {
            cache: moka::sync::Cache::builder()
                .max_capacity(CAPACITY)
                .time_to_live(lifetime.max(Duration::from_secs(1)))
                .build(),
        }
    }

    pub fn digest(token: &str) -> TokenDigest {
        Sha256::digest(token.as_bytes()).into()
    }

    pub fn get(&self, digest: &TokenDigest) -> Option<Arc<Verified>> {
        self.cache.get(digest)
    }

    /// Remembers that the token of `digest` verified with `kid`.
    pub fn insert(&self, digest: TokenDigest, kid: String, claims: AccessClaims) {
        self.cache
            .insert(digest, Arc::new(Verified { kid, claims }));
    }
}
