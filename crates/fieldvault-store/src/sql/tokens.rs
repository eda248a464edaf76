//! Sessions and API tokens.

/// Column list of `api_tokens`.
macro_rules! api_token_cols {
    () => {
        "id, user_id, name, token_hash, scopes, created_at, expires_at, last_used_at, last_used_ip, revoked_at"
    };
}

/// Column list of `sessions`.
macro_rules! session_cols {
    () => {
        "id, user_id, token_hash, created_at, expires_at, cookie, last_seen_at"
    };
}

/// Implements [`crate::TokenStore`] for `$store`.
macro_rules! token_store_impl {
    ($store:ty) => {
        #[async_trait::async_trait]
        impl $crate::TokenStore for $store {
            async fn create_session(
                &self,
                user_id: i64,
                token_hash: &[u8],
                expires_at: i64,
            ) -> Result<$crate::tokens::SessionRow, $crate::StoreError> {
                let now = $crate::now_ms();
                Ok(sqlx::query_as(concat!(
                    "INSERT INTO sessions (user_id, token_hash, created_at, expires_at, last_seen_at) \
                     VALUES ($1, $2, $3, $4, $3) RETURNING ",
                    $crate::sql::session_cols!()
                ))
                .bind(user_id)
                .bind(token_hash)
                .bind(now)
                .bind(expires_at)
                .fetch_one(&self.pool)
                .await?)
            }

            async fn session_by_hash(
                &self,
                token_hash: &[u8],
                now: i64,
            ) -> Result<Option<$crate::tokens::SessionRow>, $crate::StoreError> {
                Ok(sqlx::query_as(concat!(
                    "SELECT ",
                    $crate::sql::session_cols!(),
                    " FROM sessions WHERE token_hash = $1 AND expires_at > $2"
                ))
                .bind(token_hash)
                .bind(now)
                .fetch_optional(&self.pool)
                .await?)
            }

            async fn delete_session(&self, token_hash: &[u8]) -> Result<bool, $crate::StoreError> {
                let done = sqlx::query("DELETE FROM sessions WHERE token_hash = $1")
                    .bind(token_hash)
                    .execute(&self.pool)
                    .await?;
                Ok(done.rows_affected() > 0)
            }

            async fn user_sessions(
                &self,
                user_id: i64,
                now: i64,
            ) -> Result<Vec<$crate::tokens::SessionRow>, $crate::StoreError> {
                Ok(sqlx::query_as(concat!(
                    "SELECT ",
                    $crate::sql::session_cols!(),
                    " FROM sessions WHERE user_id = $1 AND expires_at > $2 ORDER BY id DESC LIMIT 200"
                ))
                .bind(user_id)
                .bind(now)
                .fetch_all(&self.pool)
                .await?)
            }

            async fn delete_user_session(
                &self,
                user_id: i64,
                id: i64,
            ) -> Result<bool, $crate::StoreError> {
                let done = sqlx::query("DELETE FROM sessions WHERE user_id = $1 AND id = $2")
                    .bind(user_id)
                    .bind(id)
                    .execute(&self.pool)
                    .await?;
                Ok(done.rows_affected() > 0)
            }

            async fn delete_user_sessions(&self, user_id: i64) -> Result<u64, $crate::StoreError> {
                let done = sqlx::query("DELETE FROM sessions WHERE user_id = $1")
                    .bind(user_id)
                    .execute(&self.pool)
                    .await?;
                Ok(done.rows_affected())
            }

            async fn create_api_token(
                &self,
                user_id: i64,
                name: &str,
                token_hash: &[u8],
                scopes: &str,
                expires_at: Option<i64>,
            ) -> Result<$crate::tokens::ApiTokenRow, $crate::StoreError> {
                Ok(sqlx::query_as(concat!(
                    "INSERT INTO api_tokens (user_id, name, token_hash, scopes, created_at, expires_at) \
                     VALUES ($1, $2, $3, $4, $5, $6) RETURNING ",
                    $crate::sql::api_token_cols!()
                ))
                .bind(user_id)
                .bind(name)
                .bind(token_hash)
                .bind(scopes)
                .bind($crate::now_ms())
                .bind(expires_at)
                .fetch_one(&self.pool)
                .await?)
            }

            async fn api_tokens(&self, user_id: i64) -> Result<Vec<$crate::tokens::ApiTokenRow>, $crate::StoreError> {
                Ok(sqlx::query_as(concat!(
                    "SELECT ",
                    $crate::sql::api_token_cols!(),
                    " FROM api_tokens WHERE user_id = $1 ORDER BY id DESC"
                ))
                .bind(user_id)
                .fetch_all(&self.pool)
                .await?)
            }

            async fn api_token_by_hash(
                &self,
                token_hash: &[u8],
                now: i64,
            ) -> Result<Option<$crate::tokens::ApiTokenRow>, $crate::StoreError> {
                Ok(sqlx::query_as(concat!(
                    "SELECT ",
                    $crate::sql::api_token_cols!(),
                    " FROM api_tokens WHERE token_hash = $1 AND revoked_at IS NULL \
                     AND (expires_at IS NULL OR expires_at > $2)"
                ))
                .bind(token_hash)
                .bind(now)
                .fetch_optional(&self.pool)
                .await?)
            }

            async fn revoke_api_token(&self, user_id: i64, id: i64) -> Result<(), $crate::StoreError> {
                let done = sqlx::query(
                    "UPDATE api_tokens SET revoked_at = $1 WHERE id = $2 AND user_id = $3 AND revoked_at IS NULL",
                )
                .bind($crate::now_ms())
                .bind(id)
                .bind(user_id)
                .execute(&self.pool)
                .await?;
                if done.rows_affected() == 0 {
                    return Err($crate::StoreError::NotFound);
                }
                Ok(())
            }

            async fn touch_api_token(&self, id: i64, now: i64, ip: &str) -> Result<(), $crate::StoreError> {
                sqlx::query("UPDATE api_tokens SET last_used_at = $1, last_used_ip = $2 WHERE id = $3")
                    .bind(now)
                    .bind(ip)
                    .bind(id)
                    .execute(&self.pool)
                    .await?;
                Ok(())
            }
        }
    };
}

pub(crate) use {api_token_cols, session_cols, token_store_impl};
