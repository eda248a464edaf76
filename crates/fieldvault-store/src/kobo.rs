//! What the KoboToolbox-compatible API (specs/kobo-api-v2.md) keeps beyond submissions
//! themselves: validation statuses, bulk deletion, asynchronous export tasks, and the rewrites of
//! redaction (every version of a submission replaced in place, attachment slots emptied).

use async_trait::async_trait;

use crate::{ApiTokenRow, StoreError};

/// A submission with its current version, as the data endpoints read it.
#[derive(Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct KoboRecord {
    /// Submission id (KoboToolbox `_id`).
    pub id: i64,
    /// instanceID of the first version (`meta/rootUuid`).
    pub root_instance_id: String,
    /// ODK-encrypted: only metadata can be shown.
    pub encrypted: bool,
    /// First receipt (`_submission_time`).
    pub created_at: i64,
    /// Submitting account's name (`_submitted_by`).
    pub submitted_by: Option<String>,
    /// `validation_status_approved`, `…_not_approved`, `…_on_hold`, or none.
    pub validation_status: Option<String>,
    /// Who set the status.
    pub validation_by: Option<String>,
    /// When (ms).
    pub validation_at: Option<i64>,
    /// Current version id.
    pub version_id: i64,
    /// Current version's instanceID (`_uuid`).
    pub instance_id: String,
    /// Form version string it was filled against.
    pub form_version: String,
    /// Definition it was filled against.
    pub form_def_id: i64,
    /// The sealed XML of the current version.
    pub xml_sealed: Vec<u8>,
}

impl std::fmt::Debug for KoboRecord {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KoboRecord")
            .field("id", &self.id)
            .field("instance_id", &self.instance_id)
            .finish_non_exhaustive()
    }
}

/// An export task.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct KoboExportRow {
    /// Store id.
    pub id: i64,
    /// Public uid (`e…`).
    pub uid: String,
    /// Project.
    pub project_id: i64,
    /// Form.
    pub form_id: i64,
    /// Account that asked for it (only it may see it).
    pub user_id: i64,
    /// The request body as normalised JSON.
    pub settings: String,
    /// `created`, `processing`, `complete`, `error`.
    pub status: String,
    /// Error message, for `error`.
    pub error: Option<String>,
    /// Encrypted file in the blob store, once complete.
    pub blob_name: Option<String>,
    /// Download file name.
    pub file_name: Option<String>,
    /// Plaintext size.
    pub size: Option<i64>,
    /// Creation time.
    pub created_at: i64,
    /// Completion time.
    pub completed_at: Option<i64>,
    /// After this the file is deleted and the task forgotten.
    pub expires_at: i64,
}

/// What creating an export task needs.
#[derive(Debug, Clone)]
pub struct NewKoboExport {
    /// Public uid.
    pub uid: String,
    /// Project.
    pub project_id: i64,
    /// Form.
    pub form_id: i64,
    /// Requesting account.
    pub user_id: i64,
    /// Normalised settings JSON.
    pub settings: String,
    /// Expiry time (ms).
    pub expires_at: i64,
}

/// A saved export setting of a form (KoboToolbox's `/export-settings/`).
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct KoboExportSettingRow {
    /// Store id.
    pub id: i64,
    /// Public uid (`es…`).
    pub uid: String,
    /// Project.
    pub project_id: i64,
    /// Form.
    pub form_id: i64,
    /// Name, unique in the form.
    pub name: String,
    /// The export options as normalised JSON.
    pub settings: String,
    /// Account that saved it.
    pub created_by: Option<i64>,
    /// Creation time.
    pub created_at: i64,
    /// Last change.
    pub updated_at: i64,
}

/// A new saved export setting.
#[derive(Debug, Clone)]
pub struct NewKoboExportSetting {
    /// Public uid.
    pub uid: String,
    /// Project.
    pub project_id: i64,
    /// Form.
    pub form_id: i64,
    /// Name.
    pub name: String,
    /// Normalised export options JSON.
    pub settings: String,
    /// Saving account.
    pub created_by: Option<i64>,
}

/// A version's XML replaced by redaction.
#[derive(Clone)]
pub struct VersionRewrite {
    /// The version row.
    pub version_id: i64,
    /// New sealed XML (same associated data as before).
    pub xml_sealed: Vec<u8>,
    /// SHA-256 of the new plaintext.
    pub xml_sha256: Vec<u8>,
    /// New plaintext size.
    pub xml_size: i64,
    /// Clear `instance_name` (it repeated a redacted value).
    pub clear_instance_name: bool,
}

impl std::fmt::Debug for VersionRewrite {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "VersionRewrite({})", self.version_id)
    }
}

