//! Forms, definitions, media, collectors, assignments and roles.

/// Column list of `forms`, in `FormRow` order.
macro_rules! form_cols {
    () => {
        "id, project_id, xml_form_id, state, anonymous, published_def_id, draft_def_id, \
         created_at, updated_at, deleted_at"
    };
}

/// Column list of `form_defs`.
macro_rules! def_cols {
    () => {
        "id, form_id, version, title, xml, md5, public_key, binary_fields, published_at, created_at"
    };
}

/// Column list of `app_users`.
macro_rules! app_user_cols {
    () => {
        "id, project_id, display_name, token_hash, created_by, created_at, revoked_at"
    };
}

/// A collector by token hash (not revoked), one row per assigned form (`assigned_form_id`,
/// NULL when none), sorted by form.
pub(crate) const APP_USER_BY_TOKEN: &str = "SELECT u.id, u.project_id, u.display_name, \
     u.token_hash, u.created_by, u.created_at, u.revoked_at, a.form_id AS assigned_form_id \
     FROM app_users u LEFT JOIN form_assignments a ON a.app_user_id = u.id \
     WHERE u.token_hash = $1 AND u.revoked_at IS NULL ORDER BY a.form_id";

/// Implements [`crate::FormStore`] for `$store` (a struct with a `pool` field).
macro_rules! form_store_impl {
    ($store:ty, $db:ty, $begin:expr) => {
        impl $store {
            /// Inserts a definition and its media slots inside `tx`.
            async fn insert_def(
                tx: &mut sqlx::Transaction<'_, $db>,
                form_id: i64,
                def: &$crate::NewFormDef,
                published: bool,
            ) -> Result<$crate::FormDefRow, $crate::StoreError> {
                let now = $crate::now_ms();
                let row: $crate::FormDefRow = sqlx::query_as(concat!(
                    "INSERT INTO form_defs (form_id, version, title, xml, md5, public_key, \
                     binary_fields, published_at, created_at) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) RETURNING ",
                    $crate::sql::def_cols!()
                ))
                .bind(form_id)
                .bind(&def.version)
                .bind(&def.title)
                .bind(&def.xml)
                .bind(&def.md5)
                .bind(&def.public_key)
                .bind(&def.binary_fields)
                .bind(published.then_some(now))
                .bind(now)
                .fetch_one(&mut **tx)
                .await?;
                for name in &def.media {
                    sqlx::query(
                        "INSERT INTO form_attachments (form_def_id, name) VALUES ($1, $2) \
                         ON CONFLICT (form_def_id, name) DO NOTHING",
                    )
                    .bind(row.id)
                    .bind(name)
                    .execute(&mut **tx)
                    .await?;
                }
                Ok(row)
            }
        }

        impl $store {
            /// [`crate::FormStore::app_user_with_forms_by_token_hash`] in the database (each
            /// backend's `app_user_by_token` decides whether to ask it).
            async fn app_user_by_token_pooled(
                &self,
                hash: &[u8],
            ) -> Result<Option<($crate::AppUserRow, Vec<i64>)>, $crate::StoreError> {
                let rows = sqlx::query($crate::sql::APP_USER_BY_TOKEN)
                    .bind(hash)
                    .fetch_all(&self.pool)
                    .await?;
                let Some(first) = rows.first() else {
                    return Ok(None);
                };
                let user: $crate::AppUserRow = sqlx::FromRow::from_row(first)?;
                let mut forms = Vec::with_capacity(rows.len());
                for r in &rows {
                    let f: Option<i64> = sqlx::Row::try_get(r, "assigned_form_id")?;
                    forms.extend(f);
                }
                Ok(Some((user, forms)))
            }
        }

        #[async_trait::async_trait]
        impl $crate::FormStore for $store {
            async fn create_form(
                &self,
                project: fieldvault_core::ProjectId,
                def: &$crate::NewFormDef,
                publish: bool,
            ) -> Result<($crate::FormRow, $crate::FormDefRow), $crate::StoreError> {
                let mut tx = self.pool.begin_with($begin).await?;
                let (form_id,): (i64,) = sqlx::query_as(
                    "INSERT INTO forms (project_id, xml_form_id, created_at) VALUES ($1, $2, $3) \
                     RETURNING id",
                )
                .bind(project.0)
                .bind(&def.xml_form_id)
                .bind($crate::now_ms())
                .fetch_one(&mut *tx)
                .await?;
                let d = Self::insert_def(&mut tx, form_id, def, publish).await?;
                let column = if publish { "published_def_id" } else { "draft_def_id" };
                let sql = format!("UPDATE forms SET {column} = $1 WHERE id = $2");
                // `column` is one of two literals above.
                sqlx::query(sqlx::AssertSqlSafe(sql))
                    .bind(d.id)
                    .bind(form_id)
                    .execute(&mut *tx)
                    .await?;
                let f: $crate::FormRow =
                    sqlx::query_as(concat!("SELECT ", $crate::sql::form_cols!(), " FROM forms WHERE id = $1"))
                        .bind(form_id)
                        .fetch_one(&mut *tx)
                        .await?;
                tx.commit().await?;
                Ok((f, d))
            }

            async fn replace_draft(
                &self,
                form_id: i64,
                def: &$crate::NewFormDef,
            ) -> Result<$crate::FormDefRow, $crate::StoreError> {
                let mut tx = self.pool.begin_with($begin).await?;
                let old: Option<(Option<i64>,)> =
                    sqlx::query_as("SELECT draft_def_id FROM forms WHERE id = $1 AND deleted_at IS NULL")
                        .bind(form_id)
                        .fetch_optional(&mut *tx)
                        .await?;
                let Some((old_draft,)) = old else {
                    return Err($crate::StoreError::NotFound);
                };
                let d = Self::insert_def(&mut tx, form_id, def, false).await?;
                sqlx::query("UPDATE forms SET draft_def_id = $1, updated_at = $2 WHERE id = $3")
                    .bind(d.id)
                    .bind($crate::now_ms())
                    .bind(form_id)
                    .execute(&mut *tx)
                    .await?;
                if let Some(old) = old_draft {
                    // A replaced draft was never published and nothing refers to it.
                    sqlx::query("DELETE FROM form_attachments WHERE form_def_id = $1")
                        .bind(old)
                        .execute(&mut *tx)
                        .await?;
                    sqlx::query("DELETE FROM form_defs WHERE id = $1 AND published_at IS NULL")
                        .bind(old)
                        .execute(&mut *tx)
                        .await?;
                }
                tx.commit().await?;
                Ok(d)
            }

            async fn publish_draft(&self, form_id: i64) -> Result<$crate::FormDefRow, $crate::StoreError> {
                let mut tx = self.pool.begin_with($begin).await?;
                let draft: Option<(Option<i64>,)> =
                    sqlx::query_as("SELECT draft_def_id FROM forms WHERE id = $1 AND deleted_at IS NULL")
                        .bind(form_id)
                        .fetch_optional(&mut *tx)
                        .await?;
                let Some((Some(def_id),)) = draft else {
                    return Err($crate::StoreError::NotFound);
                };
                let now = $crate::now_ms();
                let d: $crate::FormDefRow = sqlx::query_as(concat!(
                    "UPDATE form_defs SET published_at = $1 WHERE id = $2 RETURNING ",
                    $crate::sql::def_cols!()
                ))
                .bind(now)
                .bind(def_id)
                .fetch_one(&mut *tx)
                .await?;
                sqlx::query(
                    "UPDATE forms SET published_def_id = $1, draft_def_id = NULL, updated_at = $2 \
                     WHERE id = $3",
                )
                .bind(def_id)
                .bind(now)
                .bind(form_id)
                .execute(&mut *tx)
                .await?;
                tx.commit().await?;
                Ok(d)
            }

            async fn forms(
                &self,
                project: fieldvault_core::ProjectId,
            ) -> Result<Vec<$crate::FormRow>, $crate::StoreError> {
                Ok(sqlx::query_as(concat!(
                    "SELECT ",
                    $crate::sql::form_cols!(),
                    " FROM forms WHERE project_id = $1 AND deleted_at IS NULL ORDER BY xml_form_id"
                ))
                .bind(project.0)
                .fetch_all(&self.pool)
                .await?)
            }

            async fn form(
                &self,
                project: fieldvault_core::ProjectId,
                xml_form_id: &str,
            ) -> Result<Option<$crate::FormRow>, $crate::StoreError> {
                Ok(sqlx::query_as(concat!(
                    "SELECT ",
                    $crate::sql::form_cols!(),
                    " FROM forms WHERE project_id = $1 AND xml_form_id = $2 AND deleted_at IS NULL"
                ))
                .bind(project.0)
                .bind(xml_form_id)
                .fetch_optional(&self.pool)
                .await?)
            }

            async fn form_def(&self, id: i64) -> Result<Option<$crate::FormDefRow>, $crate::StoreError> {
                Ok(sqlx::query_as(concat!("SELECT ", $crate::sql::def_cols!(), " FROM form_defs WHERE id = $1"))
                    .bind(id)
                    .fetch_optional(&self.pool)
                    .await?)
            }

            async fn published_def_meta(
                &self,
                form_id: i64,
                version: &str,
            ) -> Result<Option<$crate::forms::FormDefMeta>, $crate::StoreError> {
                Ok(sqlx::query_as(
                    "SELECT id, version, public_key, binary_fields FROM form_defs \
                     WHERE form_id = $1 AND version = $2 AND published_at IS NOT NULL",
                )
                .bind(form_id)
                .bind(version)
                .fetch_optional(&self.pool)
                .await?)
            }

            async fn published_defs(
                &self,
                form_id: i64,
            ) -> Result<Vec<$crate::FormDefRow>, $crate::StoreError> {
                Ok(sqlx::query_as(concat!(
                    "SELECT ",
                    $crate::sql::def_cols!(),
                    " FROM form_defs WHERE form_id = $1 AND published_at IS NOT NULL ORDER BY id"
                ))
                .bind(form_id)
                .fetch_all(&self.pool)
                .await?)
            }

            async fn update_form(
                &self,
                form_id: i64,
                state: &str,
                anonymous: bool,
            ) -> Result<$crate::FormRow, $crate::StoreError> {
                sqlx::query_as(concat!(
                    "UPDATE forms SET state = $1, anonymous = $2, updated_at = $3 \
                     WHERE id = $4 AND deleted_at IS NULL RETURNING ",
                    $crate::sql::form_cols!()
                ))
                .bind(state)
                .bind(anonymous)
                .bind($crate::now_ms())
                .bind(form_id)
                .fetch_optional(&self.pool)
                .await?
                .ok_or($crate::StoreError::NotFound)
            }

            async fn delete_form(&self, form_id: i64) -> Result<(), $crate::StoreError> {
                let done = sqlx::query(
                    "UPDATE forms SET deleted_at = $1, xml_form_id = xml_form_id || ':deleted:' || id \
                     WHERE id = $2 AND deleted_at IS NULL",
                )
                .bind($crate::now_ms())
                .bind(form_id)
                .execute(&self.pool)
                .await?;
                if done.rows_affected() == 0 {
                    return Err($crate::StoreError::NotFound);
                }
                Ok(())
            }

            async fn form_attachments(
                &self,
                def_id: i64,
            ) -> Result<Vec<$crate::FormAttachmentRow>, $crate::StoreError> {
                Ok(sqlx::query_as(
                    "SELECT id, form_def_id, name, content_type, blob_name, md5, size, sealed_for_def \
                     FROM form_attachments WHERE form_def_id = $1 ORDER BY name",
                )
                .bind(def_id)
                .fetch_all(&self.pool)
                .await?)
            }

            async fn set_form_attachment(
                &self,
                def_id: i64,
                name: &str,
                content_type: Option<&str>,
                blob_name: &str,
                md5: &str,
                size: i64,
            ) -> Result<Option<String>, $crate::StoreError> {
                let mut tx = self.pool.begin_with($begin).await?;
                let old: Option<(Option<String>,)> = sqlx::query_as(
                    "SELECT blob_name FROM form_attachments WHERE form_def_id = $1 AND name = $2",
                )
                .bind(def_id)
                .bind(name)
                .fetch_optional(&mut *tx)
                .await?;
                let Some((previous,)) = old else {
                    return Err($crate::StoreError::NotFound);
                };
                sqlx::query(
                    "UPDATE form_attachments SET content_type = $1, blob_name = $2, md5 = $3, size = $4, \
                     sealed_for_def = NULL WHERE form_def_id = $5 AND name = $6",
                )
                .bind(content_type)
                .bind(blob_name)
                .bind(md5)
                .bind(size)
                .bind(def_id)
                .bind(name)
                .execute(&mut *tx)
                .await?;
                tx.commit().await?;
                Ok(previous)
            }

            async fn set_project_role(
                &self,
                project: fieldvault_core::ProjectId,
                user: fieldvault_core::UserId,
                role: &str,
            ) -> Result<(), $crate::StoreError> {
                sqlx::query(
                    "INSERT INTO project_roles (project_id, user_id, role, created_at) \
                     VALUES ($1, $2, $3, $4) \
                     ON CONFLICT (project_id, user_id) DO UPDATE SET role = excluded.role",
                )
                .bind(project.0)
                .bind(user.0)
                .bind(role)
                .bind($crate::now_ms())
                .execute(&self.pool)
                .await?;
                Ok(())
            }

            async fn project_role(
                &self,
                project: fieldvault_core::ProjectId,
                user: fieldvault_core::UserId,
            ) -> Result<Option<String>, $crate::StoreError> {
                let r: Option<(String,)> =
                    sqlx::query_as("SELECT role FROM project_roles WHERE project_id = $1 AND user_id = $2")
                        .bind(project.0)
                        .bind(user.0)
                        .fetch_optional(&self.pool)
                        .await?;
                Ok(r.map(|r| r.0))
            }

            async fn project_roles(
                &self,
                project: fieldvault_core::ProjectId,
                role: Option<&str>,
            ) -> Result<Vec<$crate::ProjectRoleRow>, $crate::StoreError> {
                Ok(sqlx::query_as(
                    "SELECT r.user_id, u.username, u.created_at AS user_created_at, r.role, r.created_at \
                     FROM project_roles r JOIN users u ON u.id = r.user_id \
                     WHERE r.project_id = $1 AND u.deleted_at IS NULL AND ($2 IS NULL OR r.role = $2) \
                     ORDER BY r.user_id",
                )
                .bind(project.0)
                .bind(role)
                .fetch_all(&self.pool)
                .await?)
            }

            async fn remove_project_role(
                &self,
                project: fieldvault_core::ProjectId,
                user: fieldvault_core::UserId,
                role: &str,
            ) -> Result<(), $crate::StoreError> {
                let done = sqlx::query(
                    "DELETE FROM project_roles WHERE project_id = $1 AND user_id = $2 AND role = $3",
                )
                .bind(project.0)
                .bind(user.0)
                .bind(role)
                .execute(&self.pool)
                .await?;
                if done.rows_affected() == 0 {
                    return Err($crate::StoreError::NotFound);
                }
                Ok(())
            }

            async fn create_app_user(
                &self,
                project: fieldvault_core::ProjectId,
                display_name: &str,
                token_hash: &[u8],
                created_by: Option<fieldvault_core::UserId>,
            ) -> Result<$crate::AppUserRow, $crate::StoreError> {
                Ok(sqlx::query_as(concat!(
                    "INSERT INTO app_users (project_id, display_name, token_hash, created_by, created_at) \
                     VALUES ($1, $2, $3, $4, $5) RETURNING ",
                    $crate::sql::app_user_cols!()
                ))
                .bind(project.0)
                .bind(display_name)
                .bind(token_hash)
                .bind(created_by.map(|u| u.0))
                .bind($crate::now_ms())
                .fetch_one(&self.pool)
                .await?)
            }

            async fn app_users(
                &self,
                project: fieldvault_core::ProjectId,
            ) -> Result<Vec<$crate::AppUserRow>, $crate::StoreError> {
                Ok(sqlx::query_as(concat!(
                    "SELECT ",
                    $crate::sql::app_user_cols!(),
                    " FROM app_users WHERE project_id = $1 ORDER BY id"
                ))
                .bind(project.0)
                .fetch_all(&self.pool)
                .await?)
            }

            async fn app_user_by_token_hash(
                &self,
                hash: &[u8],
            ) -> Result<Option<$crate::AppUserRow>, $crate::StoreError> {
                Ok(sqlx::query_as(concat!(
                    "SELECT ",
                    $crate::sql::app_user_cols!(),
                    " FROM app_users WHERE token_hash = $1 AND revoked_at IS NULL"
                ))
                .bind(hash)
                .fetch_optional(&self.pool)
                .await?)
            }

            async fn revoke_app_user(&self, id: i64) -> Result<(), $crate::StoreError> {
                let done = sqlx::query(
                    "UPDATE app_users SET revoked_at = $1 WHERE id = $2 AND revoked_at IS NULL",
                )
                .bind($crate::now_ms())
                .bind(id)
                .execute(&self.pool)
                .await?;
                if done.rows_affected() == 0 {
                    return Err($crate::StoreError::NotFound);
                }
                Ok(())
            }

            async fn assign_form(&self, app_user_id: i64, form_id: i64) -> Result<(), $crate::StoreError> {
                sqlx::query(
                    "INSERT INTO form_assignments (app_user_id, form_id) VALUES ($1, $2) \
                     ON CONFLICT (app_user_id, form_id) DO NOTHING",
                )
                .bind(app_user_id)
                .bind(form_id)
                .execute(&self.pool)
                .await?;
                Ok(())
            }

            async fn unassign_form(&self, app_user_id: i64, form_id: i64) -> Result<(), $crate::StoreError> {
                sqlx::query("DELETE FROM form_assignments WHERE app_user_id = $1 AND form_id = $2")
                    .bind(app_user_id)
                    .bind(form_id)
                    .execute(&self.pool)
                    .await?;
                Ok(())
            }

            async fn app_user_with_forms_by_token_hash(
                &self,
                hash: &[u8],
            ) -> Result<Option<($crate::AppUserRow, Vec<i64>)>, $crate::StoreError> {
                self.app_user_by_token(hash).await
            }

            async fn assigned_forms(&self, app_user_id: i64) -> Result<Vec<i64>, $crate::StoreError> {
                let rows: Vec<(i64,)> =
                    sqlx::query_as("SELECT form_id FROM form_assignments WHERE app_user_id = $1 ORDER BY form_id")
                        .bind(app_user_id)
                        .fetch_all(&self.pool)
                        .await?;
                Ok(rows.into_iter().map(|r| r.0).collect())
            }

            async fn counts(&self) -> Result<$crate::Counts, $crate::StoreError> {
                let (forms, form_defs, submissions, submission_versions, submission_attachments, received_attachments): (i64, i64, i64, i64, i64, i64) =
                    sqlx::query_as(
                        "SELECT (SELECT COUNT(*) FROM forms), (SELECT COUNT(*) FROM form_defs), \
                         (SELECT COUNT(*) FROM submissions), (SELECT COUNT(*) FROM submission_versions), \
                         (SELECT COUNT(*) FROM submission_attachments), \
                         (SELECT COUNT(*) FROM submission_attachments WHERE blob_name IS NOT NULL)",
                    )
                    .fetch_one(&self.pool)
                    .await?;
                Ok($crate::Counts {
                    forms,
                    form_defs,
                    submissions,
                    submission_versions,
                    submission_attachments,
                    received_attachments,
                })
            }
        }
    };
}

pub(crate) use {app_user_cols, def_cols, form_cols, form_store_impl};
