//! The admin console (issue 19): the same use-cases as /api/admin, as
//! pages. Only the admin role reaches them (anyone else signed in gets a
//! 403 page); every change needs a recent sign-in (step-up through
//! /account/reauth), goes through a form, and is audited by the service it
//! calls, exactly as the API's.

pub mod actions;
pub mod audit;
pub mod emergency;
pub mod invitations;
pub mod users;

use axum::extract::rejection::QueryRejection;
use axum::extract::{FromRequestParts, Query};
use axum::http::request::Parts;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;

use super::layout;
use crate::error::ApiError;
use crate::http::pages::views::Layout;
use crate::http::pages::{PageError, SignedIn};
use crate::http::AppState;
use crate::services::ServiceError;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/admin", get(users::list))
        .route("/admin/users/{id}", get(users::detail))
        .route(
            "/admin/users/{id}/{action}",
            get(actions::confirm).post(actions::act),
        )
        .route(
            "/admin/invitations",
            get(invitations::show).post(invitations::invite),
        )
        .route("/admin/invitations/{id}/{action}", post(invitations::act))
        .route("/admin/audit", get(audit::show))
        .route("/admin/emergency", get(emergency::show))
        .route("/admin/emergency/{id}/review", post(emergency::review))
}

/// A signed-in administrator on a console page; anyone else signed in
/// gets the "for administrators only" page, and nobody signed in goes to
/// the sign-in page first.
pub struct AdminPage(pub SignedIn);

impl FromRequestParts<AppState> for AdminPage {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Response> {
        let signed_in = SignedIn::from_request_parts(parts, state).await?;
        if !signed_in.user.role.is_admin() {
            tracing::info!(user_id = %signed_in.user.id, path = parts.uri.path(), "admin page refused");
            return Err(PageError::AdminOnly.into_response());
        }
        Ok(Self(signed_in))
    }
}

impl AdminPage {
    /// The page layout, with the one-time notice the last action left.
    async fn layout(&mut self, state: &AppState) -> Result<Layout, PageError> {
        let notice = self.0.portal.data.flash.take();
        if notice.is_some() {
            self.0.portal.save().await?;
        }
        Ok(layout(
            state,
            &self.0.portal,
            Some(self.0.user.name.as_str().to_owned()),
            notice,
        ))
    }
}

/// A console page's query string as pairs, without the empty ones (an
/// unused filter of a GET form is sent empty); 400 when it does not parse.
fn query_pairs(
    query: Result<Query<Vec<(String, String)>>, QueryRejection>,
) -> Result<Vec<(String, String)>, PageError> {
    let Query(pairs) = query.map_err(|_| PageError::BadRequest)?;
    Ok(pairs
        .into_iter()
        .filter(|(_, value)| !value.trim().is_empty())
        .collect())
}

/// The value of filter `key` (the last one given), trimmed; empty when
/// absent.
fn filter_value(pairs: &[(String, String)], key: &str) -> String {
    pairs
        .iter()
        .rfind(|(k, _)| k == key)
        .map(|(_, v)| v.trim().to_owned())
        .unwrap_or_default()
}

/// A console address with its filters: `/admin?q=jan&cursor=...`.
fn with_query(path: &str, pairs: &[(&str, &str)]) -> String {
    let mut query = url::form_urlencoded::Serializer::new(String::new());
    for (key, value) in pairs.iter().filter(|(_, v)| !v.is_empty()) {
        query.append_pair(key, value);
    }
    let query = query.finish();
    if query.is_empty() {
        path.to_owned()
    } else {
        format!("{path}?{query}")
    }
}

/// One page of a filtered console table: its rows, the address of the
/// next page (the same filters plus the cursor), and the page's status.
struct Listing<R> {
    rows: Vec<R>,
    next: Option<String>,
    status: StatusCode,
}

impl<R> Listing<R> {
    /// The filters were refused (the form says why): no rows, 422.
    fn refused() -> Self {
        Self {
            rows: Vec::new(),
            next: None,
            status: StatusCode::UNPROCESSABLE_ENTITY,
        }
    }

    /// `rows` found at `path` under `filters`; `cursor`, when there is
    /// more, leads on to the next page.
    fn found(rows: Vec<R>, path: &str, filters: &[(&str, &str)], cursor: Option<String>) -> Self {
        let next = cursor.map(|cursor| {
            let mut pairs = filters.to_vec();
            pairs.push(("cursor", &cursor));
            with_query(path, &pairs)
        });
        Self {
            rows,
            next,
            status: StatusCode::OK,
        }
    }
}

/// What a refused action tells the administrator, in the API's words and
/// with its status; what no page can explain becomes an error page.
fn refusal(err: ServiceError) -> Result<(StatusCode, String), PageError> {
    match err {
        ServiceError::NotFound => Err(PageError::NotFound),
        told @ (ServiceError::LastAdmin
        | ServiceError::AccountNotDisabled
        | ServiceError::AccountDisabled
        | ServiceError::EmailTaken
        | ServiceError::InvitationPending
        | ServiceError::OwnEmergencyReview
        | ServiceError::AlreadyReviewed
        | ServiceError::MailLimit { .. }) => {
            let told = ApiError::from(told);
            Ok((told.status, told.message.into_owned()))
        }
        other => Err(other.into()),
    }
}
