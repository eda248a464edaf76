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
}

pub async fn run(cmd: &Cmd, config: Arc<Config>, passphrase_stdin: bool) -> anyhow::Result<()> {
    match cmd {
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
