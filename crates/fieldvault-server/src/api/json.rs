//! JSON in and out: a body extractor whose rejections use the API's error shape, and the
//! timestamp format Central clients expect.

use axum::extract::{FromRequest, Request};
use serde::de::DeserializeOwned;

use crate::problem::ApiError;

/// Largest JSON request body accepted.
pub const MAX_JSON_BYTES: usize = 1024 * 1024;

/// `Json<T>` whose rejection is an [`ApiError`] (`{"code":"request.invalid_json",…}`), so every 4xx
/// has one shape.
pub struct AppJson<T>(pub T);

impl<S, T> FromRequest<S> for AppJson<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        // JSON bodies are small; the server-wide limit is sized for uploads, not for this.
        let (parts, body) = req.into_parts();
        let declared = parts
            .headers
            .get(axum::http::header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<usize>().ok());
        if declared.is_some_and(|n| n > MAX_JSON_BYTES) {
            return Err(ApiError::TooLarge {
                message: format!("JSON bodies are limited to {MAX_JSON_BYTES} bytes."),
            });
        }
        let bytes = axum::body::to_bytes(body, MAX_JSON_BYTES)
            .await
            .map_err(|_| ApiError::TooLarge {
                message: format!("JSON bodies are limited to {MAX_JSON_BYTES} bytes."),
            })?;
        let req = Request::from_parts(parts, axum::body::Body::from(bytes));
        match axum::Json::<T>::from_request(req, state).await {
            Ok(axum::Json(v)) => Ok(AppJson(v)),
            Err(rejection) => Err(ApiError::bad_request(
                "request.invalid_json",
                rejection.body_text(),
            )),
        }
    }
}

/// Unix milliseconds → ISO-8601 UTC with milliseconds (`2026-08-01T10:15:30.123Z`).
pub fn iso(ms: i64) -> String {
    let t =
        std::time::UNIX_EPOCH + std::time::Duration::from_millis(u64::try_from(ms).unwrap_or(0));
    humantime::format_rfc3339_millis(t).to_string()
}

/// Like [`iso`] for optional times (`null` stays `null`).
pub fn iso_opt(ms: Option<i64>) -> Option<String> {
    ms.map(iso)
}
