//! Backups (M8): taking one (CLI and the daily scheduler), listing, verifying, pruning. The
//! mechanics (layout, encryption, retention) are in `fieldvault_store::backup`; this room adds
//! the configuration, authorization, the audit trail and the schedule.

use std::path::Path;
use std::sync::Mutex;
use std::time::Duration;

use fieldvault_core::{Actor, Resource, Verb, authorize};
use fieldvault_store::backup::{self, BackupKey, Created, DatabaseSource, Manifest, Source};
use fieldvault_store::blob::{BlobSettings, S3Settings, parse_s3_url};
use fieldvault_store::{BlobStore, FormStore as _, Keyring, Store, StoreError};
use serde_json::json;

use super::ServiceError;
use crate::config::Config;

/// The backup state shown by `/metrics`.
#[derive(Debug, Default, Clone)]
pub struct BackupStatus {
    /// Unix seconds of the last successful backup by this instance.
    pub last_success: Option<i64>,
    /// Unix seconds of the last failed attempt.
    pub last_failure: Option<i64>,
    /// Result of the check of the last backup taken by this instance.
    pub last_check_ok: Option<bool>,
    /// Unix seconds of the last time the change journal was shipped complete (embedded store).
    pub journal_shipped_at: Option<i64>,
    /// Failed shipping attempts since start.
    pub journal_failures: u64,
}

/// Shared, updated by the scheduler.
pub type SharedStatus = std::sync::Arc<Mutex<BackupStatus>>;

/// Opens a backup target URL (`file:///path` or `s3://bucket/prefix`, the latter with the
/// `s3.*` connection settings).
pub fn open_target(url: &str, config: &Config) -> Result<BlobStore, ServiceError> {
    let settings = if let Some(path) = url.strip_prefix("file://") {
        if !path.starts_with('/') {
            return Err(invalid(format!("{url:?}: use file:///absolute/path")));
        }
        BlobSettings::Local(path.into())
    } else if url.starts_with("s3://") {
        let (bucket, prefix) = parse_s3_url(url)?;
        BlobSettings::S3(S3Settings {
            bucket,
            prefix,
            endpoint: config.s3_endpoint.clone(),
            region: config.s3_region.clone(),
            access_key_id: config.s3_access_key_id.clone().unwrap_or_default(),
            secret_access_key: config.s3_secret_access_key.clone().unwrap_or_default(),
            allow_http: config.s3_allow_http,
        })
    } else {
        return Err(invalid(format!(
            "{url:?} is not a backup target: use file:///path or s3://bucket/prefix"
        )));
    };
    Ok(BlobStore::open(&settings)?)
}

fn invalid(message: String) -> ServiceError {
    ServiceError::Invalid {
        code: "backup.invalid",
        message,
    }
}

/// The configured target, or an error saying how to set one.
pub fn configured_target(config: &Config) -> Result<BlobStore, ServiceError> {
    let url = config.backup_target.as_deref().ok_or_else(|| {
        invalid("no backup target: set backup.target (file:///path or s3://bucket/prefix)".into())
    })?;
    open_target(url, config)
}

/// Loads the configured backup key.
pub fn key(config: &Config) -> Result<BackupKey, ServiceError> {
    let path = config.backup_key_file.as_deref().ok_or_else(|| {
        invalid(
            "no backup key: set backup.key_file (create it with `fieldvault backup keygen`)".into(),
        )
    })?;
    Ok(BackupKey::load(path)?)
}

