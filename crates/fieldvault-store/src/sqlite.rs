//! The embedded backend: SQLite encrypted as a whole by SQLCipher (M2).
//!
//! The SQLCipher key is a random 256-bit database key (not the master key), handed over in raw
//! form (`x'…'`) so no per-connection KDF runs. It is stored wrapped by the master key in
//! `keyring.json`, which lets `fieldvault keys rotate` change the master key without rewriting
//! the database. WAL mode with `synchronous = FULL`: a commit is on disk before it returns.

use std::path::Path;
use std::str::FromStr as _;
use std::time::Duration;

use fieldvault_crypto::Key256;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};

use crate::StoreError;

/// The SQLite/SQLCipher store.
pub struct SqliteStore {
    pub(crate) pool: sqlx::SqlitePool,
    /// The intake writer's own connection (see [`crate::sqlite_intake`]).
    intake: std::sync::Arc<crate::sqlite_intake::IntakeWriter>,
    /// Blocking bulk readers ([`crate::bulk_read`]), kept open between reads.
    readers: std::sync::Arc<crate::bulk_read::ReaderPool>,
    /// Collector-token lookups, valid until `app_users` or `form_assignments` change.
    tokens: std::sync::Arc<crate::token_cache::TokenCache>,
}

impl SqliteStore {
    /// Opens (creating if `create`) the database at `path` with `db_key`, and migrates it.
    pub async fn open(
        path: &Path,
        db_key: &Key256,
        create: bool,
        max_connections: u32,
    ) -> Result<Self, StoreError> {
        let url = format!("sqlite://{}", path.display());
        let key_pragma = format!(
            "\"x'{}'\"",
            fieldvault_crypto::random::to_hex(db_key.expose())
        );
        let opts = SqliteConnectOptions::from_str(&url)
            .map_err(|e| StoreError::Setup(format!("database path {}: {e}", path.display())))?
            .pragma("key", key_pragma)
            .create_if_missing(create)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Full)
            .foreign_keys(true)
            // Freed pages are zeroed, so a redacted or deleted value leaves no ciphertext behind
            // that the data key could still open (the file is SQLCipher-encrypted as a whole).
            .pragma("secure_delete", "ON")
            .busy_timeout(Duration::from_secs(10));
        let tokens = std::sync::Arc::new(crate::token_cache::TokenCache::default());
        let (on_connect, on_release) = (tokens.clone(), tokens.clone());
        let pool = SqlitePoolOptions::new()
            .max_connections(max_connections.max(1))
            .after_connect(move |conn, _| {
                let t = on_connect.clone();
                Box::pin(async move { t.watch(conn).await })
            })
            .after_release(move |conn, _| {
                let t = on_release.clone();
                Box::pin(async move { t.released(conn).await.map(|()| true) })
            })
            .connect_with(opts)
            .await
            .map_err(|e| open_error(path, e))?;
        // SQLCipher only checks the key when a page is read.
        sqlx::query("SELECT count(*) FROM sqlite_master")
            .execute(&pool)
            .await
            .map_err(|e| open_error(path, e))?;
        sqlx::migrate!("./migrations/sqlite")
            .run(&pool)
            .await
            .map_err(|e| StoreError::Setup(format!("database migration failed: {e}")))?;
        Ok(Self {
            pool,
            intake: std::sync::Arc::new(crate::sqlite_intake::IntakeWriter::new(
                crate::bulk_read::SqliteSource::new(path, db_key),
            )),
            readers: crate::bulk_read::ReaderPool::new(crate::bulk_read::SqliteSource::new(
                path, db_key,
            )),
            tokens,
        })
    }

    /// Closes the connections outside the pool: the bulk readers (waiting for those on loan to
    /// come back) and the intake writer's. SQLCipher's crypto library is torn down when the
    /// process exits; a connection still being closed by its worker thread then crashed the
    /// process after a clean shutdown, so every one is closed, and waited for, first.
    async fn close_own_connections(&self) {
        self.readers.close();
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while self.readers.on_loan() > 0 && std::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        // Waits for a batch being written (its lock), off the async threads.
        let intake = self.intake.clone();
        let _ = tokio::task::spawn_blocking(move || intake.close()).await;
    }

    /// [`crate::KoboStore::kobo_count`], on the bulk readers' position reader: its cache holds
    /// the index the count walks, where a pool connection's 2 MiB cache re-read and decrypted all
    /// of it for every page a client asked for (see [`crate::bulk_read`]).
    async fn live_count(&self, form_id: i64) -> Result<(i64, Option<i64>), StoreError> {
        let readers = self.readers.clone();
        tokio::task::spawn_blocking(move || readers.with_positions(|r| r.live_count(form_id)))
            .await
            .map_err(|e| StoreError::Backend(format!("bulk read: {e}")))?
    }

    /// [`crate::FormStore::app_user_with_forms_by_token_hash`], which every token-authenticated
    /// request asks: from [`crate::token_cache`] while no change to the tables it reads has
    /// begun since the answer was read, else from the database.
    ///
    /// Why: a pool connection's page cache is thrown away whenever another connection has
    /// committed, and during intake the writer commits between any two requests, so each
    /// lookup read and decrypted the same app-user and assignment pages again, on top of the
    /// hand-over to sqlx's worker thread and back.
    async fn app_user_by_token(
        &self,
        hash: &[u8],
    ) -> Result<Option<crate::token_cache::Collector>, StoreError> {
        let stamp = self.tokens.stamp();
        if let Some(hit) = self.tokens.get(stamp, hash) {
            return Ok(Some(hit));
        }
        let found = self.app_user_by_token_pooled(hash).await?;
        if let Some(c) = &found {
            self.tokens.put(stamp, hash, c);
        }
        Ok(found)
    }

    /// Writes an encrypted, consistent copy of the database to `dest` (`VACUUM INTO`).
    pub async fn snapshot_into(&self, dest: &Path) -> Result<(), StoreError> {
        sqlx::query("VACUUM INTO $1")
            .bind(dest.display().to_string())
            .execute(&self.pool)
            .await?;
        Ok(())
    }
}

