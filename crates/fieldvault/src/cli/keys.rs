//! `fieldvault keys …` (offline commands).

use std::sync::Arc;

use clap::Subcommand;
use fieldvault_server::config::Config;
use fieldvault_store::open::{RotateTo, rotate_master_key};

#[derive(Subcommand, Debug)]
pub enum Cmd {
    /// (offline) Re-wrap every data key under a new master key, without rewriting data.
    /// With a key file, the file is replaced; with FIELDVAULT_MASTER_KEY, the new key is printed
    /// for you to store. Safe to run again if interrupted.
    Rotate {
        /// Derive the new master key from a passphrase read from standard input.
        #[arg(long)]
        new_passphrase_stdin: bool,
    },
}

pub async fn run(cmd: &Cmd, config: Arc<Config>, passphrase_stdin: bool) -> anyhow::Result<()> {
    match cmd {
        Cmd::Rotate {
            new_passphrase_stdin,
        } => {
            let settings = super::storage_settings(&config, passphrase_stdin)?;
            let to = if *new_passphrase_stdin {
                RotateTo::Passphrase(super::read_secret_line("New passphrase: ", true)?)
            } else {
                RotateTo::RandomKey
            };
            let done = rotate_master_key(&settings, to).await?;
            eprintln!(
                "Re-wrapped {} data key(s). New master key fingerprint: {}.",
                done.data_keys, done.fingerprint
            );
            if let Some(k) = done.new_inline_key {
                eprintln!("Set FIELDVAULT_MASTER_KEY to the value below before the next start:");
                println!("{}", k.expose());
            }
            Ok(())
        }
    }
}