/// Takes a backup to the configured target, prunes by the retention policy, and audits both.
pub async fn take(
    actor: &Actor,
    config: &Config,
    store: &dyn Store,
    blobs: &BlobStore,
    keyring: &Keyring,
) -> Result<(Created, Vec<String>), ServiceError> {
    authorize(actor, Verb::ConfigRead, Resource::Site)?;
    let target = configured_target(config)?;
    let key = key(config)?;
    let scratch = backup::scratch_dir(&config.data_dir);
    std::fs::create_dir_all(&scratch).map_err(|e| ServiceError::Internal(e.to_string()))?;
    let database = match &config.database_url {
        None => DatabaseSource::Sqlite(keyring.master()),
        Some(url) => DatabaseSource::Postgres(url),
    };
    let source = Source {
        database,
        store,
        blobs,
        data_dir: &config.data_dir,
        master_key_fingerprint: keyring.master().fingerprint(),
        scratch: &scratch,
    };
    let created = backup::create(&source, &target, &key).await;
    let _ = std::fs::remove_dir_all(&scratch);
    let name = super::audit::actor_name(actor, None);
    let created = match created {
        Ok(c) => c,
        Err(e) => {
            let _ = super::audit::record(
                store,
                name,
                "backup.failed",
                None,
                json!({"error": e.to_string()}),
            )
            .await;
            return Err(e.into());
        }
    };
    let [d, w, m] = config.backup_keep;
    let pruned = backup::prune(&target, &key, d, w, m).await?;
    super::audit::record(
        store,
        name,
        "backup.created",
        Some(created.manifest.id.clone()),
        json!({
            "target": target.describe(),
            "blobs": created.manifest.blobs.len(),
            "blobs_copied": created.blobs_copied,
            "counts": created.manifest.counts,
            "pruned": pruned,
        }),
    )
    .await?;
    Ok((created, pruned))
}

/// Manifests of every backup on the configured target, oldest first.
pub async fn list(actor: &Actor, config: &Config) -> Result<Vec<Manifest>, ServiceError> {
    authorize(actor, Verb::ConfigRead, Resource::Site)?;
    let target = configured_target(config)?;
    let key = key(config)?;
    let mut out = Vec::new();
    for id in backup::list(&target).await? {
        out.push(backup::manifest(&target, &key, &id).await?);
    }
    Ok(out)
}

/// What `verify` found.
#[derive(Debug, Clone)]
pub struct Verified {
    /// The backup.
    pub manifest: Manifest,
    /// Objects decrypted and checked.
    pub objects: u64,
    /// Row counts of the restored copy, when it could be opened (embedded backups).
    pub restored_counts: Option<std::collections::BTreeMap<String, i64>>,
    /// The change journal on the target (embedded store): every segment read and checked.
    pub journal: fieldvault_store::pitr::JournalChecked,
}

/// Verifies backup `id` (the newest when `None`): restores it into scratch space under
/// `scratch_base`, decrypting every object and checking its hash; an embedded database is opened
/// with the master key and its row counts compared with the manifest's. The result goes to the
/// audit log.
pub async fn verify(
    actor: &Actor,
    config: &Config,
    store: &dyn Store,
    master: &fieldvault_crypto::MasterKey,
    id: Option<&str>,
    scratch_base: &Path,
) -> Result<Verified, ServiceError> {
    authorize(actor, Verb::ConfigRead, Resource::Site)?;
    let target = configured_target(config)?;
    let key = key(config)?;
    let id = match id {
        Some(i) => i.to_owned(),
        None => backup::list(&target)
            .await?
            .pop()
            .ok_or_else(|| invalid("there is no backup on the target yet".into()))?,
    };
    let scratch = backup::scratch_dir(scratch_base);
    let result = verify_into(&target, &key, &id, master, &scratch).await;
    let _ = std::fs::remove_dir_all(&scratch);
    let result = match result {
        Ok(mut v) => match fieldvault_store::pitr::check_journal(&target, &key).await {
            Ok(j) => {
                v.journal = j;
                Ok(v)
            }
            Err(e) => Err(e.into()),
        },
        Err(e) => Err(e),
    };
    let name = super::audit::actor_name(actor, None);
    match &result {
        Ok(v) => {
            super::audit::record(
                store,
                name,
                "backup.verified",
                Some(id.clone()),
                json!({
                    "objects": v.objects,
                    "counts": v.manifest.counts,
                    "journal_segments": v.journal.segments,
                }),
            )
            .await?;
        }
        Err(e) => {
            super::audit::record(
                store,
                name,
                "backup.verify_failed",
                Some(id.clone()),
                json!({"error": e.to_string()}),
            )
            .await?;
        }
    }
    result
}

