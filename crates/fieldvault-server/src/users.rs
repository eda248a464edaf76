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

/// Body of `POST /v1/password-strength`.
#[derive(serde::Deserialize)]
pub struct StrengthQuery {
    #[serde(default)]
    password: String,
    #[serde(default)]
    username: String,
    email: Option<String>,
}

impl Drop for StrengthQuery {
    fn drop(&mut self) {
        zeroize::Zeroize::zeroize(&mut self.password);
    }
}

/// `POST /v1/password-strength`: the score and feedback a live meter shows, from the same
/// evaluation the server applies when the password is set. The candidate is never logged or
/// stored.
pub async fn password_strength(
    crate::api::json::AppJson(q): crate::api::json::AppJson<StrengthQuery>,
) -> Json<Value> {
    let s =
        fieldvault_core::password_policy::evaluate(&q.password, &q.username, q.email.as_deref());
    Json(json!({
        "score": s.score,
        "acceptable": s.acceptable,
        "warning": s.warning,
        "suggestions": s.suggestions,
        "unmet": s.unmet,
        "minScore": fieldvault_core::password_policy::MIN_SCORE,
    }))
}
