//! Reading submissions out in bulk (data API, exports, OData) and curating them: review states,
//! soft deletion with restore, and the purge that destroys deleted submissions for good.
//!
//! Bulk reads are keyset-paged (`created_at DESC, id DESC`, Central's order) so a caller holds one
//! page at a time however many submissions a form has.

use async_trait::async_trait;

use crate::StoreError;

/// Which submissions a page holds, by deletion.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Deleted {
    /// Only submissions that are not deleted.
    Exclude,
    /// Only deleted ones (the trash).
    Only,
    /// Both.
    Include,
}

impl Deleted {
    fn code(self) -> i64 {
        match self {
            Deleted::Exclude => 0,
            Deleted::Only => 1,
            Deleted::Include => 2,
        }
    }
}

/// Position after which a page starts: the last row of the previous page.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cursor {
    /// `created_at` of the last row seen.
    pub created_at: i64,
    /// `id` of the last row seen.
    pub id: i64,
}

impl Cursor {
    /// Before every row.
    pub const START: Cursor = Cursor {
        created_at: i64::MAX,
        id: i64::MAX,
    };
}

/// A page request.
#[derive(Debug, Clone, Copy)]
pub struct PageQuery {
    /// The form.
    pub form_id: i64,
    /// Deleted rows wanted.
    pub deleted: Deleted,
    /// Start after this row.
    pub after: Cursor,
    /// Most rows.
    pub limit: i64,
    /// Fetch the sealed XML of the current version (false: metadata only).
    pub with_xml: bool,
}

/// A submission with what exports and the data API show of it.
#[derive(Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct SubmissionRecord {
    /// Store id.
    pub id: i64,
    /// instanceID of the first version.
    pub instance_id: String,
    /// ODK-encrypted.
    pub encrypted: bool,
    /// Review state.
    pub review_state: String,
    /// Submitting account.
    pub submitter_user_id: Option<i64>,
    /// Submitting collector.
    pub submitter_app_user_id: Option<i64>,
    /// Account name or collector display name.
    pub submitter_name: Option<String>,
    /// Device.
    pub device_id: Option<String>,
    /// First receipt.
    pub created_at: i64,
    /// Last change.
    pub updated_at: Option<i64>,
    /// Soft deletion.
    pub deleted_at: Option<i64>,
    /// The current version's row id.
    pub version_id: i64,
    /// The current version's instanceID.
    pub current_instance_id: String,
    /// `meta/instanceName` of the current version.
    pub instance_name: Option<String>,
    /// Definition the current version was filled against.
    pub form_def_id: i64,
    /// Form version of the first version (Central's `formVersion`).
    pub form_version: String,
    /// Number of edits (versions after the first).
    pub edits: i64,
    /// Attachment slots of the current version.
    pub attachments_expected: i64,
    /// Slots whose file has arrived.
    pub attachments_present: i64,
    /// Sealed XML of the current version (empty unless asked for).
    pub xml_sealed: Vec<u8>,
}

impl std::fmt::Debug for SubmissionRecord {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SubmissionRecord")
            .field("id", &self.id)
            .field("instance_id", &self.instance_id)
            .field("review_state", &self.review_state)
            .field("deleted_at", &self.deleted_at)
            .finish_non_exhaustive()
    }
}

impl SubmissionRecord {
    /// The cursor just after this row.
    pub fn cursor(&self) -> Cursor {
        Cursor {
            created_at: self.created_at,
            id: self.id,
        }
    }
}

/// What a purge removed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Purged {
    /// Submissions removed, as `(form_id, instance_id)`.
    pub submissions: Vec<(i64, String)>,
    /// Attachment blobs no row refers to any more; the caller deletes them.
    pub blobs: Vec<String>,
}

/// Bulk reads and curation of submissions.
#[async_trait]
pub trait DataStore: Send + Sync {
    /// One keyset page of a form's submissions, newest first.
    async fn submission_page(&self, q: &PageQuery) -> Result<Vec<SubmissionRecord>, StoreError>;

    /// The position of the `skip`-th live submission after `after` (newest first), `None` when
    /// fewer remain: an offset is passed over in the live-rows index, without reading the rows.
    async fn live_cursor_after(
        &self,
        form_id: i64,
        after: Cursor,
        skip: i64,
    ) -> Result<Option<Cursor>, StoreError>;

    /// Whether a current version of the form (deleted submissions included) is not known to fit
    /// its definition's CSV layout ([`crate::NewSubmission::fits_form`]). Reads a partial index.
    async fn form_has_unfitted(&self, form_id: i64) -> Result<bool, StoreError>;

    /// One submission by its first instanceID (deleted ones included).
    async fn submission_record(
        &self,
        form_id: i64,
        instance_id: &str,
        with_xml: bool,
    ) -> Result<Option<SubmissionRecord>, StoreError>;

    /// Sets the review state, stamping `updated_at`; `NotFound` for an unknown or deleted row.
    async fn set_review_state(&self, submission_id: i64, state: &str) -> Result<(), StoreError>;

    /// Marks a submission deleted (`Some(time)`) or restores it (`None`); `NotFound` when the
    /// row is unknown or already in the requested state.
    async fn set_submission_deleted(
        &self,
        submission_id: i64,
        deleted_at: Option<i64>,
    ) -> Result<(), StoreError>;

    /// Destroys up to `limit` submissions deleted before `before`: their sealed XML is
    /// overwritten, then every version and attachment row is removed, in one transaction.
    async fn purge_deleted_submissions(
        &self,
        before: i64,
        limit: i64,
    ) -> Result<Purged, StoreError>;
}

pub(crate) fn deleted_code(d: Deleted) -> i64 {
    d.code()
}
