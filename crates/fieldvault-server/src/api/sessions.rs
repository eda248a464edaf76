//! `/v1/sessions` (sign in for a bearer token, Central-shaped, or with `"cookie": true` for a
//! browser session in an HttpOnly cookie plus a CSRF token) and `/v1/tokens` (named, scoped API
//! tokens for scripts; accepted as `Authorization: Bearer` and, for KoboToolbox clients,
//! `Authorization: Token`).

use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use axum::{Json, Router};
use fieldvault_crypto::SecretString;
use serde::Deserialize;
use serde_json::{Value, json};

use super::json::{AppJson, iso, iso_opt};
use crate::App;
use crate::extract::{AccountOwner, AuthUser};
use crate::problem::ApiError;
use crate::service::sessions;

/// The routes.
pub fn routes() -> Router<App> {
    Router::new()
        .route("/v1/sessions", post(create))
        .route("/v1/sessions/current", get(current).delete(end_current))
        .route("/v1/sessions/current/logout-all", post(logout_all))
        .route("/v1/sessions/all", delete(end_all))
        .route("/v1/sessions/{token}", delete(end))
        .route("/v1/tokens", get(list).post(create_token))
        .route("/v1/users/current/2fa", post(enroll))
        .route("/v1/users/current/2fa/confirm", post(confirm))
        .route("/v1/users/current/2fa/disable", post(disable))
        .route("/v1/tokens/{id}", delete(revoke))
        .route("/v1/users/current/sessions", get(list_sessions))
        .route("/v1/users/current/sessions/{id}", delete(end_session_by_id))
}

#[derive(Deserialize)]
struct Login {
    #[serde(default)]
    email: String,
    #[serde(default)]
    password: String,
    /// The second factor (TOTP or recovery code), for accounts that have one.
    code: Option<String>,
    /// A browser session: the token goes into an HttpOnly cookie, the body carries the CSRF
    /// token instead.
    #[serde(default)]
    cookie: bool,
}

impl Drop for Login {
    fn drop(&mut self) {
        zeroize::Zeroize::zeroize(&mut self.password);
    }
}

async fn create(
    State(app): State<App>,
    client: Option<axum::Extension<crate::middleware::client_ip::ClientInfo>>,
    headers: HeaderMap,
    AppJson(body): AppJson<Login>,
) -> Result<Response, ApiError> {
    let secure = client.as_ref().is_some_and(|c| c.secure);
    let ip = client.map(|c| c.ip.to_string()).unwrap_or_default();
    if body.cookie {
        let s = sessions::create_browser(
            &app,
            &body.email,
            SecretString::new(body.password.clone()),
            body.code.as_deref(),
            &ip,
            crate::extract::session_cookie(&headers).as_deref(),
        )
        .await?;
        let max_age = app.config.session_absolute_timeout_secs;
        let mut resp = Json(json!({
            "createdAt": iso(s.row.created_at),
            "expiresAt": iso(s.row.expires_at),
            "idleTimeoutSecs": app.config.session_idle_timeout_secs,
            "csrfToken": s.csrf,
        }))
        .into_response();
        set_cookie(&mut resp, secure, s.token.expose(), max_age)?;
        return Ok(resp);
    }
    let s = sessions::create(
        &app,
        &body.email,
        SecretString::new(body.password.clone()),
        body.code.as_deref(),
        &ip,
    )
    .await?;
    Ok(Json(json!({
        "createdAt": iso(s.row.created_at),
        "expiresAt": iso(s.row.expires_at),
        "token": s.token.expose(),
    }))
    .into_response())
}

/// `Set-Cookie` for a browser session: `__Host-` prefixed and `Secure` over HTTPS, always
/// HttpOnly, SameSite=Strict, Path=/. An empty value with Max-Age=0 clears it.
fn set_cookie(
    resp: &mut Response,
    secure: bool,
    value: &str,
    max_age: u64,
) -> Result<(), ApiError> {
    let (name, flags) = if secure {
        (crate::extract::COOKIE_SECURE, "; Secure")
    } else {
        (crate::extract::COOKIE_PLAIN, "")
    };
    let cookie =
        format!("{name}={value}; Path=/; HttpOnly; SameSite=Strict; Max-Age={max_age}{flags}");
    let v = HeaderValue::from_str(&cookie).map_err(|e| ApiError::Internal(e.to_string()))?;
    resp.headers_mut().append(header::SET_COOKIE, v);
    Ok(())
}

fn clear_cookie(resp: &mut Response, who: &AuthUser, secure: bool) -> Result<(), ApiError> {
    if who.cookie {
        set_cookie(resp, secure, "", 0)?;
    }
    Ok(())
}

