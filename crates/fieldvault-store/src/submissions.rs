//! Submissions: every version kept, attachments streamed to the blob store, and intake in
//! batches so that one transaction (one fsync) can acknowledge many submissions (group commit).
//!
//! The intake decision (new / duplicate / conflict / edit, openrosa.md §6.3) is made inside the
//! transaction, and a unique index on `(form_id, instance_id)` makes two concurrent posts of one
//! instanceID unable to create two rows whatever the interleaving.

use async_trait::async_trait;

use crate::StoreError;

/// A submission (all versions).
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct SubmissionRow {
    /// Store id.
    pub id: i64,
    /// Project.
    pub project_id: i64,
    /// Form.
    pub form_id: i64,
    /// instanceID of the first version (the submission's stable id).
    pub instance_id: String,
    /// ODK-encrypted: the server holds only ciphertext.
    pub encrypted: bool,
    /// `received`, `hasIssues`, `edited`, `approved`, `rejected`.
    pub review_state: String,
    /// Submitting account.
    pub submitter_user_id: Option<i64>,
    /// Submitting collector.
    pub submitter_app_user_id: Option<i64>,
    /// Device that sent it (as the device said).
    pub device_id: Option<String>,
    /// First receipt.
    pub created_at: i64,
    /// Last new version.
    pub updated_at: Option<i64>,
    /// Soft deletion.
    pub deleted_at: Option<i64>,
}

/// One version of a submission.
#[derive(Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct SubmissionVersionRow {
    /// Store id.
    pub id: i64,
    /// The submission.
    pub submission_id: i64,
    /// The form.
    pub form_id: i64,
    /// This version's instanceID.
    pub instance_id: String,
    /// Definition it was filled against.
    pub form_def_id: i64,
    /// Its version string.
    pub form_version: String,
    /// The XML, sealed with the project's data key (see [`xml_aad`]).
    pub xml_sealed: Vec<u8>,
    /// SHA-256 of the plaintext XML (duplicate detection without decrypting).
    pub xml_sha256: Vec<u8>,
    /// Plaintext size.
    pub xml_size: i64,
    /// `meta/instanceName`.
    pub instance_name: Option<String>,
    /// `meta/deprecatedID`: the version this one replaced.
    pub deprecated_id: Option<String>,
    /// The current version of its submission.
    pub current: bool,
    /// Submitting account.
    pub submitter_user_id: Option<i64>,
    /// Submitting collector.
    pub submitter_app_user_id: Option<i64>,
    /// Device.
    pub device_id: Option<String>,
    /// Receipt.
    pub created_at: i64,
}

impl std::fmt::Debug for SubmissionVersionRow {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SubmissionVersionRow")
            .field("id", &self.id)
            .field("submission_id", &self.submission_id)
            .field("instance_id", &self.instance_id)
            .field("current", &self.current)
            .finish_non_exhaustive()
    }
}

/// An attachment slot of a submission version.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct SubmissionAttachmentRow {
    /// Store id.
    pub id: i64,
    /// The version.
    pub version_id: i64,
    /// File name as the XML names it.
    pub name: String,
    /// Content type sent by the client.
    pub content_type: Option<String>,
    /// Encrypted blob; `None` while not yet received.
    pub blob_name: Option<String>,
    /// Plaintext size.
    pub size: Option<i64>,
    /// SHA-256 of the plaintext.
    pub sha256: Option<Vec<u8>>,
}

/// Most ids bound into one `IN (…)` list.
pub const MAX_IDS_PER_QUERY: usize = 500;

/// Associated data for a submission version's sealed XML: its place, so a ciphertext copied to
/// another row or form fails to open.
pub fn xml_aad(project_id: i64, form_id: i64, instance_id: &str) -> Vec<u8> {
    format!("project:{project_id}/form:{form_id}/instance:{instance_id}/xml").into_bytes()
}

/// Associated data for an attachment blob.
pub fn attachment_aad(project_id: i64, form_id: i64, instance_id: &str, name: &str) -> Vec<u8> {
    format!("project:{project_id}/form:{form_id}/instance:{instance_id}/attachment:{name}")
        .into_bytes()
}

/// An attachment received with a submission (already encrypted into the blob store).
#[derive(Debug, Clone)]
pub struct ReceivedAttachment {
    /// File name.
    pub name: String,
    /// Content type.
    pub content_type: Option<String>,
    /// Blob holding the ciphertext.
    pub blob_name: String,
    /// Plaintext size.
    pub size: i64,
    /// SHA-256 of the plaintext.
    pub sha256: Vec<u8>,
}

