//! What the settings promise: the documented defaults, how each variable
//! is read, and the one-line errors that name the variable at fault.

use std::net::IpAddr;
use std::time::Duration;

use super::*;
use crate::domain::{AuditKey, Roles};

fn dev(pairs: &[(&str, &str)]) -> Result<Config, ConfigError> {
    Config::from_pairs(pairs)
}

#[test]
fn defaults_match_the_documentation() {
    let c = dev(&[]).unwrap();
    assert_eq!(c.server.port, 8000);
    assert_eq!(c.server.host, IpAddr::from([127, 0, 0, 1]));
    assert_eq!(c.server.app_name, "Clinic Auth");
    assert_eq!(c.server.app_url, "http://localhost:8000");
    assert_eq!(c.tokens.jwt_access_ttl, Duration::from_secs(15 * 60));
    assert_eq!(c.tokens.jwt_refresh_ttl, Duration::from_secs(7 * 86_400));
    assert_eq!(c.tokens.reset_token_ttl, Duration::from_secs(30 * 60));
    assert_eq!(
        c.store.database,
        Database::Sqlite {
            url: "sqlite://data/clinic-auth.db".into()
        }
    );
    assert_eq!(c.data_dir(), Path::new("data"));
    assert_eq!(
        (
            c.limits.rate_limit_auth_per_min,
            c.limits.rate_limit_global_per_min
        ),
        (10, 300)
    );
    assert_eq!(c.limits.rate_limit_ipv6_prefix, 64);
    assert_eq!(c.accounts.password_min_length, 12);
    assert_eq!(
        c.sessions.session_idle_timeout,
        Duration::from_secs(15 * 60)
    );
    assert_eq!(
        c.sessions.session_max_lifetime,
        Duration::from_secs(12 * 3600)
    );
    assert_eq!(
        c.sessions.emergency_access_ttl,
        Duration::from_secs(60 * 60)
    );
    assert_eq!(c.tokens.refresh_reuse_grace, Duration::from_secs(5));
    assert_eq!(c.tokens.refresh_idle_timeout, Duration::from_secs(30 * 60));
    assert_eq!(c.limits.login_max_failures, 5);
    assert_eq!(c.limits.login_failure_window, Duration::from_secs(15 * 60));
    assert_eq!(
        (c.limits.login_lockout, c.limits.login_lockout_max),
        (Duration::from_secs(60), Duration::from_secs(3600))
    );
    assert!(!c.accounts.require_verified_email);
    assert_eq!(c.accounts.registration, RegistrationMode::Open);
    assert_eq!(c.accounts.roles, Roles::default());
    assert_eq!(c.tokens.verification_token_ttl, Duration::from_secs(86_400));
    assert_eq!(c.tokens.invite_ttl, Duration::from_secs(72 * 3600));
    assert_eq!(c.limits.mail_per_account_per_hour, 3);
    assert_eq!(c.server.http_header_timeout, Duration::from_secs(10));
    assert_eq!(c.server.http_body_timeout, Duration::from_secs(10));
    assert_eq!(c.server.max_connections, None, "derived from the fd limit");
    assert!(c.server.cors_origins.is_empty() && c.server.trusted_proxies.is_empty());
    assert!(c.tokens.jwt_access_secret.is_none() && c.tokens.jwt_refresh_secret.is_none());
    assert!(c.audit.audit_key.is_none());
    assert_eq!(
        c.audit.audit_checkpoint_file,
        Path::new("data/audit-checkpoints")
    );
    assert_eq!(c.audit.audit_checkpoint_interval, Duration::from_secs(60));
    assert!(matches!(
        &c.mail.transport,
        MailTransport::Outbox { dir } if dir == Path::new("data/outbox")
    ));
    assert_eq!(c.mail.from, "Clinic Auth <no-reply@localhost>");
    assert_eq!(c.mail.timeout, Duration::from_secs(15));
    assert_eq!(c.mail.retry_for, Duration::from_secs(86_400));
    assert_eq!(c.mail.concurrency, 4);
    assert!(c.metrics.metrics_addr.is_none() && c.metrics.metrics_token.is_none());
    assert!(!c.is_https() && !c.is_production());
}

#[test]
fn blank_values_count_as_unset_and_values_are_trimmed() {
    let c = dev(&[("PORT", "  "), ("APP_NAME", " Riverside Clinic ")]).unwrap();
    assert_eq!(c.server.port, 8000);
    assert_eq!(c.server.app_name, "Riverside Clinic");
    // Variables that are not settings are no concern of the config.
    assert!(dev(&[("PATH", "/usr/bin"), ("HOME", "")]).is_ok());
}

