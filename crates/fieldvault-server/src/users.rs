//! `/v1/users/…`: the account API (Central-shaped).

use axum::Json;
use axum::extract::State;
use serde_json::{Value, json};

use crate::App;
use crate::api::json::iso;
use crate::extract::AuthUser;
use crate::problem::ApiError;

/// `GET /v1/users/current`: the caller's own account, in Central's User shape.
pub async fn current(State(_app): State<App>, who: AuthUser) -> Result<Json<Value>, ApiError> {
    let u = who.user;
    Ok(Json(json!({
        "id": u.id,
        "type": "user",
        "displayName": u.username,
        "email": u.email,
        "createdAt": iso(u.created_at),
        "updatedAt": null,
        "deletedAt": null,
        "lastLoginAt": null,
    })))
}
