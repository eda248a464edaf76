//! Bulk submission reads, review states, soft deletion and purge.

/// The `SELECT … FROM … JOIN` of a [`crate::SubmissionRecord`]; `$xml` is the expression for
/// `xml_sealed`. A current version without `deprecated_id` is the submission's only version (every
/// edit names the one it replaces), so its first version and edit count need no lookups: most
/// rows of a bulk read skip two index probes.
macro_rules! record_select {
    ($xml:literal) => {
        concat!(
            "SELECT s.id, s.instance_id, s.encrypted, s.review_state, s.submitter_user_id, \
             s.submitter_app_user_id, COALESCE(u.username, au.display_name) AS submitter_name, \
             s.device_id, s.created_at, s.updated_at, s.deleted_at, v.id AS version_id, \
             v.instance_id AS current_instance_id, v.instance_name, v.form_def_id, \
             CASE WHEN v.deprecated_id IS NULL THEN v.form_version ELSE \
              (SELECT f.form_version FROM submission_versions f WHERE f.submission_id = s.id \
              ORDER BY f.id LIMIT 1) END AS form_version, \
             CASE WHEN v.deprecated_id IS NULL THEN 0 ELSE \
              (SELECT COUNT(*) FROM submission_versions c WHERE c.submission_id = s.id) - 1 END \
              AS edits, \
             (SELECT COUNT(*) FROM submission_attachments a WHERE a.version_id = v.id) \
              AS attachments_expected, \
             (SELECT COUNT(*) FROM submission_attachments a WHERE a.version_id = v.id \
              AND a.blob_name IS NOT NULL) AS attachments_present, ",
            $xml,
            " AS xml_sealed \
             FROM submissions s \
             JOIN submission_versions v ON v.submission_id = s.id AND v.current = TRUE \
             LEFT JOIN users u ON u.id = s.submitter_user_id \
             LEFT JOIN app_users au ON au.id = s.submitter_app_user_id "
        )
    };
}

/// The page condition and order shared by both variants of the page query.
macro_rules! page_where {
    () => {
        "WHERE s.form_id = $1 \
         AND ($2 = 2 OR ($2 = 0 AND s.deleted_at IS NULL) OR ($2 = 1 AND s.deleted_at IS NOT NULL)) \
         AND (s.created_at < $3 OR (s.created_at = $3 AND s.id < $4)) \
         ORDER BY s.created_at DESC, s.id DESC LIMIT $5"
    };
}