async fn verify_into(
    target: &BlobStore,
    key: &BackupKey,
    id: &str,
    master: &fieldvault_crypto::MasterKey,
    scratch: &Path,
) -> Result<Verified, ServiceError> {
    std::fs::create_dir_all(scratch).map_err(|e| ServiceError::Internal(e.to_string()))?;
    let blobs = BlobStore::open(&BlobSettings::Local(scratch.join("blobs")))?;
    let m = backup::manifest(target, key, id).await?;
    if m.backend != "sqlite" {
        let (m, done) = backup::check(target, key, id).await?;
        return Ok(Verified {
            manifest: m,
            objects: done.objects,
            restored_counts: None,
            journal: Default::default(),
        });
    }
    let data = scratch.join("data");
    let (m, done) = backup::restore(
        target,
        key,
        id,
        &backup::RestoreInto::DataDir {
            dir: &data,
            blobs: &blobs,
        },
        false,
    )
    .await?;
    let copy = fieldvault_store::open::open_embedded(&data, master).await?;
    let counts = backup::counts_map(&copy.counts().await?);
    copy.close().await;
    if counts != m.counts {
        return Err(ServiceError::Store(StoreError::Corrupt(format!(
            "backup {id}: the restored database holds {counts:?}, the manifest says {:?}",
            m.counts
        ))));
    }
    Ok(Verified {
        manifest: m,
        objects: done.objects,
        restored_counts: Some(counts),
        journal: Default::default(),
    })
}

/// The leadership name of the backup schedule.
const SCHEDULER: &str = "backup-scheduler";
/// How often the scheduler looks whether a backup is due.
const CHECK_EVERY: Duration = Duration::from_secs(15 * 60);
/// A backup is due when the newest on the target is older than this.
const DAILY: i64 = 24 * 3600 * 1000;

/// Starts the daily schedule (when `backup.target` is set). With several instances sharing a
/// PostgreSQL database exactly one runs it: the holder of the `backup-scheduler` advisory lock
/// (`fieldvault_store::leader`). If it dies, the lock goes with its connection and another
/// instance takes over within [`CHECK_EVERY`] — and, finding no backup of the last day, takes
/// the one the dead leader did not finish.
pub fn spawn_scheduler(
    config: std::sync::Arc<Config>,
    store: std::sync::Arc<dyn Store>,
    blobs: BlobStore,
    keyring: std::sync::Arc<Keyring>,
    status: SharedStatus,
) {
    if config.backup_target.is_none() {
        return;
    }
    tokio::spawn(async move {
        let mut lead: Option<fieldvault_store::Leadership> = None;
        loop {
            if let Some(l) = lead.as_mut()
                && !l.still_held().await
            {
                tracing::warn!("lost the backup scheduler's lock; trying to take it again");
                lead = None;
            }
            if lead.is_none() {
                match store.try_lead(SCHEDULER).await {
                    Ok(Some(l)) => {
                        tracing::info!("this instance runs the backup schedule");
                        lead = Some(l);
                    }
                    Ok(None) => {}
                    Err(e) => tracing::warn!(error = %e, "cannot take the backup scheduler's lock"),
                }
            }
            if lead.is_none() {
                tokio::time::sleep(CHECK_EVERY).await;
                continue;
            }
            if let Err(e) = maybe_backup(&config, store.as_ref(), &blobs, &keyring, &status).await {
                tracing::error!(error = %e, "scheduled backup failed");
                if let Ok(mut s) = status.lock() {
                    s.last_failure = Some(fieldvault_store::now_ms() / 1000);
                }
            }
            tokio::time::sleep(CHECK_EVERY).await;
        }
    });
}

