//! /admin/audit: the audit trail, newest first, a page at a time, filtered
//! by user, event and a range of days; the same reading as GET
//! /api/admin/audit.

use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use chrono::{NaiveDate, NaiveTime, TimeZone, Utc};

use super::users::event_row;
use super::{filter_value, query_pairs, AdminPage, Listing};
use crate::domain::{AuditEvent, EmailAddress};
use crate::http::pages::handlers::{page, PageResult};
use crate::http::pages::views::admin::{AuditPage, AUDIT_FILTER_FIELDS};
use crate::http::pages::views::FormState;
use crate::http::pages::PageError;
use crate::http::AppState;
use crate::services::user_directory::UserFilter;
use crate::storage::AuditQuery;

/// Events per page.
const PAGE_SIZE: u32 = 50;

/// Midnight UTC at the start of `day` (`plus_days` later).
fn start_of(day: NaiveDate, plus_days: u64) -> Option<chrono::DateTime<Utc>> {
    let day = day.checked_add_days(chrono::Days::new(plus_days))?;
    Some(Utc.from_utc_datetime(&day.and_time(NaiveTime::MIN)))
}

/// The user filter's account id: an id as typed, or the account that has
/// the typed email address (`None`: no such account).
async fn user_id_of(state: &AppState, typed: &str) -> Result<Option<String>, PageError> {
    let Ok(email) = EmailAddress::parse(typed) else {
        return Ok(Some(typed.to_owned()));
    };
    let found = state
        .user_directory
        .list(&UserFilter {
            prefix: Some(email.as_str().to_owned()),
            limit: 10,
            ..UserFilter::default()
        })
        .await?;
    Ok(found
        .users
        .into_iter()
        .find(|row| row.user.email == email)
        .map(|row| row.user.id.as_str().to_owned()))
}

pub async fn show(
    State(state): State<AppState>,
    mut admin: AdminPage,
    query: Result<Query<Vec<(String, String)>>, QueryRejection>,
) -> PageResult {
    let pairs = query_pairs(query)?;
    let given = |key: &str| filter_value(&pairs, key);
    let (user, event, since, until, cursor) = (
        given("user"),
        given("event"),
        given("since"),
        given("until"),
        given("cursor"),
    );
    let mut form = FormState::labelled(AUDIT_FILTER_FIELDS);
    let mut query = AuditQuery {
        limit: PAGE_SIZE,
        ..AuditQuery::default()
    };
    if user.chars().count() > EmailAddress::MAX_LEN {
        form.error("user", "Give an email address or a user id.");
    } else if !user.is_empty() {
        match user_id_of(&state, &user).await? {
            Some(id) => query.user_id = Some(id),
            None => form.error("user", "No account has this email address."),
        }
    }
    if !event.is_empty() {
        match AuditEvent::parse(&event) {
            Some(e) => query.event = Some(e),
            None => form.error("event", "Choose an event from the list."),
        }
    }
    let day = |value: &str| NaiveDate::parse_from_str(value, "%Y-%m-%d").ok();
    if !since.is_empty() {
        match day(&since).and_then(|d| start_of(d, 0)) {
            Some(t) => query.since = Some(t),
            None => form.error("since", "Give a date, e.g. 2026-12-01."),
        }
    }
    if !until.is_empty() {
        // The "to" day is included: the range ends at the next midnight.
        match day(&until).and_then(|d| start_of(d, 1)) {
            Some(t) => query.until = Some(t),
            None => form.error("until", "Give a date, e.g. 2026-12-31."),
        }
    }
    if let (Some(from), Some(to)) = (query.since, query.until) {
        if from >= to {
            form.error("until", "To must not be before From.");
        }
    }
    if !cursor.is_empty() {
        match cursor.parse::<u64>() {
            Ok(seq) if seq > 0 => query.before_seq = Some(seq),
            _ => return Err(PageError::BadRequest),
        }
    }
    let listing = if form.failed() {
        Listing::refused()
    } else {
        let found = state.admin.audit_page(query).await?;
        Listing::found(
            found.events.into_iter().map(event_row).collect(),
            "/admin/audit",
            &[
                ("user", &user),
                ("event", &event),
                ("since", &since),
                ("until", &until),
            ],
            found.next.map(|seq| seq.to_string()),
        )
    };
    let view = AuditPage {
        layout: admin.layout(&state).await?,
        nav: "audit",
        form,
        user,
        event,
        since,
        until,
        events: AuditEvent::ALL.iter().map(|e| e.as_str()).collect(),
        rows: listing.rows,
        next: listing.next,
    };
    page(listing.status, &view)
}
