//! Application state shared by every request.

use std::sync::Arc;
use std::time::Instant;

use fieldvault_store::intake_journal::JournalError;
use fieldvault_store::{BlobStore, Keyring, Store};

use crate::service::ingest_queue::IntakeHealth;

use crate::config::Config;
use crate::metrics::Metrics;

/// Everything a handler or service may need. Cheap to clone.
#[derive(Clone)]
pub struct App {
    /// Effective configuration.
    pub config: Arc<Config>,
    /// The database.
    pub store: Arc<dyn Store>,
    /// Encrypted blobs.
    pub blobs: BlobStore,
    /// Master key and data keys.
    pub keyring: Arc<Keyring>,
    /// Request and health metrics.
    pub metrics: Arc<Metrics>,
    /// Start time, for uptime.
    pub started: Instant,
    /// Group-commit queue for submissions.
    pub ingest: crate::service::ingest_queue::IngestQueue,
    /// Short-lived cache of intake lookups.
    pub hot: Arc<crate::service::hot_cache::HotCache>,
    /// Verified Basic credentials.
    pub auth_cache: Arc<crate::auth_cache::AuthCache>,
    /// Backups taken by this instance's scheduler.
    pub backup: crate::service::backup::SharedStatus,
    /// API budgets and restrictions in force (service::budget).
    pub budgets: Arc<crate::service::budget::Budgets>,
}

impl App {
    /// Assembles the state from opened storage: opens the intake journal
    /// (`<data_dir>/intake-journal`, under a key derived from the master key) and starts the
    /// intake writer, so call it inside the runtime.
    pub fn new(
        config: Arc<Config>,
        opened: &fieldvault_store::Opened,
    ) -> Result<Self, JournalError> {
        use fieldvault_store::intake_journal::{DIR, IntakeJournal, KEY_PURPOSE};
        let key = opened
            .keyring
            .master()
            .purpose_key(KEY_PURPOSE)
            .map_err(|e| JournalError::Io(e.to_string()))?;
        let journal = IntakeJournal::open(
            &config.data_dir.join(DIR),
            key,
            config.intake_journal_max_bytes,
        )?;
        let pending = journal.pending();
        if pending.0 > 0 {
            tracing::warn!(
                entries = pending.0,
                bytes = pending.1,
                "the intake journal holds submissions from an earlier run; replaying them"
            );
        }
        let health = Arc::new(IntakeHealth::new(Arc::new(journal)));
        Ok(Self {
            config,
            store: opened.store.clone(),
            blobs: opened.blobs.clone(),
            keyring: opened.keyring.clone(),
            metrics: Arc::new(Metrics::default()),
            started: Instant::now(),
            ingest: crate::service::ingest_queue::IngestQueue::start(
                opened.store.clone(),
                opened.blobs.clone(),
                health.clone(),
            ),
            hot: Arc::new(crate::service::hot_cache::HotCache::new(health)),
            auth_cache: Arc::new(crate::auth_cache::AuthCache::default()),
            backup: Arc::default(),
            budgets: Arc::default(),
        })
    }
}