#[test]
fn every_duration_form_is_read() {
    // Lifetimes: humantime's forms, in whole seconds.
    for (value, secs) in [
        ("90s", 90),
        ("20m", 1_200),
        ("2h", 7_200),
        ("14d", 14 * 86_400),
        ("1h 30m", 5_400),
        ("1h30m", 5_400),
        ("45min", 2_700),
        ("2weeks", 14 * 86_400),
    ] {
        let c = dev(&[("LOGIN_LOCKOUT_MAX", value)]).unwrap();
        assert_eq!(
            c.limits.login_lockout_max,
            Duration::from_secs(secs),
            "{value}"
        );
    }
    // Timeouts also take milliseconds.
    let c = dev(&[
        ("HTTP_HEADER_TIMEOUT", "250ms"),
        ("HTTP_BODY_TIMEOUT", "1m"),
        ("MAIL_TIMEOUT", "1500ms"),
        ("AUDIT_CHECKPOINT_INTERVAL", "1d"),
    ])
    .unwrap();
    assert_eq!(c.server.http_header_timeout, Duration::from_millis(250));
    assert_eq!(c.server.http_body_timeout, Duration::from_secs(60));
    assert_eq!(c.mail.timeout, Duration::from_millis(1500));
    assert_eq!(
        c.audit.audit_checkpoint_interval,
        Duration::from_secs(86_400)
    );
    // Zero where zero means "off".
    let c = dev(&[("REFRESH_REUSE_GRACE", "0s")]).unwrap();
    assert_eq!(c.tokens.refresh_reuse_grace, Duration::ZERO);
}

#[test]
fn duration_errors_say_what_is_expected() {
    let message = |pairs: &[(&str, &str)]| dev(pairs).unwrap_err().to_string();
    assert_eq!(
        message(&[("JWT_ACCESS_EXPIRES", "soon")]),
        "JWT_ACCESS_EXPIRES: expected a duration like 30s, 15m, 12h or 7d, got \"soon\""
    );
    // A bare number has no unit: refused rather than guessed.
    assert_eq!(
        message(&[("SESSION_IDLE_TIMEOUT", "15")]),
        "SESSION_IDLE_TIMEOUT: expected a duration like 30s, 15m, 12h or 7d, got \"15\""
    );
    // Lifetimes are whole seconds.
    assert_eq!(
        message(&[("LOGIN_LOCKOUT", "500ms")]),
        "LOGIN_LOCKOUT: expected a duration like 30s, 15m, 12h or 7d, got \"500ms\""
    );
    assert_eq!(
        message(&[("HTTP_BODY_TIMEOUT", "2d")]),
        "HTTP_BODY_TIMEOUT: expected a duration above zero and at most 1d, like 500ms, \
         10s or 1m, got \"2d\""
    );
    assert_eq!(
        message(&[("PORT", "eighty")]),
        "PORT: expected a whole number in range, got \"eighty\""
    );
    assert_eq!(
        message(&[("MAIL_SERVER", "smtp.example.com"), ("MAIL_TLS", "Maybe")]),
        "MAIL_TLS: expected true or false, got \"maybe\""
    );
    assert_eq!(
        message(&[("APP_ENV", "staging")]),
        "APP_ENV: expected development or production, got \"staging\""
    );
}

#[test]
fn registration_mode_and_the_clinics_roles_are_read() {
    let c = dev(&[
        ("REGISTRATION", "invite"),
        ("ROLES", "doctor, Nurse,reception,billing,nurse"),
        ("DEFAULT_ROLE", "reception"),
    ])
    .unwrap();
    assert_eq!(c.accounts.registration, RegistrationMode::Invite);
    assert_eq!(
        c.accounts.roles.names(),
        "admin, doctor, nurse, reception, billing"
    );
    assert_eq!(c.accounts.roles.default_role().as_str(), "reception");
    let closed = dev(&[("REGISTRATION", "closed")]).unwrap();
    assert_eq!(closed.accounts.registration, RegistrationMode::Closed);
}

