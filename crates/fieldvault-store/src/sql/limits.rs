//! API budget counters, restrictions and notices.

/// Column list of `restrictions`.
macro_rules! restriction_cols {
    () => {
        "id, subject, mode, reason, created_at, lifted_at, lifted_by"
    };
}

/// Implements [`crate::LimitStore`] for `$store`.
macro_rules! limit_store_impl {
    ($store:ty, $begin:expr) => {
        #[async_trait::async_trait]
        impl $crate::LimitStore for $store {
            async fn budget_add(
                &self,
                deltas: &[$crate::limits::BudgetDelta],
            ) -> Result<Vec<i64>, $crate::StoreError> {
                let mut tx = self.pool.begin_with($begin).await?;
                let mut totals = Vec::with_capacity(deltas.len());
                for d in deltas {
                    let (total,): (i64,) = sqlx::query_as(
                        "INSERT INTO api_budget (k, window_start, attempts) VALUES ($1, $2, $3) \
                         ON CONFLICT (k, window_start) DO UPDATE \
                         SET attempts = api_budget.attempts + excluded.attempts \
                         RETURNING attempts",
                    )
                    .bind(&d.key)
                    .bind(d.window_start)
                    .bind(d.attempts)
                    .fetch_one(&mut *tx)
                    .await?;
                    totals.push(total);
                }
                tx.commit().await?;
                Ok(totals)
            }

            async fn budget_get(
                &self,
                key: &str,
                window_start: i64,
            ) -> Result<i64, $crate::StoreError> {
                let row: Option<(i64,)> = sqlx::query_as(
                    "SELECT attempts FROM api_budget WHERE k = $1 AND window_start = $2",
                )
                .bind(key)
                .bind(window_start)
                .fetch_optional(&self.pool)
                .await?;
                Ok(row.map_or(0, |r| r.0))
            }

            async fn budget_windows_over(
                &self,
                key: &str,
                since: i64,
                threshold: i64,
            ) -> Result<i64, $crate::StoreError> {
                let (n,): (i64,) = sqlx::query_as(
                    "SELECT COUNT(*) FROM api_budget \
                     WHERE k = $1 AND window_start >= $2 AND attempts >= $3",
                )
                .bind(key)
                .bind(since)
                .bind(threshold)
                .fetch_one(&self.pool)
                .await?;
                Ok(n)
            }

            async fn budget_reset(&self, key: &str) -> Result<(), $crate::StoreError> {
                sqlx::query("DELETE FROM api_budget WHERE k = $1")
                    .bind(key)
                    .execute(&self.pool)
                    .await?;
                Ok(())
            }

            async fn budget_prune(&self, before: i64) -> Result<u64, $crate::StoreError> {
                Ok(
                    sqlx::query("DELETE FROM api_budget WHERE window_start < $1")
                        .bind(before)
                        .execute(&self.pool)
                        .await?
                        .rows_affected(),
                )
            }

            async fn restrict(
                &self,
                subject: &str,
                mode: &str,
                reason: &str,
                notify: &[i64],
                now: i64,
            ) -> Result<Option<$crate::limits::RestrictionRow>, $crate::StoreError> {
                let mut tx = self.pool.begin_with($begin).await?;
                let row: Option<$crate::limits::RestrictionRow> = sqlx::query_as(concat!(
                    "INSERT INTO restrictions (subject, mode, reason, created_at) \
                     VALUES ($1, $2, $3, $4) ON CONFLICT (subject) WHERE lifted_at IS NULL \
                     DO NOTHING RETURNING ",
                    $crate::sql::restriction_cols!()
                ))
                .bind(subject)
                .bind(mode)
                .bind(reason)
                .bind(now)
                .fetch_optional(&mut *tx)
                .await?;
                let Some(row) = row else {
                    return Ok(None);
                };
                let message = format!("{subject} was restricted ({mode}): {reason}");
                for user in notify {
                    sqlx::query(
                        "INSERT INTO notices (user_id, kind, message, created_at) \
                         VALUES ($1, 'restriction.created', $2, $3)",
                    )
                    .bind(user)
                    .bind(&message)
                    .bind(now)
                    .execute(&mut *tx)
                    .await?;
                }
                tx.commit().await?;
                Ok(Some(row))
            }

            async fn active_restrictions(
                &self,
            ) -> Result<Vec<$crate::limits::RestrictionRow>, $crate::StoreError> {
                Ok(sqlx::query_as(concat!(
                    "SELECT ",
                    $crate::sql::restriction_cols!(),
                    " FROM restrictions WHERE lifted_at IS NULL ORDER BY id"
                ))
                .fetch_all(&self.pool)
                .await?)
            }

            async fn restrictions(
                &self,
                limit: i64,
            ) -> Result<Vec<$crate::limits::RestrictionRow>, $crate::StoreError> {
                Ok(sqlx::query_as(concat!(
                    "SELECT ",
                    $crate::sql::restriction_cols!(),
                    " FROM restrictions ORDER BY id DESC LIMIT $1"
                ))
                .bind(limit)
                .fetch_all(&self.pool)
                .await?)
            }

            async fn lift_restriction(
                &self,
                id: i64,
                by: &str,
                now: i64,
            ) -> Result<Option<$crate::limits::RestrictionRow>, $crate::StoreError> {
                let mut tx = self.pool.begin_with($begin).await?;
                let row: Option<$crate::limits::RestrictionRow> = sqlx::query_as(concat!(
                    "UPDATE restrictions SET lifted_at = $1, lifted_by = $2 \
                     WHERE id = $3 AND lifted_at IS NULL RETURNING ",
                    $crate::sql::restriction_cols!()
                ))
                .bind(now)
                .bind(by)
                .bind(id)
                .fetch_optional(&mut *tx)
                .await?;
                if let Some(r) = &row {
                    sqlx::query("DELETE FROM api_budget WHERE k = $1")
                        .bind(&r.subject)
                        .execute(&mut *tx)
                        .await?;
                }
                tx.commit().await?;
                Ok(row)
            }

            async fn superuser_ids(&self) -> Result<Vec<i64>, $crate::StoreError> {
                let rows: Vec<(i64,)> =
                    sqlx::query_as("SELECT id FROM users WHERE superuser AND active ORDER BY id")
                        .fetch_all(&self.pool)
                        .await?;
                Ok(rows.into_iter().map(|r| r.0).collect())
            }

            async fn notices(
                &self,
                user_id: i64,
                limit: i64,
            ) -> Result<Vec<$crate::limits::NoticeRow>, $crate::StoreError> {
                Ok(sqlx::query_as(
                    "SELECT id, user_id, kind, message, created_at, read_at FROM notices \
                     WHERE user_id = $1 ORDER BY id DESC LIMIT $2",
                )
                .bind(user_id)
                .bind(limit)
                .fetch_all(&self.pool)
                .await?)
            }

            async fn mark_notices_read(
                &self,
                user_id: i64,
                now: i64,
            ) -> Result<u64, $crate::StoreError> {
                Ok(sqlx::query(
                    "UPDATE notices SET read_at = $1 WHERE user_id = $2 AND read_at IS NULL",
                )
                .bind(now)
                .bind(user_id)
                .execute(&self.pool)
                .await?
                .rows_affected())
            }
        }
    };
}

pub(crate) use limit_store_impl;
pub(crate) use restriction_cols;
