//! Access-token signing keys (issue 20): which algorithm signs access
//! tokens (JWT_ACCESS_ALGORITHM), an asymmetric key pair made here, and
//! its public half as the JWK a resource server reads from
//! `/.well-known/jwks.json`.
//!
//! The private half leaves this module only as PKCS#8 DER in wiped memory,
//! for [`super::mfa::MfaKey::seal_signing_key`] to seal before it is
//! stored, and for jsonwebtoken to sign with.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use secrecy::zeroize::Zeroizing;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// How access (and enrolment) tokens are signed. Refresh tokens are always
/// HS256 under JWT_REFRESH_SECRET: only this service reads them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AccessAlgorithm {
    /// A shared secret (JWT_ACCESS_SECRET): whoever verifies can also mint.
    /// Kept for the original service's consumers.
    Hs256,
    /// ECDSA on P-256 with SHA-256: the default, verified by every JOSE
    /// library and API gateway.
    Es256,
    /// Ed25519.
    EdDsa,
}

impl AccessAlgorithm {
    /// The JOSE name, as in a token's `alg` header and the JWK's `alg`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Hs256 => "HS256",
            Self::Es256 => "ES256",
            Self::EdDsa => "EdDSA",
        }
    }

    /// Exactly one of the JOSE names (case as the RFCs write them).
    pub fn parse(text: &str) -> Option<Self> {
        [Self::Hs256, Self::Es256, Self::EdDsa]
            .into_iter()
            .find(|alg| alg.as_str() == text)
    }

    /// True for the algorithms whose keys live in the store and are
    /// published.
    pub fn is_asymmetric(self) -> bool {
        self != Self::Hs256
    }

    /// What jsonwebtoken calls it.
    pub fn jwt(self) -> jsonwebtoken::Algorithm {
        match self {
            Self::Hs256 => jsonwebtoken::Algorithm::HS256,
            Self::Es256 => jsonwebtoken::Algorithm::ES256,
            Self::EdDsa => jsonwebtoken::Algorithm::EdDSA,
        }
    }
}

impl std::fmt::Display for AccessAlgorithm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The public half of a key as a JWK (RFC 7517/7518/8037), without `kid`,
/// `alg` and `use`, which [`PublicJwk::published`] adds. Only the members
/// the thumbprint (RFC 7638) covers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PublicJwk {
    pub kty: String,
    pub crv: String,
    pub x: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub y: Option<String>,
}

impl PublicJwk {
    /// RFC 7638 thumbprint: base64url of SHA-256 over the required
    /// members in lexicographic order, no whitespace. Used as the `kid`:
    /// it names exactly this key (a verifier can recompute it), and two
    /// instances can never give one kid to two different keys.
    pub fn thumbprint(&self) -> String {
        // serde_json::json! would sort too, but the order is the RFC's
        // requirement, so it is spelled out.
        let canonical = match &self.y {
            Some(y) => format!(
                r#"{{"crv":"{}","kty":"{}","x":"{}","y":"{}"}}"#,
                self.crv, self.kty, self.x, y
            ),
            None => format!(
                r#"{{"crv":"{}","kty":"{}","x":"{}"}}"#,
                self.crv, self.kty, self.x
            ),
        };
        URL_SAFE_NO_PAD.encode(Sha256::digest(canonical.as_bytes()))
    }

    /// The JWK as `/.well-known/jwks.json` lists it.
    pub fn published(&self, kid: &str, alg: AccessAlgorithm) -> serde_json::Value {
        let mut jwk = serde_json::json!({
            "kty": self.kty,
            "crv": self.crv,
            "x": self.x,
            "kid": kid,
            "alg": alg.as_str(),
            "use": "sig",
        });
        if let Some(y) = &self.y {
            jwk["y"] = y.clone().into();
        }
        jwk
    }

    /// The key jsonwebtoken verifies with; `None` when the stored JWK is
    /// not one of `alg`'s (damaged or mismatched data).
    pub fn decoding_key(&self, alg: AccessAlgorithm) -> Option<jsonwebtoken::DecodingKey> {
        match (alg, self.kty.as_str(), self.crv.as_str(), &self.y) {
            (AccessAlgorithm::Es256, "EC", "P-256", Some(y)) => {
                jsonwebtoken::DecodingKey::from_ec_components(&self.x, y).ok()
            }
            (AccessAlgorithm::EdDsa, "OKP", "Ed25519", None) => {
                jsonwebtoken::DecodingKey::from_ed_components(&self.x).ok()
            }
            _ => None,
        }
    }
}

/// A freshly generated key pair. No `Debug`: it holds the private key.
pub struct GeneratedKey {
    pub kid: String,
    pub alg: AccessAlgorithm,
    pub public: PublicJwk,
    /// PKCS#8 DER, wiped when dropped.
    pub private_pkcs8: Zeroizing<Vec<u8>>,
}