#[test]
fn the_refresh_cookie_same_site_is_read() {
    use super::RefreshSameSite;
    assert_eq!(
        dev(&[]).unwrap().server.refresh_cookie_same_site,
        RefreshSameSite::Strict
    );
    let lax = dev(&[("REFRESH_COOKIE_SAMESITE", "Lax")]).unwrap();
    assert_eq!(lax.server.refresh_cookie_same_site, RefreshSameSite::Lax);
    let none = dev(&[
        ("REFRESH_COOKIE_SAMESITE", "none"),
        ("APP_URL", "https://auth.example-clinic.com"),
    ])
    .unwrap();
    assert_eq!(none.server.refresh_cookie_same_site, RefreshSameSite::None);
}

#[test]
fn bad_values_name_the_variable() {
    for (pairs, var) in [
        (vec![("PORT", "eighty")], "PORT"),
        (vec![("PORT", "70000")], "PORT"),
        (vec![("JWT_ACCESS_EXPIRES", "soon")], "JWT_ACCESS_EXPIRES"),
        (vec![("JWT_ACCESS_EXPIRES", "0s")], "JWT_ACCESS_EXPIRES"),
        (vec![("JWT_REFRESH_EXPIRES", "1m")], "JWT_REFRESH_EXPIRES"),
        (
            vec![("REFRESH_IDLE_TIMEOUT", "10m")],
            "REFRESH_IDLE_TIMEOUT",
        ),
        (vec![("REFRESH_REUSE_GRACE", "2m")], "REFRESH_REUSE_GRACE"),
        (vec![("LOGIN_MAX_FAILURES", "0")], "LOGIN_MAX_FAILURES"),
        (vec![("LOGIN_FAILURE_WINDOW", "0s")], "LOGIN_FAILURE_WINDOW"),
        (vec![("LOGIN_LOCKOUT", "0s")], "LOGIN_LOCKOUT"),
        (vec![("LOGIN_LOCKOUT_MAX", "10s")], "LOGIN_LOCKOUT_MAX"),
        (
            vec![("REQUIRE_VERIFIED_EMAIL", "maybe")],
            "REQUIRE_VERIFIED_EMAIL",
        ),
        (
            vec![("VERIFICATION_TOKEN_EXPIRES", "0s")],
            "VERIFICATION_TOKEN_EXPIRES",
        ),
        (vec![("INVITE_EXPIRES", "10m")], "INVITE_EXPIRES"),
        (vec![("INVITE_EXPIRES", "31days")], "INVITE_EXPIRES"),
        (vec![("INVITE_EXPIRES", "soon")], "INVITE_EXPIRES"),
        (
            vec![("MAIL_TLS", "maybe"), ("MAIL_SERVER", "smtp.example.com")],
            "MAIL_TLS",
        ),
        (
            vec![("MAIL_PORT", "smtp"), ("MAIL_SERVER", "smtp.example.com")],
            "MAIL_PORT",
        ),
        (
            vec![("CORS_ORIGINS", "http://ok.example, *")],
            "CORS_ORIGINS",
        ),
        (
            vec![("REFRESH_COOKIE_SAMESITE", "relaxed")],
            "REFRESH_COOKIE_SAMESITE",
        ),
        // A SameSite=None cookie must be Secure: only over https.
        (
            vec![("REFRESH_COOKIE_SAMESITE", "none")],
            "REFRESH_COOKIE_SAMESITE",
        ),
        (
            vec![("CORS_ORIGINS", "http://x.example/path")],
            "CORS_ORIGINS",
        ),
        (vec![("CORS_ORIGINS", "ftp://x.example")], "CORS_ORIGINS"),
        (vec![("CORS_ORIGINS", "http://:80")], "CORS_ORIGINS"),
        (vec![("APP_URL", "localhost:8000")], "APP_URL"),
        (vec![("APP_URL", "https://")], "APP_URL"),
        (vec![("APP_URL", "https://auth.example?x=1")], "APP_URL"),
        (vec![("APP_URL", "https://auth example")], "APP_URL"),
        (vec![("APP_ENV", "staging")], "APP_ENV"),
        (vec![("HOST", "my-host")], "HOST"),
        (vec![("MONGO_URI", "postgres://x")], "MONGO_URI"),
        (vec![("DATABASE_URL", "postgres://x")], "DATABASE_URL"),
        (vec![("MAIL_FROM", "not an address")], "MAIL_FROM"),
        (
            vec![("RATE_LIMIT_AUTH_PER_MIN", "0")],
            "RATE_LIMIT_AUTH_PER_MIN",
        ),
        (
            vec![("RATE_LIMIT_GLOBAL_PER_MIN", "0")],
            "RATE_LIMIT_GLOBAL_PER_MIN",
        ),
        (vec![("PASSWORD_MIN_LENGTH", "4")], "PASSWORD_MIN_LENGTH"),
        (vec![("REGISTRATION", "sometimes")], "REGISTRATION"),
        (vec![("ROLES", " , ")], "ROLES"),
        (vec![("ROLES", "admin")], "ROLES"),
        (vec![("ROLES", "doctor,Head Nurse")], "ROLES"),
        (vec![("DEFAULT_ROLE", "admin")], "DEFAULT_ROLE"),
        (
            vec![("ROLES", "doctor,nurse"), ("DEFAULT_ROLE", "billing")],
            "DEFAULT_ROLE",
        ),
        (vec![("DEFAULT_ROLE", "nurse")], "DEFAULT_ROLE"),
        (vec![("PASSWORD_MIN_LENGTH", "65")], "PASSWORD_MIN_LENGTH"),
        (
            vec![("RATE_LIMIT_IPV6_PREFIX", "0")],
            "RATE_LIMIT_IPV6_PREFIX",
        ),
        (
            vec![("RATE_LIMIT_IPV6_PREFIX", "129")],
            "RATE_LIMIT_IPV6_PREFIX",
        ),
        (
            vec![("RATE_LIMIT_IPV6_PREFIX", "/64")],
            "RATE_LIMIT_IPV6_PREFIX",
        ),
        (
            vec![("MAIL_PER_ACCOUNT_PER_HOUR", "0")],
            "MAIL_PER_ACCOUNT_PER_HOUR",
        ),
        (vec![("MAIL_TIMEOUT", "0s")], "MAIL_TIMEOUT"),
        (vec![("MAIL_TIMEOUT", "15")], "MAIL_TIMEOUT"),
        (vec![("MAIL_RETRY_FOR", "0s")], "MAIL_RETRY_FOR"),
        (vec![("MAIL_RETRY_FOR", "forever")], "MAIL_RETRY_FOR"),
        (vec![("MAIL_CONCURRENCY", "0")], "MAIL_CONCURRENCY"),
        (vec![("MAIL_CONCURRENCY", "65")], "MAIL_CONCURRENCY"),
        (
            vec![("RESET_TOKEN_EXPIRES_MIN", "0")],
            "RESET_TOKEN_EXPIRES_MIN",
        ),
        (
            vec![("RESET_TOKEN_EXPIRES_MIN", "1441")],
            "RESET_TOKEN_EXPIRES_MIN",
        ),
        (
            vec![("JWT_ACCESS_SECRET", "only-one")],
            "JWT_REFRESH_SECRET",
        ),
        (
            vec![
                ("JWT_ACCESS_ALGORITHM", "HS256"),
                ("JWT_REFRESH_SECRET", "only-one"),
            ],
            "JWT_ACCESS_SECRET",
        ),
        (
            vec![("JWT_ACCESS_ALGORITHM", "RS256")],
            "JWT_ACCESS_ALGORITHM",
        ),
        (
            vec![("JWT_ACCESS_ALGORITHM", "es256")],
            "JWT_ACCESS_ALGORITHM",
        ),
        (
            vec![("JWT_ACCESS_ALGORITHM", "none")],
            "JWT_ACCESS_ALGORITHM",
        ),
        (
            vec![
                ("JWT_ACCESS_SECRET", "same"),
                ("JWT_REFRESH_SECRET", "same"),
            ],
            "JWT_REFRESH_SECRET",
        ),
        (vec![("SESSION_IDLE_TIMEOUT", "0s")], "SESSION_IDLE_TIMEOUT"),
        (vec![("REAUTH_WINDOW", "0s")], "REAUTH_WINDOW"),
        (vec![("REAUTH_WINDOW", "10")], "REAUTH_WINDOW"),
        (vec![("METRICS_ADDR", "9100")], "METRICS_ADDR"),
        (vec![("METRICS_TOKEN", "short")], "METRICS_TOKEN"),
        (
            vec![("TRUSTED_PROXIES", "10.0.0.0/8, proxy")],
            "TRUSTED_PROXIES",
        ),
        (vec![("SESSION_MAX_LIFETIME", "1m")], "SESSION_MAX_LIFETIME"),
        (vec![("EMERGENCY_ACCESS_TTL", "0s")], "EMERGENCY_ACCESS_TTL"),
        (
            vec![("EMERGENCY_ACCESS_TTL", "13h")],
            "EMERGENCY_ACCESS_TTL",
        ),
        (vec![("HTTP_HEADER_TIMEOUT", "0s")], "HTTP_HEADER_TIMEOUT"),
        (vec![("HTTP_HEADER_TIMEOUT", "0ms")], "HTTP_HEADER_TIMEOUT"),
        (vec![("HTTP_HEADER_TIMEOUT", "-1ms")], "HTTP_HEADER_TIMEOUT"),
        (vec![("HTTP_BODY_TIMEOUT", "10")], "HTTP_BODY_TIMEOUT"),
        (vec![("HTTP_BODY_TIMEOUT", "2d")], "HTTP_BODY_TIMEOUT"),
        (vec![("MAX_CONNECTIONS", "0")], "MAX_CONNECTIONS"),
        (vec![("MAX_CONNECTIONS", "1000001")], "MAX_CONNECTIONS"),
        (vec![("MAX_CONNECTIONS", "lots")], "MAX_CONNECTIONS"),
        (vec![("AUDIT_KEY", "0123abcd")], "AUDIT_KEY"),
        (vec![("AUDIT_KEY", "z".repeat(64).as_str())], "AUDIT_KEY"),
        (
            vec![("AUDIT_CHECKPOINT_INTERVAL", "0s")],
            "AUDIT_CHECKPOINT_INTERVAL",
        ),
        (
            vec![("AUDIT_CHECKPOINT_INTERVAL", "often")],
            "AUDIT_CHECKPOINT_INTERVAL",
        ),
    ] {
        let e = dev(&pairs).unwrap_err();
        assert_eq!(e.var, var, "{pairs:?} -> {e}");
        assert!(e.to_string().starts_with(&format!("{var}: ")), "{e}");
        assert_eq!(e.to_string().lines().count(), 1, "{e}");
    }
}

