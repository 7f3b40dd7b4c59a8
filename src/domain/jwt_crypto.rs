//! The arithmetic behind ES256 access tokens: jsonwebtoken's documented
//! extension point ([`CryptoProvider`]) with ring doing the signatures, and
//! jsonwebtoken still doing everything else (the compact serialisation,
//! the header, the algorithm checks).
//!
//! Why not jsonwebtoken's own "rust_crypto" backend: on the hot path it
//! cost too much. It re-parses the PKCS#8 key on every signature, which for
//! P-256 means a scalar multiplication to rebuild the public key, then
//! signs with RustCrypto's portable field arithmetic. Measured here (2 cores,
//! release): an ES256 signature took 632 µs and a verification 403 µs, which
//! took `/me` from 62% to 26% of `/health` and failed the budgets
//! (BENCHMARKS.md, "Signing algorithms on the hot path"). ring has
//! assembly P-256 and is already built for rustls (the mail and MongoDB
//! TLS), so this adds no crate: ES256 costs 45 µs to sign and 85 µs to
//! verify through it (`cargo bench --bench jwt_algorithms`). Every other
//! algorithm goes to the rust_crypto provider unchanged: HS256 (refresh
//! tokens, shared-secret deployments), and EdDSA, where ring measured no
//! faster (its PKCS#8 parse rebuilds the public key on every signature).
//!
//! ECDSA nonces: ring hedges each one with a hash of the private key and
//! the message digest next to fresh randomness, so a faulty RNG alone
//! cannot repeat a nonce and leak the key (the property RFC 6979 gives).

use std::sync::LazyLock;

use jsonwebtoken::crypto::{rust_crypto, CryptoProvider, JwtSigner, JwtVerifier};
use jsonwebtoken::errors::{Error, ErrorKind};
use jsonwebtoken::signature;
use jsonwebtoken::{Algorithm, AlgorithmFamily, DecodingKey, EncodingKey};
use ring::signature as ring_sig;

static PROVIDER: LazyLock<CryptoProvider> = LazyLock::new(|| CryptoProvider {
    signer_factory: new_signer,
    verifier_factory: new_verifier,
    jwk_utils: rust_crypto::DEFAULT_PROVIDER.jwk_utils.clone(),
});

/// Makes this the process's jsonwebtoken provider. Idempotent. False when
/// jsonwebtoken had already settled on another one, which only code that
/// used jsonwebtoken before any [`crate::services::tokens::Tokens`] was
/// built can cause (tests forging tokens first): tokens are then exactly
/// the same, only slower to make.
pub fn install() -> bool {
    let ours = provider();
    match ours.install_default() {
        Ok(()) => true,
        Err(installed) => std::ptr::eq(installed, ours),
    }
}

/// The provider itself, for `benches/jwt_algorithms.rs`.
pub fn provider() -> &'static CryptoProvider {
    &PROVIDER
}

fn new_signer(alg: &Algorithm, key: &EncodingKey) -> Result<Box<dyn JwtSigner>, Error> {
    match alg {
        Algorithm::ES256 => {
            expect_family(key.family(), AlgorithmFamily::Ec)?;
            let pair = ring_sig::EcdsaKeyPair::from_pkcs8(
                &ring_sig::ECDSA_P256_SHA256_FIXED_SIGNING,
                key.inner(),
                &ring::rand::SystemRandom::new(),
            )
            .map_err(|_| Error::from(ErrorKind::InvalidEcdsaKey))?;
            Ok(Box::new(Es256Signer(pair)))
        }
        _ => (rust_crypto::DEFAULT_PROVIDER.signer_factory)(alg, key),
    }
}

fn new_verifier(alg: &Algorithm, key: &DecodingKey) -> Result<Box<dyn JwtVerifier>, Error> {
    if *alg != Algorithm::ES256 {
        return (rust_crypto::DEFAULT_PROVIDER.verifier_factory)(alg, key);
    }
    // Checked before `as_bytes`, which only EC, Ed and HMAC keys have.
    expect_family(key.family(), AlgorithmFamily::Ec)?;
    // The uncompressed SEC1 point, as jsonwebtoken's from_ec_components
    // stores it and ring reads it.
    Ok(Box::new(Es256Verifier(key.as_bytes().to_vec())))
}

fn expect_family(have: AlgorithmFamily, want: AlgorithmFamily) -> Result<(), Error> {
    if have == want {
        Ok(())
    } else {
        Err(ErrorKind::InvalidKeyFormat.into())
    }
}

struct Es256Signer(ring_sig::EcdsaKeyPair);

impl signature::Signer<Vec<u8>> for Es256Signer {
    fn try_sign(&self, msg: &[u8]) -> Result<Vec<u8>, signature::Error> {
        self.0
            .sign(&ring::rand::SystemRandom::new(), msg)
            .map(|sig| sig.as_ref().to_vec())
            .map_err(|_| signature::Error::new())
    }
}

