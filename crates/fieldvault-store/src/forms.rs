//! Forms, their versions and media; collectors (app users); project roles.
//!
//! A form has at most one published definition (what collectors download) and at most one draft.
//! Published definitions are kept forever, so every submission can name the exact XForm it was
//! filled against; a version string is never reused within a form.

use async_trait::async_trait;
use fieldvault_core::{ProjectId, UserId};

use crate::StoreError;

/// A form (all its versions).
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct FormRow {
    /// Store id.
    pub id: i64,
    /// Owning project.
    pub project_id: i64,
    /// The XForm's `id`, unique in its project.
    pub xml_form_id: String,
    /// `open`, `closing` (not listed, still accepts) or `closed` (no submissions).
    pub state: String,
    /// Accepts submissions without authentication.
    pub anonymous: bool,
    /// The published definition, if any.
    pub published_def_id: Option<i64>,
    /// The draft definition, if any.
    pub draft_def_id: Option<i64>,
    /// Creation time.
    pub created_at: i64,
    /// Last change.
    pub updated_at: Option<i64>,
    /// Soft deletion time.
    pub deleted_at: Option<i64>,
}

/// One version of a form's XForm.
#[derive(Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct FormDefRow {
    /// Store id.
    pub id: i64,
    /// The form.
    pub form_id: i64,
    /// `version` attribute ("" when absent).
    pub version: String,
    /// `h:title`.
    pub title: Option<String>,
    /// The exact bytes uploaded (served byte-identical; the md5 is over these).
    pub xml: Vec<u8>,
    /// `md5:<hex>` of `xml`, as the form list advertises it.
    pub md5: String,
    /// `base64RsaPublicKey` when the form is ODK-encrypted.
    pub public_key: Option<String>,
    /// JSON array of the binary (attachment) field paths, e.g. `["/data/photo"]`.
    pub binary_fields: String,
    /// Publication time; `None` for a draft.
    pub published_at: Option<i64>,
    /// Creation time.
    pub created_at: i64,
}

impl std::fmt::Debug for FormDefRow {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FormDefRow")
            .field("id", &self.id)
            .field("form_id", &self.form_id)
            .field("version", &self.version)
            .field("md5", &self.md5)
            .field("published_at", &self.published_at)
            .finish_non_exhaustive()
    }
}

/// What intake needs of a published definition (everything but the XForm bytes, which intake
/// never reads: fetching them per submission would cost more than the submission itself).
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct FormDefMeta {
    /// Store id.
    pub id: i64,
    /// `version` ("" when absent).
    pub version: String,
    /// `base64RsaPublicKey` when the form is ODK-encrypted.
    pub public_key: Option<String>,
    /// JSON array of the binary field paths.
    pub binary_fields: String,
}

/// A new form definition.
pub struct NewFormDef {
    /// The XForm's `id`.
    pub xml_form_id: String,
    /// `version` ("" when absent).
    pub version: String,
    /// Title.
    pub title: Option<String>,
    /// Exact bytes.
    pub xml: Vec<u8>,
    /// `md5:<hex>`.
    pub md5: String,
    /// Encryption key, if any.
    pub public_key: Option<String>,
    /// JSON array of binary field paths.
    pub binary_fields: String,
    /// Media files the XForm references (slots for uploads).
    pub media: Vec<String>,
}

/// A media file slot of a form definition.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct FormAttachmentRow {
    /// Store id.
    pub id: i64,
    /// The definition.
    pub form_def_id: i64,
    /// File name as referenced (`logo.png`).
    pub name: String,
    /// Content type given at upload.
    pub content_type: Option<String>,
    /// Encrypted blob; `None` until uploaded.
    pub blob_name: Option<String>,
    /// `md5:<hex>` of the plaintext.
    pub md5: Option<String>,
    /// Plaintext size.
    pub size: Option<i64>,
    /// The definition whose id the blob's associated data names, when the file was carried over
    /// from an earlier definition (a re-keyed form); `None`: this definition.
    pub sealed_for_def: Option<i64>,
}

impl FormAttachmentRow {
    /// The definition id bound into the blob's associated data.
    pub fn sealed_def_id(&self) -> i64 {
        self.sealed_for_def.unwrap_or(self.form_def_id)
    }
}

/// A collector account tied to one project ("app user" in ODK Central).
#[derive(Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct AppUserRow {
    /// Store id.
    pub id: i64,
    /// The project.
    pub project_id: i64,
    /// Name shown to managers.
    pub display_name: String,
    /// SHA-256 of the token; the token itself is shown once and never stored.
    pub token_hash: Vec<u8>,
    /// Creator.
    pub created_by: Option<i64>,
    /// Creation time.
    pub created_at: i64,
    /// Revocation time.
    pub revoked_at: Option<i64>,
}

impl std::fmt::Debug for AppUserRow {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AppUserRow")
            .field("id", &self.id)
            .field("project_id", &self.project_id)
            .field("display_name", &self.display_name)
            .field("revoked_at", &self.revoked_at)
            .finish_non_exhaustive()
    }
}

/// An account's role in a project, with what an Actor shows of the account.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct ProjectRoleRow {
    /// The account.
    pub user_id: i64,
    /// Its login name.
    pub username: String,
    /// When the account was created.
    pub user_created_at: i64,
    /// `manager`, `editor`, `viewer` or `formfill`.
    pub role: String,
    /// When the role was granted.
    pub created_at: i64,
}

/// Counts of rows, for "nothing changed" checks and the console.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Counts {
    /// Forms.
    pub forms: i64,
    /// Form definitions.
    pub form_defs: i64,
    /// Submissions.
    pub submissions: i64,
    /// Submission versions.
    pub submission_versions: i64,
    /// Submission attachment slots.
    pub submission_attachments: i64,
    /// Received attachments.
    pub received_attachments: i64,
}