/// One submission to store.
#[derive(Clone)]
pub struct NewSubmission {
    /// Project.
    pub project_id: i64,
    /// Form.
    pub form_id: i64,
    /// Definition matched by the submission's version.
    pub form_def_id: i64,
    /// Version string.
    pub form_version: String,
    /// instanceID.
    pub instance_id: String,
    /// deprecatedID (an edit).
    pub deprecated_id: Option<String>,
    /// instanceName.
    pub instance_name: Option<String>,
    /// Sealed XML.
    pub xml_sealed: Vec<u8>,
    /// SHA-256 of the plaintext XML.
    pub xml_sha256: Vec<u8>,
    /// Plaintext size.
    pub xml_size: i64,
    /// ODK-encrypted envelope.
    pub encrypted: bool,
    /// Submitting account.
    pub submitter_user_id: Option<i64>,
    /// Submitting collector.
    pub submitter_app_user_id: Option<i64>,
    /// Device.
    pub device_id: Option<String>,
    /// File names the submission references (its expected attachments).
    pub expected_attachments: Vec<String>,
    /// Files received in this request (only expected ones are kept).
    pub attachments: Vec<ReceivedAttachment>,
    /// The XML adds nothing to the CSV layout of its definition (`None`: not checked). An export
    /// skips its column-discovery pass when every current version of a form fits.
    pub fits_form: Option<bool>,
}

/// What intake did with one submission.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IngestOutcome {
    /// Stored as a new submission.
    Created {
        /// New submission id.
        submission_id: i64,
    },
    /// Same instanceID, identical XML: a retry or a split upload; new attachments were kept.
    Duplicate {
        /// Existing submission id.
        submission_id: i64,
        /// Attachments stored by this request.
        added_attachments: u32,
    },
    /// Same instanceID, different XML: refused.
    Conflict,
    /// A new version of an existing submission (deprecatedID).
    Edited {
        /// Submission id.
        submission_id: i64,
    },
    /// deprecatedID names no submission of this form.
    DeprecatedNotFound,
    /// deprecatedID names a version that has already been replaced.
    DeprecatedNotCurrent,
    /// The instanceID belongs to a deleted submission.
    Deleted,
}

impl IngestOutcome {
    /// True when the submission is safely stored (a success for the client).
    pub fn stored(&self) -> bool {
        matches!(
            self,
            IngestOutcome::Created { .. }
                | IngestOutcome::Duplicate { .. }
                | IngestOutcome::Edited { .. }
        )
    }
}

/// Submissions.
#[async_trait]
pub trait SubmissionStore: Send + Sync {
    /// Stores a batch in ONE transaction; one outcome per item, in order. Attachment blobs not
    /// referenced by the outcome (unexpected names, refused submissions) are returned in
    /// `unused_blobs` for the caller to delete.
    async fn ingest(&self, batch: &[NewSubmission]) -> Result<IngestResult, StoreError>;

    /// A form's submissions (not deleted), newest first.
    async fn submissions(
        &self,
        form_id: i64,
        limit: i64,
        offset: i64,
    ) -> Result<Vec<SubmissionRow>, StoreError>;

    /// One submission by its (first) instanceID.
    async fn submission(
        &self,
        form_id: i64,
        instance_id: &str,
    ) -> Result<Option<SubmissionRow>, StoreError>;

    /// Every version of a submission, oldest first.
    async fn submission_versions(
        &self,
        submission_id: i64,
    ) -> Result<Vec<SubmissionVersionRow>, StoreError>;

    /// Attachment slots of a version.
    async fn submission_attachments(
        &self,
        version_id: i64,
    ) -> Result<Vec<SubmissionAttachmentRow>, StoreError>;

    /// Attachment slots of several versions (a page of records) in one round trip per
    /// [`MAX_IDS_PER_QUERY`] ids, ordered by version and name.
    async fn attachments_of_versions(
        &self,
        version_ids: &[i64],
    ) -> Result<Vec<SubmissionAttachmentRow>, StoreError>;
}

/// Result of [`SubmissionStore::ingest`].
#[derive(Debug, Clone, Default)]
pub struct IngestResult {
    /// One per submitted item.
    pub outcomes: Vec<IngestOutcome>,
    /// Blobs written by the caller that no row refers to.
    pub unused_blobs: Vec<String>,
}
