//! `fieldvault serve`

use std::sync::Arc;

use fieldvault_server::config::Config;
use fieldvault_server::{App, serve};

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Address to listen on (overrides `listen`), e.g. 0.0.0.0:8443.
    #[arg(long)]
    pub listen: Option<String>,
}

pub async fn run(_args: &Args, config: Arc<Config>, passphrase_stdin: bool) -> anyhow::Result<()> {
    super::init_logging(&config);
    let settings = super::storage_settings(&config, passphrase_stdin)?;
    let opened = fieldvault_store::open(&settings, true).await?;
    if opened.created_master_key {
        eprintln!(
            "Generated a new master key in {}. Keep a copy somewhere safe and separate: \
             without it this data cannot be read.",
            config.master_key_path().display()
        );
    }
    let scheme = if config.tls_enabled() {
        "https"
    } else {
        "http"
    };
    if opened.store.count_users().await? == 0 {
        eprintln!(
            "No accounts yet. Create the first administrator with:\n  \
             fieldvault user create admin --superuser --password-stdin --data-dir {}\n\
             (type the password, then Enter; at least 10 characters)",
            config.data_dir.display()
        );
    }
    tracing::info!(
        store = opened.store.backend().as_str(),
        blobs = opened.blobs.describe(),
        master_key = %opened.keyring.master().fingerprint(),
        "storage ready"
    );
    let app = App::new(config.clone(), &opened)?;
    let journal = match &config.backup_target {
        None => {
            fieldvault_server::service::backup::stop_change_journal(&config, &opened.keyring)
                .await?;
            tracing::warn!(
                "no backup target: this server keeps no backups; set backup.target and \
                 backup.key_file (see docs/operations/backup-and-restore.md)"
            );
            eprintln!(
                "WARNING: no backups are configured. Set backup.target (file:///path or \
                 s3://bucket/prefix) and backup.key_file."
            );
            None
        }
        Some(_) if config.database_url.is_none() => {
            fieldvault_server::service::backup::spawn_change_journal(
                config.clone(),
                opened.store.clone(),
                opened.blobs.clone(),
                opened.keyring.clone(),
                app.backup.clone(),
            )
        }
        Some(_) => {
            fieldvault_server::service::backup::spawn_scheduler(
                config.clone(),
                opened.store.clone(),
                opened.blobs.clone(),
                opened.keyring.clone(),
                app.backup.clone(),
            );
            None
        }
    };
    let store = opened.store.clone();
    serve::run(app, serve::shutdown_signal(), move |addr| {
        eprintln!("Fieldvault listening on {scheme}://{addr}");
    })
    .await
    .map_err(anyhow::Error::msg)?;
    if let Some(j) = journal {
        j.finish().await;
    }
    store.close().await;
    drop(opened.lock);
    eprintln!("Fieldvault stopped.");
    Ok(())
}
