//! `fieldvault audit …`

use std::sync::Arc;

use clap::Subcommand;
use fieldvault_core::Actor;
use fieldvault_server::config::Config;
use fieldvault_server::service::audit;
use fieldvault_store::audit_chain::Verified;

#[derive(Subcommand, Debug)]
pub enum Cmd {
    /// Check the audit log's hash chain; names the first edited, deleted or reordered entry and
    /// exits non-zero if there is one.
    Verify,
}

pub async fn run(cmd: &Cmd, config: Arc<Config>, passphrase_stdin: bool) -> anyhow::Result<()> {
    match cmd {
        Cmd::Verify => {
            let settings = super::storage_settings(&config, passphrase_stdin)?;
            let opened = fieldvault_store::open(&settings, false).await?;
            let actor = Actor::Operator {
                os_user: super::os_user(),
            };
            let verdict = audit::verify_all(opened.store.as_ref(), &actor).await?;
            opened.store.close().await;
            match verdict {
                Verified::Intact { entries } => {
                    println!("Audit log intact: {entries} entries, hash chain verified.");
                    Ok(())
                }
                Verified::Broken { seq, reason } => {
                    anyhow::bail!("audit log broken at entry {seq}: {reason}")
                }
            }
        }
    }
}
