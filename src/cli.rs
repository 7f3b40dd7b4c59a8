//! The `clinic-auth` command line: serve (the default), verify the audit
//! chain, manage users, and list, rotate and prune the access-token signing
//! keys. Parsed by clap, so every command and subcommand
//! has its own `--help` and a usage error names what was wrong.
//!
//! Exit codes (see [`exit`]): 0 done; 1 the audit trail failed
//! verification, or no such user, or the service could not start or stopped
//! with an error; 2 usage or configuration error; 3 the database (or the
//! checkpoint file) could not be read or written.

use std::process::ExitCode;
use std::time::Duration;

use clap::builder::{NonEmptyStringValueParser, TypedValueParser as _};
use clap::{Parser, Subcommand};

use std::sync::Arc;

use crate::app::{audit_key, mfa_key, open_store, CliServices};
use crate::config::Config;
use crate::domain::audit::canonical_time;
use crate::domain::{AuditKey, EmailAddress, Role};
use crate::services::account_status::Actor;
use crate::services::audit::{verify_chain, Audit, ChainSummary};
use crate::services::checkpoints::{read_checkpoints, CheckpointFile, Checkpointer, LineFault};
use crate::services::{AdminService, ClientContext, InviteInput, ServiceError};
use crate::storage::Store;

/// The process's exit codes, one meaning each; `--help` and the README list
/// them, and tests/binary.rs checks each with the real binary.
pub mod exit {
    /// Done: the service stopped cleanly, the trail verified, the role is set.
    pub const OK: u8 = 0;
    /// The audit trail failed verification, no such user, or the service
    /// could not start or stopped with an error.
    pub const FAILED: u8 = 1;
    /// A usage error (an unknown command, a missing or bad argument) or a
    /// configuration error (one line naming the variable).
    pub const USAGE: u8 = 2;
    /// The database or the checkpoint file could not be read or written.
    pub const UNREACHABLE: u8 = 3;
}

const AFTER_HELP: &str = "\
Examples:
  clinic-auth                                   run the service
  clinic-auth audit verify                      check the audit trail
  clinic-auth user set-role jane@example.com admin
  clinic-auth user create it@example.com --name \"Sam Lee\" --role admin
  clinic-auth user disable jane@example.com --reason \"Left the clinic\"
  clinic-auth health                            is the service up? (0: yes)
  clinic-auth keys rotate                       new access-token signing key

Configuration comes from the environment and .env, as for the service (see
the README's Configuration section).

Exit codes:
  0  done
  1  the audit trail failed verification (a record altered, missing or
     recomputed without AUDIT_KEY, records removed after a checkpoint, the
     checkpoint file missing or altered, or the wrong AUDIT_KEY), or no such
     user; for the service: it could not start or stopped with an error;
     for health: the service did not answer 200 within 5 seconds
  2  usage or configuration error
  3  the database or the checkpoint file could not be read or written";

/// Authentication for clinics: the JSON API and the staff portal in one
/// binary, plus its maintenance commands.
#[derive(Debug, Parser)]
#[command(name = "clinic-auth", version, after_help = AFTER_HELP)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,
}

/// What the command line asked for.
#[derive(Debug, Clone, PartialEq, Eq, Subcommand)]
pub enum Command {
    /// Run the service (the default)
    Serve,
    /// Check the audit trail
    #[command(subcommand)]
    Audit(AuditCommand),
    /// Manage users
    #[command(subcommand)]
    User(UserCommand),
    /// Ask the running service's /health on HOST:PORT (loopback when HOST
    /// is 0.0.0.0 or ::): exit 0 when it answers 200, 1 otherwise. For a
    /// container HEALTHCHECK on an image without curl
    #[command(after_help = AFTER_HELP)]
    Health,
    /// Manage the access-token signing keys (ES256/EdDSA)
    #[command(subcommand)]
    Keys(KeysCommand),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Subcommand)]
