//! What one access token costs to sign and to verify, per algorithm, as the
//! service does it: jsonwebtoken with this crate's provider installed
//! (ring for ES256, jsonwebtoken's `rust_crypto` for HS256 and EdDSA), keys
//! made as the service makes them, the signing input of a real access
//! token. ES256 is also run through `rust_crypto`, which the service used
//! before (BENCHMARKS.md, "Signing algorithms on the hot path").
//!
//! Run: `cargo bench --bench jwt_algorithms` (harness = false). Knob:
//! JWT_BENCH_OPS (default 2000 per figure; 20 under `cargo test`). Prints a Markdown table and one
//! machine-readable line per row: `JWT_BENCH {"alg":..,"provider":..,
//! "sign_us":..,"verify_us":..}`.

use std::time::Instant;

use clinic_auth::domain::jwt_crypto;
use clinic_auth::domain::signing_key::{encoding_key, AccessAlgorithm, GeneratedKey};
use jsonwebtoken::crypto::{rust_crypto, CryptoProvider};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey};

/// Microseconds per call of `f`, over `ops` calls after a short warm-up.
fn per_op(ops: u32, mut f: impl FnMut()) -> f64 {
    for _ in 0..ops / 20 {
        f();
    }
    let started = Instant::now();
    for _ in 0..ops {
        f();
    }
    started.elapsed().as_secs_f64() * 1e6 / f64::from(ops)
}

/// The signing input of a typical access token (header and claims, as
/// jsonwebtoken builds them): what a signature is computed over.
fn message() -> Vec<u8> {
    let claims = serde_json::json!({
        "sub": "0b4f3c1e9a6d4d8f8e2b7c5a1f3d9e6b", "role": "doctor",
        "iat": 1_796_000_000, "exp": 1_796_000_900,
        "jti": "5d2c8e1f7a3b4c6d9e0f1a2b3c4d5e6f", "typ": "access",
        "iss": "https://auth.example-clinic.org", "aud": "Clinic Auth",
        "sid": "9f8e7d6c5b4a39281706f5e4d3c2b1a0", "tv": 3,
        "amr": ["pwd", "otp", "mfa"], "auth_time": 1_796_000_000,
    });
    let header =
        r#"{"typ":"JWT","alg":"ES256","kid":"kPrK_qmxVWaYVA9wwBF6Iuo3vVzz7TxHCTwXBygrS4k"}"#;
    use base64::Engine;
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    format!("{}.{}", b64.encode(header), b64.encode(claims.to_string())).into_bytes()
}

fn row(
    name: &str,
    provider: &CryptoProvider,
    alg: Algorithm,
    keys: (EncodingKey, DecodingKey),
    ops: u32,
) {
    let (encoding, decoding) = keys;
    let message = message();
    let sign = per_op(ops, || {
        let signer = (provider.signer_factory)(&alg, &encoding).unwrap();
        std::hint::black_box(signer.try_sign(&message).unwrap());
    });
    let signature = (provider.signer_factory)(&alg, &encoding)
        .unwrap()
        .try_sign(&message)
        .unwrap();
    let verify = per_op(ops, || {
        let verifier = (provider.verifier_factory)(&alg, &decoding).unwrap();
        assert!(verifier.verify(&message, &signature).is_ok());
    });
    println!("| {alg:?} | {name} | {sign:.1} µs | {verify:.1} µs |");
    println!(
        "JWT_BENCH {}",
        serde_json::json!({"alg": format!("{alg:?}"), "provider": name,
            "sign_us": sign, "verify_us": verify})
    );
}

fn main() {
    // `cargo bench` passes `--bench`; `cargo test --all-targets` runs this
    // too, unoptimised, where a few operations prove it still works.
    let ops = if std::env::args().any(|arg| arg == "--bench") {
        std::env::var("JWT_BENCH_OPS")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(2000)
    } else {
        20
    };
    assert!(jwt_crypto::install(), "the service's provider is installed");
    let ours = jwt_crypto::provider();
    println!("| algorithm | provider | sign | verify |\n| --- | --- | ---: | ---: |");
    let secret = b"a 256-bit shared secret, as long as JWT_ACCESS_SECRET";
    row(
        "service",
        ours,
        Algorithm::HS256,
        (
            EncodingKey::from_secret(secret),
            DecodingKey::from_secret(secret),
        ),
        ops,
    );
    for alg in [AccessAlgorithm::Es256, AccessAlgorithm::EdDsa] {
        let key = GeneratedKey::generate(alg).unwrap();
        let keys = || {
            (
                encoding_key(alg, &key.private_pkcs8).unwrap(),
                key.public.decoding_key(alg).unwrap(),
            )
        };
        row("service", ours, alg.jwt(), keys(), ops);
        if alg == AccessAlgorithm::Es256 {
            let before = &rust_crypto::DEFAULT_PROVIDER;
            row("rust_crypto (before)", before, alg.jwt(), keys(), ops);
        }
    }
}
