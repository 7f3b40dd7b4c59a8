//! The `clinic-auth` binary: the command (serve by default), configuration,
//! logging, then the app or a maintenance command (see `cli`).

use std::process::ExitCode;

use clinic_auth::app::{shutdown_signal, App};
use clinic_auth::cli::{self, Command};
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
    let args: Vec<String> = std::env::args().skip(1).collect();
    let command = match cli::parse(&args) {
        Ok(Command::Help) => {
            println!("{}", cli::USAGE);
            return ExitCode::SUCCESS;
        }
        Ok(command) => command,
        Err(message) => {
            eprintln!("{message}\n\n{}", cli::USAGE);
            return ExitCode::from(2);
        }
    };
    let config = match Config::from_env() {
        Ok(config) => config,
        Err(e) => {
            eprintln!("configuration error: {e}");
            return ExitCode::from(2);
        }
    };
    match command {
        Command::AuditVerify => return cli::audit_verify(&config).await,
        Command::SetRole { email, role } => return cli::set_role(&config, &email, role).await,
        Command::Serve | Command::Help => {}
    }
    clinic_auth::telemetry::init(config.is_production());
    let app = match App::build(config).await {
        Ok(app) => app,
        Err(e) => {
            tracing::error!("cannot start: {e:#}");
            return ExitCode::FAILURE;
        }
    };
    match app.run_until_stopped(shutdown_signal()).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("stopped with an error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
