//! The `clinic-auth` command line: serve (the default), verify the audit
//! chain, and grant a role. Parsed by hand: four commands do not warrant a
//! parser dependency.
//!
//! Exit codes: 0 done; 1 the audit trail failed verification, or no such
//! user; 2 usage or configuration error; 3 the database (or the checkpoint
//! file) could not be read.

use std::process::ExitCode;
use std::time::Duration;

use crate::app::{audit_key, open_store};
use crate::config::Config;
use crate::domain::audit::canonical_time;
use crate::domain::{AuditKey, Role};
use crate::services::audit::{verify_chain, Audit, ChainSummary};
use crate::services::checkpoints::{read_checkpoints, CheckpointFile, Checkpointer, LineFault};
use crate::services::{AdminService, ClientContext, ServiceError};

pub const USAGE: &str = "\
Usage:
  clinic-auth [serve]                        run the service (the default)
  clinic-auth audit verify                   check the audit trail: its hash chain (with
                                             AUDIT_KEY) and the signed checkpoints in
                                             AUDIT_CHECKPOINT_FILE
  clinic-auth user set-role EMAIL admin|doctor
                                             give a user a role (ends their access tokens)
  clinic-auth --help                         show this

Configuration comes from the environment and .env, as for the service.
Exit codes: 0 ok; 1 the audit trail failed verification (a record altered,
missing or recomputed without AUDIT_KEY, records removed after a checkpoint,
the checkpoint file missing or altered, or the wrong AUDIT_KEY), or user not
found; 2 usage or configuration error; 3 the database or the checkpoint file
could not be read.";

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

/// `clinic-auth audit verify`: the chain, then what the checkpoint file
/// says about it. Every problem found is printed; any of them fails.
pub async fn audit_verify(config: &Config) -> ExitCode {
    let key = match audit_key(config) {
        Ok(key) => key,
        Err(e) => {
            eprintln!("cannot load AUDIT_KEY: {e:#}");
            return ExitCode::from(2);
        }
    };
    let store = match open_store(config).await {
        Ok(store) => store,
        Err(e) => {
            eprintln!("cannot open the database: {e:#}");
            return ExitCode::from(2);
        }
    };
    let path = &config.audit_checkpoint_file;
    let file = match read_checkpoints(path, &key) {
        Ok(file) => file,
        Err(e) => {
            eprintln!("cannot read the checkpoint file {}: {e}", path.display());
            return ExitCode::from(DATABASE_ERROR);
        }
    };
    let anchors: Vec<_> = file
        .iter()
        .flat_map(|f| f.checkpoints.iter().map(|(_, c)| c.clone()))
        .collect();
    let chain = match verify_chain(store.as_ref(), &key, &anchors).await {
        Ok(chain) => chain,
        Err(e) => {
            eprintln!("cannot read the audit trail: {:#}", anyhow::Error::from(e));
            return ExitCode::from(DATABASE_ERROR);
        }
    };
    let mut failed = false;
    let records = match &chain {
        Ok(summary) => {
            println!(
                "audit chain OK: {} records{}; head hash {}",
                summary.records,
                versions(summary),
                summary.head_hash
            );
            summary.records
        }
        Err(broken) => {
            println!(
                "audit chain BROKEN at seq {}: {}: {}",
                broken.seq,
                broken.fault.as_str(),
                broken.reason
            );
            failed = true;
            broken.seq
        }
    };
    let shown = path.display();
    match &file {
        // The service creates the file before it writes a keyed record, and
        // signs the head at every start: without it, nothing outside the
        // database vouches for the chain, which is exactly what an insider
        // would want. So it fails rather than warns.
        None if records > 0 => {
            println!(
                "checkpoints FAILED: no checkpoint file at {shown} (AUDIT_CHECKPOINT_FILE): \
                 nothing outside the database vouches for the chain, so removed records or a \
                 chain recomputed without AUDIT_KEY could go unnoticed (a chain last written \
                 by a release without checkpoints gets its first one when the service starts)"
            );
            failed = true;
        }
        None => println!("no checkpoint file at {shown} yet; the chain is empty"),
        Some(file) => failed |= report_checkpoints(file, &key, &shown.to_string(), records),
    }
    if let Ok(ChainSummary {
        records,
        latest_checkpoint: Some(latest),
        ..
    }) = &chain
    {
        let newer = if *records > latest.seq {
            format!(
                "; records {}..{records} are newer (the next checkpoint covers them)",
                latest.seq + 1
            )
        } else {
            String::new()
        };
        println!(
            "latest checkpoint matched: seq {} signed at {}{newer}",
            latest.seq,
            canonical_time(latest.time)
        );
    }
    if failed {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    }
}

