//! Fieldvault's storage: one [`Store`] trait with an embedded SQLite (SQLCipher) backend and a
//! PostgreSQL backend, an encrypted blob store on `object_store`, and the keyring that ties data
//! keys to the master key.
//!
//! Each `Store` method is one transaction. When a use case needs several writes to be atomic it
//! gets one method (e.g. [`Store::create_project`] inserts the data key and the project together),
//! so transactions never leak upward. Both backends pass the same suite (`tests/suite.rs`).
#![warn(missing_docs)]

pub mod audit_chain;
pub mod backup;
pub mod blob;
pub mod bulk_read;
pub mod change_journal;
pub mod data;
pub mod error;
pub mod forms;
pub mod intake_journal;
mod intake_split;
pub mod keyfile;
pub mod keyring;
pub mod kobo;
pub mod leader;
pub mod lifecycle;
pub mod limits;
pub mod model;
pub mod open;
mod pg_intake;
pub mod pitr;
pub mod postgres;
pub mod project_keys;
pub mod project_recovery;
mod sql;
pub mod sqlite;
mod sqlite_intake;
pub mod submissions;
pub mod throttle;
mod token_cache;
pub mod tokens;
pub mod two_factor;

use async_trait::async_trait;
use fieldvault_core::{ProjectId, UserId};

pub use audit_chain::{AuditRow, AuditStore, NewAudit};
pub use blob::{BlobSettings, BlobStore};
pub use bulk_read::{BulkReadStore, PageReader};
pub use data::{Cursor, DataStore, Deleted, PageQuery, Purged, SubmissionRecord};
pub use error::StoreError;
pub use forms::{
    AppUserRow, Counts, FormAttachmentRow, FormDefMeta, FormDefRow, FormRow, FormStore, NewFormDef,
    ProjectRoleRow,
};
pub use keyring::Keyring;
pub use kobo::{
    KoboExportRow, KoboExportSettingRow, KoboRecord, KoboStore, NewKoboExport,
    NewKoboExportSetting, VersionRewrite,
};
pub use leader::{LeaderStore, Leadership};
pub use lifecycle::{InviteRow, LifecycleStore, NewInvite, PasswordResetRow};
pub use limits::{BudgetDelta, LimitStore, NoticeRow, RestrictionRow};
pub use model::{DataKeyRow, NewProject, NewUser, ProjectRow, UserRow, now_ms};
pub use open::{MasterKeySource, Opened, StorageSettings, open};
pub use project_keys::{KeyedDef, ProjectKeyRow, ProjectKeyStore};
pub use submissions::{
    IngestOutcome, IngestResult, NewSubmission, ReceivedAttachment, SubmissionAttachmentRow,
    SubmissionRow, SubmissionStore, SubmissionVersionRow,
};
pub use throttle::ThrottleStore;
pub use tokens::{ApiTokenRow, SessionRow, TokenStore};
pub use two_factor::{TotpRow, TwoFactorStore};

/// Which backend a store runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// Embedded SQLite encrypted with SQLCipher.
    Sqlite,
    /// PostgreSQL.
    Postgres,
}

impl Backend {
    /// Lowercase name for logs and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            Backend::Sqlite => "sqlite",
            Backend::Postgres => "postgres",
        }
    }
}

/// Re-wraps one data key: `(key id, wrapped under the old master key)` → wrapped under the new one.
pub type Rewrap<'a> = dyn Fn(&str, &[u8]) -> Result<Vec<u8>, StoreError> + Send + Sync + 'a;

/// Everything Fieldvault keeps in its database.
#[async_trait]
pub trait Store:
    FormStore
    + SubmissionStore
    + DataStore
    + KoboStore
    + TokenStore
    + AuditStore
    + ThrottleStore
    + TwoFactorStore
    + ProjectKeyStore
    + LifecycleStore
    + LimitStore
    + LeaderStore
    + BulkReadStore
    + Send
    + Sync
    + 'static
{
    /// Which backend this is.
    fn backend(&self) -> Backend;

    /// Closes every connection; on SQLite this checkpoints the WAL into the database file.
    async fn close(&self);

    /// Cheap round trip proving the database answers (used by `/readyz`).
    async fn health(&self) -> Result<(), StoreError>;

    /// Reads a metadata value.
    async fn meta(&self, key: &str) -> Result<Option<Vec<u8>>, StoreError>;

    /// Stores `value` under `key` only if no value is there yet; returns the value now stored.
    /// Several instances starting together therefore agree on one value.
    async fn meta_init(&self, key: &str, value: &[u8]) -> Result<Vec<u8>, StoreError>;

    /// Creates an account. Fails with `Conflict{users_username_key}` for a taken name.
    async fn create_user(&self, new: &NewUser) -> Result<UserRow, StoreError>;

    /// Suspends (`false`) or reactivates (`true`) an account.
    async fn set_user_active(&self, id: UserId, active: bool) -> Result<(), StoreError>;

    /// Replaces an account's password hash (a changed password, or a stronger hash at login).
    async fn update_password_hash(&self, id: UserId, hash: &str) -> Result<(), StoreError>;

    /// Finds an account by name, case-insensitively.
    async fn user_by_username(&self, username: &str) -> Result<Option<UserRow>, StoreError>;

    /// Finds an account by id.
    async fn user_by_id(&self, id: UserId) -> Result<Option<UserRow>, StoreError>;

    /// Number of accounts (the first start explains how to create one when it is zero).
    async fn count_users(&self) -> Result<i64, StoreError>;

    /// Accounts that are not deleted, by id, at most `limit` from `offset`. With `contains`, only
    /// those whose username or e-mail contains it, case-insensitively (`%`, `_` and `\` match
    /// themselves).
    async fn list_users(
        &self,
        contains: Option<&str>,
        limit: i64,
        offset: i64,
    ) -> Result<Vec<UserRow>, StoreError>;

    /// Stores a new data key and a project that uses it, atomically.
    async fn create_project(
        &self,
        new: &NewProject,
        key: &DataKeyRow,
    ) -> Result<ProjectRow, StoreError>;

    /// Finds a project (including soft-deleted ones).
    async fn project(&self, id: ProjectId) -> Result<Option<ProjectRow>, StoreError>;

    /// Projects that are not deleted, by id.
    async fn list_projects(&self) -> Result<Vec<ProjectRow>, StoreError>;

    /// Sets a project's name, description and archived flag, stamping `updated_at`. `NotFound`
    /// for an unknown or soft-deleted project, so a deleted project cannot be revived by an edit.
    /// Soft-deletes a project (it disappears from every list and lookup by the API).
    async fn delete_project(&self, id: ProjectId) -> Result<(), StoreError>;

    /// Replaces a project's name, description and archived flag.
    async fn update_project(
        &self,
        id: ProjectId,
        name: &str,
        description: Option<&str>,
        archived: bool,
    ) -> Result<ProjectRow, StoreError>;

    /// Reads a wrapped data key.
    async fn data_key(&self, id: &str) -> Result<Option<DataKeyRow>, StoreError>;

    /// Destroys a data key (crypto-shredding) and detaches it from its project.
    async fn destroy_data_key(&self, id: &str) -> Result<(), StoreError>;

    /// Re-wraps every data key and replaces the stored master-key check, in one transaction.
    async fn rewrap_data_keys(
        &self,
        rewrap: &Rewrap<'_>,
        new_key_check: &[u8],
    ) -> Result<u64, StoreError>;
}
