//! The `clinic-auth` binary: the command (serve by default), configuration,
//! logging, then the app or a maintenance command (see `cli`).

// Unsafe code only where a system call needs it, each place allowed by
// name with a SAFETY note.
#![deny(unsafe_code)]

use std::process::ExitCode;

use clinic_auth::app::{shutdown_signal, App};
use clinic_auth::cli::{self, exit, AuditCommand, Command, UserCommand};
use clinic_auth::clock::SystemClock;
use clinic_auth::config::Config;

fn main() -> ExitCode {
    private_files();
    // Before anything is opened, so the connection cap derived from it
    // (MAX_CONNECTIONS's default) sees the raised limit.
    clinic_auth::server::raise_descriptor_limit();
    run()
}

/// Everything the process creates is for its own user only (files 0600,
/// directories 0700): the SQLite database and its -wal/-shm files, the
/// outbox's .eml files (live reset links), generated secrets. A umask set
/// before the runtime starts, so no thread and no file predates it.
#[allow(unsafe_code)] // umask: see the SAFETY note below
fn private_files() {
    #[cfg(unix)]
    // SAFETY: umask only swaps the process's file-creation mask; it cannot
    // fail and touches no memory. It runs before any other thread exists.
    unsafe {
        libc::umask(0o077);
    }
}

#[tokio::main]
async fn run() -> ExitCode {
    let command = match cli::parse(std::env::args_os().skip(1)) {
        Ok(command) => command,
        // `--help` and `--version` too: printed, with their exit code.
        Err(e) => return cli::report(&e),
    };
    let config = match Config::from_env() {
        Ok(config) => config,
        Err(e) => {
            eprintln!("configuration error: {e}");
            return ExitCode::from(exit::USAGE);
        }
    };
    match command {
        Command::Audit(AuditCommand::Verify) => return cli::audit_verify(&config).await,
        Command::User(UserCommand::SetRole { email, role }) => {
            return cli::set_role(&config, &email, role).await
        }
        Command::User(UserCommand::Create {
            email,
            name,
            role,
            send_email,
        }) => return cli::create_user(&config, &email, &name, &role, send_email).await,
        Command::User(UserCommand::Disable { email, reason }) => {
            return cli::set_disabled(&config, &email, true, reason.as_deref()).await
        }
        Command::User(UserCommand::Enable { email }) => {
            return cli::set_disabled(&config, &email, false, None).await
        }
        Command::Health => return cli::health(&config),
        Command::Keys(keys) => {
            return cli::keys(&config, keys, std::sync::Arc::new(SystemClock)).await
        }
        Command::Serve => {}
    }
    clinic_auth::telemetry::init(config.is_production());
    let app = match App::build(config).await {
        Ok(app) => app,
        Err(e) => {
            tracing::error!("cannot start: {e:#}");
            return ExitCode::from(exit::FAILED);
        }
    };
    match app.run_until_stopped(shutdown_signal()).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("stopped with an error: {e:#}");
            ExitCode::from(exit::FAILED)
        }
    }
}
