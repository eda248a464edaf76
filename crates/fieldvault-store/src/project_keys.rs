//! Project encryption keys: the ODK public key a project's forms carry, and the re-versioning of
//! its forms when that key is set, changed or removed — in one transaction, so a project is never
//! left with some forms under the old key and some under the new one.

use async_trait::async_trait;

use crate::{FormDefRow, NewFormDef, StoreError};

/// One public key a project has carried.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct ProjectKeyRow {
    /// Store id.
    pub id: i64,
    /// The project.
    pub project_id: i64,
    /// Base64 DER SubjectPublicKeyInfo, as forms carry it.
    pub public_key: String,
    /// Who set it.
    pub created_by: Option<i64>,
    /// When it was set.
    pub created_at: i64,
    /// When it was replaced or removed; `None` for the current key.
    pub retired_at: Option<i64>,
}

/// A form definition to replace as part of a key change.
pub struct KeyedDef {
    /// The form.
    pub form_id: i64,
    /// The definition being replaced.
    pub old_def_id: i64,
    /// The rewritten definition.
    pub def: NewFormDef,
}

impl std::fmt::Debug for KeyedDef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyedDef")
            .field("form_id", &self.form_id)
            .field("old_def_id", &self.old_def_id)
            .field("version", &self.def.version)
            .finish_non_exhaustive()
    }
}

/// Project keys and the form re-versioning that goes with them.
#[async_trait]
pub trait ProjectKeyStore: Send + Sync {
    /// The project's current public key.
    async fn project_public_key(&self, project: i64) -> Result<Option<ProjectKeyRow>, StoreError>;

    /// Every key the project has carried, oldest first.
    async fn project_public_keys(&self, project: i64) -> Result<Vec<ProjectKeyRow>, StoreError>;

    /// Retires the current key, stores `key` as current (none when `None`), publishes each of
    /// `published` as the form's new published definition (copying the old definition's media),
    /// and rewrites each of `drafts` in place — all or nothing. A version that is already
    /// published gives `Conflict`.
    async fn change_project_key(
        &self,
        project: i64,
        key: Option<&str>,
        by: Option<i64>,
        published: &[KeyedDef],
        drafts: &[KeyedDef],
    ) -> Result<Vec<FormDefRow>, StoreError>;
}
