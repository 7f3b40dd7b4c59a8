//! The JSON API under /api, plus /health.

pub mod admin;
pub mod admin_users;
pub mod auth;
pub(crate) mod cookies;
pub mod emergency;
pub mod health;
pub mod mfa;
pub mod passkeys;
pub(crate) mod responses;
pub mod verification;

/// Invitations (issue 19).
pub mod admin_invitations;

/// The public signing keys (issue 20).
pub mod jwks;

use axum::Router;

use super::{AppState, Limiters};

pub fn router(limiters: &Limiters) -> Router<AppState> {
    Router::new()
        .nest(
            "/api/auth",
            auth::router(limiters)
                .merge(verification::router(limiters))
                .merge(mfa::router(limiters))
                .merge(passkeys::router(limiters))
                .merge(emergency::user_router()),
        )
        .nest(
            "/api/admin",
            admin::router()
                .merge(admin_users::router())
                .merge(emergency::admin_router())
                .merge(admin_invitations::router()),
        )
        .merge(health::router())
        .merge(jwks::router())
}
