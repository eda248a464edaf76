//! Submission intake (batched, one transaction) and reads.

/// Column list of `submissions`.
macro_rules! submission_cols {
    () => {
        "id, project_id, form_id, instance_id, encrypted, review_state, submitter_user_id, \
         submitter_app_user_id, device_id, created_at, updated_at, deleted_at"
    };
}

/// Column list of `submission_versions`.
macro_rules! version_cols {
    () => {
        "id, submission_id, form_id, instance_id, form_def_id, form_version, xml_sealed, \
         xml_sha256, xml_size, instance_name, deprecated_id, current, submitter_user_id, \
         submitter_app_user_id, device_id, created_at"
    };
}

/// A new submission's row, unless a version of the form already has its instanceID (any
/// version: an edit's instanceID is as taken as the original's); returns its id, or no row.
/// Parameters: project, form, instanceID, encrypted, submitting user, app user, device, time.
/// SQLite's intake writer steps the same text through rusqlite (`crate::sqlite_intake`), which
/// numbers `$n` parameters by first appearance, as sqlx does.
pub(crate) const INSERT_IF_UNKNOWN: &str = "INSERT INTO submissions (project_id, form_id, \
     instance_id, encrypted, submitter_user_id, submitter_app_user_id, device_id, created_at) \
     SELECT $1, $2, $3, $4, $5, $6, $7, $8 WHERE NOT EXISTS (\
     SELECT 1 FROM submission_versions WHERE form_id = $2 AND instance_id = $3) \
     ON CONFLICT (form_id, instance_id) DO NOTHING RETURNING id";

/// A current version row; returns its id. Parameters: submission, form, instanceID, definition,
/// version string, sealed XML, its SHA-256, plaintext size, instanceName, deprecatedID, user,
/// app user, device, time, fits-form.
pub(crate) const INSERT_VERSION: &str = "INSERT INTO submission_versions (submission_id, \
     form_id, instance_id, form_def_id, form_version, xml_sealed, xml_sha256, xml_size, \
     instance_name, deprecated_id, current, submitter_user_id, submitter_app_user_id, device_id, \
     created_at, fits_form) \
     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, TRUE, $11, $12, $13, $14, $15) \
     RETURNING id";

/// An attachment slot of a version. Parameters: version, name, content type, blob, size,
/// SHA-256 (the last four NULL while the file has not arrived).
pub(crate) const INSERT_ATTACHMENT_SLOT: &str = "INSERT INTO submission_attachments \
     (version_id, name, content_type, blob_name, size, sha256) VALUES ($1, $2, $3, $4, $5, $6)";

