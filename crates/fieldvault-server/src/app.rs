//! Application state shared by every request.

use std::sync::Arc;
use std::time::Instant;

use fieldvault_store::{BlobStore, Keyring, Store};

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
}

impl App {
    /// Assembles the state from opened storage. Starts the intake writer, so call it inside the
    /// runtime.
    pub fn new(config: Arc<Config>, opened: &fieldvault_store::Opened) -> Self {
        Self {
            config,
            store: opened.store.clone(),
            blobs: opened.blobs.clone(),
            keyring: opened.keyring.clone(),
            metrics: Arc::new(Metrics::default()),
            started: Instant::now(),
            ingest: crate::service::ingest_queue::IngestQueue::start(
                opened.store.clone(),
                opened.blobs.clone(),
            ),
            hot: Arc::new(crate::service::hot_cache::HotCache::default()),
            auth_cache: Arc::new(crate::auth_cache::AuthCache::default()),
        }
    }
}