/// The KoboToolbox API's storage.
#[async_trait]
pub trait KoboStore: Send + Sync {
    /// Live submissions of a form with id > `after_id`, ascending by id, at most `limit`.
    async fn kobo_records(
        &self,
        form_id: i64,
        after_id: i64,
        limit: i64,
    ) -> Result<Vec<KoboRecord>, StoreError>;

    /// One live submission of a form.
    async fn kobo_record(&self, form_id: i64, id: i64) -> Result<Option<KoboRecord>, StoreError>;

    /// Live submissions of a form in id order from position `offset` (0-based), at most
    /// `limit`: a page of KoboToolbox's `/data/?start=` without reading the rows before it.
    async fn kobo_records_at(
        &self,
        form_id: i64,
        offset: i64,
        limit: i64,
    ) -> Result<Vec<KoboRecord>, StoreError>;

    /// Live submissions of a form and the time of the latest (ms).
    async fn kobo_count(&self, form_id: i64) -> Result<(i64, Option<i64>), StoreError>;

    /// Soft-deletes these submissions of the form, all or none: `NotFound` (nothing changed) if
    /// any id is not a live submission of the form. Returns the number deleted.
    async fn kobo_delete(&self, form_id: i64, ids: &[i64]) -> Result<u64, StoreError>;

    /// Sets (or, with `None`, clears) the validation status of these live submissions, all or
    /// none like [`KoboStore::kobo_delete`].
    async fn kobo_set_validation(
        &self,
        form_id: i64,
        ids: &[i64],
        status: Option<&str>,
        by: Option<&str>,
        at: i64,
    ) -> Result<u64, StoreError>;

    /// Issues an API token named `name` and keeps only the newest `keep` active tokens of that
    /// name (older ones are deleted), in one transaction.
    async fn kobo_issue_token(
        &self,
        user_id: i64,
        name: &str,
        token_hash: &[u8],
        scopes: &str,
        keep: i64,
    ) -> Result<ApiTokenRow, StoreError>;

    /// Records a new export task (`created`).
    async fn create_kobo_export(&self, new: &NewKoboExport) -> Result<KoboExportRow, StoreError>;

    /// One export task by uid.
    async fn kobo_export(&self, uid: &str) -> Result<Option<KoboExportRow>, StoreError>;

    /// A user's export tasks of a form, newest first.
    async fn kobo_exports(
        &self,
        form_id: i64,
        user_id: i64,
    ) -> Result<Vec<KoboExportRow>, StoreError>;

    /// Every user's export tasks of a form (redaction deletes them: they hold old values).
    async fn kobo_form_exports(&self, form_id: i64) -> Result<Vec<KoboExportRow>, StoreError>;

    /// Moves a task to `status`, with the file or the error.
    async fn finish_kobo_export(
        &self,
        id: i64,
        status: &str,
        error: Option<&str>,
        file: Option<(&str, &str, i64)>,
    ) -> Result<(), StoreError>;

    /// Tasks whose time is up (or that belong to a deleted form).
    async fn expired_kobo_exports(&self, now: i64) -> Result<Vec<KoboExportRow>, StoreError>;

    /// Forgets a task (its blob is deleted by the caller first).
    async fn delete_kobo_export(&self, id: i64) -> Result<(), StoreError>;

    /// Saves an export setting (`Conflict` on a name the form already has).
    async fn create_kobo_export_setting(
        &self,
        new: &NewKoboExportSetting,
    ) -> Result<KoboExportSettingRow, StoreError>;

    /// A form's saved export settings, oldest first.
    async fn kobo_export_settings(
        &self,
        form_id: i64,
    ) -> Result<Vec<KoboExportSettingRow>, StoreError>;

    /// One saved export setting by uid.
    async fn kobo_export_setting(
        &self,
        uid: &str,
    ) -> Result<Option<KoboExportSettingRow>, StoreError>;

    /// Renames and/or changes a saved export setting (`Conflict` on a taken name).
    async fn update_kobo_export_setting(
        &self,
        id: i64,
        name: &str,
        settings: &str,
    ) -> Result<(), StoreError>;

    /// Deletes a saved export setting.
    async fn delete_kobo_export_setting(&self, id: i64) -> Result<(), StoreError>;

    /// Replaces versions' XML and empties attachment slots (returning their blob names for the
    /// caller to delete), in one transaction. Old bytes are overwritten in place, not kept.
    async fn redact(
        &self,
        rewrites: &[VersionRewrite],
        cleared_attachments: &[i64],
    ) -> Result<Vec<String>, StoreError>;

    /// Makes freed space unreadable where the backend allows it: SQLite checkpoints and
    /// truncates the write-ahead log (pages are zeroed on free: `secure_delete`); PostgreSQL
    /// vacuums the submission tables so dead row versions are reclaimed.
    async fn scrub(&self) -> Result<(), StoreError>;
}