impl JwtSigner for Es256Signer {
    fn algorithm(&self) -> Algorithm {
        Algorithm::ES256
    }
}

/// An ES256 public key: the uncompressed SEC1 point.
struct Es256Verifier(Vec<u8>);

impl signature::Verifier<Vec<u8>> for Es256Verifier {
    fn verify(&self, msg: &[u8], sig: &Vec<u8>) -> Result<(), signature::Error> {
        ring_sig::UnparsedPublicKey::new(&ring_sig::ECDSA_P256_SHA256_FIXED, &self.0)
            .verify(msg, sig)
            .map_err(|_| signature::Error::new())
    }
}

impl JwtVerifier for Es256Verifier {
    fn algorithm(&self) -> Algorithm {
        Algorithm::ES256
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::signing_key::{encoding_key, AccessAlgorithm, GeneratedKey};
    use jsonwebtoken::{Header, Validation};

    fn validation(alg: Algorithm) -> Validation {
        let mut validation = Validation::new(alg);
        validation.required_spec_claims.clear();
        validation
    }

    /// ES256 keys as the service generates and stores them (p256's
    /// PKCS#8) sign through ring, and what ring signs verifies with
    /// RustCrypto (the other provider) and the other way round: the two
    /// providers are interchangeable on the wire.
    #[test]
    fn ring_and_rust_crypto_agree_on_stored_keys() {
        let alg = AccessAlgorithm::Es256;
        let key = GeneratedKey::generate(alg).unwrap();
        let encoding = encoding_key(alg, &key.private_pkcs8).unwrap();
        let decoding = key.public.decoding_key(alg).unwrap();
        let message = b"header.claims";
        let ours = (PROVIDER.signer_factory)(&alg.jwt(), &encoding)
            .unwrap()
            .try_sign(message)
            .unwrap();
        let theirs = (rust_crypto::DEFAULT_PROVIDER.signer_factory)(&alg.jwt(), &encoding)
            .unwrap()
            .try_sign(message)
            .unwrap();
        for (signer, sig) in [("ring", &ours), ("rust_crypto", &theirs)] {
            for (name, provider) in [
                ("ring", &*PROVIDER),
                ("rust_crypto", &rust_crypto::DEFAULT_PROVIDER),
            ] {
                let verifier = (provider.verifier_factory)(&alg.jwt(), &decoding).unwrap();
                assert!(
                    verifier.verify(message, sig).is_ok(),
                    "{alg}: {name} refuses what {signer} signed"
                );
                assert!(
                    verifier.verify(b"header.claimz", sig).is_err(),
                    "{alg}: {name} accepts a changed message"
                );
            }
        }
    }

    /// A signature verifies with its key only, not with another key of
    /// the same algorithm; a key of the wrong family is refused instead of
    /// misread; HS256 still goes to rust_crypto. (The factories are called
    /// directly: which provider jsonwebtoken's global holds in this test
    /// process depends on which test ran first.)
    #[test]
    fn signatures_verify_only_with_their_own_key() {
        for alg in [AccessAlgorithm::Es256, AccessAlgorithm::EdDsa] {
            let key = GeneratedKey::generate(alg).unwrap();
            let other = GeneratedKey::generate(alg).unwrap();
            let sig = (PROVIDER.signer_factory)(
                &alg.jwt(),
                &encoding_key(alg, &key.private_pkcs8).unwrap(),
            )
            .unwrap()
            .try_sign(b"header.claims")
            .unwrap();
            let verifier = |key: &GeneratedKey| {
                (PROVIDER.verifier_factory)(&alg.jwt(), &key.public.decoding_key(alg).unwrap())
                    .unwrap()
            };
            assert!(verifier(&key).verify(b"header.claims", &sig).is_ok());
            assert!(verifier(&other).verify(b"header.claims", &sig).is_err());
            let hmac = DecodingKey::from_secret(b"a shared secret");
            assert!((PROVIDER.verifier_factory)(&alg.jwt(), &hmac).is_err());
            let hmac = EncodingKey::from_secret(b"a shared secret");
            assert!((PROVIDER.signer_factory)(&alg.jwt(), &hmac).is_err());
        }
        let claims = serde_json::json!({"sub": "jane"});
        let secret = EncodingKey::from_secret(b"a shared secret");
        let signer = (PROVIDER.signer_factory)(&Algorithm::HS256, &secret).unwrap();
        assert_eq!(signer.algorithm(), Algorithm::HS256);
        let token = jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &secret).unwrap();
        let decoded = jsonwebtoken::decode::<serde_json::Value>(
            &token,
            &DecodingKey::from_secret(b"a shared secret"),
            &validation(Algorithm::HS256),
        )
        .unwrap();
        assert_eq!(decoded.claims, claims);
    }

    /// Installing twice is fine (every `Tokens` built installs).
    #[test]
    fn installing_again_is_harmless() {
        let first = install();
        assert_eq!(install(), first);
    }
}
