//! `POST /v1/projects/{pid}/forms/{form}/redactions`: redaction in the native API
//! (docs/redaction.md).

use axum::extract::{Path, State};
use axum::routing::post;
use axum::{Json, Router};
use fieldvault_core::ProjectId;
use serde_json::Value;

use super::json::AppJson;
use crate::App;
use crate::extract::AuthUser;
use crate::problem::ApiError;
use crate::service::{kobo, redaction};

/// The route.
pub fn routes() -> Router<App> {
    Router::new().route("/v1/projects/{pid}/forms/{form}/redactions", post(create))
}

async fn create(
    State(app): State<App>,
    who: AuthUser,
    Path((pid, form)): Path<(String, String)>,
    AppJson(body): AppJson<Value>,
) -> Result<Json<Value>, ApiError> {
    let pid = pid.parse().map(ProjectId).map_err(|_| ApiError::NotFound)?;
    let req = redaction::parse_native(&body)?;
    let asset = kobo::asset_for_form(&app, &who.actor, pid, &form).await?;
    let report = redaction::redact(&app, &who.actor, &who.user, &asset, req).await?;
    Ok(Json(report.to_json()))
}