pub enum KeysCommand {
    /// List the signing keys: kid, algorithm, created, retired, state
    /// (current, retired: still published, prunable)
    #[command(after_help = AFTER_HELP)]
    List,
    /// Make a new current signing key; the previous one is retired and
    /// stays published until every token it signed has expired
    #[command(after_help = AFTER_HELP)]
    Rotate,
    /// Remove the keys retired longer than JWT_ACCESS_EXPIRES (plus a
    /// minute and the leeway) ago, and print their kids
    #[command(after_help = AFTER_HELP)]
    Prune,
}

impl KeysCommand {
    /// As typed, for the audit record's user agent.
    fn name(self) -> &'static str {
        match self {
            Self::List => "list",
            Self::Rotate => "rotate",
            Self::Prune => "prune",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Subcommand)]
pub enum AuditCommand {
    /// Check the audit trail: its hash chain (with AUDIT_KEY) and the signed
    /// checkpoints in AUDIT_CHECKPOINT_FILE
    #[command(after_help = AFTER_HELP)]
    Verify,
}

#[derive(Debug, Clone, PartialEq, Eq, Subcommand)]
pub enum UserCommand {
    /// Give a user a role (ends their access tokens)
    #[command(after_help = AFTER_HELP)]
    SetRole {
        /// The user's email address
        email: String,
        /// The role to give: admin, or one of ROLES (by default only doctor)
        #[arg(value_parser = role())]
        role: Role,
    },
    /// Create an account (verified, no password yet) and print a one-time
    /// link for its owner to choose a password (valid INVITE_EXPIRES)
    #[command(after_help = AFTER_HELP)]
    Create {
        /// The new user's email address
        email: String,
        /// Their full name
        #[arg(long, value_parser = NonEmptyStringValueParser::new())]
        name: String,
        /// Their role: admin, or one of ROLES
        #[arg(long, value_parser = NonEmptyStringValueParser::new())]
        role: String,
        /// Email the link to them (queued; the running service sends it)
        /// instead of printing it
        #[arg(long = "email")]
        send_email: bool,
    },
    /// Disable an account: it can no longer sign in, and every session and
    /// access token it had ends (recorded by=cli)
    #[command(after_help = AFTER_HELP)]
    Disable {
        /// The user's email address
        email: String,
        /// Why, for the audit trail (one line)
        #[arg(long)]
        reason: Option<String>,
    },
    /// Enable a disabled account again (recorded by=cli)
    #[command(after_help = AFTER_HELP)]
    Enable {
        /// The user's email address
        email: String,
    },
}

/// A well-formed role name; whether the clinic uses it is checked against
/// ROLES once the configuration is read.
fn role() -> impl clap::builder::TypedValueParser<Value = Role> {
    NonEmptyStringValueParser::new().try_map(|name| {
        Role::parse(&name).ok_or("not a role name: use admin or one of ROLES (e.g. doctor)")
    })
}

/// Parses the arguments after the program name: the command (serve when
/// none), or what to print and exit with (`--help` and `--version` too).
pub fn parse<I, T>(args: I) -> Result<Command, CliError>
where
    I: IntoIterator<Item = T>,
    T: Into<std::ffi::OsString> + Clone,
{
    let args: Vec<std::ffi::OsString> = std::iter::once("clinic-auth".into())
        .chain(args.into_iter().map(Into::into))
        .collect();
    match Cli::try_parse_from(&args) {
        Ok(cli) => Ok(cli.command.unwrap_or(Command::Serve)),
        Err(error) => Err(CliError {
            usage: usage_of(&args),
            error,
        }),
    }
}

/// A usage error, help or version from clap, with the usage line of the
/// command it was about: clap leaves it out of some errors (a bad value),
/// and a usage error should always show how the command is written.
#[derive(Debug)]
pub struct CliError {
    pub error: clap::Error,
    usage: String,
}

impl CliError {
    /// 0 after `--help` or `--version`, else [`exit::USAGE`].
    pub fn exit_code(&self) -> u8 {
        if self.error.use_stderr() {
            exit::USAGE
        } else {
            exit::OK
        }
    }
}

impl std::fmt::Display for CliError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let text = self.error.to_string();
        write!(f, "{}", text.trim_end())?;
        if self.error.use_stderr() && !text.contains("Usage:") {
            write!(f, "\n\n{}", self.usage.trim_end())?;
        }
        Ok(())
    }
}

