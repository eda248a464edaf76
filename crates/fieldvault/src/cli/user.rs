//! `fieldvault user …`

use std::sync::Arc;

use clap::Subcommand;
use fieldvault_core::Actor;
use fieldvault_server::config::Config;
use fieldvault_server::service::users::{self, NewAccount};

#[derive(Subcommand, Debug)]
pub enum Cmd {
    /// Create an account. The password is read from standard input.
    Create {
        /// Login name (letters, digits and @ . + - _).
        name: String,
        /// Make the account a site administrator.
        #[arg(long)]
        superuser: bool,
        /// Optional e-mail address.
        #[arg(long)]
        email: Option<String>,
        /// Read the password from standard input (one line). Required, so it never appears in
        /// the process list or shell history.
        #[arg(long, required = true)]
        password_stdin: bool,
    },
    /// Import accounts exported from KoboToolbox (CSV with header, or JSON): username, email,
    /// password (Django hash), is_superuser, is_active. Django PBKDF2 hashes keep working; other
    /// formats are imported locked until `set-password`.
    ImportKobo {
        /// The export file.
        file: std::path::PathBuf,
    },
    /// Set an account's password (read from standard input); ends its sessions.
    SetPassword {
        /// Login name.
        name: String,
        /// Read the password from standard input (one line). Required.
        #[arg(long, required = true)]
        password_stdin: bool,
    },
}

pub async fn run(cmd: &Cmd, config: Arc<Config>, passphrase_stdin: bool) -> anyhow::Result<()> {
    let actor = Actor::Operator {
        os_user: super::os_user(),
    };
    match cmd {
        Cmd::ImportKobo { file } => {
            let text = std::fs::read_to_string(file)
                .map_err(|e| anyhow::anyhow!("cannot read {}: {e}", file.display()))?;
            let records = fieldvault_server::service::import::parse(&text)?;
            let settings = super::storage_settings(&config, passphrase_stdin)?;
            let opened = fieldvault_store::open(&settings, true).await?;
            let report = fieldvault_server::service::import::import_kobo(
                opened.store.as_ref(),
                &actor,
                records,
            )
            .await?;
            opened.store.close().await;
            println!(
                "Imported {} account(s) with their passwords; {} need a new password; {} skipped.",
                report.created.len(),
                report.reset_required.len(),
                report.skipped.len()
            );
            for name in &report.reset_required {
                println!(
                    "  needs a password: {name}  (fieldvault user set-password {name} --password-stdin)"
                );
            }
            for (name, why) in &report.skipped {
                println!("  skipped {name}: {why}");
            }
            Ok(())
        }
        Cmd::SetPassword { name, .. } => {
            let settings = super::storage_settings(&config, passphrase_stdin)?;
            let password = super::read_secret_line("New password: ", true)?;
            let opened = fieldvault_store::open(&settings, false).await?;
            fieldvault_server::service::import::set_password(
                opened.store.as_ref(),
                &actor,
                name,
                password,
            )
            .await?;
            opened.store.close().await;
            println!("Password set for {name}; their sessions were ended.");
            Ok(())
        }
        Cmd::Create {
            name,
            superuser,
            email,
            password_stdin: _,
        } => {
            let settings = super::storage_settings(&config, passphrase_stdin)?;
            let password = super::read_secret_line("Password: ", true)?;
            let opened = fieldvault_store::open(&settings, true).await?;
            let actor = Actor::Operator {
                os_user: super::os_user(),
            };
            let user = users::create(
                opened.store.as_ref(),
                &actor,
                NewAccount {
                    username: name.clone(),
                    email: email.clone(),
                    password,
                    superuser: *superuser,
                },
                fieldvault_crypto::password::DEFAULT_ITERATIONS,
            )
            .await?;
            opened.store.close().await;
            println!(
                "Created {} {} (id {}).",
                if user.superuser {
                    "administrator"
                } else {
                    "user"
                },
                user.username,
                user.id
            );
            Ok(())
        }
    }
}