#[test]
fn production_demands_strong_distinct_secrets() {
    let strong_a = "a".repeat(32);
    let strong_b = "b".repeat(32);
    let prod = |a: &str, r: &str| {
        let mut pairs = vec![("APP_ENV", "production")];
        if !a.is_empty() {
            pairs.push(("JWT_ACCESS_SECRET", a));
        }
        if !r.is_empty() {
            pairs.push(("JWT_REFRESH_SECRET", r));
        }
        dev(&pairs)
    };
    // ES256 by default: only the refresh secret is needed.
    assert_eq!(prod("", "").unwrap_err().var, "JWT_REFRESH_SECRET");
    assert_eq!(prod("", "short").unwrap_err().var, "JWT_REFRESH_SECRET");
    assert_eq!(prod("", &strong_b).unwrap_err().var, "AUDIT_KEY");
    assert_eq!(
        prod("short", &strong_b).unwrap_err().var,
        "JWT_ACCESS_SECRET"
    );
    assert_eq!(
        prod(&strong_a, "short").unwrap_err().var,
        "JWT_REFRESH_SECRET"
    );
    assert_eq!(
        prod(&strong_a, &strong_a).unwrap_err().var,
        "JWT_REFRESH_SECRET"
    );
    // The audit key is required too, after the JWT secrets.
    assert_eq!(prod(&strong_a, &strong_b).unwrap_err().var, "AUDIT_KEY");
    // Short secrets are fine in development, when both are set.
    let c = dev(&[("JWT_ACCESS_SECRET", "a"), ("JWT_REFRESH_SECRET", "b")]).unwrap();
    assert!(c.tokens.jwt_access_secret.is_some());
}