/// The usage line of the deepest subcommand the arguments name.
fn usage_of(args: &[std::ffi::OsString]) -> String {
    let mut command = <Cli as clap::CommandFactory>::command();
    command.build();
    let mut current = &mut command;
    for arg in args.iter().skip(1).filter_map(|a| a.to_str()) {
        if current.find_subcommand(arg).is_none() {
            break;
        }
        current = current.find_subcommand_mut(arg).expect("found just above");
    }
    current.render_usage().to_string()
}

/// Prints what clap has to say (help to stdout, a usage error to stderr)
/// and gives the exit code for it.
pub fn report(error: &CliError) -> ExitCode {
    if error.error.use_stderr() {
        eprintln!("{error}");
    } else {
        println!("{error}");
    }
    ExitCode::from(error.exit_code())
}

/// `clinic-auth audit verify`: the chain, then what the checkpoint file
/// says about it. Every problem found is printed; any of them fails.
pub async fn audit_verify(config: &Config) -> ExitCode {
    let key = match audit_key(config) {
        Ok(key) => key,
        Err(e) => {
            eprintln!("cannot load AUDIT_KEY: {e:#}");
            return ExitCode::from(exit::USAGE);
        }
    };
    let store = match open_store(config).await {
        Ok(store) => store,
        Err(e) => {
            eprintln!("cannot open the database: {e:#}");
            return ExitCode::from(exit::UNREACHABLE);
        }
    };
    let path = &config.audit.audit_checkpoint_file;
    let file = match read_checkpoints(path, &key) {
        Ok(file) => file,
        Err(e) => {
            eprintln!("cannot read the checkpoint file {}: {e}", path.display());
            return ExitCode::from(exit::UNREACHABLE);
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
            return ExitCode::from(exit::UNREACHABLE);
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
        ExitCode::from(exit::FAILED)
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

/// `clinic-auth keys list|rotate|prune`, with time from `clock` (the
/// system's; tests pass theirs). Rotation and pruning act on the store:
/// running instances pick the change up at their next minute's reload, or
/// at once when a token names the new kid.
pub async fn keys(
    config: &Config,
    command: KeysCommand,
    clock: Arc<dyn crate::clock::Clock>,
) -> ExitCode {
    use crate::services::key_rotation::KeyRotation;
    // Opened as the user commands open it: rotations and prunings are
    // recorded (by=cli) and anchored before the command reports.
    let change = match Change::open(config).await {
        Ok(change) => change,
        Err(code) => return code,
    };
    let key = match mfa_key(config) {
        Ok(key) => key,
        Err(e) => {
            eprintln!("cannot load MFA_ENCRYPTION_KEY: {e:#}");
            change.finish(false).await;
            return ExitCode::from(exit::USAGE);
        }
    };
    let rotation = KeyRotation::new(
        change.store.clone(),
        key,
        config.tokens.access_algorithm,
        config.tokens.jwt_access_ttl,
        clock,
    )
    .audited(
        change.audit.clone(),
        ClientContext::new(None, Some(&format!("clinic-auth keys {}", command.name()))),
        "cli",
    );
    let code = keys_run(config, command, &rotation).await;
    drop(rotation);
    let changed = matches!(command, KeysCommand::Rotate | KeysCommand::Prune);
    if !change.finish(changed).await && changed {
        eprintln!("the keys were changed but the audit event could not be stored");
        return ExitCode::from(exit::UNREACHABLE);
    }
    code
}

async fn keys_run(
    config: &Config,
    command: KeysCommand,
    rotation: &crate::services::key_rotation::KeyRotation,
) -> ExitCode {
    use crate::services::key_rotation::RotationError;
    let unreachable = |e: crate::storage::StoreError| {
        eprintln!(
            "cannot read or write the signing keys: {:#}",
            anyhow::Error::from(e)
        );
        ExitCode::from(exit::UNREACHABLE)
    };
    match command {
        KeysCommand::List => {
            let keys = match rotation.list().await {
                Ok(keys) => keys,
                Err(e) => return unreachable(e),
            };
            if keys.is_empty() {
                println!(
                    "no signing keys stored (JWT_ACCESS_ALGORITHM={}; the service makes one at start unless HS256)",
                    config.tokens.access_algorithm
                );
            }
            for key in keys {
                println!(
                    "{}  {:<5}  created {}  retired {}  {}",
                    key.kid,
                    key.alg,
                    canonical_time(key.created_at),
                    key.retired_at.map_or("-".to_owned(), canonical_time),
                    key.state.as_str()
                );
            }
            ExitCode::SUCCESS
        }
        KeysCommand::Rotate => match rotation.rotate().await {
            Ok(kid) => {
                println!(
                    "new current signing key {kid}; the previous key stays published until it is pruned \
                     (after {})",
                    humantime::format_duration(rotation.keep_retired())
                );
                ExitCode::SUCCESS
            }
            Err(RotationError::SharedSecret) => {
                eprintln!("{}", RotationError::SharedSecret);
                ExitCode::from(exit::USAGE)
            }
            Err(RotationError::Store(e)) => unreachable(e),
        },
        KeysCommand::Prune => match rotation.prune().await {
            Ok(removed) if removed.is_empty() => {
                println!("no signing key to prune");
                ExitCode::SUCCESS
            }
            Ok(removed) => {
                for kid in removed {
                    println!("pruned {kid}");
                }
                ExitCode::SUCCESS
            }
            Err(e) => unreachable(e),
        },
    }
}

/// What a user command that changes something holds: the store, and the
/// audit trail opened as the service opens it (writer and checkpoint
/// file), so its record is stored and anchored before the command reports.
struct Change {
    store: Arc<dyn Store>,
    audit: Audit,
    writer: tokio::sync::oneshot::Receiver<()>,
    checkpointer: Checkpointer,
}

impl Change {
    /// Opens the store and the audit trail; on failure, the message is
    /// printed and the exit code returned.
    async fn open(config: &Config) -> Result<Self, ExitCode> {
        let store = open_store(config).await.map_err(|e| {
            eprintln!("cannot open the database: {e:#}");
            ExitCode::from(exit::UNREACHABLE)
        })?;
        let key = audit_key(config).map_err(|e| {
            eprintln!("cannot load AUDIT_KEY: {e:#}");
            ExitCode::from(exit::USAGE)
        })?;
        let checkpointer = Checkpointer::open(
            store.clone(),
            key.clone(),
            &config.audit.audit_checkpoint_file,
        )
        .map_err(|e| {
            eprintln!("{e:#}");
            ExitCode::from(exit::UNREACHABLE)
        })?;
        let (audit, writer) =
            Audit::start(store.clone(), store.serialized_writes(), key).map_err(|e| {
                eprintln!("cannot start the audit writer: {e}");
                ExitCode::from(exit::UNREACHABLE)
            })?;
        Ok(Self {
            store,
            audit,
            writer,
            checkpointer,
        })
    }

    /// Waits for the audit records; once `changed`, anchors them at once
    /// rather than at the service's next checkpoint. False when the records
    /// could not be stored.
    async fn finish(self, changed: bool) -> bool {
        let flushed = tokio::time::timeout(Duration::from_secs(15), self.audit.flush()).await;
        drop(self.audit);
        let _ = self.writer.await;
        if changed && flushed.is_ok() {
            if let Err(e) = self.checkpointer.checkpoint().await {
                eprintln!("warning: no audit checkpoint written: {e:#}");
            }
        }
        flushed.is_ok()
    }
}

/// Recorded as done from the command line: no IP, no request.
fn cli_client(command: &str) -> ClientContext {
    ClientContext::new(None, Some(&format!("clinic-auth user {command}")))
}

/// `clinic-auth user set-role EMAIL ROLE`.
pub async fn set_role(config: &Config, email: &str, role: Role) -> ExitCode {
    if !config.accounts.roles.contains(&role) {
        eprintln!(
            "unknown role {role}: this clinic's roles are {} (ROLES)",
            config.accounts.roles.names()
        );
        return ExitCode::from(exit::USAGE);
    }
    let change = match Change::open(config).await {
        Ok(change) => change,
        Err(code) => return code,
    };
    let admin = AdminService::new(
        change.store.clone(),
        change.store.clone(),
        change.audit.clone(),
    );
    let result = admin.set_role(email, role, &cli_client("set-role")).await;
    drop(admin);
    // The role change is recorded before we report success.
    let recorded = change.finish(matches!(result, Ok(Some(_)))).await;
    match result {
        Ok(Some(_)) if !recorded => {
            eprintln!("the role was changed but the audit event could not be stored");
            ExitCode::from(exit::UNREACHABLE)
        }
        Ok(Some(user)) => {
            println!(
                "{} is now {}; their earlier access tokens no longer work",
                user.email.as_str(),
                user.role.as_str()
            );
            ExitCode::SUCCESS
        }
        Ok(None) => {
            eprintln!("no user with the email {email}");
            ExitCode::from(exit::FAILED)
        }
        Err(ServiceError::Validation(_)) => {
            eprintln!("not an email address: {email}");
            ExitCode::from(exit::USAGE)
        }
        Err(e) => {
            eprintln!("cannot change the role: {:#}", anyhow::Error::from(e));
            ExitCode::from(exit::UNREACHABLE)
        }
    }
}

/// `clinic-auth user create EMAIL --name NAME --role ROLE`: the account,
/// verified and without a usable password, and its one-time set-password
/// link on stdout (the only place it is ever shown).
pub async fn create_user(
    config: &Config,
    email: &str,
    name: &str,
    role: &str,
    send_email: bool,
) -> ExitCode {
    let change = match Change::open(config).await {
        Ok(change) => change,
        Err(code) => return code,
    };
    let services = match CliServices::build(config, &change.store, &change.audit) {
        Ok(services) => services,
        Err(e) => {
            eprintln!("{e:#}");
            drop(change);
            return ExitCode::from(exit::USAGE);
        }
    };
    let result = services
        .direct_accounts
        .create(
            &InviteInput {
                email: email.to_owned(),
                name: name.to_owned(),
                role: role.to_owned(),
            },
            send_email,
            &cli_client("create"),
        )
        .await;
    drop(services);
    let recorded = change.finish(result.is_ok()).await;
    match result {
        Ok(_) if !recorded => {
            eprintln!("the account was created but the audit event could not be stored");
            ExitCode::from(exit::UNREACHABLE)
        }
        Ok(created) => {
            let (email, role) = (created.user.email.as_str(), created.user.role.as_str());
            let valid = humantime::format_duration(created.expires);
            match created.link {
                Some(link) => {
                    eprintln!(
                        "created {email} ({role}). Give them this link to choose a password; \
                         it works once, for {valid}:"
                    );
                    println!("{link}");
                }
                None => eprintln!(
                    "created {email} ({role}); a link to choose a password (valid {valid}) \
                     is queued for them and goes out with the running service"
                ),
            }
            ExitCode::SUCCESS
        }
        Err(e) => refused("cannot create the account", e),
    }
}

/// `clinic-auth user disable EMAIL [--reason R]` and `user enable EMAIL`,
/// through the same use-case as the admin API, recorded `by=cli`.
pub async fn set_disabled(
    config: &Config,
    email: &str,
    disable: bool,
    reason: Option<&str>,
) -> ExitCode {
    let Ok(address) = EmailAddress::parse(email) else {
        eprintln!("not an email address: {email}");
        return ExitCode::from(exit::USAGE);
    };
    let change = match Change::open(config).await {
        Ok(change) => change,
        Err(code) => return code,
    };
    let services = match CliServices::build(config, &change.store, &change.audit) {
        Ok(services) => services,
        Err(e) => {
            eprintln!("{e:#}");
            return ExitCode::from(exit::USAGE);
        }
    };
    let status = &services.account_status;
    let result = match change.store.find_user_by_email(&address).await {
        Ok(Some(user)) if disable => {
            status
                .disable(&user.id, reason, Actor::Cli, &cli_client("disable"))
                .await
        }
        Ok(Some(user)) => {
            status
                .enable(&user.id, reason, Actor::Cli, &cli_client("enable"))
                .await
        }
        Ok(None) => Err(ServiceError::NotFound),
        Err(e) => Err(e.into()),
    };
    drop(services);
    let recorded = change.finish(result.is_ok()).await;
    match result {
        Ok(_) if !recorded => {
            eprintln!("the account was changed but the audit event could not be stored");
            ExitCode::from(exit::UNREACHABLE)
        }
        Ok(user) if user.is_disabled() => {
            println!(
                "{} is disabled; every session and access token it had has ended",
                user.email.as_str()
            );
            ExitCode::SUCCESS
        }
        Ok(user) => {
            println!(
                "{} is enabled; it signs in with its password",
                user.email.as_str()
            );
            ExitCode::SUCCESS
        }
        Err(e) => refused("cannot change the account", e),
    }
}

/// A refusal's words on stderr (the API's, so both say the same) and its
/// exit code: bad input is a usage error (2); an account that does not
/// exist, already exists, or is the last active admin a refusal (1); the
/// database 3.
fn refused(what: &str, err: ServiceError) -> ExitCode {
    let code = match &err {
        ServiceError::Validation(_) => exit::USAGE,
        ServiceError::NotFound => {
            eprintln!("{what}: no user with that email");
            return ExitCode::from(exit::FAILED);
        }
        ServiceError::EmailTaken | ServiceError::LastAdmin => exit::FAILED,
        _ => {
            eprintln!("{what}: {:#}", anyhow::Error::from(err));
            return ExitCode::from(exit::UNREACHABLE);
        }
    };
    let told = crate::error::ApiError::from(err);
    match told.fields {
        Some(fields) => {
            for (field, messages) in fields {
                eprintln!("{what}: {field}: {}", messages.join(" "));
            }
        }
        None => eprintln!("{what}: {}", told.message),
    }
    ExitCode::from(code)
}

/// `clinic-auth health`: one `GET /health` to the service this
/// configuration runs, as a container's HEALTHCHECK needs it. A slim image
/// has no curl or wget, and the binary is already there. Plain HTTP/1.1 over
/// a blocking socket: one request, no client library, and every step is
/// bounded by [`HEALTH_TIMEOUT`] so a hung service fails the check instead
/// of hanging it.
pub fn health(config: &Config) -> ExitCode {
    let host = match config.server.host {
        // Bound to every address: this process is on the same host.
        std::net::IpAddr::V4(ip) if ip.is_unspecified() => std::net::Ipv4Addr::LOCALHOST.into(),
        std::net::IpAddr::V6(ip) if ip.is_unspecified() => std::net::Ipv6Addr::LOCALHOST.into(),
        ip => ip,
    };
    let addr = std::net::SocketAddr::new(host, config.server.port);
    match health_status(addr) {
        Ok(status) if status == "200" => {
            println!("healthy: GET http://{addr}/health answered 200");
            ExitCode::SUCCESS
        }
        Ok(status) => {
            println!("unhealthy: GET http://{addr}/health answered {status}");
            ExitCode::from(exit::FAILED)
        }
        Err(e) => {
            println!("unhealthy: GET http://{addr}/health failed: {e}");
            ExitCode::from(exit::FAILED)
        }
    }
}

/// How long connecting, sending and reading the answer may each take.
const HEALTH_TIMEOUT: Duration = Duration::from_secs(5);

/// The status code of `GET /health` at `addr`, as the text of the status
/// line.
fn health_status(addr: std::net::SocketAddr) -> std::io::Result<String> {
    use std::io::{BufRead, BufReader, Read, Write};
    let mut stream = std::net::TcpStream::connect_timeout(&addr, HEALTH_TIMEOUT)?;
    stream.set_read_timeout(Some(HEALTH_TIMEOUT))?;
    stream.set_write_timeout(Some(HEALTH_TIMEOUT))?;
    write!(
        stream,
        "GET /health HTTP/1.1\r\nHost: {addr}\r\nUser-Agent: clinic-auth-health\r\nConnection: close\r\n\r\n"
    )?;
    let mut line = String::new();
    // The status line is all that is read, and at most a line's worth.
    BufReader::new(stream.take(1024)).read_line(&mut line)?;
    // "HTTP/1.1 200 OK"
    line.split_whitespace()
        .nth(1)
        .map(str::to_owned)
        .ok_or_else(|| std::io::Error::other(format!("not an HTTP answer: {line:?}")))
}

#[cfg(test)]
mod tests {
    use clap::error::ErrorKind;

    use super::*;

    #[test]
    fn commands_parse() {
        let none: [&str; 0] = [];
        assert_eq!(parse(none).unwrap(), Command::Serve);
        assert_eq!(parse(["serve"]).unwrap(), Command::Serve);
        assert_eq!(
            parse(["audit", "verify"]).unwrap(),
            Command::Audit(AuditCommand::Verify)
        );
        for (role, expected) in [
            ("admin", Role::admin()),
            ("Nurse", Role::parse("nurse").unwrap()),
        ] {
            assert_eq!(
                parse(["user", "set-role", "a@b.c", role]).unwrap(),
                Command::User(UserCommand::SetRole {
                    email: "a@b.c".into(),
                    role: expected
                })
            );
        }
    }

    #[test]
    fn account_commands_parse() {
        assert_eq!(
            parse(["user", "create", "a@b.c", "--name", "Sam Lee", "--role", "nurse"]).unwrap(),
            Command::User(UserCommand::Create {
                email: "a@b.c".into(),
                name: "Sam Lee".into(),
                role: "nurse".into(),
                send_email: false,
            })
        );
        assert_eq!(
            parse(["user", "disable", "a@b.c", "--reason", "Left"]).unwrap(),
            Command::User(UserCommand::Disable {
                email: "a@b.c".into(),
                reason: Some("Left".into()),
            })
        );
        assert_eq!(
            parse(["user", "enable", "a@b.c"]).unwrap(),
            Command::User(UserCommand::Enable {
                email: "a@b.c".into()
            })
        );
        for args in [
            &["user", "create", "a@b.c", "--role", "nurse"][..],
            &["user", "create", "a@b.c", "--name", "Sam"],
            &["user", "disable"],
            &["user", "enable", "a@b.c", "--reason", "x"],
        ] {
            let e = parse(args).unwrap_err();
            assert_eq!(e.exit_code(), exit::USAGE, "{args:?}: {e}");
        }
    }

    #[test]
    fn help_is_not_an_error_and_mistakes_are_usage_errors() {
        for args in [
            &["--help"][..],
            &["-h"],
            &["help"],
            &["audit", "--help"],
            &["audit", "verify", "--help"],
            &["user", "set-role", "--help"],
            &["help", "user", "set-role"],
        ] {
            let e = parse(args).unwrap_err();
            assert_eq!(e.error.kind(), ErrorKind::DisplayHelp, "{args:?}");
            assert_eq!(e.exit_code(), exit::OK, "{args:?}");
        }
        for args in [
            &["user", "set-role", "a@b.c", "Root!"][..],
            &["user", "set-role", "a@b.c"],
            &["audit"],
            &["serve", "now"],
            &["frobnicate"],
        ] {
            let e = parse(args).unwrap_err();
            assert_eq!(e.exit_code(), exit::USAGE, "{args:?}: {e}");
            assert_eq!(e.error.exit_code(), i32::from(exit::USAGE), "{args:?}");
            assert!(e.to_string().contains("Usage"), "{args:?}: {e}");
        }
        // A bad value shows how the command it was given to is written.
        let e = parse(["user", "set-role", "a@b.c", "Root!"]).unwrap_err();
        let text = e.to_string();
        assert!(text.contains("'Root!'"), "{text}");
        assert!(
            text.contains("Usage: clinic-auth user set-role <EMAIL> <ROLE>"),
            "{text}"
        );
    }

    #[test]
    fn help_lists_the_exit_codes() {
        let help = Cli::try_parse_from(["clinic-auth", "--help"])
            .unwrap_err()
            .to_string();
        for text in [
            "audit verify",
            "user set-role",
            "Exit codes",
            "3  the database",
        ] {
            assert!(help.contains(text), "{text:?} in {help}");
        }
    }

    #[test]
    fn the_command_line_is_well_formed() {
        <Cli as clap::CommandFactory>::command().debug_assert();
    }
}
