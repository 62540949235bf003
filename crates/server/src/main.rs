//! `gatehouse`: the command line.
#![forbid(unsafe_code)]

use anyhow::Context;
use clap::{Args, Parser, Subcommand};
use gatehouse::admin::{self, ExportFormat};
use gatehouse::config::{Config, MailTransportKind, RawConfig};
use gatehouse::{Application, Core};
use gatehouse_core::secret::Password;
use gatehouse_core::service::NewUser;
use gatehouse_core::types::{Email, Login};
use std::io::Read;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Parser)]
#[command(
    name = "gatehouse",
    version,
    about = "Self-service password reset with writeback to your directory"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Args, Clone)]
struct ConfigArg {
    /// The configuration file (TOML). Environment: GATEHOUSE_CONFIG.
    #[arg(long, short, env = "GATEHOUSE_CONFIG", default_value = "gatehouse.toml")]
    config: PathBuf,
}

#[derive(Subcommand)]
enum Command {
    /// Serve the portal and the API.
    Serve(ConfigArg),
    /// Run on the embedded default: SQLite, builtin directory, demo users, development mailbox.
    Demo {
        #[arg(long, default_value = "127.0.0.1:8080")]
        listen: String,
        #[arg(long, default_value = "gatehouse-data")]
        data_dir: PathBuf,
    },
    /// Check the configuration and print the effective values (secrets redacted).
    CheckConfig(ConfigArg),
    /// Create or upgrade the store's schema, then exit.
    Migrate(ConfigArg),
    /// Manage users.
    Users {
        #[command(subcommand)]
        command: UsersCommand,
    },
    /// The audit log.
    Audit {
        #[command(subcommand)]
        command: AuditCommand,
    },
    /// The directory: self-test and synchronisation.
    Directory {
        #[command(subcommand)]
        command: DirectoryCommand,
    },
    /// Helpdesk API tokens.
    Admin {
        #[command(subcommand)]
        command: AdminCommand,
    },
    /// The offline breached-password corpus.
    Breach {
        #[command(subcommand)]
        command: BreachCommand,
    },
}

#[derive(Subcommand)]
enum BreachCommand {
    /// Build an index from a Have I Been Pwned "Pwned Passwords" download (one SHA1:COUNT file, or the
    /// directory of per-prefix files). Point `password.breach_index` at the result; a running server
    /// swaps a rebuilt index in by itself.
    Import {
        /// The download: a file or a directory.
        input: PathBuf,
        /// Where to write the index (the file is named pwned-passwords.gbi).
        #[arg(long, default_value = ".")]
        out: PathBuf,
        /// Also keep the sorted hashes for exact confirmation (no false positives; 20 more bytes per hash).
        #[arg(long)]
        exact: bool,
        /// Skip hashes seen fewer times than this.
        #[arg(long, default_value_t = 1)]
        min_count: u64,
    },
}

#[derive(Subcommand)]
enum DirectoryCommand {
    /// Bind, find a sample user, and check the service account's rights (exit 1 if one is missing).
    Test {
        #[command(flatten)]
        config: ConfigArg,
        /// The user to test against (default: the first user in scope).
        #[arg(long)]
        user: Option<String>,
    },
    /// Synchronise users, groups and contact attributes into the store.
    Sync {
        #[command(flatten)]
        config: ConfigArg,
        /// Read everything, not only what changed since the last run.
        #[arg(long)]
        full: bool,
    },
}

