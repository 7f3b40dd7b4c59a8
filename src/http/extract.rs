//! Extractors whose rejections speak the API's error format.

use std::net::{IpAddr, SocketAddr};

use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, FailedToBufferBody};
use axum::extract::{ConnectInfo, FromRef, FromRequest, FromRequestParts, Request};
use axum::http::header::{
    AUTHORIZATION, CONTENT_LENGTH, CONTENT_TYPE, TRANSFER_ENCODING, USER_AGENT,
};
use axum::http::request::Parts;
use axum::http::StatusCode;
use serde::de::DeserializeOwned;

use super::middleware::request_context::RequestId;
use super::AppState;
use crate::domain::{FieldError, User};
use crate::error::{ApiError, ErrorCode};
use crate::services::sessions::Authenticated;
use crate::services::ClientContext;

/// JSON body extractor: like `axum::Json`, but every rejection (wrong
/// content type, malformed JSON, wrong shape, too large) is an [`ApiError`],
/// and shape errors name the field at fault.
pub struct ApiJson<T>(pub T);

impl<S, T> FromRequest<S> for ApiJson<T>
where
    S: Send + Sync,
    T: DeserializeOwned,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        if !is_json(req.headers().get(CONTENT_TYPE)) {
            return Err(ApiError::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                ErrorCode::UnsupportedMediaType,
                "Send the body as JSON with Content-Type: application/json.",
            ));
        }
        let bytes = Bytes::from_request(req, state)
            .await
            .map_err(|rejection| match rejection {
                // axum sorts a body over the limit into its own variant.
                BytesRejection::FailedToBufferBody(FailedToBufferBody::LengthLimitError(_)) => {
                    ApiError::payload_too_large()
                }
                BytesRejection::FailedToBufferBody(ref e)
                    if super::middleware::body_timeout::is_body_timeout(e) =>
                {
                    ApiError::request_timeout()
                }
                other => ApiError::new(
                    StatusCode::BAD_REQUEST,
                    ErrorCode::BadRequest,
                    other.body_text(),
                ),
            })?;
        parse_json(&bytes).map(ApiJson)
    }
}

fn is_json(content_type: Option<&axum::http::HeaderValue>) -> bool {
    let Some(value) = content_type.and_then(|v| v.to_str().ok()) else {
        return false;
    };
    let essence = value
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase();
    essence == "application/json"
        || (essence.starts_with("application/") && essence.ends_with("+json"))
}

/// Deserializes, mapping serde's errors: syntax -> 400, shape -> 422 with
/// the offending field named.
/// A JSON body that may be left out entirely (no body, no Content-Type):
/// for actions whose only input is optional, such as an admin's reason. A
/// body that is sent is read exactly as [`ApiJson`] reads it.
pub struct OptionalJson<T>(pub Option<T>);

impl<S, T> FromRequest<S> for OptionalJson<T>
where
    S: Send + Sync,
    T: DeserializeOwned,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        if sends_no_body(req.headers()) {
            return Ok(Self(None));
        }
        let ApiJson(body) = ApiJson::from_request(req, state).await?;
        Ok(Self(Some(body)))
    }
}

/// No body at all: neither a Content-Type nor a length or chunked body.
fn sends_no_body(headers: &axum::http::HeaderMap) -> bool {
    headers.get(CONTENT_TYPE).is_none()
        && headers.get(TRANSFER_ENCODING).is_none()
        && headers
            .get(CONTENT_LENGTH)
            .is_none_or(|length| length.as_bytes() == b"0")
}

/// For refresh and logout, whose token travels only in the HttpOnly
/// cookie: a body that is a JSON object with a `refresh_token` member (how
/// the Python service took it) is refused with 400 `refresh_token_in_body`,
/// whatever its Content-Type says. Ignoring it, as before, left such a
/// client with a 401 it could not explain, or a logout that ended nothing.
/// Any other body, or none, is read for nothing else and changes nothing,
/// and a body too large to read is ignored as it always was. The token
/// itself is never looked at, logged or echoed.
pub struct NoRefreshTokenInBody;

