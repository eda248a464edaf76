//! `/v1/sessions` (sign in for a bearer token, Central-shaped) and `/v1/tokens` (named, scoped API
//! tokens for scripts; accepted as `Authorization: Bearer` and, for KoboToolbox clients,
//! `Authorization: Token`).

use axum::extract::{Path, State};
use axum::routing::{delete, get, post};
use axum::{Json, Router};
use fieldvault_crypto::SecretString;
use serde::Deserialize;
use serde_json::{Value, json};

use super::json::{AppJson, iso, iso_opt};
use crate::App;
use crate::extract::AuthUser;
use crate::problem::ApiError;
use crate::service::sessions;

/// The routes.
pub fn routes() -> Router<App> {
    Router::new()
        .route("/v1/sessions", post(create))
        .route("/v1/sessions/current", delete(end_current))
        .route("/v1/sessions/all", delete(end_all))
        .route("/v1/sessions/{token}", delete(end))
        .route("/v1/tokens", get(list).post(create_token))
        .route("/v1/users/current/2fa", post(enroll))
        .route("/v1/users/current/2fa/confirm", post(confirm))
        .route("/v1/users/current/2fa/disable", post(disable))
        .route("/v1/tokens/{id}", delete(revoke))
}

#[derive(Deserialize)]
struct Login {
    #[serde(default)]
    email: String,
    #[serde(default)]
    password: String,
    /// The second factor (TOTP or recovery code), for accounts that have one.
    code: Option<String>,
}

async fn create(
    State(app): State<App>,
    client: Option<axum::Extension<crate::middleware::client_ip::ClientInfo>>,
    AppJson(body): AppJson<Login>,
) -> Result<Json<Value>, ApiError> {
    let ip = client.map(|c| c.ip.to_string()).unwrap_or_default();
    let s = sessions::create(
        &app,
        &body.email,
        SecretString::new(body.password),
        body.code.as_deref(),
        &ip,
    )
    .await?;
    Ok(Json(json!({
        "createdAt": iso(s.row.created_at),
        "expiresAt": iso(s.row.expires_at),
        "token": s.token.expose(),
    })))
}

async fn end(
    State(app): State<App>,
    who: AuthUser,
    Path(token): Path<String>,
) -> Result<Json<Value>, ApiError> {
    sessions::end(&app, &who.user, &token).await?;
    Ok(Json(json!({"success": true})))
}

async fn end_current(State(app): State<App>, who: AuthUser) -> Result<Json<Value>, ApiError> {
    let Some(hash) = who.session else {
        return Err(ApiError::NotFound);
    };
    app.store.delete_session(&hash).await?;
    Ok(Json(json!({"success": true})))
}

async fn end_all(State(app): State<App>, who: AuthUser) -> Result<Json<Value>, ApiError> {
    let n = sessions::end_all(&app, &who.user).await?;
    Ok(Json(json!({"success": true, "ended": n})))
}

#[derive(Deserialize)]
struct NewToken {
    #[serde(default)]
    name: String,
    #[serde(default)]
    scopes: Vec<String>,
    /// Unix milliseconds.
    #[serde(rename = "expiresAt")]
    expires_at: Option<i64>,
}

fn token_json(r: &fieldvault_store::ApiTokenRow, token: Option<&str>) -> Value {
    json!({
        "id": r.id,
        "name": r.name,
        "scopes": r.scopes.split_whitespace().collect::<Vec<_>>(),
        "createdAt": iso(r.created_at),
        "expiresAt": iso_opt(r.expires_at),
        "lastUsedAt": iso_opt(r.last_used_at),
        "lastUsedIp": r.last_used_ip,
        "revokedAt": iso_opt(r.revoked_at),
        "token": token,
    })
}

async fn create_token(
    State(app): State<App>,
    who: AuthUser,
    AppJson(body): AppJson<NewToken>,
) -> Result<Json<Value>, ApiError> {
    let t = sessions::create_token(
        &app,
        &who.actor,
        &who.user,
        &body.name,
        &body.scopes,
        body.expires_at,
    )
    .await?;
    Ok(Json(token_json(&t.row, Some(t.token.expose()))))
}

async fn list(State(app): State<App>, who: AuthUser) -> Result<Json<Value>, ApiError> {
    let rows = sessions::tokens(&app, &who.user).await?;
    Ok(Json(Value::Array(
        rows.iter().map(|r| token_json(r, None)).collect(),
    )))
}

async fn revoke(
    State(app): State<App>,
    who: AuthUser,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let id: i64 = id.parse().map_err(|_| ApiError::NotFound)?;
    sessions::revoke_token(&app, &who.user, id).await?;
    Ok(Json(json!({"success": true})))
}

#[derive(Deserialize)]
struct Code {
    #[serde(default)]
    code: String,
}

async fn enroll(State(app): State<App>, who: AuthUser) -> Result<Json<Value>, ApiError> {
    let (secret, url) = crate::service::two_factor::enroll(&app, &who.user).await?;
    Ok(Json(json!({"secret": secret, "otpauthUrl": url})))
}

async fn confirm(
    State(app): State<App>,
    who: AuthUser,
    AppJson(c): AppJson<Code>,
) -> Result<Json<Value>, ApiError> {
    let codes = crate::service::two_factor::confirm(&app, &who.user, &c.code).await?;
    Ok(Json(json!({"recoveryCodes": codes})))
}

async fn disable(
    State(app): State<App>,
    who: AuthUser,
    AppJson(c): AppJson<Code>,
) -> Result<Json<Value>, ApiError> {
    crate::service::two_factor::disable(&app, &who.user, &c.code).await?;
    Ok(Json(json!({"success": true})))
}