/// Forms, collectors and roles.
#[async_trait]
pub trait FormStore: Send + Sync {
    /// Creates a form with its first definition, published now or left as a draft. Fails with
    /// `Conflict{forms_project_xml_form_id_key}` when the project already has that form id.
    async fn create_form(
        &self,
        project: ProjectId,
        def: &NewFormDef,
        publish: bool,
    ) -> Result<(FormRow, FormDefRow), StoreError>;

    /// Replaces (or creates) the draft of an existing form.
    async fn replace_draft(&self, form_id: i64, def: &NewFormDef)
    -> Result<FormDefRow, StoreError>;

    /// Publishes the draft. `Conflict{form_defs_published_version_key}` if its version was already
    /// published; `NotFound` without a draft.
    async fn publish_draft(&self, form_id: i64) -> Result<FormDefRow, StoreError>;

    /// A project's forms that are not deleted.
    async fn forms(&self, project: ProjectId) -> Result<Vec<FormRow>, StoreError>;

    /// One form by its XForm id.
    async fn form(
        &self,
        project: ProjectId,
        xml_form_id: &str,
    ) -> Result<Option<FormRow>, StoreError>;

    /// One form definition.
    async fn form_def(&self, id: i64) -> Result<Option<FormDefRow>, StoreError>;

    /// The published definition of a form with this version, without its XForm bytes.
    async fn published_def_meta(
        &self,
        form_id: i64,
        version: &str,
    ) -> Result<Option<FormDefMeta>, StoreError>;

    /// Every published definition of a form (oldest first).
    async fn published_defs(&self, form_id: i64) -> Result<Vec<FormDefRow>, StoreError>;

    /// Sets `state` and `anonymous`.
    async fn update_form(
        &self,
        form_id: i64,
        state: &str,
        anonymous: bool,
    ) -> Result<FormRow, StoreError>;

    /// Soft-deletes a form.
    async fn delete_form(&self, form_id: i64) -> Result<(), StoreError>;

    /// Media slots of a definition.
    async fn form_attachments(&self, def_id: i64) -> Result<Vec<FormAttachmentRow>, StoreError>;

    /// Records an uploaded media file; `NotFound` if the definition has no slot of that name.
    /// Returns the blob it replaced, for deletion.
    async fn set_form_attachment(
        &self,
        def_id: i64,
        name: &str,
        content_type: Option<&str>,
        blob_name: &str,
        md5: &str,
        size: i64,
    ) -> Result<Option<String>, StoreError>;

    /// Grants a user a role in a project (replacing any previous role).
    async fn set_project_role(
        &self,
        project: ProjectId,
        user: UserId,
        role: &str,
    ) -> Result<(), StoreError>;

    /// A user's role in a project.
    async fn project_role(
        &self,
        project: ProjectId,
        user: UserId,
    ) -> Result<Option<String>, StoreError>;

    /// The accounts with a role in a project (deleted accounts left out), by account id; only
    /// those with `role` when it is given.
    async fn project_roles(
        &self,
        project: ProjectId,
        role: Option<&str>,
    ) -> Result<Vec<ProjectRoleRow>, StoreError>;

    /// Removes an account's role in a project if it is `role`; `NotFound` when the account does
    /// not hold that role there.
    async fn remove_project_role(
        &self,
        project: ProjectId,
        user: UserId,
        role: &str,
    ) -> Result<(), StoreError>;

    /// Creates a collector.
    async fn create_app_user(
        &self,
        project: ProjectId,
        display_name: &str,
        token_hash: &[u8],
        created_by: Option<UserId>,
    ) -> Result<AppUserRow, StoreError>;

    /// A project's collectors, revoked ones included.
    async fn app_users(&self, project: ProjectId) -> Result<Vec<AppUserRow>, StoreError>;

    /// A collector by token hash, if not revoked.
    async fn app_user_by_token_hash(&self, hash: &[u8]) -> Result<Option<AppUserRow>, StoreError>;

    /// Revokes a collector (its token stops working at once).
    async fn revoke_app_user(&self, id: i64) -> Result<(), StoreError>;

    /// Lets a collector see and submit to a form.
    async fn assign_form(&self, app_user_id: i64, form_id: i64) -> Result<(), StoreError>;

    /// Removes that permission.
    async fn unassign_form(&self, app_user_id: i64, form_id: i64) -> Result<(), StoreError>;

    /// Form ids a collector is assigned to.
    async fn assigned_forms(&self, app_user_id: i64) -> Result<Vec<i64>, StoreError>;

    /// A collector by token hash (if not revoked) with its assigned form ids, sorted. Every
    /// token-authenticated request needs both, and tokens are never cached (revocation works at
    /// once), so the SQL stores answer it in one query rather than two round trips.
    async fn app_user_with_forms_by_token_hash(
        &self,
        hash: &[u8],
    ) -> Result<Option<(AppUserRow, Vec<i64>)>, StoreError> {
        let Some(user) = self.app_user_by_token_hash(hash).await? else {
            return Ok(None);
        };
        let forms = self.assigned_forms(user.id).await?;
        Ok(Some((user, forms)))
    }

    /// Row counts.
    async fn counts(&self) -> Result<Counts, StoreError>;
}

/// Associated data for a form media blob: the project and the definition it was sealed for.
pub fn media_aad(project: i64, def_id: i64, name: &str) -> Vec<u8> {
    format!("project:{project}/form-def:{def_id}/media:{name}").into_bytes()
}
