//! The audit log. The head row is locked for the append: `FOR UPDATE` on PostgreSQL; SQLite's
//! `BEGIN IMMEDIATE` already holds the database write lock, so its lock clause is empty.

/// Implements [`crate::audit_chain::AuditStore`] for `$store`.
macro_rules! audit_store_impl {
    ($store:ty, $begin:expr, $lock:expr) => {
        #[async_trait::async_trait]
        impl $crate::audit_chain::AuditStore for $store {
            async fn append_audit(
                &self,
                entry: &$crate::audit_chain::NewAudit,
            ) -> Result<$crate::audit_chain::AuditRow, $crate::StoreError> {
                let mut tx = self.pool.begin_with($begin).await?;
                sqlx::query("INSERT INTO audit_head (id, seq, hash) VALUES (1, 0, $1) ON CONFLICT (id) DO NOTHING")
                    .bind(vec![0u8; 32])
                    .execute(&mut *tx)
                    .await?;
                let (seq, prev): (i64, Vec<u8>) =
                    sqlx::query_as(concat!("SELECT seq, hash FROM audit_head WHERE id = 1", $lock))
                        .fetch_one(&mut *tx)
                        .await?;
                let seq = seq + 1;
                let at = $crate::now_ms();
                let hash = $crate::audit_chain::entry_hash(&prev, seq, at, entry);
                let row: $crate::audit_chain::AuditRow = sqlx::query_as(
                    "INSERT INTO audit_log (seq, at, actor, action, target, details, prev_hash, hash) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8) \
                     RETURNING id, seq, at, actor, action, target, details, prev_hash, hash",
                )
                .bind(seq)
                .bind(at)
                .bind(&entry.actor)
                .bind(&entry.action)
                .bind(&entry.target)
                .bind(&entry.details)
                .bind(&prev)
                .bind(hash.to_vec())
                .fetch_one(&mut *tx)
                .await?;
                sqlx::query("UPDATE audit_head SET seq = $1, hash = $2 WHERE id = 1")
                    .bind(seq)
                    .bind(hash.to_vec())
                    .execute(&mut *tx)
                    .await?;
                tx.commit().await?;
                Ok(row)
            }

            async fn audit_entries(
                &self,
                after_seq: i64,
                limit: i64,
            ) -> Result<Vec<$crate::audit_chain::AuditRow>, $crate::StoreError> {
                Ok(sqlx::query_as(
                    "SELECT id, seq, at, actor, action, target, details, prev_hash, hash FROM audit_log \
                     WHERE seq > $1 ORDER BY seq LIMIT $2",
                )
                .bind(after_seq)
                .bind(limit)
                .fetch_all(&self.pool)
                .await?)
            }

            async fn audit_head(&self) -> Result<Option<(i64, Vec<u8>)>, $crate::StoreError> {
                Ok(sqlx::query_as("SELECT seq, hash FROM audit_head WHERE id = 1")
                    .fetch_optional(&self.pool)
                    .await?)
            }

            async fn audit_entries_for_project(
                &self,
                project_id: i64,
                before_seq: i64,
                limit: i64,
            ) -> Result<Vec<$crate::audit_chain::AuditRow>, $crate::StoreError> {
                Ok(sqlx::query_as(
                    "SELECT id, seq, at, actor, action, target, details, prev_hash, hash FROM audit_log \
                     WHERE (target = $1 OR target LIKE $2) AND seq < $3 ORDER BY seq DESC LIMIT $4",
                )
                .bind(format!("project:{project_id}"))
                .bind(format!("project:{project_id}/%"))
                .bind(before_seq)
                .bind(limit)
                .fetch_all(&self.pool)
                .await?)
            }

            async fn audit_anchor(&self) -> Result<Option<(i64, Vec<u8>)>, $crate::StoreError> {
                let row: Option<(i64, Option<Vec<u8>>)> =
                    sqlx::query_as("SELECT anchor_seq, anchor_hash FROM audit_head WHERE id = 1")
                        .fetch_optional(&self.pool)
                        .await?;
                Ok(row.and_then(|(seq, hash)| hash.map(|h| (seq, h))))
            }

            async fn audit_prune(&self, before_at: i64) -> Result<u64, $crate::StoreError> {
                let mut tx = self.pool.begin_with($begin).await?;
                let head: Option<(i64,)> =
                    sqlx::query_as(concat!("SELECT seq FROM audit_head WHERE id = 1", $lock))
                        .fetch_optional(&mut *tx)
                        .await?;
                let Some((head_seq,)) = head else {
                    return Ok(0);
                };
                let last: Option<(i64, Vec<u8>)> = sqlx::query_as(
                    "SELECT seq, hash FROM audit_log WHERE at < $1 AND seq < $2 \
                     ORDER BY seq DESC LIMIT 1",
                )
                .bind(before_at)
                .bind(head_seq)
                .fetch_optional(&mut *tx)
                .await?;
                let Some((seq, hash)) = last else {
                    return Ok(0);
                };
                let deleted = sqlx::query("DELETE FROM audit_log WHERE seq <= $1")
                    .bind(seq)
                    .execute(&mut *tx)
                    .await?
                    .rows_affected();
                sqlx::query("UPDATE audit_head SET anchor_seq = $1, anchor_hash = $2 WHERE id = 1")
                    .bind(seq)
                    .bind(hash)
                    .execute(&mut *tx)
                    .await?;
                tx.commit().await?;
                Ok(deleted)
            }
        }
    };
}

pub(crate) use audit_store_impl;
