//! Second-factor rows.

/// Implements [`crate::two_factor::TwoFactorStore`] for `$store`.
macro_rules! two_factor_store_impl {
    ($store:ty) => {
        #[async_trait::async_trait]
        impl $crate::two_factor::TwoFactorStore for $store {
            async fn ensure_data_key(&self, key: &$crate::DataKeyRow) -> Result<$crate::DataKeyRow, $crate::StoreError> {
                let mut tx = self.pool.begin().await?;
                sqlx::query("INSERT INTO data_keys (id, wrapped, created_at) VALUES ($1, $2, $3) ON CONFLICT (id) DO NOTHING")
                    .bind(&key.id)
                    .bind(&key.wrapped)
                    .bind(key.created_at)
                    .execute(&mut *tx)
                    .await?;
                let row = sqlx::query_as("SELECT id, wrapped, created_at FROM data_keys WHERE id = $1")
                    .bind(&key.id)
                    .fetch_one(&mut *tx)
                    .await?;
                tx.commit().await?;
                Ok(row)
            }

            async fn set_totp_pending(&self, user_id: i64, secret_sealed: &[u8]) -> Result<(), $crate::StoreError> {
                sqlx::query(
                    "INSERT INTO user_totp (user_id, secret_sealed, confirmed_at, last_step) VALUES ($1, $2, NULL, 0) \
                     ON CONFLICT (user_id) DO UPDATE SET secret_sealed = excluded.secret_sealed, confirmed_at = NULL, last_step = 0",
                )
                .bind(user_id)
                .bind(secret_sealed)
                .execute(&self.pool)
                .await?;
                Ok(())
            }

            async fn totp(&self, user_id: i64) -> Result<Option<$crate::two_factor::TotpRow>, $crate::StoreError> {
                Ok(sqlx::query_as("SELECT user_id, secret_sealed, confirmed_at, last_step FROM user_totp WHERE user_id = $1")
                    .bind(user_id)
                    .fetch_optional(&self.pool)
                    .await?)
            }

            async fn confirm_totp(&self, user_id: i64, step: i64, code_hashes: &[Vec<u8>]) -> Result<(), $crate::StoreError> {
                let mut tx = self.pool.begin().await?;
                let done = sqlx::query("UPDATE user_totp SET confirmed_at = $1, last_step = $2 WHERE user_id = $3")
                    .bind($crate::now_ms())
                    .bind(step)
                    .bind(user_id)
                    .execute(&mut *tx)
                    .await?;
                if done.rows_affected() == 0 {
                    return Err($crate::StoreError::NotFound);
                }
                sqlx::query("DELETE FROM recovery_codes WHERE user_id = $1").bind(user_id).execute(&mut *tx).await?;
                for h in code_hashes {
                    sqlx::query("INSERT INTO recovery_codes (user_id, code_hash) VALUES ($1, $2)")
                        .bind(user_id)
                        .bind(h)
                        .execute(&mut *tx)
                        .await?;
                }
                tx.commit().await?;
                Ok(())
            }

            async fn accept_totp_step(&self, user_id: i64, step: i64) -> Result<bool, $crate::StoreError> {
                let done = sqlx::query(
                    "UPDATE user_totp SET last_step = $1 WHERE user_id = $2 AND last_step < $1 AND confirmed_at IS NOT NULL",
                )
                .bind(step)
                .bind(user_id)
                .execute(&self.pool)
                .await?;
                Ok(done.rows_affected() == 1)
            }

            async fn use_recovery_code(&self, user_id: i64, code_hash: &[u8]) -> Result<bool, $crate::StoreError> {
                let done = sqlx::query(
                    "UPDATE recovery_codes SET used_at = $1 WHERE user_id = $2 AND code_hash = $3 AND used_at IS NULL",
                )
                .bind($crate::now_ms())
                .bind(user_id)
                .bind(code_hash)
                .execute(&self.pool)
                .await?;
                Ok(done.rows_affected() >= 1)
            }

            async fn delete_totp(&self, user_id: i64) -> Result<(), $crate::StoreError> {
                let mut tx = self.pool.begin().await?;
                sqlx::query("DELETE FROM recovery_codes WHERE user_id = $1").bind(user_id).execute(&mut *tx).await?;
                sqlx::query("DELETE FROM user_totp WHERE user_id = $1").bind(user_id).execute(&mut *tx).await?;
                tx.commit().await?;
                Ok(())
            }
        }
    };
}

pub(crate) use two_factor_store_impl;
