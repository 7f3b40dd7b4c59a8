//! The OpenAPI 3 document (/openapi.json) and Swagger UI (/docs), served
//! from vendored assets so they work on a clinic network with no internet.

use axum::Router;
use utoipa::openapi::security::{ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};
use utoipa_swagger_ui::SwaggerUi;

use super::api::admin_invitations;
use super::api::{admin, admin_users, auth, emergency, health, mfa, passkeys, verification};
use super::AppState;

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Clinic Auth API",
        description = "Authentication for clinics. Errors always have the shape \
                       `{\"error\":{\"code\",\"message\",\"fields\"?}}`; every response carries `X-Request-Id`."
    ),
    paths(
        auth::register, auth::login, auth::refresh, auth::logout, auth::me,
        auth::forgot_password, auth::reset_password, auth::change_password,
        auth::list_sessions, auth::end_session, auth::logout_all,
        mfa::verify, mfa::status, mfa::setup_totp, mfa::confirm_totp, mfa::remove_totp,
        mfa::regenerate_recovery_codes,
        passkeys::login_options, passkeys::login_verify, passkeys::register_options,
        passkeys::register_verify, passkeys::list, passkeys::rename, passkeys::remove,
        verification::verify_email, verification::resend_verification, admin::audit, admin_users::disable, admin_users::enable,
        emergency::start, emergency::end, emergency::list, emergency::review,
        admin_users::list, admin_users::detail, admin_users::update, admin_users::unlock,
        admin_users::revoke_sessions, admin_users::password_reset, admin_users::mfa_reset,
        admin_users::erase,
        admin_invitations::invite, admin_invitations::list, admin_invitations::resend, admin_invitations::revoke,
        health::health, health::health_head,
        super::api::jwks::jwks,
    ),
    components(schemas(crate::error::ErrorBody, crate::error::ErrorDetail, crate::error::ErrorCode)),
    modifiers(&SecuritySchemes),
    tags(
        (name = "auth", description = "Sign-in, tokens and password reset"),
        (name = "account", description = "The signed-in user's password and sessions"),
        (name = "admin", description = "Administration (role `admin` only): the audit trail, finding and seeing accounts, disabling and enabling them, the emergency access review queue"),
        (name = "system", description = "Operations"),
        (name = "keys", description = "The public keys resource servers verify access tokens with"),
    )
)]
pub struct ApiDoc;

struct SecuritySchemes;

impl Modify for SecuritySchemes {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("JWT")
                    .build(),
            ),
        );
        components.add_security_scheme(
            "refresh_cookie",
            SecurityScheme::ApiKey(ApiKey::Cookie(ApiKeyValue::new("refresh_token"))),
        );
    }
}

pub fn router() -> Router<AppState> {
    Router::new().merge(SwaggerUi::new("/docs").url("/openapi.json", ApiDoc::openapi()))
}
