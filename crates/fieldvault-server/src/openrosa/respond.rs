//! OpenRosa responses: the headers every answer carries (openrosa.md §2), and errors rendered as
//! an `OpenRosaResponse` with the same status as the JSON API would use, so Collect shows the
//! message to the enumerator.

use std::time::SystemTime;

use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

use super::render::{OPENROSA_VERSION, XML_CONTENT_TYPE, http_date, openrosa_response};
use crate::problem::ApiError;
use crate::service::ServiceError;

/// Largest submission we advertise (`X-OpenRosa-Accept-Content-Length`); Collect splits uploads
/// to stay below it.
pub fn accept_content_length(body_limit: u64) -> String {
    // Collect's size excludes multipart overhead; leave room for it.
    body_limit.saturating_sub(1024 * 1024).max(1024).to_string()
}

/// The headers every OpenRosa answer carries.
pub fn headers(extra_accept_length: Option<&str>) -> HeaderMap {
    let mut h = HeaderMap::new();
    h.insert(
        "x-openrosa-version",
        HeaderValue::from_static(OPENROSA_VERSION),
    );
    h.insert(header::CONTENT_LANGUAGE, HeaderValue::from_static("en"));
    if let Ok(v) = HeaderValue::from_str(&http_date(SystemTime::now())) {
        h.insert(header::DATE, v);
    }
    if let Some(len) = extra_accept_length.and_then(|l| HeaderValue::from_str(l).ok()) {
        h.insert("x-openrosa-accept-content-length", len);
    }
    h
}

/// An XML document answer.
pub fn xml(status: StatusCode, body: String) -> Response {
    let mut h = headers(None);
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(XML_CONTENT_TYPE),
    );
    (status, h, body).into_response()
}

/// An error on the OpenRosa surface.
pub struct OrError(pub ApiError);

impl From<ApiError> for OrError {
    fn from(e: ApiError) -> Self {
        OrError(e)
    }
}

impl From<ServiceError> for OrError {
    fn from(e: ServiceError) -> Self {
        OrError(e.into())
    }
}

impl IntoResponse for OrError {
    fn into_response(self) -> Response {
        let (status, _code, message) = self.0.parts();
        let mut resp = xml(status, openrosa_response(&message, Some("error")));
        match &self.0 {
            ApiError::Unauthenticated { .. } => {
                resp.headers_mut().insert(
                    header::WWW_AUTHENTICATE,
                    HeaderValue::from_static("Basic realm=\"Fieldvault\", charset=\"UTF-8\""),
                );
            }
            ApiError::Internal(cause) | ApiError::Unavailable(cause) => {
                resp.extensions_mut()
                    .insert(crate::problem::InternalCause(cause.clone()));
            }
            _ => {}
        }
        resp
    }
}