/// `GET /v1/sessions/current`: when the session ends and, for a browser session, its CSRF token
/// (a page reloaded in the console fetches it here).
async fn current(
    State(app): State<App>,
    who: AuthUser,
    headers: HeaderMap,
) -> Result<Json<Value>, ApiError> {
    let Some(hash) = who.session else {
        return Err(ApiError::NotFound);
    };
    let s = app
        .store
        .session_by_hash(&hash, fieldvault_store::now_ms())
        .await?
        .ok_or_else(crate::extract::failed)?;
    let csrf = match (who.cookie, crate::extract::session_cookie(&headers)) {
        (true, Some(token)) => Some(sessions::csrf_token(&app, &token).await?),
        _ => None,
    };
    Ok(Json(json!({
        "createdAt": iso(s.created_at),
        "expiresAt": iso(s.expires_at),
        "cookie": s.cookie,
        "csrfToken": csrf,
    })))
}

/// `POST /v1/sessions/current/logout-all`: ends every session of the account, bearer and
/// browser alike, and clears this browser's cookie.
async fn logout_all(
    State(app): State<App>,
    AccountOwner(who): AccountOwner,
    client: Option<axum::Extension<crate::middleware::client_ip::ClientInfo>>,
) -> Result<Response, ApiError> {
    let n = sessions::end_all(&app, &who.user).await?;
    let mut resp = Json(json!({"success": true, "ended": n})).into_response();
    clear_cookie(&mut resp, &who, client.is_some_and(|c| c.secure))?;
    Ok(resp)
}

async fn end(
    State(app): State<App>,
    AccountOwner(who): AccountOwner,
    Path(token): Path<String>,
) -> Result<Json<Value>, ApiError> {
    sessions::end(&app, &who.user, &token).await?;
    Ok(Json(json!({"success": true})))
}

async fn end_current(
    State(app): State<App>,
    who: AuthUser,
    client: Option<axum::Extension<crate::middleware::client_ip::ClientInfo>>,
) -> Result<Response, ApiError> {
    let Some(hash) = who.session else {
        return Err(ApiError::NotFound);
    };
    app.store.delete_session(&hash).await?;
    let mut resp = Json(json!({"success": true})).into_response();
    clear_cookie(&mut resp, &who, client.is_some_and(|c| c.secure))?;
    Ok(resp)
}

async fn end_all(
    State(app): State<App>,
    AccountOwner(who): AccountOwner,
) -> Result<Json<Value>, ApiError> {
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
    AccountOwner(who): AccountOwner,
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

async fn list(
    State(app): State<App>,
    AccountOwner(who): AccountOwner,
) -> Result<Json<Value>, ApiError> {
    let rows = sessions::tokens(&app, &who.user).await?;
    Ok(Json(Value::Array(
        rows.iter().map(|r| token_json(r, None)).collect(),
    )))
}

async fn revoke(
    State(app): State<App>,
    AccountOwner(who): AccountOwner,
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

async fn enroll(
    State(app): State<App>,
    AccountOwner(who): AccountOwner,
) -> Result<Json<Value>, ApiError> {
    let (secret, url) = crate::service::two_factor::enroll(&app, &who.user).await?;
    let svg = crate::service::two_factor::qr_svg(&url)?;
    Ok(Json(
        json!({"secret": secret, "otpauthUrl": url, "qrSvg": svg}),
    ))
}

async fn confirm(
    State(app): State<App>,
    AccountOwner(who): AccountOwner,
    AppJson(c): AppJson<Code>,
) -> Result<Json<Value>, ApiError> {
    let codes = crate::service::two_factor::confirm(&app, &who.user, &c.code).await?;
    Ok(Json(json!({"recoveryCodes": codes})))
}

async fn disable(
    State(app): State<App>,
    AccountOwner(who): AccountOwner,
    AppJson(c): AppJson<Code>,
) -> Result<Json<Value>, ApiError> {
    crate::service::two_factor::disable(&app, &who.user, &c.code).await?;
    Ok(Json(json!({"success": true})))
}

/// `GET /v1/users/current/sessions`: the caller's live sessions (never their tokens), marking the
/// one this request came with.
async fn list_sessions(
    State(app): State<App>,
    AccountOwner(who): AccountOwner,
) -> Result<Json<Value>, ApiError> {
    let rows = sessions::list(&app, &who.user).await?;
    Ok(Json(Value::Array(
        rows.iter()
            .map(|s| {
                json!({
                    "id": s.id,
                    "createdAt": iso(s.created_at),
                    "expiresAt": iso(s.expires_at),
                    "lastSeenAt": iso(s.last_seen_at),
                    "browser": s.cookie,
                    "current": who.session.is_some_and(|h| h.as_slice() == s.token_hash.as_slice()),
                })
            })
            .collect(),
    )))
}

/// `DELETE /v1/users/current/sessions/{id}`: ends one of the caller's sessions.
async fn end_session_by_id(
    State(app): State<App>,
    AccountOwner(who): AccountOwner,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let id: i64 = id.parse().map_err(|_| ApiError::NotFound)?;
    sessions::end_by_id(&app, &who.user, id).await?;
    Ok(Json(json!({"success": true})))
}
