//! Invites, password resets, account flags, browser sessions and account deletion.

/// Implements [`crate::lifecycle::LifecycleStore`] for `$store`; `$begin` opens a write
/// transaction.
macro_rules! lifecycle_store_impl {
    ($store:ty, $begin:expr) => {
        #[async_trait::async_trait]
        impl $crate::lifecycle::LifecycleStore for $store {
            async fn create_invite(
                &self,
                new: &$crate::lifecycle::NewInvite,
            ) -> Result<$crate::lifecycle::InviteRow, $crate::StoreError> {
                Ok(sqlx::query_as(
                    "INSERT INTO invites (token_hash, created_by, created_at, expires_at, username, email) \
                     VALUES ($1, $2, $3, $4, $5, $6) RETURNING id, token_hash, created_by, created_at, \
                     expires_at, used_at, used_by, username, email",
                )
                .bind(&new.token_hash)
                .bind(new.created_by.map(|u| u.0))
                .bind($crate::now_ms())
                .bind(new.expires_at)
                .bind(&new.username)
                .bind(&new.email)
                .fetch_one(&self.pool)
                .await?)
            }

            async fn invite_by_hash(
                &self,
                token_hash: &[u8],
                now: i64,
            ) -> Result<Option<$crate::lifecycle::InviteRow>, $crate::StoreError> {
                Ok(sqlx::query_as(
                    "SELECT id, token_hash, created_by, created_at, expires_at, used_at, used_by, \
                     username, email FROM invites \
                     WHERE token_hash = $1 AND used_at IS NULL AND expires_at > $2",
                )
                .bind(token_hash)
                .bind(now)
                .fetch_optional(&self.pool)
                .await?)
            }

            async fn create_user_with_invite(
                &self,
                invite_id: i64,
                now: i64,
                new: &$crate::NewUser,
            ) -> Result<$crate::UserRow, $crate::StoreError> {
                let mut tx = self.pool.begin_with($begin).await?;
                let used = sqlx::query(
                    "UPDATE invites SET used_at = $1 WHERE id = $2 AND used_at IS NULL AND expires_at > $1",
                )
                .bind(now)
                .bind(invite_id)
                .execute(&mut *tx)
                .await?;
                if used.rows_affected() == 0 {
                    return Err($crate::StoreError::NotFound);
                }
                let user: $crate::UserRow = sqlx::query_as(concat!(
                    "INSERT INTO users (username, email, password_hash, superuser, active, created_at, must_reset_password) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7) RETURNING ",
                    $crate::sql::user_cols!()
                ))
                .bind(&new.username)
                .bind(&new.email)
                .bind(&new.password_hash)
                .bind(new.superuser)
                .bind(new.active)
                .bind(now)
                .bind(new.must_reset_password)
                .fetch_one(&mut *tx)
                .await?;
                sqlx::query("UPDATE invites SET used_by = $1 WHERE id = $2")
                    .bind(user.id)
                    .bind(invite_id)
                    .execute(&mut *tx)
                    .await?;
                tx.commit().await?;
                Ok(user)
            }

            async fn create_password_reset(
                &self,
                user_id: fieldvault_core::UserId,
                token_hash: &[u8],
                created_by: Option<fieldvault_core::UserId>,
                expires_at: i64,
            ) -> Result<$crate::lifecycle::PasswordResetRow, $crate::StoreError> {
                Ok(sqlx::query_as(
                    "INSERT INTO password_resets (user_id, token_hash, created_by, created_at, expires_at) \
                     VALUES ($1, $2, $3, $4, $5) \
                     RETURNING id, user_id, token_hash, created_by, created_at, expires_at, used_at",
                )
                .bind(user_id.0)
                .bind(token_hash)
                .bind(created_by.map(|u| u.0))
                .bind($crate::now_ms())
                .bind(expires_at)
                .fetch_one(&self.pool)
                .await?)
            }

            async fn password_reset_by_hash(
                &self,
                token_hash: &[u8],
                now: i64,
            ) -> Result<Option<$crate::lifecycle::PasswordResetRow>, $crate::StoreError> {
                Ok(sqlx::query_as(
                    "SELECT id, user_id, token_hash, created_by, created_at, expires_at, used_at \
                     FROM password_resets WHERE token_hash = $1 AND used_at IS NULL AND expires_at > $2",
                )
                .bind(token_hash)
                .bind(now)
                .fetch_optional(&self.pool)
                .await?)
            }

            async fn complete_password_reset(
                &self,
                reset_id: i64,
                now: i64,
                password_hash: &str,
            ) -> Result<fieldvault_core::UserId, $crate::StoreError> {
                let mut tx = self.pool.begin_with($begin).await?;
                let row: Option<(i64,)> = sqlx::query_as(
                    "UPDATE password_resets SET used_at = $1 \
                     WHERE id = $2 AND used_at IS NULL AND expires_at > $1 RETURNING user_id",
                )
                .bind(now)
                .bind(reset_id)
                .fetch_optional(&mut *tx)
                .await?;
                let Some((user_id,)) = row else {
                    return Err($crate::StoreError::NotFound);
                };
                let done = sqlx::query(
                    "UPDATE users SET password_hash = $1, must_reset_password = FALSE \
                     WHERE id = $2 AND deleted_at IS NULL",
                )
                .bind(password_hash)
                .bind(user_id)
                .execute(&mut *tx)
                .await?;
                if done.rows_affected() == 0 {
                    return Err($crate::StoreError::NotFound);
                }
                // Other outstanding links for the account are void once one is used.
                sqlx::query("UPDATE password_resets SET used_at = $1 WHERE user_id = $2 AND used_at IS NULL")
                    .bind(now)
                    .bind(user_id)
                    .execute(&mut *tx)
                    .await?;
                sqlx::query("DELETE FROM sessions WHERE user_id = $1")
                    .bind(user_id)
                    .execute(&mut *tx)
                    .await?;
                tx.commit().await?;
                Ok(fieldvault_core::UserId(user_id))
            }

            async fn change_password(
                &self,
                user_id: fieldvault_core::UserId,
                password_hash: &str,
                keep: Option<&[u8]>,
            ) -> Result<u64, $crate::StoreError> {
                let mut tx = self.pool.begin_with($begin).await?;
                let done = sqlx::query(
                    "UPDATE users SET password_hash = $1, must_reset_password = FALSE \
                     WHERE id = $2 AND deleted_at IS NULL",
                )
                .bind(password_hash)
                .bind(user_id.0)
                .execute(&mut *tx)
                .await?;
                if done.rows_affected() == 0 {
                    return Err($crate::StoreError::NotFound);
                }
                let ended = match keep {
                    Some(k) => sqlx::query("DELETE FROM sessions WHERE user_id = $1 AND token_hash <> $2")
                        .bind(user_id.0)
                        .bind(k)
                        .execute(&mut *tx)
                        .await?,
                    None => sqlx::query("DELETE FROM sessions WHERE user_id = $1")
                        .bind(user_id.0)
                        .execute(&mut *tx)
                        .await?,
                };
                tx.commit().await?;
                Ok(ended.rows_affected())
            }

            async fn set_must_reset_password(
                &self,
                user_id: fieldvault_core::UserId,
                on: bool,
            ) -> Result<(), $crate::StoreError> {
                let mut tx = self.pool.begin_with($begin).await?;
                let done = sqlx::query(
                    "UPDATE users SET must_reset_password = $1 WHERE id = $2 AND deleted_at IS NULL",
                )
                .bind(on)
                .bind(user_id.0)
                .execute(&mut *tx)
                .await?;
                if done.rows_affected() == 0 {
                    return Err($crate::StoreError::NotFound);
                }
                if on {
                    sqlx::query("DELETE FROM sessions WHERE user_id = $1")
                        .bind(user_id.0)
                        .execute(&mut *tx)
                        .await?;
                }
                tx.commit().await?;
                Ok(())
            }

            async fn set_require_2fa(
                &self,
                user_id: fieldvault_core::UserId,
                on: bool,
            ) -> Result<(), $crate::StoreError> {
                let done = sqlx::query(
                    "UPDATE users SET require_2fa = $1 WHERE id = $2 AND deleted_at IS NULL",
                )
                .bind(on)
                .bind(user_id.0)
                .execute(&self.pool)
                .await?;
                if done.rows_affected() == 0 {
                    return Err($crate::StoreError::NotFound);
                }
                Ok(())
            }

            async fn create_browser_session(
                &self,
                user_id: i64,
                token_hash: &[u8],
                expires_at: i64,
            ) -> Result<$crate::SessionRow, $crate::StoreError> {
                Ok(sqlx::query_as(concat!(
                    "INSERT INTO sessions (user_id, token_hash, created_at, expires_at, cookie, last_seen_at) \
                     VALUES ($1, $2, $3, $4, TRUE, $3) RETURNING ",
                    $crate::sql::session_cols!()
                ))
                .bind(user_id)
                .bind(token_hash)
                .bind($crate::now_ms())
                .bind(expires_at)
                .fetch_one(&self.pool)
                .await?)
            }

            async fn touch_session(&self, token_hash: &[u8], now: i64) -> Result<(), $crate::StoreError> {
                sqlx::query("UPDATE sessions SET last_seen_at = $1 WHERE token_hash = $2 AND last_seen_at < $1")
                    .bind(now)
                    .bind(token_hash)
                    .execute(&self.pool)
                    .await?;
                Ok(())
            }

            async fn count_active_superusers(&self) -> Result<i64, $crate::StoreError> {
                let (n,): (i64,) = sqlx::query_as(
                    "SELECT COUNT(*) FROM users WHERE superuser = TRUE AND active = TRUE AND deleted_at IS NULL",
                )
                .fetch_one(&self.pool)
                .await?;
                Ok(n)
            }

            async fn sole_managed_projects(
                &self,
                user_id: fieldvault_core::UserId,
            ) -> Result<Vec<$crate::ProjectRow>, $crate::StoreError> {
                Ok(sqlx::query_as($crate::sql::lifecycle::SOLE_MANAGED)
                    .bind(user_id.0)
                    .fetch_all(&self.pool)
                    .await?)
            }

            async fn delete_account(
                &self,
                user_id: fieldvault_core::UserId,
                now: i64,
            ) -> Result<Vec<$crate::ProjectRow>, $crate::StoreError> {
                let id = user_id.0;
                let mut tx = self.pool.begin_with($begin).await?;
                let exists: Option<(i64,)> =
                    sqlx::query_as("SELECT id FROM users WHERE id = $1 AND deleted_at IS NULL")
                        .bind(id)
                        .fetch_optional(&mut *tx)
                        .await?;
                if exists.is_none() {
                    return Err($crate::StoreError::NotFound);
                }
                let projects: Vec<$crate::ProjectRow> =
                    sqlx::query_as($crate::sql::lifecycle::SOLE_MANAGED)
                        .bind(id)
                        .fetch_all(&mut *tx)
                        .await?;
                for p in &projects {
                    sqlx::query("UPDATE projects SET deleted_at = $1, data_key_id = NULL WHERE id = $2")
                        .bind(now)
                        .bind(p.id)
                        .execute(&mut *tx)
                        .await?;
                    if let Some(key) = &p.data_key_id {
                        sqlx::query("DELETE FROM data_keys WHERE id = $1")
                            .bind(key)
                            .execute(&mut *tx)
                            .await?;
                    }
                }
                for q in [
                    "DELETE FROM project_roles WHERE user_id = $1",
                    "DELETE FROM sessions WHERE user_id = $1",
                    "DELETE FROM recovery_codes WHERE user_id = $1",
                    "DELETE FROM user_totp WHERE user_id = $1",
                    "DELETE FROM password_resets WHERE user_id = $1",
                ] {
                    sqlx::query(q).bind(id).execute(&mut *tx).await?;
                }
                sqlx::query("UPDATE api_tokens SET revoked_at = $1 WHERE user_id = $2 AND revoked_at IS NULL")
                    .bind(now)
                    .bind(id)
                    .execute(&mut *tx)
                    .await?;
                sqlx::query(
                    "UPDATE users SET username = $1, email = NULL, password_hash = '!deleted', \
                     active = FALSE, superuser = FALSE, must_reset_password = FALSE, require_2fa = FALSE, \
                     deleted_at = $2 WHERE id = $3",
                )
                // ':' is not allowed in usernames, so this cannot collide with a real one.
                .bind(format!("deleted:{id}"))
                .bind(now)
                .bind(id)
                .execute(&mut *tx)
                .await?;
                tx.commit().await?;
                Ok(projects)
            }
        }
    };
}

/// Undeleted projects in which `$1` is a manager and no other undeleted account is.
pub(crate) const SOLE_MANAGED: &str = "SELECT p.id, p.name, p.description, p.data_key_id, \
     p.created_by, p.created_at, p.updated_at, p.archived, p.deleted_at \
     FROM projects p JOIN project_roles r ON r.project_id = p.id \
     WHERE r.user_id = $1 AND r.role = 'manager' AND p.deleted_at IS NULL \
     AND NOT EXISTS (SELECT 1 FROM project_roles o JOIN users u ON u.id = o.user_id \
     WHERE o.project_id = p.id AND o.role = 'manager' AND o.user_id <> $1 \
     AND u.deleted_at IS NULL) ORDER BY p.id";

pub(crate) use lifecycle_store_impl;