impl GeneratedKey {
    /// A new key pair for `alg` from the operating system's RNG; `None`
    /// for HS256, which has no key pair.
    pub fn generate(alg: AccessAlgorithm) -> Option<Self> {
        use p256::pkcs8::EncodePrivateKey;
        let mut rng = rand::rngs::OsRng;
        let (public, der) = match alg {
            AccessAlgorithm::Hs256 => return None,
            AccessAlgorithm::Es256 => {
                let secret = p256::SecretKey::random(&mut rng);
                let point = p256::elliptic_curve::sec1::ToEncodedPoint::to_encoded_point(
                    &secret.public_key(),
                    false,
                );
                let coordinate =
                    |c: Option<&p256::FieldBytes>| URL_SAFE_NO_PAD.encode(c.expect("uncompressed"));
                let public = PublicJwk {
                    kty: "EC".into(),
                    crv: "P-256".into(),
                    x: coordinate(point.x()),
                    y: Some(coordinate(point.y())),
                };
                let der = secret
                    .to_pkcs8_der()
                    .expect("a P-256 key encodes as PKCS#8");
                (public, Zeroizing::new(der.as_bytes().to_vec()))
            }
            AccessAlgorithm::EdDsa => {
                let signing = ed25519_dalek::SigningKey::generate(&mut rng);
                let public = PublicJwk {
                    kty: "OKP".into(),
                    crv: "Ed25519".into(),
                    x: URL_SAFE_NO_PAD.encode(signing.verifying_key().as_bytes()),
                    y: None,
                };
                let der = signing
                    .to_pkcs8_der()
                    .expect("an Ed25519 key encodes as PKCS#8");
                (public, Zeroizing::new(der.as_bytes().to_vec()))
            }
        };
        Some(Self {
            kid: public.thumbprint(),
            alg,
            public,
            private_pkcs8: der,
        })
    }
}

/// The key jsonwebtoken signs with, from the PKCS#8 DER of `alg`.
pub fn encoding_key(alg: AccessAlgorithm, pkcs8: &[u8]) -> Option<jsonwebtoken::EncodingKey> {
    match alg {
        AccessAlgorithm::Hs256 => None,
        AccessAlgorithm::Es256 => Some(jsonwebtoken::EncodingKey::from_ec_der(pkcs8)),
        AccessAlgorithm::EdDsa => Some(jsonwebtoken::EncodingKey::from_ed_der(pkcs8)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_algorithm_names_are_the_jose_ones() {
        for alg in [
            AccessAlgorithm::Hs256,
            AccessAlgorithm::Es256,
            AccessAlgorithm::EdDsa,
        ] {
            assert_eq!(AccessAlgorithm::parse(alg.as_str()), Some(alg));
        }
        assert_eq!(AccessAlgorithm::parse("es256"), None);
        assert_eq!(AccessAlgorithm::parse("RS256"), None);
        assert_eq!(AccessAlgorithm::parse("none"), None);
    }

    /// RFC 7638 section 3.1's worked example has an RSA key; RFC 8037
    /// appendix A.3 gives an Ed25519 one, which this checks against.
    #[test]
    fn the_kid_is_the_rfc_7638_thumbprint() {
        let jwk = PublicJwk {
            kty: "OKP".into(),
            crv: "Ed25519".into(),
            x: "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo".into(),
            y: None,
        };
        assert_eq!(
            jwk.thumbprint(),
            "kPrK_qmxVWaYVA9wwBF6Iuo3vVzz7TxHCTwXBygrS4k"
        );
    }

    #[test]
    fn generated_keys_sign_and_verify_with_their_public_jwk() {
        for alg in [AccessAlgorithm::Es256, AccessAlgorithm::EdDsa] {
            let key = GeneratedKey::generate(alg).unwrap();
            assert_eq!(key.kid, key.public.thumbprint());
            let mut header = jsonwebtoken::Header::new(alg.jwt());
            header.kid = Some(key.kid.clone());
            let claims = serde_json::json!({"sub": "jane", "exp": 4_000_000_000u64});
            let token = jsonwebtoken::encode(
                &header,
                &claims,
                &encoding_key(alg, &key.private_pkcs8).unwrap(),
            )
            .unwrap();
            let mut validation = jsonwebtoken::Validation::new(alg.jwt());
            validation.required_spec_claims.clear();
            let decoded = jsonwebtoken::decode::<serde_json::Value>(
                &token,
                &key.public.decoding_key(alg).unwrap(),
                &validation,
            )
            .unwrap();
            assert_eq!(decoded.claims["sub"], "jane");
            // Published without a private member.
            let published = key.public.published(&key.kid, alg);
            assert!(published.get("d").is_none(), "{published}");
            assert_eq!(published["use"], "sig");
            let other = if alg == AccessAlgorithm::Es256 {
                AccessAlgorithm::EdDsa
            } else {
                AccessAlgorithm::Es256
            };
            assert!(key.public.decoding_key(other).is_none());
        }
        assert!(GeneratedKey::generate(AccessAlgorithm::Hs256).is_none());
    }
}
