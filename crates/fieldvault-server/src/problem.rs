//! The one error catalogue of the HTTP surface.
//!
//! Every error leaves as `{"code": "<stable id>", "message": "<for a human>"}` with its status.
//! Internal causes never reach the client: a 5xx says "internal error" and the request id, and
//! the cause is logged once by the access-log middleware, which finds it in the response
//! extensions.

use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use fieldvault_core::CoreError;
use fieldvault_store::StoreError;
use serde_json::json;

/// An error answered to an API client.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// 400: the request is malformed or a value is refused.
    #[error("{message}")]
    BadRequest {
        /// Stable machine-readable code.
        code: &'static str,
        /// Explanation for a human.
        message: String,
    },
    /// 401: no or wrong credentials. Carries a `WWW-Authenticate` challenge.
    #[error("authentication required")]
    Unauthenticated {
        /// Why: `auth.required`, `auth.failed`, `auth.insecure_transport`.
        code: &'static str,
        /// Explanation.
        message: String,
    },
    /// 403: authenticated but not allowed.
    #[error("not allowed")]
    Forbidden {
        /// The verb that was refused.
        verb: &'static str,
    },
    /// 403 for a reason other than authorization: a missing or wrong CSRF token (`csrf`), a
    /// required second factor not enrolled yet, a closed sign-up, a forced password reset.
    #[error("{message}")]
    Refused {
        /// Stable code.
        code: &'static str,
        /// Explanation.
        message: String,
    },
    /// 404.
    #[error("not found")]
    NotFound,
    /// 404 with a specific explanation.
    #[error("{message}")]
    NotFoundWith {
        /// Explanation.
        message: String,
    },
    /// 409: conflicts with existing state.
    #[error("{message}")]
    Conflict {
        /// Stable code.
        code: &'static str,
        /// Explanation.
        message: String,
    },
    /// 415: the body is of a type this endpoint does not take.
    #[error("{message}")]
    Unsupported {
        /// Explanation.
        message: String,
    },
    /// 413: too large.
    #[error("{message}")]
    TooLarge {
        /// Explanation.
        message: String,
    },
    /// 429: too many attempts; `Retry-After` says when to try again.
    #[error("too many requests")]
    RateLimited {
        /// Seconds to wait.
        retry_after_secs: u64,
    },
    /// 429: the caller's request budget for this window is spent (`limits.*`).
    #[error("over budget")]
    OverBudget {
        /// Seconds until the window ends.
        retry_after_secs: u64,
    },
    /// 403: restricted after sustained excess over the request budget, until an administrator
    /// lifts it.
    #[error("restricted")]
    Restricted {
        /// What is restricted (`token:12`, `user:3`, `app_user:7`).
        subject: String,
        /// `read_only` or `suspended`.
        mode: &'static str,
    },
    /// 503 with a reason worth showing (the intake journal is full); retry later.
    #[error("{message}")]
    Busy {
        /// Stable code.
        code: &'static str,
        /// Explanation.
        message: String,
    },
    /// 501: a protocol feature this server does not implement (an OData query option).
    #[error("{message}")]
    NotImplemented {
        /// Stable code.
        code: &'static str,
        /// Explanation.
        message: String,
    },
    /// 503: a dependency (database, object store) is unavailable; retry later.
    #[error("service unavailable")]
    Unavailable(String),
    /// 500: a bug or an unexpected failure. The text is logged, never sent.
    #[error("internal error")]
    Internal(String),
}

/// The internal cause of a 5xx, attached to the response for the access log to record.
#[derive(Clone, Debug)]
pub struct InternalCause(pub String);

tokio::task_local! {
    /// The current request's id, set by the access-log middleware.
    pub static REQUEST_ID: String;
}

impl ApiError {
    /// Shorthand for a 400.
    pub fn bad_request(code: &'static str, message: impl Into<String>) -> Self {
        Self::BadRequest {
            code,
            message: message.into(),
        }
    }

