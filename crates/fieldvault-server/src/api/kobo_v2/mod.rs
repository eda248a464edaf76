//! The KoboToolbox API v2 subset (specs/kobo-api-v2.md, docs/kobo-api.md): existing KoboToolbox
//! scripts and client libraries work with only a new base URL.
//!
//! Conventions of that API kept here: every route answers with and without its trailing slash
//! and with a `.json` suffix; `?format=json` is accepted; errors carry DRF's `{"detail": …}`
//! beside Fieldvault's `code` and `message`; links are absolute, built from the request's host.

mod assets;
mod content;
mod data;
mod export_settings;
mod exports;

use axum::body::Body;
use axum::extract::{FromRequestParts, State};
use axum::http::request::Parts;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{MethodRouter, get};
use axum::{Json, Router};
use serde_json::{Value, json};

use crate::App;
use crate::extract::AuthUser;
use crate::middleware::client_ip::ClientInfo;
use crate::problem::ApiError;
use crate::service::{self, ServiceError};

/// Every KoboToolbox route.
pub fn routes() -> Router<App> {
    let mut r = Router::new();
    let mut add = |path: &str, m: MethodRouter<App>| {
        r = std::mem::take(&mut r)
            .route(path, m.clone())
            .route(&format!("{path}/"), m);
    };
    add("/token", get(token).post(token).delete(token_delete));
    add("/api/v2/assets", get(assets::list));
    add("/api/v2/assets.json", get(assets::list));
    add("/api/v2/assets/{uid}", get(assets::detail));
    add("/api/v2/assets/{uid}/content", get(assets::content));
    add("/api/v2/assets/{uid}/data", get(data::list));
    add("/api/v2/assets/{uid}/data.json", get(data::list));
    add(
        "/api/v2/assets/{uid}/data/bulk",
        axum::routing::patch(data::bulk_patch).delete(data::bulk_delete),
    );
    add(
        "/api/v2/assets/{uid}/data/validation_statuses",
        axum::routing::patch(data::statuses_patch).delete(data::statuses_delete),
    );
    add(
        "/api/v2/assets/{uid}/data/{id}",
        get(data::one).delete(data::delete_one),
    );
    add(
        "/api/v2/assets/{uid}/data/{id}/validation_status",
        get(data::status)
            .patch(data::status_patch)
            .delete(data::status_delete),
    );
    add(
        "/api/v2/assets/{uid}/data/{id}/attachments/{att}",
        get(data::attachment),
    );
    add(
        "/api/v2/assets/{uid}/data/{id}/attachments/{att}/{size}",
        get(data::attachment_sized),
    );
    add(
        "/api/v2/assets/{uid}/exports",
        get(exports::list).post(exports::create),
    );
    add(
        "/api/v2/assets/{uid}/exports/{euid}",
        get(exports::detail).delete(exports::remove),
    );
    add(
        "/api/v2/assets/{uid}/exports/{euid}/download",
        get(exports::download),
    );
    add(
        "/api/v2/assets/{uid}/export-settings",
        get(export_settings::list).post(export_settings::create),
    );
    add(
        "/api/v2/assets/{uid}/export-settings/{es}",
        get(export_settings::detail)
            .patch(export_settings::update)
            .delete(export_settings::remove),
    );
    add(
        "/api/v2/assets/{uid}/export-settings/{es}/data.csv",
        get(export_settings::data_csv),
    );
    add(
        "/api/v2/assets/{uid}/export-settings/{es}/data.xlsx",
        get(export_settings::data_xlsx),
    );
    r
}

/// An error in the KoboToolbox shape: DRF's `detail` plus Fieldvault's `code` and `message`.
pub struct KoboError(ApiError);

impl From<ApiError> for KoboError {
    fn from(e: ApiError) -> Self {
        Self(e)
    }
}

impl From<ServiceError> for KoboError {
    fn from(e: ServiceError) -> Self {
        Self(e.into())
    }
}

impl From<fieldvault_store::StoreError> for KoboError {
    fn from(e: fieldvault_store::StoreError) -> Self {
        Self(e.into())
    }
}

impl KoboError {
    /// A 400 with a DRF field-keyed body `{"<field>": "<message>"}`.
    pub fn field(field: &'static str, message: impl Into<String>) -> Self {
        Self(ApiError::BadRequest {
            code: field,
            message: message.into(),
        })
    }
}

