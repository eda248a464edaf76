//! The KoboToolbox API's queries: records, bulk deletion, validation statuses, export tasks,
//! redaction rewrites.

/// Column list of `kobo_exports`.
macro_rules! kobo_export_cols {
    () => {
        "id, uid, project_id, form_id, user_id, settings, status, error, blob_name, file_name, \
         size, created_at, completed_at, expires_at"
    };
}

/// Column list of `kobo_export_settings`.
macro_rules! kobo_setting_cols {
    () => {
        "id, uid, project_id, form_id, name, settings, created_by, created_at, updated_at"
    };
}

/// The record query up to its WHERE clause.
macro_rules! kobo_record_select {
    () => {
        "SELECT s.id, s.instance_id AS root_instance_id, s.encrypted, s.created_at, \
         u.username AS submitted_by, s.validation_status, s.validation_by, s.validation_at, \
         v.id AS version_id, v.instance_id, v.form_version, v.form_def_id, v.xml_sealed \
         FROM submissions s \
         JOIN submission_versions v ON v.submission_id = s.id AND v.current = TRUE \
         LEFT JOIN users u ON u.id = s.submitter_user_id "
    };
}

/// Implements [`crate::KoboStore`] for `$store`; `$scrub` is the backend's statement that makes
/// freed space unreadable.
macro_rules! kobo_store_impl {
    ($store:ty, $begin:expr, $scrub:expr) => {
        #[async_trait::async_trait]
        impl $crate::KoboStore for $store {
            async fn kobo_records(
                &self,
                form_id: i64,
                after_id: i64,
                limit: i64,
            ) -> Result<Vec<$crate::KoboRecord>, $crate::StoreError> {
                Ok(sqlx::query_as(concat!(
                    $crate::sql::kobo_record_select!(),
                    "WHERE s.form_id = $1 AND s.deleted_at IS NULL AND s.id > $2 \
                     ORDER BY s.id LIMIT $3"
                ))
                .bind(form_id)
                .bind(after_id)
                .bind(limit)
                .fetch_all(&self.pool)
                .await?)
            }

            async fn kobo_records_at(
                &self,
                form_id: i64,
                offset: i64,
                limit: i64,
            ) -> Result<Vec<$crate::KoboRecord>, $crate::StoreError> {
                // The offset is walked in the live-rows index by id alone; only the page's rows
                // are joined to their versions and read.
                Ok(sqlx::query_as(concat!(
                    $crate::sql::kobo_record_select!(),
                    "WHERE s.id IN (SELECT id FROM submissions                      WHERE form_id = $1 AND deleted_at IS NULL                      ORDER BY id LIMIT $2 OFFSET $3)                      ORDER BY s.id"
                ))
                .bind(form_id)
                .bind(limit.max(0))
                .bind(offset.max(0))
                .fetch_all(&self.pool)
                .await?)
            }

            async fn kobo_record(
                &self,
                form_id: i64,
                id: i64,
            ) -> Result<Option<$crate::KoboRecord>, $crate::StoreError> {
                Ok(sqlx::query_as(concat!(
                    $crate::sql::kobo_record_select!(),
                    "WHERE s.form_id = $1 AND s.deleted_at IS NULL AND s.id = $2"
                ))
                .bind(form_id)
                .bind(id)
                .fetch_optional(&self.pool)
                .await?)
            }

            async fn kobo_count(
                &self,
                form_id: i64,
            ) -> Result<(i64, Option<i64>), $crate::StoreError> {
                self.live_count(form_id).await
            }

            async fn kobo_delete(&self, form_id: i64, ids: &[i64]) -> Result<u64, $crate::StoreError> {
                let mut ids = ids.to_vec();
                ids.sort_unstable();
                ids.dedup();
                let now = $crate::now_ms();
                let mut tx = self.pool.begin_with($begin).await?;
                for id in &ids {
                    let done = sqlx::query(
                        "UPDATE submissions SET deleted_at = $1 \
                         WHERE id = $2 AND form_id = $3 AND deleted_at IS NULL",
                    )
                    .bind(now)
                    .bind(id)
                    .bind(form_id)
                    .execute(&mut *tx)
                    .await?;
                    if done.rows_affected() == 0 {
                        tx.rollback().await?;
                        return Err($crate::StoreError::NotFound);
                    }
                }
                tx.commit().await?;
                Ok(ids.len() as u64)
            }

            async fn kobo_set_validation(
                &self,
                form_id: i64,
                ids: &[i64],
                status: Option<&str>,
                by: Option<&str>,
                at: i64,
            ) -> Result<u64, $crate::StoreError> {
                let mut ids = ids.to_vec();
                ids.sort_unstable();
                ids.dedup();
                let at = status.map(|_| at);
                let mut tx = self.pool.begin_with($begin).await?;
                for id in &ids {
                    let done = sqlx::query(
                        "UPDATE submissions SET validation_status = $1, validation_by = $2, \
                         validation_at = $3 WHERE id = $4 AND form_id = $5 AND deleted_at IS NULL",
                    )
                    .bind(status)
                    .bind(status.and(by))
                    .bind(at)
                    .bind(id)
                    .bind(form_id)
                    .execute(&mut *tx)
                    .await?;
                    if done.rows_affected() == 0 {
                        tx.rollback().await?;
                        return Err($crate::StoreError::NotFound);
                    }
                }
                tx.commit().await?;
                Ok(ids.len() as u64)
            }

            async fn kobo_issue_token(
                &self,
                user_id: i64,
                name: &str,
                token_hash: &[u8],
                scopes: &str,
                keep: i64,
            ) -> Result<$crate::ApiTokenRow, $crate::StoreError> {
                let mut tx = self.pool.begin_with($begin).await?;
                let row: $crate::ApiTokenRow = sqlx::query_as(concat!(
                    "INSERT INTO api_tokens (user_id, name, token_hash, scopes, created_at) \
                     VALUES ($1, $2, $3, $4, $5) RETURNING ",
                    $crate::sql::api_token_cols!()
                ))
                .bind(user_id)
                .bind(name)
                .bind(token_hash)
                .bind(scopes)
                .bind($crate::now_ms())
                .fetch_one(&mut *tx)
                .await?;
                sqlx::query(
                    "DELETE FROM api_tokens WHERE user_id = $1 AND name = $2 AND id NOT IN \
                     (SELECT id FROM api_tokens WHERE user_id = $1 AND name = $2 \
                      AND revoked_at IS NULL ORDER BY id DESC LIMIT $3)",
                )
                .bind(user_id)
                .bind(name)
                .bind(keep.max(1))
                .execute(&mut *tx)
                .await?;
                tx.commit().await?;
                Ok(row)
            }

            async fn create_kobo_export(
                &self,
                new: &$crate::NewKoboExport,
            ) -> Result<$crate::KoboExportRow, $crate::StoreError> {
                Ok(sqlx::query_as(concat!(
                    "INSERT INTO kobo_exports (uid, project_id, form_id, user_id, settings, status, \
                     created_at, expires_at) VALUES ($1, $2, $3, $4, $5, 'created', $6, $7) RETURNING ",
                    $crate::sql::kobo_export_cols!()
                ))
                .bind(&new.uid)
                .bind(new.project_id)
                .bind(new.form_id)
                .bind(new.user_id)
                .bind(&new.settings)
                .bind($crate::now_ms())
                .bind(new.expires_at)
                .fetch_one(&self.pool)
                .await?)
            }

            async fn kobo_export(
                &self,
                uid: &str,
            ) -> Result<Option<$crate::KoboExportRow>, $crate::StoreError> {
                Ok(sqlx::query_as(concat!(
                    "SELECT ",
                    $crate::sql::kobo_export_cols!(),
                    " FROM kobo_exports WHERE uid = $1"
                ))
                .bind(uid)
                .fetch_optional(&self.pool)
                .await?)
            }

            async fn kobo_exports(
                &self,
                form_id: i64,
                user_id: i64,
            ) -> Result<Vec<$crate::KoboExportRow>, $crate::StoreError> {
                Ok(sqlx::query_as(concat!(
                    "SELECT ",
                    $crate::sql::kobo_export_cols!(),
                    " FROM kobo_exports WHERE form_id = $1 AND user_id = $2 ORDER BY id DESC"
                ))
                .bind(form_id)
                .bind(user_id)
                .fetch_all(&self.pool)
                .await?)
            }

            async fn kobo_form_exports(
                &self,
                form_id: i64,
            ) -> Result<Vec<$crate::KoboExportRow>, $crate::StoreError> {
                Ok(sqlx::query_as(concat!(
                    "SELECT ",
                    $crate::sql::kobo_export_cols!(),
                    " FROM kobo_exports WHERE form_id = $1 ORDER BY id"
                ))
                .bind(form_id)
                .fetch_all(&self.pool)
                .await?)
            }

            async fn finish_kobo_export(
                &self,
                id: i64,
                status: &str,
                error: Option<&str>,
                file: Option<(&str, &str, i64)>,
            ) -> Result<(), $crate::StoreError> {
                let done = if matches!(status, "complete" | "error") {
                    Some($crate::now_ms())
                } else {
                    None
                };
                sqlx::query(
                    "UPDATE kobo_exports SET status = $1, error = $2, blob_name = $3, file_name = $4, \
                     size = $5, completed_at = $6 WHERE id = $7",
                )
                .bind(status)
                .bind(error)
                .bind(file.map(|f| f.0))
                .bind(file.map(|f| f.1))
                .bind(file.map(|f| f.2))
                .bind(done)
                .bind(id)
                .execute(&self.pool)
                .await?;
                Ok(())
            }

            async fn expired_kobo_exports(
                &self,
                now: i64,
            ) -> Result<Vec<$crate::KoboExportRow>, $crate::StoreError> {
                Ok(sqlx::query_as(concat!(
                    "SELECT ",
                    $crate::sql::kobo_export_cols!(),
                    " FROM kobo_exports WHERE expires_at <= $1 \
                     OR form_id IN (SELECT id FROM forms WHERE deleted_at IS NOT NULL) ORDER BY id"
                ))
                .bind(now)
                .fetch_all(&self.pool)
                .await?)
            }

            async fn delete_kobo_export(&self, id: i64) -> Result<(), $crate::StoreError> {
                sqlx::query("DELETE FROM kobo_exports WHERE id = $1")
                    .bind(id)
                    .execute(&self.pool)
                    .await?;
                Ok(())
            }

            async fn create_kobo_export_setting(
                &self,
                new: &$crate::NewKoboExportSetting,
            ) -> Result<$crate::KoboExportSettingRow, $crate::StoreError> {
                let now = $crate::now_ms();
                Ok(sqlx::query_as(concat!(
                    "INSERT INTO kobo_export_settings (uid, project_id, form_id, name, settings, \
                     created_by, created_at, updated_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $7) \
                     RETURNING ",
                    $crate::sql::kobo_setting_cols!()
                ))
                .bind(&new.uid)
                .bind(new.project_id)
                .bind(new.form_id)
                .bind(&new.name)
                .bind(&new.settings)
                .bind(new.created_by)
                .bind(now)
                .fetch_one(&self.pool)
                .await?)
            }

            async fn kobo_export_settings(
                &self,
                form_id: i64,
            ) -> Result<Vec<$crate::KoboExportSettingRow>, $crate::StoreError> {
                Ok(sqlx::query_as(concat!(
                    "SELECT ",
                    $crate::sql::kobo_setting_cols!(),
                    " FROM kobo_export_settings WHERE form_id = $1 ORDER BY id"
                ))
                .bind(form_id)
                .fetch_all(&self.pool)
                .await?)
            }

            async fn kobo_export_setting(
                &self,
                uid: &str,
            ) -> Result<Option<$crate::KoboExportSettingRow>, $crate::StoreError> {
                Ok(sqlx::query_as(concat!(
                    "SELECT ",
                    $crate::sql::kobo_setting_cols!(),
                    " FROM kobo_export_settings WHERE uid = $1"
                ))
                .bind(uid)
                .fetch_optional(&self.pool)
                .await?)
            }

            async fn update_kobo_export_setting(
                &self,
                id: i64,
                name: &str,
                settings: &str,
            ) -> Result<(), $crate::StoreError> {
                sqlx::query(
                    "UPDATE kobo_export_settings SET name = $1, settings = $2, updated_at = $3 \
                     WHERE id = $4",
                )
                .bind(name)
                .bind(settings)
                .bind($crate::now_ms())
                .bind(id)
                .execute(&self.pool)
                .await?;
                Ok(())
            }

            async fn delete_kobo_export_setting(&self, id: i64) -> Result<(), $crate::StoreError> {
                sqlx::query("DELETE FROM kobo_export_settings WHERE id = $1")
                    .bind(id)
                    .execute(&self.pool)
                    .await?;
                Ok(())
            }

            async fn redact(
                &self,
                rewrites: &[$crate::VersionRewrite],
                cleared_attachments: &[i64],
            ) -> Result<Vec<String>, $crate::StoreError> {
                let mut tx = self.pool.begin_with($begin).await?;
                for r in rewrites {
                    sqlx::query(
                        "UPDATE submission_versions SET xml_sealed = $1, xml_sha256 = $2, \
                         xml_size = $3, instance_name = CASE WHEN $4 THEN NULL ELSE instance_name END \
                         WHERE id = $5",
                    )
                    .bind(&r.xml_sealed)
                    .bind(&r.xml_sha256)
                    .bind(r.xml_size)
                    .bind(r.clear_instance_name)
                    .bind(r.version_id)
                    .execute(&mut *tx)
                    .await?;
                }
                let mut blobs = Vec::new();
                for id in cleared_attachments {
                    let old: Option<(Option<String>,)> = sqlx::query_as(
                        "SELECT blob_name FROM submission_attachments WHERE id = $1",
                    )
                    .bind(id)
                    .fetch_optional(&mut *tx)
                    .await?;
                    if let Some((Some(b),)) = old {
                        blobs.push(b);
                    }
                    sqlx::query(
                        "UPDATE submission_attachments SET blob_name = NULL, size = NULL, \
                         sha256 = NULL, content_type = NULL WHERE id = $1",
                    )
                    .bind(id)
                    .execute(&mut *tx)
                    .await?;
                }
                tx.commit().await?;
                blobs.sort();
                blobs.dedup();
                Ok(blobs)
            }

            async fn scrub(&self) -> Result<(), $crate::StoreError> {
                sqlx::query($scrub).execute(&self.pool).await?;
                Ok(())
            }
        }
    };
}

pub(crate) use {kobo_export_cols, kobo_record_select, kobo_setting_cols, kobo_store_impl};