#[test]
fn the_access_algorithm_defaults_to_es256_but_the_originals_secret_keeps_hs256() {
    use crate::domain::signing_key::AccessAlgorithm;
    let alg = |pairs: &[(&str, &str)]| dev(pairs).unwrap().tokens.access_algorithm;
    assert_eq!(alg(&[]), AccessAlgorithm::Es256);
    assert_eq!(alg(&[("JWT_REFRESH_SECRET", "r")]), AccessAlgorithm::Es256);
    // The original's variables alone: its consumers hold the secret.
    let original = [("JWT_ACCESS_SECRET", "a"), ("JWT_REFRESH_SECRET", "r")];
    assert_eq!(alg(&original), AccessAlgorithm::Hs256);
    assert_eq!(
        alg(&[original[0], original[1], ("JWT_ACCESS_ALGORITHM", "EdDSA")]),
        AccessAlgorithm::EdDsa
    );
    assert_eq!(
        alg(&[("JWT_ACCESS_ALGORITHM", "ES256")]),
        AccessAlgorithm::Es256
    );
    assert_eq!(
        dev(&[("JWT_ACCESS_ALGORITHM", "HS512")])
            .unwrap_err()
            .to_string(),
        "JWT_ACCESS_ALGORITHM: expected ES256, EdDSA or HS256, got \"HS512\""
    );
    // HS256 in production still needs its strong secret.
    let prod = dev(&[
        ("APP_ENV", "production"),
        ("JWT_ACCESS_ALGORITHM", "HS256"),
        ("JWT_REFRESH_SECRET", &"b".repeat(32)),
    ]);
    assert_eq!(prod.unwrap_err().var, "JWT_ACCESS_SECRET");
}