impl IntoResponse for KoboError {
    fn into_response(self) -> Response {
        let (status, code, message) = self.0.parts();
        let detail = match status {
            StatusCode::NOT_FOUND => "Not found.".to_owned(),
            StatusCode::FORBIDDEN => "You do not have permission to perform this action.".into(),
            StatusCode::UNAUTHORIZED if code == "auth.required" => {
                "Authentication credentials were not provided.".into()
            }
            StatusCode::UNAUTHORIZED => "Invalid token.".into(),
            _ => message.clone(),
        };
        let mut body = json!({ "detail": detail, "code": code, "message": message });
        // DRF answers validation errors keyed by the field; the code of a field error is the
        // field's name (see `KoboError::field`).
        if status == StatusCode::BAD_REQUEST && !code.contains('.') {
            body[code] = json!(message);
        }
        let (mut parts, _) = self.0.into_response().into_parts();
        parts.headers.remove(header::CONTENT_LENGTH);
        let bytes = serde_json::to_vec(&body).unwrap_or_default();
        Response::from_parts(parts, Body::from(bytes))
    }
}

/// The server's absolute base URL as the client reached it (scheme and `Host`).
pub struct BaseUrl(pub String);

impl<S: Send + Sync> FromRequestParts<S> for BaseUrl {
    type Rejection = KoboError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        let secure = parts
            .extensions
            .get::<ClientInfo>()
            .is_some_and(|c| c.secure);
        let host = parts
            .headers
            .get(header::HOST)
            .and_then(|h| h.to_str().ok())
            .filter(|h| {
                !h.is_empty()
                    && h.len() <= 255
                    && h.bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b"-.:[]".contains(&b))
            })
            .unwrap_or("localhost");
        let scheme = if secure { "https" } else { "http" };
        Ok(BaseUrl(format!("{scheme}://{host}")))
    }
}

/// Strips a DRF format suffix (`.json`) from a path parameter; other formats are refused.
pub fn strip_format(s: &str) -> Result<&str, KoboError> {
    match s.rsplit_once('.') {
        Some((head, "json")) => Ok(head),
        Some((_, other)) if !other.is_empty() && other.len() <= 5 => Err(KoboError::field(
            "format",
            format!("The format {other:?} is not supported here; use json."),
        )),
        _ => Ok(s),
    }
}

/// Refuses a `format` query parameter other than `json`.
pub fn check_format(query: &[(String, String)]) -> Result<(), KoboError> {
    match query.iter().find(|(k, _)| k == "format") {
        Some((_, f)) if f != "json" && f != "api" => Err(KoboError::field(
            "format",
            format!("The format {f:?} is not supported here; use json."),
        )),
        _ => Ok(()),
    }
}

/// `{"count", "next", "previous", "results"}` with `next`/`previous` as the request URL with
/// `limit` and `start` replaced.
pub fn page(
    url_base: &str,
    query: &[(String, String)],
    count: usize,
    start: usize,
    limit: usize,
    results: Vec<Value>,
) -> Value {
    let link = |s: usize| {
        let mut q: Vec<(String, String)> = query
            .iter()
            .filter(|(k, _)| {
                !matches!(
                    k.as_str(),
                    "start" | "offset" | "limit" | "page" | "page_size"
                )
            })
            .cloned()
            .collect();
        q.push(("limit".into(), limit.to_string()));
        q.push(("start".into(), s.to_string()));
        format!(
            "{url_base}?{}",
            serde_urlencoded::to_string(&q).unwrap_or_default()
        )
    };
    let next = (start + limit < count).then(|| link(start + limit));
    let previous = (start > 0).then(|| link(start.saturating_sub(limit)));
    json!({ "count": count, "next": next, "previous": previous, "results": results })
}

/// `GET|POST /token/`: a KoboToolbox-style key for the caller (see `service::kobo::issue_token`).
async fn token(
    State(app): State<App>,
    who: AuthUser,
    method: axum::http::Method,
) -> Result<Response, KoboError> {
    let key = service::kobo::issue_token(&app, &who.actor, &who.user).await?;
    let status = if method == axum::http::Method::POST {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    let mut resp = (status, Json(json!({ "token": key.expose() }))).into_response();
    resp.headers_mut().insert(
        header::CACHE_CONTROL,
        axum::http::HeaderValue::from_static("no-store"),
    );
    Ok(resp)
}

/// `DELETE /token/`.
async fn token_delete(State(app): State<App>, who: AuthUser) -> Result<StatusCode, KoboError> {
    service::kobo::revoke_tokens(&app, &who.actor, &who.user).await?;
    Ok(StatusCode::NO_CONTENT)
}