/// Implements [`crate::DataStore`] for `$store`.
macro_rules! data_store_impl {
    ($store:ty, $begin:expr) => {
        #[async_trait::async_trait]
        impl $crate::DataStore for $store {
            async fn submission_page(
                &self,
                q: &$crate::PageQuery,
            ) -> Result<Vec<$crate::SubmissionRecord>, $crate::StoreError> {
                let sql = if q.with_xml {
                    concat!(
                        $crate::sql::record_select!("v.xml_sealed"),
                        $crate::sql::page_where!()
                    )
                } else {
                    concat!(
                        $crate::sql::record_select!("v.xml_sha256"),
                        $crate::sql::page_where!()
                    )
                };
                let mut rows: Vec<$crate::SubmissionRecord> = sqlx::query_as(sql)
                    .bind(q.form_id)
                    .bind($crate::data::deleted_code(q.deleted))
                    .bind(q.after.created_at)
                    .bind(q.after.id)
                    .bind(q.limit.max(0))
                    .fetch_all(&self.pool)
                    .await?;
                if !q.with_xml {
                    for r in &mut rows {
                        r.xml_sealed.clear();
                    }
                }
                Ok(rows)
            }

            async fn live_cursor_after(
                &self,
                form_id: i64,
                after: $crate::Cursor,
                skip: i64,
            ) -> Result<Option<$crate::Cursor>, $crate::StoreError> {
                if skip < 1 {
                    return Ok(Some(after));
                }
                let row: Option<(i64, i64)> = sqlx::query_as(
                    "SELECT created_at, id FROM submissions \
                     WHERE form_id = $1 AND deleted_at IS NULL \
                     AND (created_at < $2 OR (created_at = $2 AND id < $3)) \
                     ORDER BY created_at DESC, id DESC LIMIT 1 OFFSET $4",
                )
                .bind(form_id)
                .bind(after.created_at)
                .bind(after.id)
                .bind(skip - 1)
                .fetch_optional(&self.pool)
                .await?;
                Ok(row.map(|(created_at, id)| $crate::Cursor { created_at, id }))
            }

            async fn form_has_unfitted(&self, form_id: i64) -> Result<bool, $crate::StoreError> {
                // Literally the partial index's condition, so the planner can use it.
                let found: Option<i64> = sqlx::query_scalar(
                    "SELECT form_id FROM submission_versions \
                     WHERE form_id = $1 AND current = TRUE AND fits_form IS NOT TRUE LIMIT 1",
                )
                .bind(form_id)
                .fetch_optional(&self.pool)
                .await?;
                Ok(found.is_some())
            }

            async fn submission_record(
                &self,
                form_id: i64,
                instance_id: &str,
                with_xml: bool,
            ) -> Result<Option<$crate::SubmissionRecord>, $crate::StoreError> {
                let mut row: Option<$crate::SubmissionRecord> = sqlx::query_as(concat!(
                    $crate::sql::record_select!("v.xml_sealed"),
                    "WHERE s.form_id = $1 AND s.instance_id = $2"
                ))
                .bind(form_id)
                .bind(instance_id)
                .fetch_optional(&self.pool)
                .await?;
                if !with_xml && let Some(r) = row.as_mut() {
                    r.xml_sealed.clear();
                }
                Ok(row)
            }

            async fn set_review_state(
                &self,
                submission_id: i64,
                state: &str,
            ) -> Result<(), $crate::StoreError> {
                let done = sqlx::query(
                    "UPDATE submissions SET review_state = $1, updated_at = $2 \
                     WHERE id = $3 AND deleted_at IS NULL",
                )
                .bind(state)
                .bind($crate::now_ms())
                .bind(submission_id)
                .execute(&self.pool)
                .await?;
                if done.rows_affected() == 0 {
                    return Err($crate::StoreError::NotFound);
                }
                Ok(())
            }

            async fn set_submission_deleted(
                &self,
                submission_id: i64,
                deleted_at: Option<i64>,
            ) -> Result<(), $crate::StoreError> {
                let done = match deleted_at {
                    Some(t) => sqlx::query(
                        "UPDATE submissions SET deleted_at = $1 WHERE id = $2 AND deleted_at IS NULL",
                    )
                    .bind(t)
                    .bind(submission_id)
                    .execute(&self.pool)
                    .await?,
                    None => sqlx::query(
                        "UPDATE submissions SET deleted_at = NULL \
                         WHERE id = $1 AND deleted_at IS NOT NULL",
                    )
                    .bind(submission_id)
                    .execute(&self.pool)
                    .await?,
                };
                if done.rows_affected() == 0 {
                    return Err($crate::StoreError::NotFound);
                }
                Ok(())
            }

            async fn purge_deleted_submissions(
                &self,
                before: i64,
                limit: i64,
            ) -> Result<$crate::Purged, $crate::StoreError> {
                let mut tx = self.pool.begin_with($begin).await?;
                let victims: Vec<(i64, i64, String)> = sqlx::query_as(
                    "SELECT id, form_id, instance_id FROM submissions \
                     WHERE deleted_at IS NOT NULL AND deleted_at < $1 ORDER BY id LIMIT $2",
                )
                .bind(before)
                .bind(limit.max(0))
                .fetch_all(&mut *tx)
                .await?;
                let mut out = $crate::Purged::default();
                for (id, form_id, instance_id) in victims {
                    let blobs: Vec<(String,)> = sqlx::query_as(
                        "SELECT DISTINCT a.blob_name FROM submission_attachments a \
                         JOIN submission_versions v ON v.id = a.version_id \
                         WHERE v.submission_id = $1 AND a.blob_name IS NOT NULL",
                    )
                    .bind(id)
                    .fetch_all(&mut *tx)
                    .await?;
                    out.blobs.extend(blobs.into_iter().map(|(b,)| b));
                    // Overwrite before deleting, so the ciphertext does not linger in a page
                    // that is merely marked free.
                    sqlx::query(
                        "UPDATE submission_versions SET xml_sealed = $1, xml_sha256 = $1 \
                         WHERE submission_id = $2",
                    )
                    .bind(Vec::<u8>::new())
                    .bind(id)
                    .execute(&mut *tx)
                    .await?;
                    sqlx::query(
                        "DELETE FROM submission_attachments WHERE version_id IN \
                         (SELECT id FROM submission_versions WHERE submission_id = $1)",
                    )
                    .bind(id)
                    .execute(&mut *tx)
                    .await?;
                    sqlx::query("DELETE FROM submission_versions WHERE submission_id = $1")
                        .bind(id)
                        .execute(&mut *tx)
                        .await?;
                    sqlx::query("DELETE FROM submissions WHERE id = $1")
                        .bind(id)
                        .execute(&mut *tx)
                        .await?;
                    out.submissions.push((form_id, instance_id));
                }
                tx.commit().await?;
                Ok(out)
            }
        }
    };
}

pub(crate) use {data_store_impl, page_where, record_select};