#[test]
fn the_audit_key_is_read_and_never_shown() {
    let hex = "00112233445566778899aabbccddeeff".repeat(2);
    let c = dev(&[
        ("APP_ENV", "production"),
        ("JWT_ACCESS_SECRET", &"a".repeat(32)),
        ("JWT_REFRESH_SECRET", &"b".repeat(32)),
        ("AUDIT_KEY", &hex),
        ("MFA_ENCRYPTION_KEY", &hex),
        ("DATA_DIR", "/var/lib/clinic-auth"),
        ("AUDIT_CHECKPOINT_INTERVAL", "250ms"),
    ])
    .unwrap();
    assert!(c.is_production());
    assert_eq!(
        c.audit.audit_key.as_ref().map(AuditKey::to_hex),
        Some(hex.clone())
    );
    assert_eq!(
        c.audit.audit_checkpoint_file,
        Path::new("/var/lib/clinic-auth/audit-checkpoints")
    );
    assert_eq!(
        c.audit.audit_checkpoint_interval,
        Duration::from_millis(250)
    );
    assert!(!format!("{c:?}").contains(&hex[..16]));
    let e = dev(&[("AUDIT_KEY", &format!("{hex}ff"))]).unwrap_err();
    assert!(!e.to_string().contains(&hex[..16]), "{e}");
    let c = dev(&[("AUDIT_CHECKPOINT_FILE", "/srv/audit/checkpoints")]).unwrap();
    assert_eq!(
        c.audit.audit_checkpoint_file,
        Path::new("/srv/audit/checkpoints")
    );
}

#[test]
fn debug_output_hides_every_secret() {
    let c = dev(&[
        ("JWT_ACCESS_SECRET", "access-s3cret-value"),
        ("JWT_REFRESH_SECRET", "refresh-s3cret-value"),
        ("METRICS_TOKEN", &"m3trics-token-".repeat(3)),
        ("MAIL_SERVER", "smtp.example.com"),
        ("MAIL_USERNAME", "mailer"),
        ("MAIL_PASSWORD", "mail-s3cret-pw"),
    ])
    .unwrap();
    let printed = format!("{c:?}");
    for secret in [
        "access-s3cret",
        "refresh-s3cret",
        "m3trics-token",
        "mail-s3cret",
    ] {
        assert!(!printed.contains(secret), "{secret} in {printed}");
    }
}

#[test]
fn mongo_uri_selects_mongodb_and_smtp_reads_its_settings() {
    let c = dev(&[
        ("MONGO_URI", "mongodb://localhost:27017/clinic_auth"),
        ("MAIL_SERVER", "smtp.example.com"),
        ("MAIL_PORT", "2525"),
        ("MAIL_TLS", "False"),
        ("MAIL_USERNAME", "mailer"),
        ("APP_URL", "https://auth.clinic.example/"),
        (
            "CORS_ORIGINS",
            "http://localhost:3000, https://app.clinic.example",
        ),
        ("TRUSTED_PROXIES", "10.0.0.0/8, 192.0.2.7,,2001:db8::/32"),
    ])
    .unwrap();
    assert!(matches!(c.store.database, Database::Mongo { .. }));
    assert_eq!(c.data_dir(), Path::new("data"));
    assert!(matches!(
        c.mail.transport,
        MailTransport::Smtp {
            port: 2525,
            starttls: false,
            ..
        }
    ));
    assert_eq!(c.server.app_url, "https://auth.clinic.example");
    assert!(c.is_https());
    assert_eq!(
        c.server.cors_origins,
        vec!["http://localhost:3000", "https://app.clinic.example"]
    );
    let proxies: Vec<String> = c
        .server
        .trusted_proxies
        .iter()
        .map(ToString::to_string)
        .collect();
    assert_eq!(proxies, ["10.0.0.0/8", "192.0.2.7/32", "2001:db8::/32"]);
}