impl<S: Send + Sync> FromRequest<S> for NoRefreshTokenInBody {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        if sends_no_body(req.headers()) {
            return Ok(Self);
        }
        let bytes = match Bytes::from_request(req, state).await {
            Ok(bytes) => bytes,
            // Answering while the rest of a late body may still arrive would
            // read it as the next request: the 408 closes the connection.
            Err(BytesRejection::FailedToBufferBody(ref e))
                if super::middleware::body_timeout::is_body_timeout(e) =>
            {
                return Err(ApiError::request_timeout())
            }
            Err(_) => return Ok(Self),
        };
        let carries = serde_json::from_slice::<serde_json::Map<String, serde_json::Value>>(&bytes)
            .is_ok_and(|object| object.contains_key("refresh_token"));
        if carries {
            Err(ApiError::refresh_token_in_body())
        } else {
            Ok(Self)
        }
    }
}

pub fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let result: Result<T, _> = serde_path_to_error::deserialize(&mut de);
    let (path, inner) = match result {
        // Trailing garbage after the object is a syntax error too.
        Ok(value) => match de.end() {
            Ok(()) => return Ok(value),
            Err(e) => (String::new(), e),
        },
        Err(err) => (err.path().to_string(), err.into_inner()),
    };
    {
        if !inner.is_data() {
            return Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                ErrorCode::MalformedJson,
                "The request body is not valid JSON.",
            ));
        }
        // serde_json tells data errors apart only in their text: its typed
        // side stops at `Category::Data`, and which field is unknown or
        // missing exists only in the message serde's `unknown_field` and
        // `missing_field` write (and the position only as its " at line"
        // suffix). So these few fixed phrasings are matched here, with
        // `json_errors_name_the_field` below failing should they change.
        let message = inner.to_string();
        let message = message
            .split(" at line ")
            .next()
            .unwrap_or_default()
            .to_owned();
        let (field, text) = if let Some(name) = backticked(&message, "unknown field `") {
            (name, "This field is not accepted.".to_owned())
        } else if let Some(name) = backticked(&message, "missing field `") {
            (name, "This field is required.".to_owned())
        } else if path == "." || path.is_empty() {
            (
                "body".to_owned(),
                format!("The body must be a JSON object ({message})."),
            )
        } else {
            (path, format!("Wrong type: {message}."))
        };
        Err(ApiError::validation(vec![FieldError::new(field, text)]))
    }
}

fn backticked(message: &str, prefix: &str) -> Option<String> {
    let rest = message.strip_prefix(prefix)?;
    Some(rest.split('`').next()?.to_owned())
}

/// The client's IP as the service sees it (set by the client-IP middleware).
#[derive(Debug, Clone, Copy)]
pub struct ClientIp(pub IpAddr);

impl<S: Send + Sync> FromRequestParts<S> for ClientContext {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        let ip = parts
            .extensions
            .get::<ClientIp>()
            .map(|ip| ip.0)
            .or_else(|| {
                parts
                    .extensions
                    .get::<ConnectInfo<SocketAddr>>()
                    .map(|c| c.0.ip())
            });
        let user_agent = parts.headers.get(USER_AGENT).and_then(|v| v.to_str().ok());
        // Set by the request-context middleware, which already refused
        // anything but a short plain id.
        let request_id = parts
            .extensions
            .get::<RequestId>()
            .and_then(|id| id.0.to_str().ok());
        Ok(ClientContext::new(ip, user_agent).with_request_id(request_id))
    }
}

/// The raw Bearer token from `Authorization`.
pub struct BearerToken(pub String);

impl<S: Send + Sync> FromRequestParts<S> for BearerToken {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, ApiError> {
        let value = parts
            .headers
            .get(AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .ok_or_else(ApiError::missing_bearer)?;
        let (scheme, token) = value.split_once(' ').ok_or_else(ApiError::missing_bearer)?;
        if !scheme.eq_ignore_ascii_case("bearer") || token.trim().is_empty() {
            return Err(ApiError::missing_bearer());
        }
        Ok(BearerToken(token.trim().to_owned()))
    }
}

/// A signed-in user with the `admin` role; anyone else signed in gets 403
/// `forbidden`.
pub struct AdminUser(pub User);

impl<S> FromRequestParts<S> for AdminUser
where
    S: Send + Sync,
    AppState: FromRef<S>,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        admin(parts, state).await.map(|who| AdminUser(who.user))
    }
}

/// An administrator about to change something (issue 19): the admin role
/// and, like a factor change, a sign-in within REAUTH_WINDOW (step-up;
/// otherwise 401 `reauthentication_required`). Reading stays [`AdminUser`].
pub struct AdminAction(pub User);

impl<S> FromRequestParts<S> for AdminAction
where
    S: Send + Sync,
    AppState: FromRef<S>,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        let who = admin(parts, state).await?;
        AppState::from_ref(state).sessions.require_recent(&who)?;
        Ok(AdminAction(who.user))
    }
}