async fn maybe_backup(
    config: &Config,
    store: &dyn Store,
    blobs: &BlobStore,
    keyring: &Keyring,
    status: &SharedStatus,
) -> Result<(), ServiceError> {
    let target = configured_target(config)?;
    let now = fieldvault_store::now_ms();
    let newest = backup::list(&target)
        .await?
        .iter()
        .filter_map(|i| backup::id_time(i))
        .max();
    if newest.is_some_and(|t| now - t < DAILY) {
        return Ok(());
    }
    let actor = Actor::Operator {
        os_user: "scheduler".into(),
    };
    let (created, pruned) = take(&actor, config, store, blobs, keyring).await?;
    let key = key(config)?;
    let checked = backup::check(&target, &key, &created.manifest.id).await;
    if let Err(e) = &checked {
        tracing::error!(backup = %created.manifest.id, error = %e, "the new backup does not check out");
    }
    tracing::info!(
        backup = %created.manifest.id,
        blobs_copied = created.blobs_copied,
        pruned = pruned.len(),
        "scheduled backup taken"
    );
    if let Ok(mut s) = status.lock() {
        s.last_success = Some(now / 1000);
        s.last_check_ok = Some(checked.is_ok());
    }
    Ok(())
}

/// How often the change journal writes a mark (the granularity of point-in-time recovery).
const MARK_EVERY: Duration = Duration::from_secs(1);

/// Turns the embedded store's change journal on and keeps it flowing to the backup target (then
/// starts the daily schedule; PostgreSQL deployments start it directly):
/// a mark every second while there are changes, a shipment every `backup.journal_interval`
/// seconds (at most 60). When the journal starts a new timeline (first start with a target, or
/// a restored database) there is nothing to replay it onto yet, so a backup is taken at once.
///
/// Runs on a connection pool of its own, so a slow target never holds up a request.
pub fn spawn_change_journal(
    config: std::sync::Arc<Config>,
    store: std::sync::Arc<dyn Store>,
    blobs: BlobStore,
    keyring: std::sync::Arc<Keyring>,
    status: SharedStatus,
) -> Option<JournalHandle> {
    if config.backup_target.is_none() || config.database_url.is_some() {
        return None;
    }
    let (stop, mut stopped) = tokio::sync::watch::channel(false);
    let task = tokio::spawn(async move {
        let db = loop {
            let started = tokio::select! {
                r = start_journal(&config, store.as_ref(), &blobs, &keyring, &status) => r,
                _ = stopped.changed() => return,
            };
            match started {
                Ok(db) => break db,
                Err(e) => {
                    tracing::error!(error = %e, "cannot start the change journal; retrying in a minute");
                    tokio::select! {
                        _ = tokio::time::sleep(Duration::from_secs(60)) => {}
                        _ = stopped.changed() => return,
                    }
                }
            }
        };
        // After the journal's first backup, so the two never race to take the same one.
        spawn_scheduler(
            config.clone(),
            store.clone(),
            blobs.clone(),
            keyring.clone(),
            status.clone(),
        );
        match (configured_target(&config), key(&config)) {
            (Ok(t), Ok(k)) => {
                let mut shipper = fieldvault_store::pitr::Shipper::new(t, k);
                run_journal(&config, &db, &mut shipper, &blobs, &status, &mut stopped).await;
            }
            (Err(e), _) | (_, Err(e)) => {
                tracing::error!(error = %e, "the change journal cannot be shipped");
            }
        }
        db.close().await;
    });
    Some(JournalHandle { stop, task })
}

