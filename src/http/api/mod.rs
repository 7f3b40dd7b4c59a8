//! The JSON API under /api, plus /health.

pub mod auth;
pub mod health;
pub mod verification;

use axum::Router;

use super::{AppState, Limiters};

pub fn router(limiters: &Limiters) -> Router<AppState> {
    Router::new()
        .nest(
            "/api/auth",
            auth::router(limiters).merge(verification::router(limiters)),
        )
        .merge(health::router())
}
