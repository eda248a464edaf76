//! Command-line interface. Doc comments on the clap types are the `--help` text.

mod audit;
mod backup;
mod config_cmd;
mod decrypt_tables;
mod keys;
mod odk_cmd;
mod progress;
mod pull;
mod serve;
mod tls_cmd;
mod user;

use std::io::BufRead as _;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use fieldvault_crypto::SecretString;
use fieldvault_server::config::{Config, KeySourceKind, LogFormat, Source};
use fieldvault_store::blob::{BlobSettings, S3Settings, parse_s3_url};
use fieldvault_store::{MasterKeySource, StorageSettings};

/// Fieldvault: a secure, self-hosted data-collection server for ODK Collect, KoboCollect and Enketo.
#[derive(Parser, Debug)]
#[command(version, about, long_about = None)]
pub struct Cli {
    /// Configuration file (default: ./fieldvault.toml when it exists).
    #[arg(long, global = true, env = "FIELDVAULT_CONFIG")]
    config: Option<PathBuf>,
    /// Data directory (overrides `data_dir`).
    #[arg(long, global = true)]
    data_dir: Option<PathBuf>,
    /// Read the master-key passphrase from standard input (with `master_key_source = "passphrase"`).
    #[arg(long, global = true)]
    master_passphrase_stdin: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Start the server (creates the data directory and master key on first start).
    Serve(serve::Args),
    /// Show the effective configuration or print the reference.
    #[command(subcommand)]
    Config(config_cmd::Cmd),
    /// Manage accounts.
    #[command(subcommand)]
    User(user::Cmd),
    /// Manage the master key (offline: stop the server first).
    #[command(subcommand)]
    Keys(keys::Cmd),
    /// The audit log.
    #[command(subcommand)]
    Audit(audit::Cmd),
    /// Encrypted backups to `backup.target`: take one (default), list, verify, keygen.
    Backup(backup::Args),
    /// Restore a backup into a new data directory (`--data-dir NEW`) or an empty PostgreSQL
    /// database (`--into-database-url`). Never overwrites existing data without --force.
    Restore(backup::RestoreArgs),
    /// Download submissions (encrypted envelopes as they are) into a directory, incrementally.
    Pull(pull::Args),
    /// TLS helpers.
    #[command(subcommand)]
    Tls(tls_cmd::Cmd),
    /// (offline) Generate an RSA key pair for an encrypted form: writes the private key,
    /// prints the public key for the form's `base64RsaPublicKey`.
    Keygen(odk_cmd::KeygenArgs),
    /// (offline) Encrypt a submission exactly as ODK Collect does (testing, migrations).
    EncryptSubmission(odk_cmd::EncryptArgs),
    /// (offline) Decrypt a directory of encrypted submissions (e.g. from `fieldvault pull`).
    Decrypt(odk_cmd::DecryptArgs),
}

/// Runs the parsed command.
pub async fn dispatch(cli: Cli) -> anyhow::Result<()> {
    match &cli.command {
        Command::Tls(cmd) => tls_cmd::run(cmd),
        Command::Keygen(args) => odk_cmd::run_keygen(args),
        Command::EncryptSubmission(args) => odk_cmd::run_encrypt(args),
        Command::Decrypt(args) => odk_cmd::run_decrypt(args),
        Command::Pull(args) => pull::run(args).await,
        Command::Config(config_cmd::Cmd::Reference) => {
            print!("{}", fieldvault_server::config::render_reference());
            Ok(())
        }
        _ => {
            let listen = match &cli.command {
                Command::Serve(a) => a.listen.clone(),
                _ => None,
            };
            let config = load_config(&cli, listen.as_deref())?;
            match &cli.command {
                Command::Serve(args) => serve::run(args, config, cli.master_passphrase_stdin).await,
                Command::Config(config_cmd::Cmd::Show) => {
                    print!("{}", config.render_effective());
                    Ok(())
                }
                Command::User(cmd) => user::run(cmd, config, cli.master_passphrase_stdin).await,
                Command::Keys(cmd) => keys::run(cmd, config, cli.master_passphrase_stdin).await,
                Command::Audit(cmd) => audit::run(cmd, config, cli.master_passphrase_stdin).await,
                Command::Backup(args) => {
                    backup::run(args, config, cli.master_passphrase_stdin).await
                }
                Command::Restore(args) => {
                    backup::restore(args, config, cli.master_passphrase_stdin).await
                }
                Command::Tls(_)
                | Command::Pull(_)
                | Command::Keygen(_)
                | Command::EncryptSubmission(_)
                | Command::Decrypt(_)
                | Command::Config(config_cmd::Cmd::Reference) => Ok(()),
            }
        }
    }
}