/// The running change journal; [`JournalHandle::finish`] ships what is left and closes it.
pub struct JournalHandle {
    stop: tokio::sync::watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

impl JournalHandle {
    /// Marks and ships the journal one last time and closes its database connection (a
    /// connection left running while the process exits can be cut off mid-statement). Waits
    /// at most 30 s; what is not shipped then stays in the database for the next start.
    pub async fn finish(self) {
        let _ = self.stop.send(true);
        if tokio::time::timeout(Duration::from_secs(30), self.task)
            .await
            .is_err()
        {
            tracing::warn!("the change journal did not finish shipping within 30 s");
        }
    }
}

async fn run_journal(
    config: &Config,
    db: &fieldvault_store::sqlite::SqliteStore,
    shipper: &mut fieldvault_store::pitr::Shipper,
    blobs: &BlobStore,
    status: &SharedStatus,
    stopped: &mut tokio::sync::watch::Receiver<bool>,
) {
    let every = Duration::from_secs(config.backup_journal_interval);
    let mut last_ship = std::time::Instant::now();
    loop {
        let last = tokio::select! {
            _ = tokio::time::sleep(MARK_EVERY) => false,
            _ = stopped.changed() => true,
        };
        if let Err(e) = db.journal_mark().await {
            tracing::warn!(error = %e, "cannot write a change-journal mark");
            if last {
                return;
            }
            continue;
        }
        if !last && last_ship.elapsed() < every {
            continue;
        }
        last_ship = std::time::Instant::now();
        match shipper.ship(db, blobs).await {
            Ok(done) => {
                if done.segments > 0 {
                    tracing::debug!(
                        segments = done.segments,
                        entries = done.entries,
                        blobs_copied = done.blobs_copied,
                        "change journal shipped"
                    );
                }
                if let Ok(mut s) = status.lock() {
                    s.journal_shipped_at = Some(fieldvault_store::now_ms() / 1000);
                }
            }
            Err(e) => {
                tracing::error!(error = %e, "shipping the change journal failed; it waits in the database");
                if let Ok(mut s) = status.lock() {
                    s.journal_failures += 1;
                }
            }
        }
        if last {
            return;
        }
    }
}

async fn start_journal(
    config: &Config,
    store: &dyn Store,
    blobs: &BlobStore,
    keyring: &Keyring,
    status: &SharedStatus,
) -> Result<fieldvault_store::sqlite::SqliteStore, ServiceError> {
    let db = fieldvault_store::open::open_embedded(&config.data_dir, keyring.master()).await?;
    end_restored_timeline(&db, config).await?;
    let before = db.journal_position().await?;
    let now = db.journal_enable().await?;
    tracing::info!(timeline = %now.timeline, "change journal on (point-in-time recovery)");
    if before.timeline != now.timeline {
        let actor = Actor::Operator {
            os_user: "scheduler".into(),
        };
        let (created, _) = take(&actor, config, store, blobs, keyring).await?;
        tracing::info!(backup = %created.manifest.id, "a new journal timeline starts from this backup");
        if let Ok(mut s) = status.lock() {
            s.last_success = Some(fieldvault_store::now_ms() / 1000);
        }
    }
    Ok(db)
}

/// Embedded store without a backup target: the journal is switched off (its triggers dropped,
/// unshipped rows deleted), since nothing would ever ship and empty it.
pub async fn stop_change_journal(config: &Config, keyring: &Keyring) -> Result<(), ServiceError> {
    if config.backup_target.is_some() || config.database_url.is_some() {
        return Ok(());
    }
    let db = fieldvault_store::open::open_embedded(&config.data_dir, keyring.master()).await?;
    let r = db.journal_disable().await;
    db.close().await;
    r?;
    end_restored_timeline_marker(config)
}

/// A restored database carries the timeline of the one it was copied from: end it here.
async fn end_restored_timeline(
    db: &fieldvault_store::sqlite::SqliteStore,
    config: &Config,
) -> Result<(), ServiceError> {
    if config
        .data_dir
        .join(fieldvault_store::open::JOURNAL_RESET_FILE)
        .exists()
    {
        db.journal_disable().await?;
        tracing::info!("restored database: its change journal starts a new timeline");
    }
    end_restored_timeline_marker(config)
}

fn end_restored_timeline_marker(config: &Config) -> Result<(), ServiceError> {
    match std::fs::remove_file(
        config
            .data_dir
            .join(fieldvault_store::open::JOURNAL_RESET_FILE),
    ) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(ServiceError::Internal(format!(
            "cannot remove the journal-reset marker: {e}"
        ))),
        _ => Ok(()),
    }
}
