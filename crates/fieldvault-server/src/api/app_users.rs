//! `/v1/projects/{id}/app-users…` and app-user form assignments, in Central's shapes
//! (central-api.md §5).

use axum::extract::{Path, State};
use axum::routing::{delete, get, post};
use axum::{Json, Router};
use fieldvault_core::ProjectId;
use fieldvault_store::AppUserRow;
use serde::Deserialize;
use serde_json::{Value, json};

use crate::App;
use crate::api::json::{AppJson, iso, iso_opt};
use crate::api::projects::{path_id, success};
use crate::extract::AuthUser;
use crate::problem::ApiError;
use crate::service::app_users;

/// The app-user routes.
pub fn routes() -> Router<App> {
    Router::new()
        .route("/v1/projects/{id}/app-users", get(list).post(create))
        .route("/v1/projects/{id}/app-users/{actorId}", delete(revoke))
        .route(
            "/v1/projects/{id}/forms/{xmlFormId}/assignments/app-user/{actorId}",
            post(assign).delete(unassign),
        )
}

/// Central's App user shape. `token` is null except in the creation reply: only its hash is kept.
fn app_user_json(r: &AppUserRow, token: Option<&str>) -> Value {
    json!({
        "id": r.id,
        "type": "field_key",
        "displayName": r.display_name,
        "projectId": r.project_id,
        "createdAt": iso(r.created_at),
        "updatedAt": null,
        "deletedAt": iso_opt(r.revoked_at),
        "token": token,
    })
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct CreateBody {
    /// Missing reads as empty so the service names the field.
    #[serde(default)]
    display_name: String,
}

/// `GET /v1/projects/{id}/app-users`.
async fn list(
    State(app): State<App>,
    who: AuthUser,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let id = ProjectId(path_id(&id)?);
    let rows = app_users::list(app.store.as_ref(), &who.actor, id).await?;
    Ok(Json(Value::Array(
        rows.iter().map(|r| app_user_json(r, None)).collect(),
    )))
}

/// `POST /v1/projects/{id}/app-users`: the only response that ever carries the token.
async fn create(
    State(app): State<App>,
    who: AuthUser,
    Path(id): Path<String>,
    AppJson(body): AppJson<CreateBody>,
) -> Result<Json<Value>, ApiError> {
    let id = ProjectId(path_id(&id)?);
    let made = app_users::create(app.store.as_ref(), &who.actor, id, &body.display_name).await?;
    Ok(Json(app_user_json(&made.row, Some(&made.token))))
}

/// `DELETE /v1/projects/{id}/app-users/{actorId}`.
async fn revoke(
    State(app): State<App>,
    who: AuthUser,
    Path((id, user)): Path<(String, String)>,
) -> Result<Json<Value>, ApiError> {
    let id = ProjectId(path_id(&id)?);
    app_users::revoke(app.store.as_ref(), &who.actor, id, path_id(&user)?).await?;
    Ok(success())
}

/// `POST /v1/projects/{id}/forms/{xmlFormId}/assignments/app-user/{actorId}`.
async fn assign(
    State(app): State<App>,
    who: AuthUser,
    Path((id, form, user)): Path<(String, String, String)>,
) -> Result<Json<Value>, ApiError> {
    let id = ProjectId(path_id(&id)?);
    app_users::assign_form(app.store.as_ref(), &who.actor, id, &form, path_id(&user)?).await?;
    Ok(success())
}

/// `DELETE /v1/projects/{id}/forms/{xmlFormId}/assignments/app-user/{actorId}`.
async fn unassign(
    State(app): State<App>,
    who: AuthUser,
    Path((id, form, user)): Path<(String, String, String)>,
) -> Result<Json<Value>, ApiError> {
    let id = ProjectId(path_id(&id)?);
    app_users::unassign_form(app.store.as_ref(), &who.actor, id, &form, path_id(&user)?).await?;
    Ok(success())
}
