//! Project encryption keys and the form re-versioning that goes with a key change.

/// Implements [`crate::ProjectKeyStore`] for `$store` (which also implements the forms family).
macro_rules! project_key_store_impl {
    ($store:ty, $begin:expr) => {
        #[async_trait::async_trait]
        impl $crate::ProjectKeyStore for $store {
            async fn project_public_key(
                &self,
                project: i64,
            ) -> Result<Option<$crate::ProjectKeyRow>, $crate::StoreError> {
                Ok(sqlx::query_as(
                    "SELECT id, project_id, public_key, created_by, created_at, retired_at \
                     FROM project_keys WHERE project_id = $1 AND retired_at IS NULL",
                )
                .bind(project)
                .fetch_optional(&self.pool)
                .await?)
            }

            async fn project_public_keys(
                &self,
                project: i64,
            ) -> Result<Vec<$crate::ProjectKeyRow>, $crate::StoreError> {
                Ok(sqlx::query_as(
                    "SELECT id, project_id, public_key, created_by, created_at, retired_at \
                     FROM project_keys WHERE project_id = $1 ORDER BY id",
                )
                .bind(project)
                .fetch_all(&self.pool)
                .await?)
            }

            async fn change_project_key(
                &self,
                project: i64,
                key: Option<&str>,
                by: Option<i64>,
                published: &[$crate::KeyedDef],
                drafts: &[$crate::KeyedDef],
            ) -> Result<Vec<$crate::FormDefRow>, $crate::StoreError> {
                let mut tx = self.pool.begin_with($begin).await?;
                let now = $crate::now_ms();
                sqlx::query(
                    "UPDATE project_keys SET retired_at = $1 \
                     WHERE project_id = $2 AND retired_at IS NULL",
                )
                .bind(now)
                .bind(project)
                .execute(&mut *tx)
                .await?;
                if let Some(key) = key {
                    sqlx::query(
                        "INSERT INTO project_keys (project_id, public_key, created_by, created_at) \
                         VALUES ($1, $2, $3, $4)",
                    )
                    .bind(project)
                    .bind(key)
                    .bind(by)
                    .bind(now)
                    .execute(&mut *tx)
                    .await?;
                }
                let mut out = Vec::with_capacity(published.len() + drafts.len());
                for k in published {
                    // Only the definition that is still the published one may be replaced: a
                    // concurrent publish makes this a conflict rather than a lost update.
                    let current: Option<(Option<i64>,)> = sqlx::query_as(
                        "SELECT published_def_id FROM forms WHERE id = $1 AND deleted_at IS NULL",
                    )
                    .bind(k.form_id)
                    .fetch_optional(&mut *tx)
                    .await?;
                    if current != Some((Some(k.old_def_id),)) {
                        return Err($crate::StoreError::Conflict {
                            constraint: "forms_published_def_changed".into(),
                        });
                    }
                    let d = Self::insert_def(&mut tx, k.form_id, &k.def, true).await?;
                    // The new definition serves the same media files as the one it replaces.
                    sqlx::query(
                        "UPDATE form_attachments SET \
                           content_type = (SELECT o.content_type FROM form_attachments o \
                             WHERE o.form_def_id = $1 AND o.name = form_attachments.name), \
                           blob_name = (SELECT o.blob_name FROM form_attachments o \
                             WHERE o.form_def_id = $1 AND o.name = form_attachments.name), \
                           md5 = (SELECT o.md5 FROM form_attachments o \
                             WHERE o.form_def_id = $1 AND o.name = form_attachments.name), \
                           size = (SELECT o.size FROM form_attachments o \
                             WHERE o.form_def_id = $1 AND o.name = form_attachments.name), \
                           sealed_for_def = (SELECT COALESCE(o.sealed_for_def, o.form_def_id) \
                             FROM form_attachments o \
                             WHERE o.form_def_id = $1 AND o.name = form_attachments.name) \
                         WHERE form_def_id = $2",
                    )
                    .bind(k.old_def_id)
                    .bind(d.id)
                    .execute(&mut *tx)
                    .await?;
                    sqlx::query("UPDATE forms SET published_def_id = $1, updated_at = $2 WHERE id = $3")
                        .bind(d.id)
                        .bind(now)
                        .bind(k.form_id)
                        .execute(&mut *tx)
                        .await?;
                    out.push(d);
                }
                for k in drafts {
                    let d: Option<$crate::FormDefRow> = sqlx::query_as(concat!(
                        "UPDATE form_defs SET xml = $1, md5 = $2, public_key = $3 \
                         WHERE id = $4 AND form_id = $5 AND published_at IS NULL RETURNING ",
                        $crate::sql::def_cols!()
                    ))
                    .bind(&k.def.xml)
                    .bind(&k.def.md5)
                    .bind(&k.def.public_key)
                    .bind(k.old_def_id)
                    .bind(k.form_id)
                    .fetch_optional(&mut *tx)
                    .await?;
                    out.push(d.ok_or($crate::StoreError::Conflict {
                        constraint: "forms_draft_changed".into(),
                    })?);
                }
                tx.commit().await?;
                Ok(out)
            }
        }
    };
}
pub(crate) use project_key_store_impl;
