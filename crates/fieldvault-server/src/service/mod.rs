//! Service functions: one per use case, shared by HTTP handlers and the CLI. Each calls
//! `authorize` before any protected read or write. Nothing here knows about HTTP.

pub mod accounts;
pub mod app_users;
pub mod audit;
pub mod backup;
pub mod budget;
pub mod console;
pub mod context;
pub mod data;
mod data_scan;
pub mod encryption;
pub mod export;
pub mod forms;
pub mod hot_cache;
pub mod import;
pub mod ingest_queue;
pub mod intake;
pub mod kobo;
pub mod kobo_export;
pub mod kobo_xlsx;
pub mod odata;
pub mod projects;
pub mod redaction;
pub mod sessions;
pub mod submissions;
pub mod two_factor;
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
    /// The credentials presented are wrong.
    #[error("authentication failed")]
    BadCredentials,
    /// The account's second factor is missing (`required`) or wrong.
    #[error("second factor needed")]
    SecondFactor {
        /// True when no code was given.
        required: bool,
    },
    /// The password is right but must be replaced first (forced reset).
    #[error("password reset required")]
    PasswordResetRequired,
    /// Refused for a reason that is not authorization (code + message), answered 403.
    #[error("{message}")]
    Refused {
        /// Stable code.
        code: &'static str,
        /// Explanation for a human.
        message: String,
    },
    /// Too many attempts; retry after the given time.
    #[error("too many attempts")]
    RateLimited {
        /// Milliseconds until a retry may succeed.
        retry_after_ms: i64,
    },
    /// Credentials are needed (a 401 with a challenge).
    #[error("authentication required")]
    Unauthenticated,
    /// The thing does not exist (or the caller may not know that it does).
    #[error("not found")]
    NotFound,
    /// Not found, with an explanation worth showing (an unknown form id in a submission).
    #[error("{0}")]
    NotFoundWith(String),
    /// A uniqueness rule: `what` is taken.
    #[error("{what} is already taken")]
    Taken {
        /// Which value.
        what: &'static str,
    },
    /// The request conflicts with current state.
    #[error("{message}")]
    Conflict {
        /// Stable code.
        code: &'static str,
        /// Explanation for a human.
        message: String,
    },
    /// An upload exceeds a size limit.
    #[error("{0}")]
    TooLarge(String),
    /// The upload is of a kind not accepted here.
    #[error("{0}")]
    Unsupported(String),
    /// The input is malformed in a way a rule names (code + message).
    #[error("{message}")]
    Invalid {
        /// Stable code.
        code: &'static str,
        /// Explanation for a human.
        message: String,
    },
    /// Temporarily unable to take the request (a 503 with a code saying why).
    #[error("{message}")]
    Busy {
        /// Stable code.
        code: &'static str,
        /// Explanation for a human.
        message: String,
    },
    /// A protocol feature that is not implemented (code + message).
    #[error("{message}")]
    NotImplemented {
        /// Stable code.
        code: &'static str,
        /// Explanation for a human.
        message: String,
    },
    /// An unexpected internal failure (a worker thread died, the RNG failed).
    #[error("internal: {0}")]
    Internal(String),
}

impl From<fieldvault_crypto::CryptoError> for ServiceError {
    fn from(e: fieldvault_crypto::CryptoError) -> Self {
        ServiceError::Internal(e.to_string())
    }
}

impl From<ServiceError> for ApiError {
    fn from(e: ServiceError) -> Self {
        match e {
            ServiceError::Core(c) => c.into(),
            ServiceError::Store(s) => s.into(),
            ServiceError::NotFound => ApiError::NotFound,
            ServiceError::NotFoundWith(message) => ApiError::NotFoundWith { message },
            ServiceError::BadCredentials => crate::extract::failed(),
            ServiceError::SecondFactor { required } => ApiError::Unauthenticated {
                code: if required {
                    "auth.second_factor_required"
                } else {
                    "auth.second_factor_failed"
                },
                message: if required {
                    "This account uses two-factor sign-in: send the code from the authenticator app (or a recovery code) as \"code\".".into()
                } else {
                    "The two-factor code is wrong, expired or already used.".into()
                },
            },
            ServiceError::PasswordResetRequired => ApiError::Refused {
                code: "auth.password_reset_required",
                message: "This account must set a new password first: use a password-reset link from an administrator, or POST /v1/users/current/password with the current password.".into(),
            },
            ServiceError::Refused { code, message } => ApiError::Refused { code, message },
            ServiceError::RateLimited { retry_after_ms } => ApiError::RateLimited {
                retry_after_secs: u64::try_from((retry_after_ms + 999) / 1000)
                    .unwrap_or(1)
                    .max(1),
            },
            ServiceError::Unauthenticated => ApiError::Unauthenticated {
                code: "auth.required",
                message: "This resource needs authentication.".into(),
            },
            ServiceError::Taken { what } => ApiError::Conflict {
                code: "conflict.taken",
                message: format!("That {what} is already taken."),
            },
            ServiceError::Conflict { code, message } => ApiError::Conflict { code, message },
            ServiceError::TooLarge(message) => ApiError::TooLarge { message },
            ServiceError::Unsupported(message) => ApiError::Unsupported { message },
            ServiceError::Invalid { code, message } => ApiError::BadRequest { code, message },
            ServiceError::Busy { code, message } => ApiError::Busy { code, message },
            ServiceError::NotImplemented { code, message } => {
                ApiError::NotImplemented { code, message }
            }
            ServiceError::Internal(m) => ApiError::Internal(m),
        }
    }
}
