//! Accounts, projects, data keys and metadata.

/// Column list of `users` (the fields of [`crate::UserRow`]).
macro_rules! user_cols {
    () => {
        "id, username, email, password_hash, superuser, active, created_at, must_reset_password, require_2fa"
    };
}

/// Implements [`crate::Store`] for `$store`, whose `pool` field is a `sqlx::Pool` of `$db`.
macro_rules! shared_store_impl {
    ($store:ty, $backend:expr) => {
        #[async_trait::async_trait]
        impl $crate::Store for $store {
            fn backend(&self) -> $crate::Backend {
                $backend
            }

            async fn close(&self) {
                self.close_own_connections().await;
                self.pool.close().await;
            }

            async fn health(&self) -> Result<(), $crate::StoreError> {
                sqlx::query("SELECT 1").execute(&self.pool).await?;
                Ok(())
            }

            async fn meta(&self, key: &str) -> Result<Option<Vec<u8>>, $crate::StoreError> {
                let row: Option<(Vec<u8>,)> = sqlx::query_as("SELECT v FROM fv_meta WHERE k = $1")
                    .bind(key)
                    .fetch_optional(&self.pool)
                    .await?;
                Ok(row.map(|r| r.0))
            }

            async fn meta_init(&self, key: &str, value: &[u8]) -> Result<Vec<u8>, $crate::StoreError> {
                let mut tx = self.pool.begin().await?;
                sqlx::query("INSERT INTO fv_meta (k, v) VALUES ($1, $2) ON CONFLICT (k) DO NOTHING")
                    .bind(key)
                    .bind(value)
                    .execute(&mut *tx)
                    .await?;
                let (v,): (Vec<u8>,) = sqlx::query_as("SELECT v FROM fv_meta WHERE k = $1")
                    .bind(key)
                    .fetch_one(&mut *tx)
                    .await?;
                tx.commit().await?;
                Ok(v)
            }

            async fn create_user(
                &self,
                new: &$crate::NewUser,
            ) -> Result<$crate::UserRow, $crate::StoreError> {
                Ok(sqlx::query_as(
                    concat!("INSERT INTO users (username, email, password_hash, superuser, active, created_at, must_reset_password) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7) RETURNING ", $crate::sql::user_cols!()),
                )
                .bind(&new.username)
                .bind(&new.email)
                .bind(&new.password_hash)
                .bind(new.superuser)
                .bind(new.active)
                .bind($crate::now_ms())
                .bind(new.must_reset_password)
                .fetch_one(&self.pool)
                .await?)
            }

            async fn set_user_active(&self, id: fieldvault_core::UserId, active: bool) -> Result<(), $crate::StoreError> {
                let done = sqlx::query("UPDATE users SET active = $1 WHERE id = $2 AND deleted_at IS NULL")
                    .bind(active)
                    .bind(id.0)
                    .execute(&self.pool)
                    .await?;
                if done.rows_affected() == 0 {
                    return Err($crate::StoreError::NotFound);
                }
                Ok(())
            }

            async fn update_password_hash(&self, id: fieldvault_core::UserId, hash: &str) -> Result<(), $crate::StoreError> {
                let done = sqlx::query("UPDATE users SET password_hash = $1 WHERE id = $2")
                    .bind(hash)
                    .bind(id.0)
                    .execute(&self.pool)
                    .await?;
                if done.rows_affected() == 0 {
                    return Err($crate::StoreError::NotFound);
                }
                Ok(())
            }

            async fn user_by_username(
                &self,
                username: &str,
            ) -> Result<Option<$crate::UserRow>, $crate::StoreError> {
                Ok(sqlx::query_as(concat!(
                    "SELECT ", $crate::sql::user_cols!(), " FROM users WHERE lower(username) = lower($1)"
                ))
                .bind(username)
                .fetch_optional(&self.pool)
                .await?)
            }

            async fn user_by_id(
                &self,
                id: fieldvault_core::UserId,
            ) -> Result<Option<$crate::UserRow>, $crate::StoreError> {
                Ok(sqlx::query_as(concat!(
                    "SELECT ", $crate::sql::user_cols!(), " FROM users WHERE id = $1"
                ))
                .bind(id.0)
                .fetch_optional(&self.pool)
                .await?)
            }

            async fn count_users(&self) -> Result<i64, $crate::StoreError> {
                let (n,): (i64,) = sqlx::query_as("SELECT COUNT(*) FROM users")
                    .fetch_one(&self.pool)
                    .await?;
                Ok(n)
            }

            async fn list_users(
                &self,
                contains: Option<&str>,
                limit: i64,
                offset: i64,
            ) -> Result<Vec<$crate::UserRow>, $crate::StoreError> {
                let pattern = contains.map(|c| {
                    let mut p = String::from("%");
                    for ch in c.to_lowercase().chars() {
                        if matches!(ch, '%' | '_' | '\\') {
                            p.push('\\');
                        }
                        p.push(ch);
                    }
                    p.push('%');
                    p
                });
                Ok(sqlx::query_as(concat!(
                    "SELECT ", $crate::sql::user_cols!(), " FROM users WHERE deleted_at IS NULL \
                     AND ($1 IS NULL OR lower(username) LIKE $1 ESCAPE '\\' \
                     OR lower(COALESCE(email, '')) LIKE $1 ESCAPE '\\') \
                     ORDER BY id LIMIT $2 OFFSET $3"
                ))
                .bind(pattern)
                .bind(limit)
                .bind(offset)
                .fetch_all(&self.pool)
                .await?)
            }

            async fn create_project(
                &self,
                new: &$crate::NewProject,
                key: &$crate::DataKeyRow,
            ) -> Result<$crate::ProjectRow, $crate::StoreError> {
                let mut tx = self.pool.begin().await?;
                sqlx::query("INSERT INTO data_keys (id, wrapped, created_at) VALUES ($1, $2, $3)")
                    .bind(&key.id)
                    .bind(&key.wrapped)
                    .bind(key.created_at)
                    .execute(&mut *tx)
                    .await?;
                let row = sqlx::query_as(
                    "INSERT INTO projects (name, description, data_key_id, created_by, created_at) \
                     VALUES ($1, $2, $3, $4, $5) \
                     RETURNING id, name, description, data_key_id, created_by, created_at, \
                     updated_at, archived, deleted_at",
                )
                .bind(&new.name)
                .bind(&new.description)
                .bind(&key.id)
                .bind(new.created_by.map(|u| u.0))
                .bind($crate::now_ms())
                .fetch_one(&mut *tx)
                .await?;
                tx.commit().await?;
                Ok(row)
            }

            async fn project(
                &self,
                id: fieldvault_core::ProjectId,
            ) -> Result<Option<$crate::ProjectRow>, $crate::StoreError> {
                Ok(sqlx::query_as(
                    "SELECT id, name, description, data_key_id, created_by, created_at, \
                     updated_at, archived, deleted_at FROM projects WHERE id = $1",
                )
                .bind(id.0)
                .fetch_optional(&self.pool)
                .await?)
            }

            async fn list_projects(&self) -> Result<Vec<$crate::ProjectRow>, $crate::StoreError> {
                Ok(sqlx::query_as(
                    "SELECT id, name, description, data_key_id, created_by, created_at, \
                     updated_at, archived, deleted_at FROM projects \
                     WHERE deleted_at IS NULL ORDER BY id",
                )
                .fetch_all(&self.pool)
                .await?)
            }

            async fn delete_project(&self, id: fieldvault_core::ProjectId) -> Result<(), $crate::StoreError> {
                let done = sqlx::query("UPDATE projects SET deleted_at = $1 WHERE id = $2 AND deleted_at IS NULL")
                    .bind($crate::now_ms())
                    .bind(id.0)
                    .execute(&self.pool)
                    .await?;
                if done.rows_affected() == 0 {
                    return Err($crate::StoreError::NotFound);
                }
                Ok(())
            }

            async fn update_project(
                &self,
                id: fieldvault_core::ProjectId,
                name: &str,
                description: Option<&str>,
                archived: bool,
            ) -> Result<$crate::ProjectRow, $crate::StoreError> {
                let row: Option<$crate::ProjectRow> = sqlx::query_as(
                    "UPDATE projects SET name = $1, description = $2, archived = $3, updated_at = $4 \
                     WHERE id = $5 AND deleted_at IS NULL \
                     RETURNING id, name, description, data_key_id, created_by, created_at, \
                     updated_at, archived, deleted_at",
                )
                .bind(name)
                .bind(description)
                .bind(archived)
                .bind($crate::now_ms())
                .bind(id.0)
                .fetch_optional(&self.pool)
                .await?;
                row.ok_or($crate::StoreError::NotFound)
            }

            async fn data_key(
                &self,
                id: &str,
            ) -> Result<Option<$crate::DataKeyRow>, $crate::StoreError> {
                Ok(
                    sqlx::query_as("SELECT id, wrapped, created_at FROM data_keys WHERE id = $1")
                        .bind(id)
                        .fetch_optional(&self.pool)
                        .await?,
                )
            }

            async fn destroy_data_key(&self, id: &str) -> Result<(), $crate::StoreError> {
                let mut tx = self.pool.begin().await?;
                sqlx::query("UPDATE projects SET data_key_id = NULL WHERE data_key_id = $1")
                    .bind(id)
                    .execute(&mut *tx)
                    .await?;
                let done = sqlx::query("DELETE FROM data_keys WHERE id = $1")
                    .bind(id)
                    .execute(&mut *tx)
                    .await?;
                if done.rows_affected() == 0 {
                    return Err($crate::StoreError::NotFound);
                }
                tx.commit().await?;
                Ok(())
            }

            async fn rewrap_data_keys(
                &self,
                rewrap: &$crate::Rewrap<'_>,
                new_key_check: &[u8],
            ) -> Result<u64, $crate::StoreError> {
                let mut tx = self.pool.begin().await?;
                let rows: Vec<$crate::DataKeyRow> =
                    sqlx::query_as("SELECT id, wrapped, created_at FROM data_keys ORDER BY id")
                        .fetch_all(&mut *tx)
                        .await?;
                let mut n = 0u64;
                for row in &rows {
                    let rewrapped = rewrap(&row.id, &row.wrapped)?;
                    sqlx::query("UPDATE data_keys SET wrapped = $1 WHERE id = $2")
                        .bind(rewrapped)
                        .bind(&row.id)
                        .execute(&mut *tx)
                        .await?;
                    n += 1;
                }
                sqlx::query(
                    "INSERT INTO fv_meta (k, v) VALUES ($1, $2) \
                     ON CONFLICT (k) DO UPDATE SET v = excluded.v",
                )
                .bind($crate::keyring::KEY_CHECK_META)
                .bind(new_key_check)
                .execute(&mut *tx)
                .await?;
                tx.commit().await?;
                Ok(n)
            }
        }
    };
}

pub(crate) use {shared_store_impl, user_cols};
