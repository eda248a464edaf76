//! PostgreSQL intake in one statement per batch.
//!
//! The general path ([`PgStore::ingest_in_transaction`]) decides each submission with its own
//! statements: `BEGIN`, a lookup, an insert into `submissions`, one into `submission_versions`,
//! one per attachment slot, `COMMIT`. Every statement is a network round trip and a backend
//! wake-up, and the single intake writer waits for each, so at 16 concurrent clients the
//! profile showed the writer idle on the socket and PostgreSQL spending its CPU on per-statement
//! overhead rather than on the rows, which capped intake near 2,000/s.
//!
//! So the batch's new submissions (which ones: [`crate::intake_split`]) are written by ONE
//! statement: the rows travel as arrays, data-modifying CTEs insert the submissions, their
//! versions and their attachment slots, and the statement runs in its own implicit transaction
//! (one round trip, one WAL flush); the general path decides the rest afterwards. Concurrent instances racing on one instanceID still meet the unique indexes: the statement
//! then fails as a whole with [`StoreError::Conflict`], which the intake queue answers by
//! replaying the batch one by one.

use std::collections::HashSet;

use crate::intake_split::slots;
use crate::postgres::PgStore;
use crate::{IngestOutcome, NewSubmission, StoreError};

/// Inserts the new submissions of a batch: submissions, their versions and attachment slots.
/// Rows whose instanceID exists (in any version) are skipped and not returned.
const FAST_INSERT: &str = "\
WITH input AS (
    SELECT * FROM unnest($1::int4[], $2::int8[], $3::int8[], $4::text[], $5::bool[], \
        $6::int8[], $7::int8[], $8::text[], $9::int8[], $10::text[], $11::bytea[], \
        $12::bytea[], $13::int8[], $14::text[], $22::bool[]) \
    AS t(ord, project_id, form_id, instance_id, encrypted, submitter_user_id, \
        submitter_app_user_id, device_id, form_def_id, form_version, xml_sealed, xml_sha256, \
        xml_size, instance_name, fits_form)
), fresh AS (
    SELECT i.* FROM input i WHERE NOT EXISTS (
        SELECT 1 FROM submission_versions v
        WHERE v.form_id = i.form_id AND v.instance_id = i.instance_id)
), subs AS (
    INSERT INTO submissions (project_id, form_id, instance_id, encrypted, submitter_user_id, \
        submitter_app_user_id, device_id, created_at)
    SELECT project_id, form_id, instance_id, encrypted, submitter_user_id, \
        submitter_app_user_id, device_id, $15 FROM fresh ORDER BY ord
    ON CONFLICT (form_id, instance_id) DO NOTHING
    RETURNING id, form_id, instance_id
), vers AS (
    INSERT INTO submission_versions (submission_id, form_id, instance_id, form_def_id, \
        form_version, xml_sealed, xml_sha256, xml_size, instance_name, deprecated_id, current, \
        submitter_user_id, submitter_app_user_id, device_id, created_at, fits_form)
    SELECT s.id, f.form_id, f.instance_id, f.form_def_id, f.form_version, f.xml_sealed, \
        f.xml_sha256, f.xml_size, f.instance_name, NULL, TRUE, f.submitter_user_id, \
        f.submitter_app_user_id, f.device_id, $15, f.fits_form
    FROM subs s JOIN fresh f ON f.form_id = s.form_id AND f.instance_id = s.instance_id
    ORDER BY f.ord
    RETURNING id, form_id, instance_id
), atts AS (
    INSERT INTO submission_attachments (version_id, name, content_type, blob_name, size, sha256)
    SELECT v.id, a.name, a.content_type, a.blob_name, a.size, a.sha256
    FROM unnest($16::int4[], $17::text[], $18::text[], $19::text[], $20::int8[], $21::bytea[]) \
        AS a(ord, name, content_type, blob_name, size, sha256)
    JOIN fresh f ON f.ord = a.ord
    JOIN vers v ON v.form_id = f.form_id AND v.instance_id = f.instance_id
    RETURNING version_id
)
SELECT f.ord, s.id FROM subs s JOIN fresh f ON f.form_id = s.form_id AND f.instance_id = s.instance_id";

