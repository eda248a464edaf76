//! Service functions: one per use case, shared by HTTP handlers and the CLI. Each calls
//! `authorize` before any protected read or write. Nothing here knows about HTTP.

pub mod app_users;
pub mod context;
pub mod projects;
pub mod users;

use fieldvault_core::CoreError;
use fieldvault_store::StoreError;

use crate::problem::ApiError;

/// What a service function can fail with.
#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    /// A domain rule refused.
    #[error(transparent)]
    Core(#[from] CoreError),
    /// Storage failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The thing does not exist (or the caller may not know that it does).
    #[error("not found")]
    NotFound,
    /// A uniqueness rule: `what` is taken.
    #[error("{what} is already taken")]
    Taken {
        /// Which value.
        what: &'static str,
    },
    /// An unexpected internal failure (a worker thread died, the RNG failed).
    #[error("internal: {0}")]
    Internal(String),
}

impl From<ServiceError> for ApiError {
    fn from(e: ServiceError) -> Self {
        match e {
            ServiceError::Core(c) => c.into(),
            ServiceError::Store(s) => s.into(),
            ServiceError::NotFound => ApiError::NotFound,
            ServiceError::Taken { what } => ApiError::Conflict {
                code: "conflict.taken",
                message: format!("That {what} is already taken."),
            },
            ServiceError::Internal(m) => ApiError::Internal(m),
        }
    }
}
