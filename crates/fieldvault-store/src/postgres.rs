//! The scale-out backend: PostgreSQL shared by several stateless instances (M9).
//!
//! Migrations run under sqlx's PostgreSQL advisory lock, so instances starting together apply
//! each migration once. Contents are protected by the same per-project data keys as on SQLite;
//! whole-database encryption at rest is the PostgreSQL host's job (documented in the README).

use std::time::Duration;

use sqlx::postgres::PgPoolOptions;

use crate::StoreError;

/// The PostgreSQL store.
pub struct PgStore {
    pub(crate) pool: sqlx::PgPool,
}

impl PgStore {
    /// Every connection is the pool's, which [`crate::Store::close`] closes.
    async fn close_own_connections(&self) {}

    /// [`crate::KoboStore::kobo_count`]. Two sub-queries in one statement (one snapshot): alone,
    /// MAX is one index probe; together, the walk also stepped the MAX aggregate on every entry.
    async fn live_count(&self, form_id: i64) -> Result<(i64, Option<i64>), StoreError> {
        Ok(sqlx::query_as(
            "SELECT (SELECT COUNT(*) FROM submissions \
             WHERE form_id = $1 AND deleted_at IS NULL), \
             (SELECT MAX(created_at) FROM submissions \
             WHERE form_id = $1 AND deleted_at IS NULL)",
        )
        .bind(form_id)
        .fetch_one(&self.pool)
        .await?)
    }

    /// [`crate::FormStore::app_user_with_forms_by_token_hash`]: through the pool.
    async fn app_user_by_token(
        &self,
        hash: &[u8],
    ) -> Result<Option<crate::token_cache::Collector>, StoreError> {
        self.app_user_by_token_pooled(hash).await
    }

    /// Connects to `url` and applies pending migrations.
    pub async fn connect(url: &str, max_connections: u32) -> Result<Self, StoreError> {
        let pool = PgPoolOptions::new()
            .max_connections(max_connections.max(1))
            .acquire_timeout(Duration::from_secs(5))
            .connect(url)
            .await
            .map_err(|e| {
                StoreError::Setup(format!(
                    "cannot connect to PostgreSQL: {}",
                    redact_url_error(&e)
                ))
            })?;
        sqlx::migrate!("./migrations/postgres")
            .run(&pool)
            .await
            .map_err(|e| StoreError::Setup(format!("database migration failed: {e}")))?;
        Ok(Self { pool })
    }
}

/// sqlx errors never include the password, but keep only the first line for a one-line message.
fn redact_url_error(e: &sqlx::Error) -> String {
    e.to_string().lines().next().unwrap_or_default().to_owned()
}

crate::sql::shared_store_impl!(PgStore, crate::Backend::Postgres);
crate::sql::form_store_impl!(PgStore, sqlx::Postgres, "BEGIN");
crate::sql::submission_store_impl!(PgStore, sqlx::Postgres, "BEGIN");
crate::sql::token_store_impl!(PgStore);
crate::sql::kobo_store_impl!(
    PgStore,
    "BEGIN",
    "VACUUM submission_versions, submission_attachments, kobo_exports"
);
crate::sql::audit_store_impl!(PgStore, "BEGIN", " FOR UPDATE");
crate::sql::throttle_store_impl!(PgStore, "BEGIN", " FOR UPDATE");
use crate::sql::to_state;
crate::sql::two_factor_store_impl!(PgStore);
crate::sql::project_key_store_impl!(PgStore, "BEGIN");
crate::sql::data_store_impl!(PgStore, "BEGIN");
crate::sql::lifecycle_store_impl!(PgStore, "BEGIN");
crate::sql::limit_store_impl!(PgStore, "BEGIN");

/// Rows come over the pool: the server reads them on cores of its own.
impl crate::BulkReadStore for PgStore {}

#[async_trait::async_trait]
impl crate::LeaderStore for PgStore {
    async fn try_lead(&self, name: &str) -> Result<Option<crate::Leadership>, StoreError> {
        // A connection of its own, out of the pool: the session lock lives as long as it does,
        // and it never goes back to the pool still holding the lock.
        let mut conn = self.pool.acquire().await?.detach();
        let (got,): (bool,) = sqlx::query_as("SELECT pg_try_advisory_lock($1)")
            .bind(crate::leader::lock_key(name))
            .fetch_one(&mut conn)
            .await?;
        Ok(got.then(|| crate::Leadership::locked(conn)))
    }
}
