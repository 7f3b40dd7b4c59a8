//! The `clinic-auth` command line: serve (the default), verify the audit
//! chain, and grant a role. Parsed by hand: four commands do not warrant a
//! parser dependency.
//!
//! Exit codes: 0 done; 1 the audit chain is broken, or no such user;
//! 2 usage or configuration error; 3 the database could not be used.

use std::process::ExitCode;
use std::time::Duration;

use crate::app::open_store;
use crate::config::Config;
use crate::domain::Role;
use crate::services::audit::{verify_chain, Audit};
use crate::services::{AdminService, ClientContext, ServiceError};

pub const USAGE: &str = "\
Usage:
  clinic-auth [serve]                        run the service (the default)
  clinic-auth audit verify                   check the audit trail's hash chain
  clinic-auth user set-role EMAIL admin|doctor
                                             give a user a role (ends their access tokens)
  clinic-auth --help                         show this

Configuration comes from the environment and .env, as for the service.
Exit codes: 0 ok, 1 chain broken or user not found, 2 usage or configuration
error, 3 database error.";

/// What the command line asked for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    Serve,
    Help,
    AuditVerify,
    SetRole { email: String, role: Role },
}

/// Parses the arguments after the program name. `Err` carries a message
/// for a usage error.
pub fn parse(args: &[String]) -> Result<Command, String> {
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    match args.as_slice() {
        [] | ["serve"] => Ok(Command::Serve),
        ["--help" | "-h" | "help", ..] => Ok(Command::Help),
        ["audit", "verify"] => Ok(Command::AuditVerify),
        ["user", "set-role", email, role] => match Role::parse(role) {
            Some(role) => Ok(Command::SetRole {
                email: (*email).to_owned(),
                role,
            }),
            None => Err(format!("unknown role {role:?}: use admin or doctor")),
        },
        ["user", "set-role", ..] => Err("user set-role needs EMAIL and a role".to_owned()),
        _ => Err(format!("unknown command: {}", args.join(" "))),
    }
}

const DATABASE_ERROR: u8 = 3;

/// `clinic-auth audit verify`.
pub async fn audit_verify(config: &Config) -> ExitCode {
    let store = match open_store(config).await {
        Ok(store) => store,
        Err(e) => {
            eprintln!("cannot open the database: {e:#}");
            return ExitCode::from(2);
        }
    };
    match verify_chain(store.as_ref()).await {
        Ok(Ok(summary)) => {
            println!(
                "audit chain OK: {} records; head hash {}",
                summary.records, summary.head_hash
            );
            ExitCode::SUCCESS
        }
        Ok(Err(broken)) => {
            println!(
                "audit chain BROKEN at seq {}: {}: {}",
                broken.seq,
                broken.fault.as_str(),
                broken.reason
            );
            ExitCode::from(1)
        }
        Err(e) => {
            eprintln!("cannot read the audit trail: {:#}", anyhow::Error::from(e));
            ExitCode::from(DATABASE_ERROR)
        }
    }
}

/// `clinic-auth user set-role EMAIL ROLE`.
pub async fn set_role(config: &Config, email: &str, role: Role) -> ExitCode {
    let store = match open_store(config).await {
        Ok(store) => store,
        Err(e) => {
            eprintln!("cannot open the database: {e:#}");
            return ExitCode::from(2);
        }
    };
    let (audit, writer) = match Audit::start(store.clone(), store.serialized_writes()) {
        Ok(started) => started,
        Err(e) => {
            eprintln!("cannot start the audit writer: {e}");
            return ExitCode::from(3);
        }
    };
    let admin = AdminService::new(store, audit.clone());
    // Recorded as done from the command line: no IP, no request.
    let client = ClientContext::new(None, Some("clinic-auth user set-role"));
    let result = admin.set_role(email, role, &client).await;
    drop(admin);
    // The role change is recorded before we report success.
    let flushed = tokio::time::timeout(Duration::from_secs(15), audit.flush()).await;
    drop(audit);
    let _ = writer.await;
    match (result, flushed) {
        (Ok(Some(user)), Ok(())) => {
            println!(
                "{} is now {}; their earlier access tokens no longer work",
                user.email.as_str(),
                user.role.as_str()
            );
            ExitCode::SUCCESS
        }
        (Ok(Some(_)), Err(_)) => {
            eprintln!("the role was changed but the audit event could not be stored");
            ExitCode::from(DATABASE_ERROR)
        }
        (Ok(None), _) => {
            eprintln!("no user with the email {email}");
            ExitCode::from(1)
        }
        (Err(ServiceError::Validation(_)), _) => {
            eprintln!("not an email address: {email}");
            ExitCode::from(2)
        }
        (Err(e), _) => {
            eprintln!("cannot change the role: {:#}", anyhow::Error::from(e));
            ExitCode::from(DATABASE_ERROR)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn commands_parse() {
        assert_eq!(parse(&args(&[])), Ok(Command::Serve));
        assert_eq!(parse(&args(&["serve"])), Ok(Command::Serve));
        assert_eq!(parse(&args(&["--help"])), Ok(Command::Help));
        assert_eq!(parse(&args(&["audit", "verify"])), Ok(Command::AuditVerify));
        assert_eq!(
            parse(&args(&["user", "set-role", "a@b.c", "admin"])),
            Ok(Command::SetRole {
                email: "a@b.c".into(),
                role: Role::Admin
            })
        );
        assert!(parse(&args(&["user", "set-role", "a@b.c", "root"])).is_err());
        assert!(parse(&args(&["user", "set-role", "a@b.c"])).is_err());
        assert!(parse(&args(&["audit"])).is_err());
        assert!(parse(&args(&["serve", "now"])).is_err());
    }
}
