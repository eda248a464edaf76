//! Storage errors. Backend messages are kept for the log, never shown to a client.

/// What the store can report.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The row or object does not exist.
    #[error("not found")]
    NotFound,
    /// A uniqueness rule was violated; `constraint` names it (e.g. `users_username_key`).
    #[error("conflict on {constraint}")]
    Conflict {
        /// The violated constraint or index.
        constraint: String,
    },
    /// The database or object store cannot be reached right now; retrying may help.
    #[error("storage unavailable: {0}")]
    Unavailable(String),
    /// The master key does not open this data (wrong key file, variable or passphrase).
    #[error("{0}")]
    WrongKey(String),
    /// Stored data failed authentication or is not in a known format.
    #[error("stored data is damaged: {0}")]
    Corrupt(String),
    /// Configuration or environment problem found while opening the store.
    #[error("{0}")]
    Setup(String),
    /// Any other backend failure.
    #[error("storage backend error: {0}")]
    Backend(String),
}

impl From<sqlx::Error> for StoreError {
    fn from(e: sqlx::Error) -> Self {
        match &e {
            sqlx::Error::RowNotFound => StoreError::NotFound,
            sqlx::Error::Database(db) if db.is_unique_violation() => StoreError::Conflict {
                constraint: db
                    .constraint()
                    .map(str::to_owned)
                    .unwrap_or_else(|| sqlite_constraint(db.message())),
            },
            sqlx::Error::Io(_)
            | sqlx::Error::Tls(_)
            | sqlx::Error::PoolTimedOut
            | sqlx::Error::PoolClosed
            | sqlx::Error::WorkerCrashed => StoreError::Unavailable(e.to_string()),
            // PostgreSQL connection exceptions (08xxx) and operator intervention (57P01 admin
            // shutdown, 57P02 crash shutdown, 57P03 cannot connect now): the server is going away
            // or not back yet.
            sqlx::Error::Database(db)
                if db
                    .code()
                    .is_some_and(|c| c.starts_with("08") || c.starts_with("57P")) =>
            {
                StoreError::Unavailable(e.to_string())
            }
            sqlx::Error::Database(db) if db.code().as_deref() == Some("26") => {
                StoreError::Corrupt("the database file is not readable with this key".into())
            }
            _ => StoreError::Backend(e.to_string()),
        }
    }
}

impl From<fieldvault_crypto::CryptoError> for StoreError {
    fn from(e: fieldvault_crypto::CryptoError) -> Self {
        StoreError::Corrupt(e.to_string())
    }
}

impl From<object_store::Error> for StoreError {
    fn from(e: object_store::Error) -> Self {
        match e {
            object_store::Error::NotFound { .. } => StoreError::NotFound,
            object_store::Error::AlreadyExists { path, .. } => {
                StoreError::Conflict { constraint: path }
            }
            other => StoreError::Unavailable(other.to_string()),
        }
    }
}

/// SQLite reports `UNIQUE constraint failed: users.username`; the unique index over
/// `lower(username)` reports `index 'users_username_key'`. Either way, name what was violated.
pub(crate) fn sqlite_constraint(message: &str) -> String {
    if let Some(start) = message.find("index '") {
        let rest = &message[start + 7..];
        if let Some(end) = rest.find('\'') {
            return rest[..end].to_owned();
        }
    }
    let columns = message.rsplit(": ").next().unwrap_or(message);
    SQLITE_UNIQUE_INDEXES
        .iter()
        .find(|(cols, _)| *cols == columns)
        .map_or_else(|| columns.replace('.', "_"), |(_, name)| (*name).to_owned())
}

/// SQLite names the columns of a violated unique index, PostgreSQL names the index; this maps the
/// former to the latter so callers see one name on both backends.
const SQLITE_UNIQUE_INDEXES: &[(&str, &str)] = &[
    ("data_keys.id", "data_keys_pkey"),
    (
        "forms.project_id, forms.xml_form_id",
        "forms_project_xml_form_id_key",
    ),
    (
        "form_defs.form_id, form_defs.version",
        "form_defs_published_version_key",
    ),
    (
        "form_attachments.form_def_id, form_attachments.name",
        "form_attachments_def_name_key",
    ),
    ("app_users.token_hash", "app_users_token_hash_key"),
    ("sessions.token_hash", "sessions_token_hash_key"),
    ("api_tokens.token_hash", "api_tokens_token_hash_key"),
    (
        "submissions.form_id, submissions.instance_id",
        "submissions_form_instance_key",
    ),
    (
        "submission_versions.form_id, submission_versions.instance_id",
        "submission_versions_form_instance_key",
    ),
    (
        "submission_attachments.version_id, submission_attachments.name",
        "submission_attachments_version_name_key",
    ),
    (
        "kobo_export_settings.form_id, kobo_export_settings.name",
        "kobo_export_settings_form_name_key",
    ),
    ("kobo_export_settings.uid", "kobo_export_settings_uid_key"),
];