/// Implements [`crate::SubmissionStore`] for `$store`.
macro_rules! submission_store_impl {
    ($store:ty, $db:ty, $begin:expr) => {
        impl $store {
            /// Inserts a version row and its attachment slots; returns the version id and the
            /// blobs it took.
            async fn insert_version(
                tx: &mut sqlx::Transaction<'_, $db>,
                submission_id: i64,
                s: &$crate::NewSubmission,
                carried: &[$crate::SubmissionAttachmentRow],
                used: &mut std::collections::HashSet<String>,
            ) -> Result<i64, $crate::StoreError> {
                let (version_id,): (i64,) = sqlx::query_as($crate::sql::INSERT_VERSION)
                .bind(submission_id)
                .bind(s.form_id)
                .bind(&s.instance_id)
                .bind(s.form_def_id)
                .bind(&s.form_version)
                .bind(&s.xml_sealed)
                .bind(&s.xml_sha256)
                .bind(s.xml_size)
                .bind(&s.instance_name)
                .bind(&s.deprecated_id)
                .bind(s.submitter_user_id)
                .bind(s.submitter_app_user_id)
                .bind(&s.device_id)
                .bind($crate::now_ms())
                .bind(s.fits_form)
                .fetch_one(&mut **tx)
                .await?;
                let mut names: Vec<&String> = s.expected_attachments.iter().collect();
                names.sort();
                names.dedup();
                for name in names {
                    let received = s.attachments.iter().find(|a| &a.name == name);
                    // An edit keeps files it does not re-send (openrosa.md §6.3 step 4).
                    let carried = carried.iter().find(|a| &a.name == name && a.blob_name.is_some());
                    let (ct, blob, size, sha) = match (received, carried) {
                        (Some(r), _) => {
                            used.insert(r.blob_name.clone());
                            (r.content_type.clone(), Some(r.blob_name.clone()), Some(r.size), Some(r.sha256.clone()))
                        }
                        (None, Some(c)) => (c.content_type.clone(), c.blob_name.clone(), c.size, c.sha256.clone()),
                        (None, None) => (None, None, None, None),
                    };
                    sqlx::query($crate::sql::INSERT_ATTACHMENT_SLOT)
                    .bind(version_id)
                    .bind(name)
                    .bind(ct)
                    .bind(blob)
                    .bind(size)
                    .bind(sha)
                    .execute(&mut **tx)
                    .await?;
                }
                Ok(version_id)
            }

            async fn ingest_one(
                tx: &mut sqlx::Transaction<'_, $db>,
                s: &$crate::NewSubmission,
                used: &mut std::collections::HashSet<String>,
            ) -> Result<$crate::IngestOutcome, $crate::StoreError> {
                use $crate::IngestOutcome as O;
                // The common case first: a new submission (no version has its instanceID). One
                // statement both checks and inserts, instead of a lookup and then an insert; when
                // it inserts nothing, the full decision below runs as before.
                if s.deprecated_id.is_none() {
                    let inserted: Option<(i64,)> = sqlx::query_as($crate::sql::INSERT_IF_UNKNOWN)
                    .bind(s.project_id)
                    .bind(s.form_id)
                    .bind(&s.instance_id)
                    .bind(s.encrypted)
                    .bind(s.submitter_user_id)
                    .bind(s.submitter_app_user_id)
                    .bind(&s.device_id)
                    .bind($crate::now_ms())
                    .fetch_optional(&mut **tx)
                    .await?;
                    if let Some((submission_id,)) = inserted {
                        Self::insert_version(tx, submission_id, s, &[], used).await?;
                        return Ok(O::Created { submission_id });
                    }
                }
                let existing: Option<(i64, i64, Vec<u8>, Option<i64>)> = sqlx::query_as(
                    "SELECT v.id, v.submission_id, v.xml_sha256, s.deleted_at FROM submission_versions v \
                     JOIN submissions s ON s.id = v.submission_id \
                     WHERE v.form_id = $1 AND v.instance_id = $2",
                )
                .bind(s.form_id)
                .bind(&s.instance_id)
                .fetch_optional(&mut **tx)
                .await?;
                if let Some((version_id, submission_id, sha, deleted)) = existing {
                    if deleted.is_some() {
                        return Ok(O::Deleted);
                    }
                    if sha != s.xml_sha256 {
                        return Ok(O::Conflict);
                    }
                    // A replay from the intake journal may re-send the very blob the row already
                    // holds: it must count as used, or it would be deleted as unused.
                    let mut added = 0u32;
                    for a in &s.attachments {
                        let done = sqlx::query(
                            "UPDATE submission_attachments SET content_type = $1, blob_name = $2, \
                             size = $3, sha256 = $4 \
                             WHERE version_id = $5 AND name = $6 AND blob_name IS NULL",
                        )
                        .bind(&a.content_type)
                        .bind(&a.blob_name)
                        .bind(a.size)
                        .bind(&a.sha256)
                        .bind(version_id)
                        .bind(&a.name)
                        .execute(&mut **tx)
                        .await?;
                        if done.rows_affected() > 0 {
                            used.insert(a.blob_name.clone());
                            added += 1;
                            continue;
                        }
                        let same: Option<(i64,)> = sqlx::query_as(
                            "SELECT id FROM submission_attachments \
                             WHERE version_id = $1 AND name = $2 AND blob_name = $3",
                        )
                        .bind(version_id)
                        .bind(&a.name)
                        .bind(&a.blob_name)
                        .fetch_optional(&mut **tx)
                        .await?;
                        if same.is_some() {
                            used.insert(a.blob_name.clone());
                        }
                    }
                    return Ok(O::Duplicate {
                        submission_id,
                        added_attachments: added,
                    });
                }
                let now = $crate::now_ms();
                if let Some(dep) = &s.deprecated_id {
                    let old: Option<(i64, i64, bool)> = sqlx::query_as(
                        "SELECT id, submission_id, current FROM submission_versions \
                         WHERE form_id = $1 AND instance_id = $2",
                    )
                    .bind(s.form_id)
                    .bind(dep)
                    .fetch_optional(&mut **tx)
                    .await?;
                    let Some((old_id, submission_id, current)) = old else {
                        return Ok(O::DeprecatedNotFound);
                    };
                    if !current {
                        return Ok(O::DeprecatedNotCurrent);
                    }
                    let carried: Vec<$crate::SubmissionAttachmentRow> = sqlx::query_as(
                        "SELECT id, version_id, name, content_type, blob_name, size, sha256 \
                         FROM submission_attachments WHERE version_id = $1",
                    )
                    .bind(old_id)
                    .fetch_all(&mut **tx)
                    .await?;
                    sqlx::query("UPDATE submission_versions SET current = FALSE WHERE id = $1")
                        .bind(old_id)
                        .execute(&mut **tx)
                        .await?;
                    Self::insert_version(tx, submission_id, s, &carried, used).await?;
                    sqlx::query("UPDATE submissions SET updated_at = $1, review_state = 'edited' WHERE id = $2")
                        .bind(now)
                        .bind(submission_id)
                        .execute(&mut **tx)
                        .await?;
                    return Ok(O::Edited { submission_id });
                }
                let (submission_id,): (i64,) = sqlx::query_as(
                    "INSERT INTO submissions (project_id, form_id, instance_id, encrypted, \
                     submitter_user_id, submitter_app_user_id, device_id, created_at) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8) RETURNING id",
                )
                .bind(s.project_id)
                .bind(s.form_id)
                .bind(&s.instance_id)
                .bind(s.encrypted)
                .bind(s.submitter_user_id)
                .bind(s.submitter_app_user_id)
                .bind(&s.device_id)
                .bind(now)
                .fetch_one(&mut **tx)
                .await?;
                Self::insert_version(tx, submission_id, s, &[], used).await?;
                Ok(O::Created { submission_id })
            }
        }

        impl $store {
            /// The general intake path: every item decided and written one after the other in
            /// ONE transaction (new, duplicate, conflict, edit); both backends' fast paths leave
            /// it what they do not insert ([`crate::intake_split`]). Returns one outcome per item and
            /// the blobs the rows took.
            pub(crate) async fn ingest_in_transaction(
                &self,
                batch: &[&$crate::NewSubmission],
            ) -> Result<(Vec<$crate::IngestOutcome>, std::collections::HashSet<String>), $crate::StoreError> {
                let mut outcomes = Vec::with_capacity(batch.len());
                let mut used = std::collections::HashSet::new();
                if batch.is_empty() {
                    return Ok((outcomes, used));
                }
                let mut tx = self.pool.begin_with($begin).await?;
                for s in batch {
                    outcomes.push(Self::ingest_one(&mut tx, s, &mut used).await?);
                }
                tx.commit().await?;
                Ok((outcomes, used))
            }
        }

        #[async_trait::async_trait]
        impl $crate::SubmissionStore for $store {
            async fn ingest(
                &self,
                batch: &[$crate::NewSubmission],
            ) -> Result<$crate::IngestResult, $crate::StoreError> {
                let mut used = std::collections::HashSet::new();
                let outcomes = self.ingest_batch(batch, &mut used).await?;
                let unused_blobs = batch
                    .iter()
                    .flat_map(|s| s.attachments.iter())
                    .filter(|a| !used.contains(&a.blob_name))
                    .map(|a| a.blob_name.clone())
                    .collect();
                Ok($crate::IngestResult { outcomes, unused_blobs })
            }

            async fn submissions(
                &self,
                form_id: i64,
                limit: i64,
                offset: i64,
            ) -> Result<Vec<$crate::SubmissionRow>, $crate::StoreError> {
                Ok(sqlx::query_as(concat!(
                    "SELECT ",
                    $crate::sql::submission_cols!(),
                    " FROM submissions WHERE form_id = $1 AND deleted_at IS NULL \
                     ORDER BY id DESC LIMIT $2 OFFSET $3"
                ))
                .bind(form_id)
                .bind(limit)
                .bind(offset)
                .fetch_all(&self.pool)
                .await?)
            }

            async fn submission(
                &self,
                form_id: i64,
                instance_id: &str,
            ) -> Result<Option<$crate::SubmissionRow>, $crate::StoreError> {
                Ok(sqlx::query_as(concat!(
                    "SELECT ",
                    $crate::sql::submission_cols!(),
                    " FROM submissions WHERE form_id = $1 AND instance_id = $2"
                ))
                .bind(form_id)
                .bind(instance_id)
                .fetch_optional(&self.pool)
                .await?)
            }

            async fn submission_versions(
                &self,
                submission_id: i64,
            ) -> Result<Vec<$crate::SubmissionVersionRow>, $crate::StoreError> {
                Ok(sqlx::query_as(concat!(
                    "SELECT ",
                    $crate::sql::version_cols!(),
                    " FROM submission_versions WHERE submission_id = $1 ORDER BY id"
                ))
                .bind(submission_id)
                .fetch_all(&self.pool)
                .await?)
            }

            async fn submission_attachments(
                &self,
                version_id: i64,
            ) -> Result<Vec<$crate::SubmissionAttachmentRow>, $crate::StoreError> {
                Ok(sqlx::query_as(
                    "SELECT id, version_id, name, content_type, blob_name, size, sha256 \
                     FROM submission_attachments WHERE version_id = $1 ORDER BY name",
                )
                .bind(version_id)
                .fetch_all(&self.pool)
                .await?)
            }

            async fn attachments_of_versions(
                &self,
                version_ids: &[i64],
            ) -> Result<Vec<$crate::SubmissionAttachmentRow>, $crate::StoreError> {
                let mut out = Vec::new();
                for ids in version_ids.chunks($crate::submissions::MAX_IDS_PER_QUERY) {
                    let list = (1..=ids.len())
                        .map(|i| format!("${i}"))
                        .collect::<Vec<_>>()
                        .join(",");
                    let sql = format!(
                        "SELECT id, version_id, name, content_type, blob_name, size, sha256 \
                         FROM submission_attachments WHERE version_id IN ({list}) \
                         ORDER BY version_id, name"
                    );
                    // Only placeholders are formatted in; every id is bound.
                    let mut q = sqlx::query_as(sqlx::AssertSqlSafe(sql));
                    for id in ids {
                        q = q.bind(*id);
                    }
                    out.extend(q.fetch_all(&self.pool).await?);
                }
                Ok(out)
            }
        }
    };
}

pub(crate) use {submission_cols, submission_store_impl, version_cols};
