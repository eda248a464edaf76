//! Automatic restrictions for administrators (`/v1/admin/restrictions`, behind
//! `admin.allow_cidrs` and 2FA like the rest of the admin surface), and the notices an account
//! receives (`/v1/users/current/notices`).

use axum::extract::{Path, State};
use axum::routing::{get, post};
use axum::{Json, Router};
use fieldvault_store::{NoticeRow, RestrictionRow};
use serde_json::{Value, json};

use super::json::{iso, iso_opt};
use crate::App;
use crate::extract::AuthUser;
use crate::problem::ApiError;
use crate::service::budget;

/// Most notices returned at once.
const NOTICES_SHOWN: i64 = 200;

/// The routes.
pub fn routes() -> Router<App> {
    Router::new()
        .route("/v1/admin/restrictions", get(list).post(create))
        .route("/v1/admin/restrictions/{id}/lift", post(lift))
        .route("/v1/users/current/notices", get(notices))
        .route("/v1/users/current/notices/read", post(mark_read))
}

fn restriction_json(r: &RestrictionRow) -> Value {
    json!({
        "id": r.id,
        "subject": r.subject,
        "mode": r.mode,
        "reason": r.reason,
        "createdAt": iso(r.created_at),
        "liftedAt": iso_opt(r.lifted_at),
        "liftedBy": r.lifted_by,
        "active": r.lifted_at.is_none(),
    })
}

fn notice_json(n: &NoticeRow) -> Value {
    json!({
        "id": n.id,
        "kind": n.kind,
        "message": n.message,
        "createdAt": iso(n.created_at),
        "readAt": iso_opt(n.read_at),
    })
}

async fn list(State(app): State<App>, who: AuthUser) -> Result<Json<Value>, ApiError> {
    let rows = budget::list(&app, &who.actor).await?;
    Ok(Json(Value::Array(
        rows.iter().map(restriction_json).collect(),
    )))
}

#[derive(serde::Deserialize)]
struct NewRestriction {
    subject: String,
    mode: String,
    reason: Option<String>,
}

async fn create(
    State(app): State<App>,
    who: AuthUser,
    crate::api::json::AppJson(b): crate::api::json::AppJson<NewRestriction>,
) -> Result<Json<Value>, ApiError> {
    let by = format!("user:{}", who.user.username);
    let row = budget::restrict_by_hand(
        &app,
        &who.actor,
        &by,
        &b.subject,
        &b.mode,
        b.reason.as_deref(),
    )
    .await?;
    Ok(Json(restriction_json(&row)))
}

async fn lift(
    State(app): State<App>,
    who: AuthUser,
    Path(id): Path<i64>,
) -> Result<Json<Value>, ApiError> {
    let by = format!("user:{}", who.user.username);
    let row = budget::lift(&app, &who.actor, &by, id).await?;
    Ok(Json(restriction_json(&row)))
}

async fn notices(State(app): State<App>, who: AuthUser) -> Result<Json<Value>, ApiError> {
    let rows = app.store.notices(who.user.id, NOTICES_SHOWN).await?;
    Ok(Json(Value::Array(rows.iter().map(notice_json).collect())))
}

async fn mark_read(State(app): State<App>, who: AuthUser) -> Result<Json<Value>, ApiError> {
    let n = app
        .store
        .mark_notices_read(who.user.id, fieldvault_store::now_ms())
        .await?;
    Ok(Json(json!({ "success": true, "marked": n })))
}
