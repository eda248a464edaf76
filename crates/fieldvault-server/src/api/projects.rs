//! `/v1/projects…`: projects and project roles, in Central's shapes (central-api.md §3, §5).

use axum::extract::{Path, State};
use axum::routing::{get, post};
use axum::{Json, Router};
use fieldvault_core::{ProjectId, UserId};
use fieldvault_store::ProjectRow;
use serde::{Deserialize, Deserializer};
use serde_json::{Value, json};

use crate::App;
use crate::api::json::{AppJson, iso, iso_opt};
use crate::extract::AuthUser;
use crate::problem::ApiError;
use crate::service::projects::{self, ProjectPatch};

/// The project routes.
pub fn routes() -> Router<App> {
    Router::new()
        .route("/v1/projects", get(list).post(create))
        .route("/v1/projects/{id}", get(read).patch(update).delete(remove))
        .route("/v1/projects/{id}/assignments", get(list_roles))
        .route("/v1/projects/{id}/assignments/{roleId}", get(role_actors))
        .route(
            "/v1/projects/{id}/assignments/{roleId}/{actorId}",
            post(grant_role).delete(revoke_role),
        )
}

/// Central's numeric id of a project role; the editor role has none, so its system name stands in.
fn role_id(role: &str) -> Value {
    match role {
        "manager" => json!(3),
        "viewer" => json!(4),
        "formfill" => json!(6),
        other => json!(other),
    }
}

/// `GET /v1/projects/{id}/assignments`: `[{actorId, roleId, role}]` (Central's shape plus the
/// role's system name), managers only.
async fn list_roles(
    State(app): State<App>,
    who: AuthUser,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let id = ProjectId(path_id(&id)?);
    let rows = projects::list_roles(app.store.as_ref(), &who.actor, id, None).await?;
    Ok(Json(Value::Array(
        rows.iter()
            .map(|r| json!({ "actorId": r.user_id, "roleId": role_id(&r.role), "role": r.role }))
            .collect(),
    )))
}

/// `GET /v1/projects/{id}/assignments/{roleId}`: the accounts holding that role, as Central's
/// Actor[], managers only.
async fn role_actors(
    State(app): State<App>,
    who: AuthUser,
    Path((id, role)): Path<(String, String)>,
) -> Result<Json<Value>, ApiError> {
    let id = ProjectId(path_id(&id)?);
    let rows = projects::list_roles(app.store.as_ref(), &who.actor, id, Some(&role)).await?;
    Ok(Json(Value::Array(
        rows.iter()
            .map(|r| {
                json!({
                    "id": r.user_id,
                    "type": "user",
                    "displayName": r.username,
                    "createdAt": iso(r.user_created_at),
                    "updatedAt": null,
                    "deletedAt": null,
                })
            })
            .collect(),
    )))
}

/// `DELETE /v1/projects/{id}/assignments/{roleId}/{actorId}`.
async fn revoke_role(
    State(app): State<App>,
    who: AuthUser,
    Path((id, role, user)): Path<(String, String, String)>,
) -> Result<Json<Value>, ApiError> {
    let id = ProjectId(path_id(&id)?);
    let user = UserId(path_id(&user)?);
    projects::revoke_role(app.store.as_ref(), &who.actor, id, &role, user).await?;
    app.hot.clear();
    Ok(success())
}

/// A numeric path id. Anything else names no resource, so it is a 404 like an unknown id
/// (Central answers the same), not a 400 that would hint at the route's shape.
pub(crate) fn path_id(s: &str) -> Result<i64, ApiError> {
    s.parse::<i64>().map_err(|_| ApiError::NotFound)
}

/// Central's Project shape. `keyId` stays null: managed (client-side) encryption is not offered.
pub(crate) fn project_json(p: &ProjectRow) -> Value {
    json!({
        "id": p.id,
        "name": p.name,
        "description": p.description,
        "archived": p.archived,
        "keyId": null,
        "createdAt": iso(p.created_at),
        "updatedAt": iso_opt(p.updated_at),
        "deletedAt": iso_opt(p.deleted_at),
    })
}

async fn remove(
    State(app): State<App>,
    who: AuthUser,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    projects::delete(app.store.as_ref(), &who.actor, ProjectId(path_id(&id)?)).await?;
    app.hot.clear();
    Ok(success())
}

/// The success object Central answers when there is nothing else to say.
pub(crate) fn success() -> Json<Value> {
    Json(json!({ "success": true }))
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct CreateBody {
    /// Missing reads as empty so the service names the field, rather than a serde message.
    #[serde(default)]
    name: String,
    #[serde(default)]
    description: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct PatchBody {
    #[serde(default)]
    name: Option<String>,
    /// Absent keeps the description; `null` clears it.
    #[serde(default, deserialize_with = "present")]
    description: Option<Option<String>>,
    /// Central writes "not archived" as `null`.
    #[serde(default, deserialize_with = "present")]
    archived: Option<Option<bool>>,
}

/// Distinguishes a key sent as `null` (`Some(None)`) from an absent key (`None`, via `default`).
fn present<'de, D, T>(d: D) -> Result<Option<T>, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de>,
{
    T::deserialize(d).map(Some)
}

/// `GET /v1/projects`: the projects the caller has a role in.
async fn list(State(app): State<App>, who: AuthUser) -> Result<Json<Value>, ApiError> {
    let rows = projects::list(app.store.as_ref(), &who.actor).await?;
    Ok(Json(Value::Array(rows.iter().map(project_json).collect())))
}

/// `POST /v1/projects`.
async fn create(
    State(app): State<App>,
    who: AuthUser,
    AppJson(body): AppJson<CreateBody>,
) -> Result<Json<Value>, ApiError> {
    let row = projects::create(&app, &who.actor, &body.name, body.description.as_deref()).await?;
    Ok(Json(project_json(&row)))
}

/// `GET /v1/projects/{id}`.
async fn read(
    State(app): State<App>,
    who: AuthUser,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let id = ProjectId(path_id(&id)?);
    let row = projects::get(app.store.as_ref(), &who.actor, id).await?;
    Ok(Json(project_json(&row)))
}

/// `PATCH /v1/projects/{id}`.
async fn update(
    State(app): State<App>,
    who: AuthUser,
    Path(id): Path<String>,
    AppJson(body): AppJson<PatchBody>,
) -> Result<Json<Value>, ApiError> {
    let id = ProjectId(path_id(&id)?);
    let patch = ProjectPatch {
        name: body.name,
        description: body.description,
        archived: body.archived.map(|a| a.unwrap_or(false)),
    };
    let row = projects::update(app.store.as_ref(), &who.actor, id, patch).await?;
    app.hot.clear();
    Ok(Json(project_json(&row)))
}

/// `POST /v1/projects/{id}/assignments/{roleId}/{actorId}`.
async fn grant_role(
    State(app): State<App>,
    who: AuthUser,
    Path((id, role, user)): Path<(String, String, String)>,
) -> Result<Json<Value>, ApiError> {
    let id = ProjectId(path_id(&id)?);
    let user = UserId(path_id(&user)?);
    projects::grant_role(app.store.as_ref(), &who.actor, id, &role, user).await?;
    app.hot.clear();
    Ok(success())
}
