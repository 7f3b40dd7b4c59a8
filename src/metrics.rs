//! Prometheus metrics: what an SRE watches on the hot path of every clinic
//! app. One process-wide recorder (the `metrics` facade is global), rendered
//! at /metrics or on a separate METRICS_ADDR.

use std::sync::OnceLock;
use std::time::Duration;

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

pub const HTTP_REQUESTS: &str = "clinic_auth_http_requests_total";
pub const HTTP_DURATION: &str = "clinic_auth_http_request_duration_seconds";
pub const HASH_QUEUE: &str = "clinic_auth_password_hash_queue_depth";
pub const HASH_DURATION: &str = "clinic_auth_password_hash_duration_seconds";
pub const LOGINS: &str = "clinic_auth_logins_total";
pub const REFRESH_REUSE: &str = "clinic_auth_refresh_reuse_detected_total";
pub const ACCOUNT_LOCKS: &str = "clinic_auth_account_locks_total";
pub const EMAILS_SUPPRESSED: &str = "clinic_auth_emails_suppressed_total";
pub const RATE_LIMITED: &str = "clinic_auth_rate_limited_total";
pub const STORE_ERRORS: &str = "clinic_auth_store_errors_total";
pub const BUILD_INFO: &str = "clinic_auth_build_info";
pub const EMAIL_QUEUE_DEPTH: &str = "clinic_auth_email_queue_depth";
pub const EMAIL_OLDEST_AGE: &str = "clinic_auth_email_oldest_age_seconds";
pub const EMAIL_ATTEMPTS: &str = "clinic_auth_email_attempts_total";
pub const EMAILS_DROPPED: &str = "clinic_auth_emails_dropped_total";
pub const EMERGENCY_STARTED: &str = "clinic_auth_emergency_access_started_total";
pub const EMERGENCY_UNREVIEWED: &str = "clinic_auth_emergency_access_unreviewed";
pub const EMERGENCY_OVERDUE: &str = "clinic_auth_emergency_access_unreviewed_overdue";

/// The outcome of the one install, kept so that every app built in this
/// process (tests build many) shares the recorder, or the reason it failed.
static HANDLE: OnceLock<Result<PrometheusHandle, String>> = OnceLock::new();

/// Installs the recorder once per process and returns its handle. Fails,
/// as a start-up error, when the process already has another recorder (the
/// `metrics` facade holds one, globally).
pub fn handle() -> anyhow::Result<PrometheusHandle> {
    HANDLE
        .get_or_init(install)
        .clone()
        .map_err(|e| anyhow::anyhow!("cannot install the metrics recorder: {e}"))
}

fn install() -> Result<PrometheusHandle, String> {
    // Buckets from 0.5 ms (a token check) to 10 s (a hash queue under a
    // flood).
    let latency = [
        0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
    ];
    let handle = PrometheusBuilder::new()
        .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), &latency)
        .map_err(|e| e.to_string())?
        .install_recorder()
        .map_err(|e| e.to_string())?;
    metrics::gauge!(BUILD_INFO, "version" => env!("CARGO_PKG_VERSION")).set(1.0);
    describe();
    Ok(handle)
}

fn describe() {
    use metrics::{describe_counter, describe_gauge, describe_histogram, Unit};
    describe_counter!(HTTP_REQUESTS, "HTTP requests by method, route and status");
    describe_histogram!(
        HTTP_DURATION,
        Unit::Seconds,
        "HTTP request latency by method and route"
    );
    describe_gauge!(
        HASH_QUEUE,
        "Password jobs (hash, verify, new-password strength check) waiting or running"
    );
    describe_histogram!(
        HASH_DURATION,
        Unit::Seconds,
        "Time to run one password job: a hash or verification, with the strength check of a new password"
    );
    describe_counter!(LOGINS, "Sign-in attempts by outcome");
    describe_counter!(REFRESH_REUSE, "Replaced refresh tokens presented again");
    describe_counter!(
        ACCOUNT_LOCKS,
        "Sign-in locks started after repeated failures for one email"
    );
    describe_counter!(
        EMAILS_SUPPRESSED,
        "Reset and verification emails not sent: the account reached MAIL_PER_ACCOUNT_PER_HOUR"
    );
    describe_counter!(RATE_LIMITED, "Requests refused by a per-IP rate limit");
    describe_counter!(STORE_ERRORS, "Database calls that failed, by kind");
    describe_gauge!(
        EMAIL_QUEUE_DEPTH,
        "Emails in the outbox queue: due, waiting for a retry, or being sent"
    );
    describe_gauge!(
        EMAIL_OLDEST_AGE,
        Unit::Seconds,
        "Age of the oldest email in the outbox queue (0 when empty)"
    );
    describe_counter!(
        EMAIL_ATTEMPTS,
        "Email delivery attempts by outcome: sent, failed, timeout (no answer within MAIL_TIMEOUT)"
    );
    describe_counter!(
        EMAILS_DROPPED,
        "Emails that will never be sent, by reason: link_dead (used, replaced or expired first), gave_up (MAIL_RETRY_FOR passed), unreadable (sealed under another key), not_queued (the database refused it)"
    );
    describe_counter!(
        EMERGENCY_STARTED,
        "Emergency (break-glass) access windows started"
    );
    describe_gauge!(
        EMERGENCY_UNREVIEWED,
        "Emergency access uses waiting for an administrator's review"
    );
    describe_gauge!(
        EMERGENCY_OVERDUE,
        "Emergency access uses waiting for review for more than 24 hours"
    );
    describe_gauge!(
        BUILD_INFO,
        "Always 1; the version label says which build runs"
    );
}

/// Histograms are kept as rolling windows; drain them now and then so
/// memory stays flat on a long-running process.
pub fn spawn_upkeep(handle: PrometheusHandle) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(10));
        loop {
            tick.tick().await;
            handle.run_upkeep();
        }
    })
}
