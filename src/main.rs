//! The `clinic-auth` binary: the command (serve by default), configuration,
//! logging, then the app or a maintenance command (see `cli`).

use std::process::ExitCode;

use clinic_auth::app::{shutdown_signal, App};
use clinic_auth::cli::{self, Command};
use clinic_auth::config::Config;

#[tokio::main]
async fn main() -> ExitCode {
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