/// Defaults < file < environment < flags, then cross-checks.
fn load_config(cli: &Cli, listen: Option<&str>) -> anyhow::Result<Arc<Config>> {
    let mut config = Config::default();
    let file = cli.config.clone().or_else(|| {
        let p = PathBuf::from("fieldvault.toml");
        p.exists().then_some(p)
    });
    if let Some(f) = file {
        config.apply_file(&f)?;
    }
    config.apply_env(std::env::vars())?;
    if let Some(d) = &cli.data_dir {
        config
            .set("data_dir", &d.display().to_string(), Source::Flag)
            .map_err(|e| anyhow::anyhow!("--data-dir: {e}"))?;
    }
    if let Some(l) = listen {
        config
            .set("listen", l, Source::Flag)
            .map_err(|e| anyhow::anyhow!("--listen: {e}"))?;
    }
    config.validate()?;
    Ok(Arc::new(config))
}

/// Turns the configuration into storage settings, reading a passphrase if one is needed.
fn storage_settings(config: &Config, passphrase_stdin: bool) -> anyhow::Result<StorageSettings> {
    let master_key = if let Some(k) = &config.master_key {
        MasterKeySource::Inline(k.clone())
    } else if config.master_key_source == KeySourceKind::Passphrase {
        MasterKeySource::Passphrase(read_secret_line(
            "Master key passphrase: ",
            passphrase_stdin,
        )?)
    } else {
        MasterKeySource::File(config.master_key_path())
    };
    let blobs = match &config.blob_store {
        None => None,
        Some(url) => {
            let (bucket, prefix) = parse_s3_url(url)?;
            Some(BlobSettings::S3(S3Settings {
                bucket,
                prefix,
                endpoint: config.s3_endpoint.clone(),
                region: config.s3_region.clone(),
                access_key_id: config.s3_access_key_id.clone().unwrap_or_default(),
                secret_access_key: config.s3_secret_access_key.clone().unwrap_or_default(),
                allow_http: config.s3_allow_http,
            }))
        }
    };
    Ok(StorageSettings {
        data_dir: config.data_dir.clone(),
        database_url: config.database_url.clone(),
        blobs,
        master_key,
        max_connections: config.database_max_connections,
    })
}

/// Reads one line from standard input as a secret (the trailing newline removed).
fn read_secret_line(prompt: &str, from_stdin: bool) -> anyhow::Result<SecretString> {
    use std::io::IsTerminal as _;
    if !from_stdin && !std::io::stdin().is_terminal() {
        anyhow::bail!("a passphrase is needed: pass --master-passphrase-stdin and pipe it in");
    }
    if std::io::stdin().is_terminal() {
        eprint!("{prompt}");
    }
    let mut line = String::new();
    std::io::stdin()
        .lock()
        .read_line(&mut line)
        .context("cannot read standard input")?;
    let trimmed = line.trim_end_matches(['\n', '\r']).to_owned();
    zeroize::Zeroize::zeroize(&mut line);
    Ok(SecretString::new(trimmed))
}

/// Sets up logging on standard error (standard output carries the access log).
fn init_logging(config: &Config) {
    let filter = tracing_subscriber::EnvFilter::try_new(&config.log_level)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = match config.log_format {
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
        LogFormat::Text => builder.try_init(),
    };
}

/// The operating-system user, for the audit trail of CLI actions.
fn os_user() -> String {
    std::env::var("USER")
        .or_else(|_| std::env::var("LOGNAME"))
        .unwrap_or_else(|_| "unknown".into())
}
