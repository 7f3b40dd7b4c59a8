//! What the admin console's templates show (issue 19). Every page carries
//! `nav`, the console section it belongs to, for the navigation's
//! `aria-current`.

use askama::Template;

use super::{FormState, Labels, Layout, Moment};

pub const INVITE_FIELDS: Labels = &[
    ("email", "Email address"),
    ("name", "Full name"),
    ("role", "Role"),
];
pub const USER_FILTER_FIELDS: Labels = &[
    ("q", "Name or email starts with"),
    ("role", "Role"),
    ("status", "Status"),
];
pub const AUDIT_FILTER_FIELDS: Labels = &[
    ("user", "User (email or id)"),
    ("event", "Event"),
    ("since", "From (date, UTC)"),
    ("until", "To (date, UTC)"),
];
pub const REASON_FIELDS: Labels = &[("reason", "Reason (optional)"), ("role", "New role")];

/// The status filter's choices: the API's spelling and what people read.
pub const STATUSES: &[(&str, &str)] = &[
    ("active", "Active"),
    ("disabled", "Disabled"),
    ("locked", "Locked"),
    ("unverified", "Email not verified"),
    ("no_second_factor", "Without a second factor"),
];

/// One account in the users table.
pub struct UserRowView {
    pub id: String,
    pub name: String,
    pub email: String,
    pub role: String,
    pub status: &'static str,
    pub second_factor: bool,
    pub last_sign_in: Option<Moment>,
}

#[derive(Template)]
#[template(path = "pages/admin/users.html")]
pub struct UsersPage {
    pub layout: Layout,
    pub nav: &'static str,
    /// The filters' errors (a bad value typed into the address bar).
    pub form: FormState,
    pub q: String,
    pub role: String,
    pub status: String,
    pub roles: Vec<String>,
    pub statuses: &'static [(&'static str, &'static str)],
    pub rows: Vec<UserRowView>,
    /// The next page's address, filters kept.
    pub next: Option<String>,
}

/// One audit record, in the user page's and the audit page's tables.
pub struct EventRow {
    pub time: Moment,
    pub event: &'static str,
    pub failed: bool,
    /// The account it concerns, for a link to its page.
    pub user_id: Option<String>,
    /// Its email as recorded, else its id, else "—".
    pub who: String,
    pub ip: String,
    pub detail: String,
}

pub struct AdminSessionRow {
    pub device: String,
    pub ip: String,
    pub created: Moment,
    pub last_used: Moment,
}

pub struct PasskeyLine {
    pub name: String,
    pub created: Moment,
}

/// A link from the user page to one action's confirmation page.
pub struct ActionLink {
    pub href: String,
    pub label: &'static str,
    pub danger: bool,
}

#[derive(Template)]
#[template(path = "pages/admin/user.html")]
pub struct UserPage {
    pub layout: Layout,
    pub nav: &'static str,
    pub id: String,
    pub name: String,
    pub email: String,
    pub role: String,
    pub status: &'static str,
    pub verified: bool,
    pub created: Moment,
    pub last_sign_in: Option<Moment>,
    pub disabled_at: Option<Moment>,
    pub locked_until: Option<Moment>,
    pub failures: u32,
    pub totp: bool,
    pub recovery_codes_left: u32,
    pub passkeys: Vec<PasskeyLine>,
    /// May start emergency access (admins may anyway).
    pub emergency_access: bool,
    pub is_admin: bool,
    pub sessions: Vec<AdminSessionRow>,
    pub events: Vec<EventRow>,
    pub actions: Vec<ActionLink>,
}

/// "Are you sure?" for one action on one account: what it does, an
/// optional reason for the audit trail, and the button that does it.
#[derive(Template)]
#[template(path = "pages/admin/confirm.html")]
pub struct ConfirmPage {
    pub layout: Layout,
    pub nav: &'static str,
    pub form: FormState,
    pub user_id: String,
    pub user_name: String,
    pub user_email: String,
    /// The action's path segment: the form posts to it.
    pub action: &'static str,
    pub heading: String,
    pub explanation: &'static str,
    pub button: &'static str,
    pub danger: bool,
    /// Whether the audit trail takes a reason for this action.
    pub takes_reason: bool,
    /// For a role change: the roles to choose from and the current one.
    pub roles: Vec<String>,
    pub current_role: String,
}

pub struct InvitationRow {
    pub id: String,
    pub email: String,
    pub name: String,
    pub role: String,
    pub sent: Moment,
    pub expires: Moment,
    pub expired: bool,
    pub resends: u32,
}

#[derive(Template)]
#[template(path = "pages/admin/invitations.html")]
pub struct InvitationsPage {
    pub layout: Layout,
    pub nav: &'static str,
    pub form: FormState,
    pub roles: Vec<String>,
    pub role: String,
    pub rows: Vec<InvitationRow>,
}

#[derive(Template)]
#[template(path = "pages/admin/audit.html")]
pub struct AuditPage {
    pub layout: Layout,
    pub nav: &'static str,
    pub form: FormState,
    pub user: String,
    pub event: String,
    pub since: String,
    pub until: String,
    pub events: Vec<&'static str>,
    pub rows: Vec<EventRow>,
    /// The next (older) page's address, filters kept.
    pub next: Option<String>,
}

pub struct ReviewView {
    pub by: String,
    pub at: Moment,
    pub note: String,
}

pub struct EmergencyRow {
    pub id: String,
    pub user_id: String,
    /// "Name (email)", or the id when the account cannot be read.
    pub user: String,
    pub reason: String,
    pub started: Moment,
    /// How it ended, or until when it runs.
    pub ended: String,
    pub overdue: bool,
    /// The signed-in admin's own use: someone else must review it.
    pub own: bool,
    pub review: Option<ReviewView>,
    /// The review form's typed note and its error, after a refused submit.
    pub note: String,
    pub error: Option<String>,
}

#[derive(Template)]
#[template(path = "pages/admin/emergency.html")]
pub struct EmergencyPage {
    pub layout: Layout,
    pub nav: &'static str,
    /// Every use (newest first) rather than the review queue.
    pub all: bool,
    pub rows: Vec<EmergencyRow>,
    /// A review was refused (the page title says so).
    pub failed: bool,
}
