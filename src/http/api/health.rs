//! Liveness and readiness in one: 200 when the database answers and takes
//! writes, 503 when it does not, so a load balancer stops sending traffic
//! to a node that cannot serve (unreachable database, full disk, read-only
//! file, a lock held past the busy timeout). Whether writes work is read
//! from `services::health`, kept current in the background: no write per
//! request.

use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use axum::{Json, Router};
use serde::Serialize;
use utoipa::ToSchema;

use crate::http::AppState;
use crate::services::health::WriteHealth;

#[derive(Debug, Serialize, ToSchema)]
pub struct HealthResponse {
    /// `ok` or `degraded`.
    #[schema(example = "ok")]
    pub status: &'static str,
    /// `ok` or `unavailable`.
    #[schema(example = "ok")]
    pub database: &'static str,
}

pub fn router() -> Router<AppState> {
    // axum answers HEAD from the GET handler, without the body.
    Router::new().route("/health", get(health))
}

/// Health check (GET and HEAD).
#[utoipa::path(
    method(get, head),
    path = "/health",
    tag = "system",
    responses(
        (status = 200, description = "Service and database are up", body = HealthResponse),
        (status = 503, description = "The database cannot be reached or does not take writes", body = HealthResponse),
        super::responses::RateLimited,
    )
)]
pub async fn health(State(health): State<Arc<WriteHealth>>) -> (StatusCode, Json<HealthResponse>) {
    // The cached write state first: while it is bad, no round trip.
    if health.writable() && health.database_ok().await {
        (
            StatusCode::OK,
            Json(HealthResponse {
                status: "ok",
                database: "ok",
            }),
        )
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(HealthResponse {
                status: "degraded",
                database: "unavailable",
            }),
        )
    }
}