    /// Status, code and public message.
    pub fn parts(&self) -> (StatusCode, &'static str, String) {
        match self {
            ApiError::BadRequest { code, message } => {
                (StatusCode::BAD_REQUEST, code, message.clone())
            }
            ApiError::Unauthenticated { code, message } => {
                (StatusCode::UNAUTHORIZED, code, message.clone())
            }
            ApiError::Forbidden { verb } => (
                StatusCode::FORBIDDEN,
                "auth.forbidden",
                format!("You are not allowed to perform {verb}."),
            ),
            ApiError::Refused { code, message } => (StatusCode::FORBIDDEN, code, message.clone()),
            ApiError::NotFound => (
                StatusCode::NOT_FOUND,
                "not_found",
                "Could not find the resource you were looking for.".into(),
            ),
            ApiError::NotFoundWith { message } => {
                (StatusCode::NOT_FOUND, "not_found", message.clone())
            }
            ApiError::Conflict { code, message } => (StatusCode::CONFLICT, code, message.clone()),
            ApiError::Unsupported { message } => (
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "request.unsupported_media_type",
                message.clone(),
            ),
            ApiError::TooLarge { message } => (
                StatusCode::PAYLOAD_TOO_LARGE,
                "request.too_large",
                message.clone(),
            ),
            ApiError::RateLimited { retry_after_secs } => (
                StatusCode::TOO_MANY_REQUESTS,
                "auth.rate_limited",
                format!("Too many attempts. Try again in {retry_after_secs} seconds."),
            ),
            ApiError::OverBudget { retry_after_secs } => (
                StatusCode::TOO_MANY_REQUESTS,
                "rate_limited",
                format!("Request budget used up for now; try again in {retry_after_secs} seconds."),
            ),
            ApiError::Restricted { subject, mode } => (
                StatusCode::FORBIDDEN,
                "restricted",
                format!(
                    "{subject} is restricted ({mode}) after sustained excess over its request budget; an administrator can lift the restriction."
                ),
            ),
            ApiError::Busy { code, message } => {
                (StatusCode::SERVICE_UNAVAILABLE, code, message.clone())
            }
            ApiError::NotImplemented { code, message } => {
                (StatusCode::NOT_IMPLEMENTED, code, message.clone())
            }
            ApiError::Unavailable(_) => (
                StatusCode::SERVICE_UNAVAILABLE,
                "service.unavailable",
                "A storage service is unavailable; try again shortly.".into(),
            ),
            ApiError::Internal(_) => (
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal",
                "internal error".into(),
            ),
        }
    }
}

/// Builds an error response from its parts (also used for limit rejections made by tower layers).
pub fn error_response(status: StatusCode, code: &str, message: &str) -> Response {
    let request_id = REQUEST_ID.try_with(Clone::clone).ok();
    let mut body = json!({ "code": code, "message": message });
    if let Some(id) = request_id {
        body["request_id"] = json!(id);
    }
    (status, Json(body)).into_response()
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, code, message) = self.parts();
        let mut resp = error_response(status, code, &message);
        match &self {
            ApiError::Unauthenticated { .. } => {
                resp.headers_mut().insert(
                    header::WWW_AUTHENTICATE,
                    HeaderValue::from_static("Basic realm=\"Fieldvault\", charset=\"UTF-8\""),
                );
            }
            ApiError::Internal(cause) | ApiError::Unavailable(cause) => {
                resp.extensions_mut().insert(InternalCause(cause.clone()));
            }
            ApiError::RateLimited { retry_after_secs }
            | ApiError::OverBudget { retry_after_secs } => {
                if let Ok(v) = HeaderValue::from_str(&retry_after_secs.to_string()) {
                    resp.headers_mut().insert(header::RETRY_AFTER, v);
                }
            }
            _ => {}
        }
        resp
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::NotFound => ApiError::NotFound,
            StoreError::Conflict { constraint } => ApiError::Conflict {
                code: "conflict",
                message: format!("This conflicts with an existing record ({constraint})."),
            },
            StoreError::Unavailable(m) => ApiError::Unavailable(m),
            other => ApiError::Internal(other.to_string()),
        }
    }
}

impl From<CoreError> for ApiError {
    fn from(e: CoreError) -> Self {
        match e {
            CoreError::Invalid { field, reason } => ApiError::BadRequest {
                code: "invalid",
                message: format!("{field}: {reason}"),
            },
            CoreError::Denied { verb } => ApiError::Forbidden { verb },
        }
    }
}

impl From<crate::service::budget::Refusal> for ApiError {
    fn from(r: crate::service::budget::Refusal) -> Self {
        use crate::service::budget::{Mode, Refusal};
        match r {
            Refusal::OverBudget { retry_after_secs } => ApiError::OverBudget { retry_after_secs },
            Refusal::Restricted { subject, mode } => ApiError::Restricted {
                subject,
                mode: match mode {
                    Mode::ReadOnly => "read_only",
                    Mode::Suspended => "suspended",
                },
            },
        }
    }
}
