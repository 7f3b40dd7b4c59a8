//! /admin/emergency: the review queue of emergency access (oldest first)
//! or every use, and the review form of each use; the same use-case as
//! /api/admin/emergency.

use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use serde::Deserialize;

use super::{query_pairs, refusal, AdminPage};
use crate::domain::{EmergencyEnd, EmergencyUse, User};
use crate::http::pages::csrf::CsrfForm;
use crate::http::pages::handlers::{flash_and_go, page, PageResult};
use crate::http::pages::views::admin::{EmergencyPage, EmergencyRow, ReviewView};
use crate::http::pages::views::{date_time, Moment};
use crate::http::AppState;
use crate::services::emergency_access::overdue;
use crate::services::{ClientContext, ServiceError};
use crate::storage::{EmergencyFilter, EMERGENCY_PAGE_MAX};

const HERE: &str = "/admin/emergency";

#[derive(Deserialize, Default)]
#[serde(default)]
pub struct ReviewForm {
    note: String,
}

/// A refused review, shown at its use: which one, why, and what was typed.
struct Refused {
    id: String,
    message: String,
    note: String,
}

async fn queue_page(
    state: &AppState,
    admin: &mut AdminPage,
    all: bool,
    refused: Option<Refused>,
    status: StatusCode,
) -> PageResult {
    let filter = if all {
        EmergencyFilter::All
    } else {
        EmergencyFilter::Unreviewed
    };
    let uses = state
        .emergency_reviews
        .list(filter, EMERGENCY_PAGE_MAX)
        .await?;
    let now = state.clock.now();
    let me = admin.0.user.id.clone();
    let mut rows: Vec<EmergencyRow> = Vec::with_capacity(uses.len());
    for (used, user) in uses {
        let review = match &used.review {
            Some(review) => {
                let by = state.sessions.user_by_id(&review.by).await?;
                Some(ReviewView {
                    by: by.map_or_else(
                        || review.by.as_str().to_owned(),
                        |u| u.name.as_str().to_owned(),
                    ),
                    at: Moment::of(review.at),
                    note: review.note.clone(),
                })
            }
            None => None,
        };
        let (note, error) = match &refused {
            Some(r) if r.id == used.id => (r.note.clone(), Some(r.message.clone())),
            _ => (String::new(), None),
        };
        rows.push(EmergencyRow {
            overdue: used.review.is_none() && overdue(used.started_at, now),
            own: used.user_id == me,
            ended: how_it_ended(&used, now),
            user: who(&used, user.as_ref()),
            id: used.id,
            user_id: used.user_id.as_str().to_owned(),
            reason: used.reason.as_str().to_owned(),
            started: Moment::of(used.started_at),
            review,
            note,
            error,
        });
    }
    let view = EmergencyPage {
        layout: admin.layout(state).await?,
        nav: "emergency",
        all,
        failed: refused.is_some(),
        rows,
    };
    page(status, &view)
}

fn who(used: &EmergencyUse, user: Option<&User>) -> String {
    match user {
        Some(u) => format!("{} ({})", u.name.as_str(), u.email.as_str()),
        None => used.user_id.as_str().to_owned(),
    }
}

fn how_it_ended(used: &EmergencyUse, now: chrono::DateTime<chrono::Utc>) -> String {
    match (used.ended_at, used.ended_how) {
        (Some(at), Some(EmergencyEnd::EndedByUser)) => {
            format!("Ended by the user, {}", date_time(at))
        }
        (Some(at), _) => format!("Ran out, {}", date_time(at)),
        (None, _) if used.is_active(now) => {
            format!("Still on, until {}", date_time(used.expires_at))
        }
        (None, _) => format!("Ran out, {}", date_time(used.expires_at)),
    }
}

pub async fn show(
    State(state): State<AppState>,
    mut admin: AdminPage,
    query: Result<Query<Vec<(String, String)>>, QueryRejection>,
) -> PageResult {
    let all = query_pairs(query)?
        .iter()
        .any(|(k, v)| k == "show" && v == "all");
    queue_page(&state, &mut admin, all, None, StatusCode::OK).await
}

pub async fn review(
    State(state): State<AppState>,
    mut admin: AdminPage,
    client: ClientContext,
    Path(id): Path<String>,
    CsrfForm(f): CsrfForm<ReviewForm>,
) -> PageResult {
    if let Some(to) = admin.0.needs_reauth(&state, HERE) {
        return Ok(to);
    }
    let message = match state
        .emergency_reviews
        .review(&id, &f.note, &admin.0.user, &client)
        .await
    {
        Ok(_) => "Your review is recorded.".to_owned(),
        Err(ServiceError::Validation(errors)) => {
            let refused = Refused {
                id,
                message: errors
                    .into_iter()
                    .flat_map(|e| e.messages)
                    .collect::<Vec<_>>()
                    .join(" "),
                note: f.note,
            };
            let status = StatusCode::UNPROCESSABLE_ENTITY;
            return queue_page(&state, &mut admin, false, Some(refused), status).await;
        }
        // Its own use, or reviewed by someone else meanwhile: the queue
        // tells the rest.
        Err(other) => refusal(other)?.1,
    };
    flash_and_go(&mut admin.0.portal, &message, HERE).await
}