/// " (1..3 legacy SHA-256, 4..9 keyed HMAC-SHA256)" and the like.
fn versions(summary: &ChainSummary) -> String {
    match (summary.records, summary.first_keyed) {
        (0, _) => String::new(),
        (_, None) => " (all legacy SHA-256, not keyed)".to_owned(),
        (n, Some(1)) => format!(" (1..{n} keyed HMAC-SHA256)"),
        (n, Some(k)) => format!(" (1..{} legacy SHA-256, {k}..{n} keyed HMAC-SHA256)", k - 1),
    }
}

/// Prints what is wrong with the checkpoint file; true when anything is.
fn report_checkpoints(file: &CheckpointFile, key: &AuditKey, path: &str, records: u64) -> bool {
    /// Enough to see the pattern; the rest is counted.
    const SHOWN: usize = 10;
    let other_keys: Vec<&str> = file
        .faults
        .iter()
        .filter_map(|(_, f)| match f {
            LineFault::OtherKey(id) => Some(id.as_str()),
            _ => None,
        })
        .collect();
    if file.checkpoints.is_empty() && !other_keys.is_empty() {
        println!(
            "checkpoints FAILED: AUDIT_KEY is not the key that signed the checkpoints in {path} \
             (they name key {}; AUDIT_KEY is key {})",
            other_keys[0],
            key.id()
        );
        return true;
    }
    for (line, fault) in file.faults.iter().take(SHOWN) {
        let why = match fault {
            LineFault::Malformed => "it is not a checkpoint line".to_owned(),
            LineFault::BadMac => "its MAC does not match under AUDIT_KEY".to_owned(),
            LineFault::OtherKey(id) => format!("it names another key ({id})"),
        };
        println!("checkpoints FAILED: line {line} of {path} was altered: {why}");
    }
    if file.faults.len() > SHOWN {
        println!(
            "checkpoints FAILED: and {} more altered lines",
            file.faults.len() - SHOWN
        );
    }
    if file.checkpoints.is_empty() && file.faults.is_empty() && records > 0 {
        println!(
            "checkpoints FAILED: {path} holds no checkpoint, so nothing outside the database \
             vouches for the chain"
        );
        return true;
    }
    !file.faults.is_empty()
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
    let key = match audit_key(config) {
        Ok(key) => key,
        Err(e) => {
            eprintln!("cannot load AUDIT_KEY: {e:#}");
            return ExitCode::from(2);
        }
    };
    let checkpointer =
        match Checkpointer::open(store.clone(), key.clone(), &config.audit_checkpoint_file) {
            Ok(checkpointer) => checkpointer,
            Err(e) => {
                eprintln!("{e:#}");
                return ExitCode::from(2);
            }
        };
    let (audit, writer) = match Audit::start(store.clone(), store.serialized_writes(), key) {
        Ok(started) => started,
        Err(e) => {
            eprintln!("cannot start the audit writer: {e}");
            return ExitCode::from(3);
        }
    };
    let admin = AdminService::new(store.clone(), store, audit.clone());
    // Recorded as done from the command line: no IP, no request.
    let client = ClientContext::new(None, Some("clinic-auth user set-role"));
    let result = admin.set_role(email, role, &client).await;
    drop(admin);
    // The role change is recorded before we report success.
    let flushed = tokio::time::timeout(Duration::from_secs(15), audit.flush()).await;
    drop(audit);
    let _ = writer.await;
    if matches!((&result, &flushed), (Ok(Some(_)), Ok(()))) {
        // Anchors the role change at once rather than at the service's next
        // checkpoint.
        if let Err(e) = checkpointer.checkpoint().await {
            eprintln!("warning: no audit checkpoint written: {e:#}");
        }
    }
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