impl PgStore {
    /// Intake of a batch: new submissions in one statement, the rest by the general path
    /// ([`crate::intake_split`]).
    pub(crate) async fn ingest_batch(
        &self,
        batch: &[NewSubmission],
        used: &mut HashSet<String>,
    ) -> Result<Vec<IngestOutcome>, StoreError> {
        crate::intake_split::ingest_split(
            batch,
            used,
            |which| async move {
                let rows = self.fast_insert(batch, &which).await?;
                rows.into_iter()
                    .map(|(ord, id)| {
                        usize::try_from(ord)
                            .map(|i| (i, id))
                            .map_err(|_| StoreError::Backend("fast intake: bad row index".into()))
                    })
                    .collect()
            },
            |items| async move { self.ingest_in_transaction(&items).await },
        )
        .await
    }

    /// Runs [`FAST_INSERT`] for `batch[i]`, `i` in `which`; returns (index, submission id) of
    /// the rows it inserted.
    async fn fast_insert(
        &self,
        batch: &[NewSubmission],
        which: &[usize],
    ) -> Result<Vec<(i32, i64)>, StoreError> {
        let n = which.len();
        let mut ord = Vec::with_capacity(n);
        let mut project_id = Vec::with_capacity(n);
        let mut form_id = Vec::with_capacity(n);
        let mut instance_id = Vec::with_capacity(n);
        let mut encrypted = Vec::with_capacity(n);
        let mut submitter_user_id = Vec::with_capacity(n);
        let mut submitter_app_user_id = Vec::with_capacity(n);
        let mut device_id = Vec::with_capacity(n);
        let mut form_def_id = Vec::with_capacity(n);
        let mut form_version = Vec::with_capacity(n);
        let mut xml_sealed = Vec::with_capacity(n);
        let mut xml_sha256 = Vec::with_capacity(n);
        let mut xml_size = Vec::with_capacity(n);
        let mut instance_name = Vec::with_capacity(n);
        let mut fits_form = Vec::with_capacity(n);
        let mut a_ord = Vec::new();
        let mut a_name = Vec::new();
        let mut a_type = Vec::new();
        let mut a_blob = Vec::new();
        let mut a_size = Vec::new();
        let mut a_sha = Vec::new();
        for &i in which {
            let Some(s) = batch.get(i) else { continue };
            let o = i32::try_from(i).map_err(|_| StoreError::Backend("batch too large".into()))?;
            ord.push(o);
            project_id.push(s.project_id);
            form_id.push(s.form_id);
            instance_id.push(s.instance_id.as_str());
            encrypted.push(s.encrypted);
            submitter_user_id.push(s.submitter_user_id);
            submitter_app_user_id.push(s.submitter_app_user_id);
            device_id.push(s.device_id.as_deref());
            form_def_id.push(s.form_def_id);
            form_version.push(s.form_version.as_str());
            xml_sealed.push(s.xml_sealed.as_slice());
            xml_sha256.push(s.xml_sha256.as_slice());
            xml_size.push(s.xml_size);
            instance_name.push(s.instance_name.as_deref());
            fits_form.push(s.fits_form);
            for (name, received) in slots(s) {
                a_ord.push(o);
                a_name.push(name);
                a_type.push(received.and_then(|a| a.content_type.as_deref()));
                a_blob.push(received.map(|a| a.blob_name.as_str()));
                a_size.push(received.map(|a| a.size));
                a_sha.push(received.map(|a| a.sha256.as_slice()));
            }
        }
        let rows: Vec<(i32, i64)> = sqlx::query_as(FAST_INSERT)
            .bind(ord)
            .bind(project_id)
            .bind(form_id)
            .bind(instance_id)
            .bind(encrypted)
            .bind(submitter_user_id)
            .bind(submitter_app_user_id)
            .bind(device_id)
            .bind(form_def_id)
            .bind(form_version)
            .bind(xml_sealed)
            .bind(xml_sha256)
            .bind(xml_size)
            .bind(instance_name)
            .bind(crate::now_ms())
            .bind(a_ord)
            .bind(a_name)
            .bind(a_type)
            .bind(a_blob)
            .bind(a_size)
            .bind(a_sha)
            .bind(fits_form)
            .fetch_all(&self.pool)
            .await?;
        Ok(rows)
    }
}
