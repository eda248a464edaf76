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

/// Central's User shape, plus what an administrator needs to act on the account: `active`,
/// `superuser`, `require2fa`, `mustResetPassword`.
fn listed_user_json(u: &fieldvault_store::UserRow) -> Value {
    json!({
        "id": u.id,
        "type": "user",
        "displayName": u.username,
        "email": u.email,
        "createdAt": iso(u.created_at),
        "updatedAt": null,
        "deletedAt": null,
        "lastLoginAt": null,
        "active": u.active,
        "superuser": u.superuser,
        "require2fa": u.require_2fa,
        "mustResetPassword": u.must_reset_password,
    })
}

/// Parses an optional whole-number query parameter; anything else is a 400 naming it.
fn int_param(
    params: &std::collections::HashMap<String, String>,
    name: &'static str,
    default: i64,
) -> Result<i64, ApiError> {
    match params.get(name).map(|v| v.trim()) {
        None | Some("") => Ok(default),
        Some(v) => v.parse().map_err(|_| {
            ApiError::from(fieldvault_core::CoreError::invalid(
                name,
                "must be a whole number",
            ))
        }),
    }
}

/// `GET /v1/users?q=&limit=&offset=`: accounts (not deleted) by id, for administrators with
/// two-factor sign-in. `q` keeps those whose username or e-mail contains it (case-insensitive).
/// At most 1000 per page (250 without `limit`).
pub async fn list(
    State(app): State<App>,
    who: AuthUser,
    axum::extract::Query(params): axum::extract::Query<std::collections::HashMap<String, String>>,
) -> Result<Json<Value>, ApiError> {
    let limit = int_param(&params, "limit", crate::service::users::DEFAULT_LIST)?;
    let offset = int_param(&params, "offset", 0)?;
    let rows = crate::service::users::list(
        app.store.as_ref(),
        &who.actor,
        params.get("q").map(String::as_str),
        limit,
        offset,
    )
    .await?;
    Ok(Json(Value::Array(
        rows.iter().map(listed_user_json).collect(),
    )))
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
    // Authenticating draws on the caller's budget (the IP's when anonymous): the meter is rate
    // limited like every other endpoint.
    _who: crate::extract::MaybeAuthUser,
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

/// Body of `POST /v1/users` (Central's shape: `email` and `password`; `username` optional — the
/// e-mail is the login name when it is absent, as in Central).
#[derive(serde::Deserialize)]
pub struct NewUserBody {
    #[serde(default)]
    email: Option<String>,
    #[serde(default)]
    username: Option<String>,
    #[serde(default)]
    password: String,
    #[serde(default)]
    superuser: bool,
}

impl Drop for NewUserBody {
    fn drop(&mut self) {
        zeroize::Zeroize::zeroize(&mut self.password);
    }
}

/// `POST /v1/users`: an administrator (with two-factor sign-in) creates an account.
pub async fn create(
    State(app): State<App>,
    who: AuthUser,
    crate::api::json::AppJson(b): crate::api::json::AppJson<NewUserBody>,
) -> Result<Json<Value>, ApiError> {
    let email = b.email.clone().filter(|e| !e.trim().is_empty());
    let username = b
        .username
        .clone()
        .or_else(|| email.clone())
        .unwrap_or_default();
    let u = crate::service::users::create(
        app.store.as_ref(),
        &who.actor,
        crate::service::users::NewAccount {
            username,
            email,
            password: fieldvault_crypto::SecretString::new(b.password.clone()),
            superuser: b.superuser,
        },
        fieldvault_crypto::password::DEFAULT_ITERATIONS,
    )
    .await?;
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

/// `POST /v1/admin/users/{id}/suspend`.
pub async fn suspend(
    State(app): State<App>,
    who: AuthUser,
    axum::extract::Path(id): axum::extract::Path<String>,
) -> Result<Json<Value>, ApiError> {
    set_active(app, who, id, false).await
}

/// `POST /v1/admin/users/{id}/activate`.
pub async fn activate(
    State(app): State<App>,
    who: AuthUser,
    axum::extract::Path(id): axum::extract::Path<String>,
) -> Result<Json<Value>, ApiError> {
    set_active(app, who, id, true).await
}

async fn set_active(
    app: App,
    who: AuthUser,
    id: String,
    active: bool,
) -> Result<Json<Value>, ApiError> {
    let id: i64 = id.parse().map_err(|_| ApiError::NotFound)?;
    let u = crate::service::users::set_active(
        app.store.as_ref(),
        &who.actor,
        fieldvault_core::UserId(id),
        active,
    )
    .await?;
    Ok(Json(
        json!({"id": u.id, "displayName": u.username, "active": u.active}),
    ))
}
