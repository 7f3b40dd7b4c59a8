//! `GET /.well-known/jwks.json` (issue 20): the public keys access tokens
//! are signed with, for resource servers to verify them without holding
//! anything secret. Public halves only; with HS256 an empty set (the
//! shared secret is never published).

use std::sync::Arc;

use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;
use axum::{Json, Router};
use serde::Serialize;
use utoipa::ToSchema;

use crate::http::AppState;
use crate::services::signing_keys::KeyRing;

/// How long verifiers may cache the set. Shorter than any sensible
/// JWT_ACCESS_EXPIRES, and verifiers refetch at once on an unknown kid, so
/// a rotation never makes them refuse a fresh token.
const MAX_AGE_SECS: u32 = 300;

/// A JSON Web Key Set (RFC 7517 section 5).
#[derive(Serialize, ToSchema)]
pub struct JwkSet {
    /// The current key first, then retired keys that may still have
    /// unexpired tokens.
    pub keys: Vec<Jwk>,
}

/// One public key (RFC 7517/7518/8037).
#[derive(Serialize, ToSchema)]
pub struct Jwk {
    /// `EC` (ES256) or `OKP` (EdDSA).
    #[schema(example = "EC")]
    pub kty: String,
    /// `P-256` or `Ed25519`.
    #[schema(example = "P-256")]
    pub crv: String,
    /// The x coordinate (EC) or the public key (OKP), base64url.
    pub x: String,
    /// The y coordinate (EC only), base64url.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub y: Option<String>,
    /// The RFC 7638 thumbprint, as in the tokens' `kid` header.
    pub kid: String,
    /// `ES256` or `EdDSA`.
    #[schema(example = "ES256")]
    pub alg: String,
    /// Always `sig`.
    #[serde(rename = "use")]
    #[schema(example = "sig")]
    pub use_: String,
}

pub fn router() -> Router<AppState> {
    Router::new().route("/.well-known/jwks.json", get(jwks))
}

/// The public keys that verify access tokens (JWKS).
///
/// Verify an access token by the `kid` in its header against this set,
/// with the algorithm the key names, then check `iss` (APP_URL), `aud`
/// (APP_NAME), `typ` = `access` and `exp`. Empty with
/// JWT_ACCESS_ALGORITHM=HS256.
#[utoipa::path(
    get,
    path = "/.well-known/jwks.json",
    tag = "keys",
    responses(
        (status = 200, description = "The public keys; cacheable for 5 minutes",
         body = JwkSet,
         headers(("Cache-Control" = String, description = "public, max-age=300"))),
        super::responses::RateLimited,
    )
)]
pub async fn jwks(State(ring): State<Arc<KeyRing>>) -> impl IntoResponse {
    (
        [(
            header::CACHE_CONTROL,
            format!("public, max-age={MAX_AGE_SECS}"),
        )],
        Json(ring.jwks()),
    )
}
