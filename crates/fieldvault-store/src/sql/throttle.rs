//! Login throttle rows.

/// Implements [`crate::throttle::ThrottleStore`] for `$store`.
macro_rules! throttle_store_impl {
    ($store:ty, $begin:expr, $lock:expr) => {
        #[async_trait::async_trait]
        impl $crate::throttle::ThrottleStore for $store {
            async fn throttle_state(
                &self,
                key: &str,
            ) -> Result<fieldvault_core::softlock::LockState, $crate::StoreError> {
                let row: Option<(i64, i64, i64, i64)> = sqlx::query_as(
                    "SELECT failures, window_start, locked_until, strikes FROM auth_throttle WHERE k = $1",
                )
                .bind(key)
                .fetch_optional(&self.pool)
                .await?;
                Ok(row.map(to_state).unwrap_or_default())
            }

            async fn throttle_update(
                &self,
                key: &str,
                f: &$crate::throttle::Transition<'_>,
            ) -> Result<fieldvault_core::softlock::LockState, $crate::StoreError> {
                let mut tx = self.pool.begin_with($begin).await?;
                sqlx::query(
                    "INSERT INTO auth_throttle (k, failures, window_start, locked_until, strikes) \
                     VALUES ($1, 0, 0, 0, 0) ON CONFLICT (k) DO NOTHING",
                )
                .bind(key)
                .execute(&mut *tx)
                .await?;
                let row: (i64, i64, i64, i64) = sqlx::query_as(concat!(
                    "SELECT failures, window_start, locked_until, strikes FROM auth_throttle WHERE k = $1",
                    $lock
                ))
                .bind(key)
                .fetch_one(&mut *tx)
                .await?;
                let next = f(to_state(row));
                sqlx::query(
                    "UPDATE auth_throttle SET failures = $1, window_start = $2, locked_until = $3, strikes = $4 \
                     WHERE k = $5",
                )
                .bind(i64::from(next.failures))
                .bind(next.window_start)
                .bind(next.locked_until)
                .bind(i64::from(next.strikes))
                .bind(key)
                .execute(&mut *tx)
                .await?;
                tx.commit().await?;
                Ok(next)
            }

            async fn throttle_clear(&self, key: &str) -> Result<(), $crate::StoreError> {
                sqlx::query("DELETE FROM auth_throttle WHERE k = $1")
                    .bind(key)
                    .execute(&self.pool)
                    .await?;
                Ok(())
            }
        }
    };
}

/// Row → state (counts are small and never negative; out-of-range values clamp).
pub(crate) fn to_state(r: (i64, i64, i64, i64)) -> fieldvault_core::softlock::LockState {
    fieldvault_core::softlock::LockState {
        failures: u32::try_from(r.0).unwrap_or(u32::MAX),
        window_start: r.1,
        locked_until: r.2,
        strikes: u32::try_from(r.3).unwrap_or(u32::MAX),
    }
}

pub(crate) use throttle_store_impl;
