//! /api/auth/verify-email and /api/auth/resend-verification.

use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::post;
use axum::{Json, Router};
use serde::Deserialize;
use utoipa::ToSchema;

use super::auth::{MessageResponse, UserResponse};
use super::responses::{BearerErrors, BodyErrors, LinkErrors, RateLimited, Unavailable};
use crate::error::{ApiError, ErrorBody};
use crate::http::extract::{ApiJson, AuthUser};
use crate::http::middleware::rate_limit;
use crate::http::{AppState, Limiters};
use crate::services::{ClientContext, Registration};

pub fn router(limiters: &Limiters) -> Router<AppState> {
    Router::new()
        .route(
            "/verify-email",
            post(verify_email).layer(rate_limit::layer(&limiters.verify_email)),
        )
        .route(
            "/resend-verification",
            post(resend_verification).layer(rate_limit::layer(&limiters.resend_verification)),
        )
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct VerifyEmailRequest {
    /// The token from the emailed link.
    pub token: String,
}

/// Confirm an email address with the token from the emailed link.
#[utoipa::path(
    post, path = "/api/auth/verify-email", tag = "auth",
    operation_id = "verify_email",
    request_body(content = VerifyEmailRequest, content_type = "application/json"),
    responses(
        (status = 200, description = "Verified; the user as it now is", body = UserResponse),
        BodyErrors,
        LinkErrors,
        (status = 422, description = "The body does not match the schema (`validation_failed`)", body = ErrorBody),
        RateLimited,
        Unavailable,
    )
)]
pub async fn verify_email(
    State(registration): State<Arc<Registration>>,
    client: ClientContext,
    ApiJson(body): ApiJson<VerifyEmailRequest>,
) -> Result<Json<UserResponse>, ApiError> {
    let user = registration.verify_email(&body.token, &client).await?;
    Ok(Json(UserResponse::from(&user)))
}

/// Email the signed-in user a new verification link (the previous one
/// stops working).
#[utoipa::path(
    post, path = "/api/auth/resend-verification", tag = "account",
    operation_id = "resend_verification",
    security(("bearer" = [])),
    responses(
        (status = 202, description = "A new link is on its way", body = MessageResponse),
        BearerErrors,
        (status = 409, description = "Already verified (`already_verified`)", body = ErrorBody),
        RateLimited,
        Unavailable,
    )
)]
pub async fn resend_verification(
    State(registration): State<Arc<Registration>>,
    AuthUser(user, _): AuthUser,
) -> Result<(StatusCode, Json<MessageResponse>), ApiError> {
    registration.resend_verification(&user).await?;
    Ok((
        StatusCode::ACCEPTED,
        Json(MessageResponse {
            message: "We have sent a new verification link to your email address.",
        }),
    ))
}
