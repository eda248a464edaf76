//! Row types shared by both backends. Times are Unix milliseconds (UTC).

use fieldvault_core::{ProjectId, UserId};

/// Milliseconds since the Unix epoch, now.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// An account.
#[derive(Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct UserRow {
    /// Store-assigned id.
    pub id: i64,
    /// Unique (case-insensitively) login name.
    pub username: String,
    /// Optional e-mail (M6: not required).
    pub email: Option<String>,
    /// Django-format PBKDF2 hash. Never printed.
    pub password_hash: String,
    /// Site administrator.
    pub superuser: bool,
    /// False once suspended or deleted.
    pub active: bool,
    /// Creation time.
    pub created_at: i64,
    /// Password sign-in is refused until a new password is set (reset link or change route).
    pub must_reset_password: bool,
    /// An administrator requires a second factor: until one is enrolled the account reaches
    /// nothing but enrolment and sign-out.
    pub require_2fa: bool,
}

impl UserRow {
    /// The typed id.
    pub fn user_id(&self) -> UserId {
        UserId(self.id)
    }
}

impl std::fmt::Debug for UserRow {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UserRow")
            .field("id", &self.id)
            .field("username", &self.username)
            .field("superuser", &self.superuser)
            .field("active", &self.active)
            .finish_non_exhaustive()
    }
}

/// What creating an account needs.
pub struct NewUser {
    /// Login name (already validated).
    pub username: String,
    /// Optional e-mail.
    pub email: Option<String>,
    /// Hash produced by `fieldvault_crypto::password::hash`.
    pub password_hash: String,
    /// Site administrator.
    pub superuser: bool,
    /// False for an account imported as inactive.
    pub active: bool,
    /// Password sign-in refused until a new password is set (imported hashes that cannot be
    /// checked, or an administrator's decision).
    pub must_reset_password: bool,
}

/// A data key as stored: wrapped under the master key, bound to its id.
#[derive(Clone, sqlx::FromRow)]
pub struct DataKeyRow {
    /// Random id (`dk_…`), also the associated data of the wrapping.
    pub id: String,
    /// AES-GCM-wrapped key.
    pub wrapped: Vec<u8>,
    /// Creation time.
    pub created_at: i64,
}

impl std::fmt::Debug for DataKeyRow {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "DataKeyRow({})", self.id)
    }
}

/// A project.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct ProjectRow {
    /// Store-assigned id.
    pub id: i64,
    /// Display name.
    pub name: String,
    /// Optional description.
    pub description: Option<String>,
    /// The project's data key; `None` once crypto-shredded.
    pub data_key_id: Option<String>,
    /// Creator, if a user.
    pub created_by: Option<i64>,
    /// Creation time.
    pub created_at: i64,
    /// Last change.
    pub updated_at: Option<i64>,
    /// Archived projects take no submissions.
    pub archived: bool,
    /// Soft-deletion time.
    pub deleted_at: Option<i64>,
}

impl ProjectRow {
    /// The typed id.
    pub fn project_id(&self) -> ProjectId {
        ProjectId(self.id)
    }
}

/// What creating a project needs.
pub struct NewProject {
    /// Display name.
    pub name: String,
    /// Optional description.
    pub description: Option<String>,
    /// Creator.
    pub created_by: Option<UserId>,
}