#[derive(Subcommand)]
enum UsersCommand {
    /// Add (or update) one user.
    Add {
        #[command(flatten)]
        config: ConfigArg,
        #[arg(long)]
        login: String,
        #[arg(long)]
        display_name: Option<String>,
        #[arg(long)]
        email: Option<String>,
        /// A personal address; counts as a registered method.
        #[arg(long)]
        alternate_email: Option<String>,
        #[arg(long, value_delimiter = ',')]
        groups: Vec<String>,
        /// Read an initial password from standard input (builtin directory). Without it the user
        /// sets the first password through the reset flow.
        #[arg(long)]
        password_stdin: bool,
    },
    /// Helpdesk reset: set a password read from standard input, optionally "must change at next logon".
    Reset {
        #[command(flatten)]
        config: ConfigArg,
        #[arg(long)]
        login: String,
        #[arg(long)]
        must_change: bool,
    },
    /// Import an HR feed: login,display_name,email,alternate_email,mobile_phone,groups.
    Import {
        #[command(flatten)]
        config: ConfigArg,
        file: PathBuf,
    },
    /// Show a user's registration state: policy, methods, what is missing.
    Show {
        #[command(flatten)]
        config: ConfigArg,
        #[arg(long)]
        login: String,
    },
    /// Set a user's personal email and/or mobile number as verified methods (the helpdesk vouches).
    Contact {
        #[command(flatten)]
        config: ConfigArg,
        #[arg(long)]
        login: String,
        #[arg(long)]
        email: Option<String>,
        #[arg(long)]
        phone: Option<String>,
    },
    /// Clear a "this wasn't me" flag, turning self-service back on for the user.
    Unflag {
        #[command(flatten)]
        config: ConfigArg,
        #[arg(long)]
        login: String,
    },
    /// Remove every verification method of a user.
    ClearMethods {
        #[command(flatten)]
        config: ConfigArg,
        #[arg(long)]
        login: String,
    },
    /// Mail a one-time link to the user's personal email: onboarding (first password) or recovery.
    Link {
        #[command(flatten)]
        config: ConfigArg,
        #[arg(long)]
        login: String,
        #[arg(long, value_enum, default_value = "recovery")]
        kind: LinkArg,
    },
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum LinkArg {
    Onboarding,
    Recovery,
}

#[derive(Subcommand)]
enum AdminCommand {
    /// Make a helpdesk API token: prints the token (give it to the caller) and the line for
    /// `[admin] api_tokens` (only its SHA-256 is kept).
    Token { name: String },
}

#[derive(Subcommand)]
enum AuditCommand {
    /// Export audit events, streamed, without a record cap.
    Export {
        #[command(flatten)]
        config: ConfigArg,
        #[arg(long, value_enum, default_value = "jsonl")]
        format: ExportFormat,
        /// An RFC 3339 time, or a span back from now: 30m, 24h, 7d.
        #[arg(long)]
        since: Option<String>,
        /// Write to this file instead of standard output.
        #[arg(long, short)]
        output: Option<PathBuf>,
    },
}

fn load(arg: &ConfigArg) -> anyhow::Result<Config> {
    let cfg = Config::try_from(RawConfig::load(&arg.config)?)?;
    if cfg.mail_transport == MailTransportKind::DevMailbox {
        anyhow::bail!(
            "mail.transport: \"dev-mailbox\" shows every code on a web page and is only for `gatehouse demo`; \
             use \"smtp\""
        );
    }
    Ok(cfg)
}

async fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Serve(arg) => {
            let cfg = load(&arg)?;
            gatehouse::init_tracing(cfg.log_json);
            Application::build(&cfg).await?.run_until_signal().await?;
        }
        Command::Demo { listen, data_dir } => gatehouse::demo::run(&listen, &data_dir).await?,
        Command::CheckConfig(arg) => {
            let cfg = load(&arg)?;
            println!(
                "# {} is valid. Effective configuration:\n{}",
                arg.config.display(),
                cfg.raw.redacted_toml()
            );
        }
        Command::Migrate(arg) => {
            let cfg = load(&arg)?;
            Core::open(&cfg).await?;
            println!("store is up to date: {}", cfg.store_url);
        }
        Command::Breach {
            command:
                BreachCommand::Import {
                    input,
                    out,
                    exact,
                    min_count,
                },
        } => {
            std::fs::create_dir_all(&out).with_context(|| format!("--out {}", out.display()))?;
            let options = gatehouse_breach::ImportOptions {
                exact,
                min_count,
                ..gatehouse_breach::ImportOptions::default()
            };
            let report = tokio::task::spawn_blocking(move || {
                gatehouse_breach::import_with(&input, &out, &options).map(|r| (r, out))
            })
            .await?;
            let (r, out) = report.map_err(|e| anyhow::anyhow!("{e}"))?;
            for b in &r.bad_line_samples {
                eprintln!("bad line {}:{}", b.file.display(), b.line);
            }
            let path = out.join(gatehouse_breach::INDEX_FILE_NAME);
            println!(
                "{} hashes from {} file(s) ({} bad lines) indexed into {}",
                r.hashes,
                r.files_read,
                r.bad_lines,
                path.display()
            );
            println!(
                "set in the configuration:\n[password]\nbreach_index = \"{}\"",
                path.display()
            );
        }
        Command::Directory {
            command: DirectoryCommand::Test { config, user },
        } => {
            let cfg = load(&config)?;
            let core = Core::open(&cfg).await?;
            let sample = user.as_deref().map(Login::parse).transpose()?;
            let checks = core.app.directory_test(sample.as_ref()).await;
            let mut ok = true;
            for c in &checks {
                ok &= c.ok;
                println!(
                    "{:<8} {:<15} {}",
                    if c.ok { "ok" } else { "MISSING" },
                    c.right,
                    c.detail
                );
            }
            println!(
                "{}",
                if ok {
                    "verdict: ready"
                } else {
                    "verdict: not ready"
                }
            );
            return Ok(if ok { ExitCode::SUCCESS } else { ExitCode::FAILURE });
        }
        Command::Directory {
            command: DirectoryCommand::Sync { config, full },
        } => {
            let cfg = load(&config)?;
            let core = Core::open(&cfg).await?;
            let started = std::time::Instant::now();
            let r = core.app.sync_directory(full).await?;
            for s in &r.skipped {
                eprintln!("skipped {s}");
            }
            println!(
                "{} sync: {} users read, {} disabled (left the scope), {} skipped, in {:.2?}",
                if r.full { "full" } else { "incremental" },
                r.read,
                r.disabled,
                r.skipped.len(),
                started.elapsed()
            );
        }
        Command::Admin {
            command: AdminCommand::Token { name },
        } => {
            use sha2::Digest;
            let mut bytes = [0u8; 32];
            gatehouse_core::ports::SecureRng::fill(&gatehouse_core::clock::OsRng, &mut bytes);
            let token = hex::encode(bytes);
            let digest = hex::encode(sha2::Sha256::digest(token.as_bytes()));
            println!("token (give it to the caller; it is not stored): {token}");
            println!("add to the configuration:\n[admin]\napi_tokens = [\"{name}:{digest}\"]");
        }
        Command::Users {
            command: UsersCommand::Show { config, login },
        } => {
            let core = Core::open(&load(&config)?).await?;
            let r = core.app.registration_of(&Login::parse(&login)?).await?;
            println!(
                "{}",
                serde_json::to_string_pretty(&gatehouse_web::registration_json(&r))?
            );
        }
        Command::Users {
            command:
                UsersCommand::Contact {
                    config,
                    login,
                    email,
                    phone,
                },
        } => {
            let core = Core::open(&load(&config)?).await?;
            let r = core
                .app
                .admin_set_contact(
                    &Login::parse(&login)?,
                    email.as_deref(),
                    phone.as_deref(),
                    "admin:cli",
                )
                .await?;
            println!("{}: {} verified method(s)", r.login, r.verified);
        }
        Command::Users {
            command: UsersCommand::Unflag { config, login },
        } => {
            let core = Core::open(&load(&config)?).await?;
            core.app
                .admin_clear_flag(&Login::parse(&login)?, "admin:cli")
                .await?;
            println!("{login}: flag cleared; self-service is on again (unlock the account in the directory if it was locked)");
        }
        Command::Users {
            command: UsersCommand::ClearMethods { config, login },
        } => {
            let core = Core::open(&load(&config)?).await?;
            let n = core
                .app
                .admin_clear_methods(&Login::parse(&login)?, "admin:cli")
                .await?;
            println!("{n} method(s) removed from {login}");
        }
        Command::Users {
            command: UsersCommand::Link { config, login, kind },
        } => {
            let cfg = load(&config)?;
            let core = Core::open(&cfg).await?;
            let kind = match kind {
                LinkArg::Onboarding => gatehouse_core::service::LinkKind::Onboarding,
                LinkArg::Recovery => gatehouse_core::service::LinkKind::Recovery,
            };
            let to = core
                .app
                .send_link(&Login::parse(&login)?, kind, "admin:cli")
                .await?;
            println!("link queued for {to}; the server's outbox delivers it");
        }
        Command::Users {
            command:
                UsersCommand::Reset {
                    config,
                    login,
                    must_change,
                },
        } => {
            let cfg = load(&config)?;
            let core = Core::open(&cfg).await?;
            let login = Login::parse(&login)?;
            let mut pw = String::new();
            std::io::stdin().read_to_string(&mut pw)?;
            let pw = Password::new(pw.trim_end_matches(['\n', '\r']).to_owned());
            if let Err(e) = core.app.helpdesk_reset(&login, &pw, must_change).await {
                if let gatehouse_core::ServiceError::PasswordRejected(v) = &e {
                    for v in v {
                        eprintln!("  {}: {}", v.rule, v.message);
                    }
                }
                return Err(e.into());
            }
            println!(
                "password of {login} set{}",
                if must_change {
                    "; it must be changed at next logon"
                } else {
                    ""
                }
            );
        }
        Command::Users {
            command:
                UsersCommand::Add {
                    config,
                    login,
                    display_name,
                    email,
                    alternate_email,
                    groups,
                    password_stdin,
                },
        } => {
            let cfg = load(&config)?;
            let core = Core::open(&cfg).await?;
            let password = if password_stdin {
                let mut s = String::new();
                std::io::stdin().read_to_string(&mut s)?;
                Some(Password::new(s.trim_end_matches(['\r', '\n']).to_owned()))
            } else {
                None
            };
            if let Some(p) = &password {
                let violations = core.app.check_password(&login, p).await;
                if !violations.is_empty() {
                    for v in violations {
                        eprintln!("password: {}", v.message);
                    }
                    return Ok(ExitCode::from(2));
                }
            }
            let login = Login::parse(&login).context("--login")?;
            let user = NewUser {
                display_name: display_name.unwrap_or_else(|| login.to_string()),
                email: email
                    .as_deref()
                    .map(Email::parse)
                    .transpose()
                    .context("--email")?,
                alternate_email: alternate_email
                    .as_deref()
                    .map(Email::parse)
                    .transpose()
                    .context("--alternate-email")?,
                mobile_phone: None,
                groups,
                login,
                password,
            };
            let outcome = core.app.import_user(&user, "cli").await?;
            println!(
                "{} {}{}",
                if outcome.account_created {
                    "created"
                } else {
                    "updated"
                },
                user.login,
                if outcome.method_added {
                    " (alternate email registered)"
                } else {
                    ""
                }
            );
        }
        Command::Users {
            command: UsersCommand::Import { config, file },
        } => {
            let cfg = load(&config)?;
            let core = Core::open(&cfg).await?;
            let input =
                std::fs::File::open(&file).with_context(|| format!("cannot open {}", file.display()))?;
            let report = admin::import_csv(&core.app, input).await?;
            for (line, msg) in &report.errors {
                eprintln!("{}:{line}: {msg}", file.display());
            }
            println!(
                "{} rows: {} imported ({} new accounts, {} alternate emails registered), {} rejected",
                report.rows,
                report.rows - report.errors.len(),
                report.accounts_created,
                report.methods_added,
                report.errors.len()
            );
            if !report.errors.is_empty() {
                return Ok(ExitCode::from(1));
            }
        }
        Command::Audit {
            command:
                AuditCommand::Export {
                    config,
                    format,
                    since,
                    output,
                },
        } => {
            let cfg = load(&config)?;
            let core = Core::open(&cfg).await?;
            let since = since
                .map(|s| admin::parse_since(&s, core.clock.now()))
                .transpose()?;
            let n = match output {
                Some(path) => {
                    let f = std::fs::File::create(&path)
                        .with_context(|| format!("cannot create {}", path.display()))?;
                    admin::export_audit(&core.app, format, since, f).await?
                }
                None => admin::export_audit(&core.app, format, since, std::io::stdout().lock()).await?,
            };
            eprintln!("{n} audit events exported");
        }
    }
    Ok(ExitCode::SUCCESS)
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli).await {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(2)
        }
    }
}