impl SqliteStore {
    /// Intake of a batch: the new submissions in one transaction on the intake writer's own
    /// connection ([`crate::sqlite_intake`]), then the rest by the general path on the pool
    /// ([`crate::intake_split`]).
    async fn ingest_batch(
        &self,
        batch: &[crate::NewSubmission],
        used: &mut std::collections::HashSet<String>,
    ) -> Result<Vec<crate::IngestOutcome>, StoreError> {
        crate::intake_split::ingest_split(
            batch,
            used,
            |which| async move {
                let writer = self.intake.clone();
                // The writer needs the candidates on its own thread; copying them costs far less
                // than the hand-overs this call replaces.
                let items: Vec<(usize, crate::NewSubmission)> = which
                    .into_iter()
                    .filter_map(|i| batch.get(i).map(|s| (i, s.clone())))
                    .collect();
                tokio::task::spawn_blocking(move || writer.insert_new(&items))
                    .await
                    .map_err(|e| StoreError::Backend(format!("intake writer: {e}")))?
            },
            |items| async move { self.ingest_in_transaction(&items).await },
        )
        .await
    }
}

fn open_error(path: &Path, e: sqlx::Error) -> StoreError {
    match StoreError::from(e) {
        StoreError::Corrupt(_) => StoreError::Corrupt(format!(
            "{} cannot be read: the file is damaged or is not a Fieldvault database \
             (restore it from a backup)",
            path.display()
        )),
        StoreError::Unavailable(m) | StoreError::Backend(m) => {
            StoreError::Setup(format!("cannot open database {}: {m}", path.display()))
        }
        other => other,
    }
}

crate::sql::shared_store_impl!(SqliteStore, crate::Backend::Sqlite);
crate::sql::form_store_impl!(SqliteStore, sqlx::Sqlite, "BEGIN IMMEDIATE");
crate::sql::submission_store_impl!(SqliteStore, sqlx::Sqlite, "BEGIN IMMEDIATE");
crate::sql::token_store_impl!(SqliteStore);
crate::sql::kobo_store_impl!(
    SqliteStore,
    "BEGIN IMMEDIATE",
    "PRAGMA wal_checkpoint(TRUNCATE)"
);
crate::sql::audit_store_impl!(SqliteStore, "BEGIN IMMEDIATE", "");
crate::sql::throttle_store_impl!(SqliteStore, "BEGIN IMMEDIATE", "");
use crate::sql::to_state;
crate::sql::two_factor_store_impl!(SqliteStore);
crate::sql::project_key_store_impl!(SqliteStore, "BEGIN IMMEDIATE");
crate::sql::data_store_impl!(SqliteStore, "BEGIN IMMEDIATE");
crate::sql::lifecycle_store_impl!(SqliteStore, "BEGIN IMMEDIATE");
crate::sql::limit_store_impl!(SqliteStore, "BEGIN IMMEDIATE");

impl crate::BulkReadStore for SqliteStore {
    fn page_reader(&self) -> Option<Result<Box<dyn crate::PageReader>, StoreError>> {
        Some(self.readers.get())
    }
}

#[async_trait::async_trait]
impl crate::LeaderStore for SqliteStore {
    async fn try_lead(&self, _name: &str) -> Result<Option<crate::Leadership>, StoreError> {
        Ok(Some(crate::Leadership::sole()))
    }
}