/// The signed-in user behind a valid Bearer access token, with the refresh
/// family (sign-in) the token belongs to.
pub struct AuthUser(pub User, pub Option<String>);

impl<S> FromRequestParts<S> for AuthUser
where
    S: Send + Sync,
    AppState: FromRef<S>,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        let SignedIn(who) = SignedIn::from_request_parts(parts, state).await?;
        Ok(AuthUser(who.user, who.session))
    }
}

/// Like [`AuthUser`], with how and when the sign-in was proven: for the
/// routes that need a recent one (step-up) or hand it on.
pub struct SignedIn(pub Authenticated);

impl<S> FromRequestParts<S> for SignedIn
where
    S: Send + Sync,
    AppState: FromRef<S>,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        bearer(parts, state, false).await.map(SignedIn)
    }
}

/// The sign-in behind the Bearer token; an enrolment token only when
/// `enrolment` says the route takes one.
async fn bearer<S>(parts: &mut Parts, state: &S, enrolment: bool) -> Result<Authenticated, ApiError>
where
    S: Send + Sync,
    AppState: FromRef<S>,
{
    let BearerToken(token) = BearerToken::from_request_parts(parts, state).await?;
    let sessions = &AppState::from_ref(state).sessions;
    Ok(if enrolment {
        sessions.authenticate_enrolment(&token).await?
    } else {
        sessions.authenticate(&token).await?
    })
}

/// The sign-in behind the Bearer token if it is an administrator's; anyone
/// else signed in gets 403 `forbidden`.
async fn admin<S>(parts: &mut Parts, state: &S) -> Result<Authenticated, ApiError>
where
    S: Send + Sync,
    AppState: FromRef<S>,
{
    let who = bearer(parts, state, false).await?;
    if !who.user.role.is_admin() {
        return Err(ApiError::forbidden());
    }
    Ok(who)
}

/// Like [`SignedIn`], also accepting an enrolment token (MFA_REQUIRED_ROLES:
/// a user who must add a second factor and has none), with
/// `Authenticated::enrolling` saying which it was. Only the enrolment routes
/// take it (GET /api/auth/mfa, TOTP setup and confirm, passkey
/// registration): making a route one of them is changing its `SignedIn` to
/// `Enrolling`. Every other route's `SignedIn`/`AuthUser` refuses the
/// enrolment token with 401 `mfa_enrolment_required`.
pub struct Enrolling(pub Authenticated);

impl<S> FromRequestParts<S> for Enrolling
where
    S: Send + Sync,
    AppState: FromRef<S>,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        bearer(parts, state, true).await.map(Enrolling)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Body {
        email: String,
        password: String,
    }

    #[test]
    fn json_errors_name_the_field() {
        let e = parse_json::<Body>(b"{\"email\":\"a\"").unwrap_err();
        assert_eq!((e.status.as_u16(), e.code), (400, ErrorCode::MalformedJson));
        let e = parse_json::<Body>(b"{\"email\":\"a\"}").unwrap_err();
        assert_eq!(
            (e.status.as_u16(), e.code),
            (422, ErrorCode::ValidationFailed)
        );
        assert!(e.fields.unwrap().contains_key("password"));
        let e = parse_json::<Body>(br#"{"email":"a","password":"b","role":"admin"}"#).unwrap_err();
        assert_eq!(e.status.as_u16(), 422);
        assert!(e.fields.unwrap().contains_key("role"));
        let e = parse_json::<Body>(br#"{"email":1,"password":"b"}"#).unwrap_err();
        assert!(e.fields.unwrap().contains_key("email"));
        let e = parse_json::<Body>(br#"[]"#).unwrap_err();
        assert_eq!(e.status.as_u16(), 422);
        let e = parse_json::<Body>(br#"{"email":"a","password":"b"} x"#).unwrap_err();
        assert_eq!(e.status.as_u16(), 400);
    }

    #[test]
    fn content_types() {
        use axum::http::HeaderValue;
        assert!(is_json(Some(&HeaderValue::from_static("application/json"))));
        assert!(is_json(Some(&HeaderValue::from_static(
            "Application/JSON; charset=utf-8"
        ))));
        assert!(is_json(Some(&HeaderValue::from_static(
            "application/merge-patch+json"
        ))));
        assert!(!is_json(Some(&HeaderValue::from_static("text/plain"))));
        assert!(!is_json(None));
    }
}
