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
    // HEAD has a handler of its own (rather than axum's GET-without-body)
    // so that the OpenAPI document can describe it as what it is: the same
    // status, no body, under an operation id of its own.
    Router::new().route("/health", get(health).head(health_head))
}

/// Health check: the service's and the database's state.
#[utoipa::path(
    get,
    path = "/health",
    operation_id = "health",
    tag = "system",
    responses(
        (status = 200, description = "Service and database are up", body = HealthResponse),
        (status = 503, description = "The database cannot be reached or does not take writes", body = HealthResponse),
        super::responses::RateLimited,
    )
)]
pub async fn health(State(health): State<Arc<WriteHealth>>) -> (StatusCode, Json<HealthResponse>) {
    let status = check(&health).await;
    let body = if status == StatusCode::OK {
        HealthResponse {
            status: "ok",
            database: "ok",
        }
    } else {
        HealthResponse {
            status: "degraded",
            database: "unavailable",
        }
    };
    (status, Json(body))
}

/// Health check for load balancers that probe with HEAD: the same status
/// as GET, no body.
#[utoipa::path(
    head,
    path = "/health",
    operation_id = "health_head",
    tag = "system",
    responses(
        (status = 200, description = "Service and database are up (no body)"),
        (status = 503, description = "The database cannot be reached or does not take writes (no body)"),
        (
            status = 429,
            description = "Rate limited (no body)",
            headers(("Retry-After" = u64, description = "Seconds to wait before trying again"))
        ),
    )
)]
pub async fn health_head(State(health): State<Arc<WriteHealth>>) -> StatusCode {
    check(&health).await
}

/// 200 when the database answers and takes writes, 503 otherwise.
async fn check(health: &WriteHealth) -> StatusCode {
    // The cached write state first: while it is bad, no round trip.
    if health.writable() && health.database_ok().await {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    }
}
