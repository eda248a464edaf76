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
    /// Delete entries older than N days now (what `audit.retention_days` does hourly); the chain
    /// stays verifiable from the oldest entry kept, and the deletion is itself audited.
    Prune {
        /// Entries written more than this many days ago go (0: all but the newest).
        #[arg(long)]
        older_than_days: u32,
    },
}

pub async fn run(cmd: &Cmd, config: Arc<Config>, passphrase_stdin: bool) -> anyhow::Result<()> {
    match cmd {
        Cmd::Prune { older_than_days } => {
            let settings = super::storage_settings(&config, passphrase_stdin)?;
            let opened = fieldvault_store::open(&settings, false).await?;
            let actor = Actor::Operator {
                os_user: super::os_user(),
            };
            let before = fieldvault_store::now_ms() - i64::from(*older_than_days) * 86_400_000;
            let n = audit::prune(opened.store.as_ref(), &actor, before).await;
            opened.store.close().await;
            println!("Deleted {} audit entries.", n?);
            Ok(())
        }
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
