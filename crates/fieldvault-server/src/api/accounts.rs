//! Account lifecycle over HTTP (docs/accounts.md): sign-up and invite links, password change,
//! reset links and forced resets, administration of second factors, deleting one's account.
//! Each handler extracts, calls one `service::accounts` function, and shapes the answer.

use axum::extract::{Path, Query, State};
use axum::routing::{delete, post};
use axum::{Json, Router};
use fieldvault_core::UserId;
use fieldvault_crypto::SecretString;
use serde::Deserialize;
use serde_json::{Value, json};

use super::json::{AppJson, iso};
use crate::App;
use crate::extract::{AccountOwner, AuthUser, MaybeAuthUser};
use crate::middleware::client_ip::ClientInfo;
use crate::problem::ApiError;
use crate::service::accounts;

/// The routes.
pub fn routes() -> Router<App> {
    Router::new()
        .route("/v1/signup", post(signup))
        .route("/v1/invites", post(create_invite))
        .route("/v1/admin/invites", post(create_invite))
        .route("/v1/users/current/password", post(change_password))
        .route("/v1/password-reset", post(complete_reset))
        .route("/v1/admin/users/{id}/password-reset", post(issue_reset))
        .route(
            "/v1/admin/users/{id}/force-password-reset",
            post(force_reset_on).delete(force_reset_off),
        )
        .route("/v1/admin/users/{id}/2fa/reset", post(reset_2fa))
        .route(
            "/v1/admin/users/{id}/require-2fa",
            post(require_2fa_on).delete(require_2fa_off),
        )
        .route("/v1/users/current", delete(delete_own))
}

type Client = Option<axum::Extension<ClientInfo>>;

fn ip(client: Client) -> String {
    client.map(|c| c.ip.to_string()).unwrap_or_default()
}

fn user_id(id: &str) -> Result<UserId, ApiError> {
    id.parse().map(UserId).map_err(|_| ApiError::NotFound)
}

fn account_json(u: &fieldvault_store::UserRow) -> Value {
    json!({
        "id": u.id,
        "type": "user",
        "displayName": u.username,
        "email": u.email,
        "createdAt": iso(u.created_at),
        "active": u.active,
        "mustResetPassword": u.must_reset_password,
        "require2fa": u.require_2fa,
    })
}

#[derive(Deserialize)]
struct SignupBody {
    #[serde(default)]
    username: String,
    #[serde(default)]
    password: String,
    email: Option<String>,
    invite: Option<String>,
}

impl Drop for SignupBody {
    fn drop(&mut self) {
        zeroize::Zeroize::zeroize(&mut self.password);
    }
}

/// `POST /v1/signup {username, password, email?, invite?}`.
async fn signup(
    State(app): State<App>,
    client: Client,
    AppJson(b): AppJson<SignupBody>,
) -> Result<(axum::http::StatusCode, Json<Value>), ApiError> {
    let u = accounts::signup(
        &app,
        accounts::Signup {
            username: b.username.clone(),
            password: SecretString::new(b.password.clone()),
            email: b.email.clone(),
            invite: b.invite.clone(),
        },
        &ip(client),
    )
    .await?;
    Ok((axum::http::StatusCode::CREATED, Json(account_json(&u))))
}

#[derive(Deserialize)]
struct InviteBody {
    username: Option<String>,
    email: Option<String>,
    #[serde(rename = "expiresInSecs")]
    expires_in_secs: Option<i64>,
}

/// `POST /v1/admin/invites` (administrators) and `POST /v1/invites` (any account under
/// `signup.mode = "invite"`): the invite token, shown once.
async fn create_invite(
    State(app): State<App>,
    who: AuthUser,
    AppJson(b): AppJson<InviteBody>,
) -> Result<Json<Value>, ApiError> {
    let (row, token) = accounts::create_invite(
        &app,
        &who.actor,
        accounts::InviteSpec {
            username: b.username,
            email: b.email,
            secs: b.expires_in_secs,
        },
    )
    .await?;
    Ok(Json(json!({
        "id": row.id,
        "token": token.expose(),
        "expiresAt": iso(row.expires_at),
        "username": row.username,
        "email": row.email,
    })))
}

#[derive(Deserialize)]
struct PasswordBody {
    /// The account, when nobody is signed in (an account under a forced reset).
    username: Option<String>,
    #[serde(default)]
    password: String,
    #[serde(default, rename = "newPassword")]
    new_password: String,
    code: Option<String>,
}

impl Drop for PasswordBody {
    fn drop(&mut self) {
        zeroize::Zeroize::zeroize(&mut self.password);
        zeroize::Zeroize::zeroize(&mut self.new_password);
    }
}

/// `POST /v1/users/current/password {password, newPassword}` signed in, or
/// `{username, password, newPassword, code?}` without credentials.
async fn change_password(
    State(app): State<App>,
    client: Client,
    MaybeAuthUser(who): MaybeAuthUser,
    AppJson(b): AppJson<PasswordBody>,
) -> Result<Json<Value>, ApiError> {
    if let Some(w) = &who {
        w.authorize_self_service()?;
    }
    let ended = accounts::change_password(
        &app,
        accounts::PasswordChange {
            caller: who.as_ref().map(|w| (&w.user, w.session)),
            username: b.username.as_deref(),
            current: SecretString::new(b.password.clone()),
            new: SecretString::new(b.new_password.clone()),
            code: b.code.as_deref(),
        },
        &ip(client),
    )
    .await?;
    Ok(Json(json!({"success": true, "sessionsEnded": ended})))
}

#[derive(Deserialize)]
struct ResetQuery {
    #[serde(rename = "expiresInSecs")]
    expires_in_secs: Option<i64>,
}

/// `POST /v1/admin/users/{id}/password-reset[?expiresInSecs=N]`: a reset token, shown once.
async fn issue_reset(
    State(app): State<App>,
    who: AuthUser,
    Path(id): Path<String>,
    Query(q): Query<ResetQuery>,
) -> Result<Json<Value>, ApiError> {
    let (row, token) =
        accounts::issue_reset(&app, &who.actor, user_id(&id)?, q.expires_in_secs).await?;
    Ok(Json(json!({
        "token": token.expose(),
        "expiresAt": iso(row.expires_at),
    })))
}

#[derive(Deserialize)]
struct CompleteResetBody {
    #[serde(default)]
    token: String,
    #[serde(default)]
    password: String,
}

impl Drop for CompleteResetBody {
    fn drop(&mut self) {
        zeroize::Zeroize::zeroize(&mut self.token);
        zeroize::Zeroize::zeroize(&mut self.password);
    }
}

/// `POST /v1/password-reset {token, password}`.
async fn complete_reset(
    State(app): State<App>,
    client: Client,
    AppJson(b): AppJson<CompleteResetBody>,
) -> Result<Json<Value>, ApiError> {
    let u = accounts::complete_reset(
        &app,
        &b.token,
        SecretString::new(b.password.clone()),
        &ip(client),
    )
    .await?;
    Ok(Json(json!({"success": true, "displayName": u.username})))
}

async fn force_reset_on(
    State(app): State<App>,
    who: AuthUser,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let u = accounts::force_reset(&app, &who.actor, user_id(&id)?, true).await?;
    Ok(Json(account_json(&u)))
}

async fn force_reset_off(
    State(app): State<App>,
    who: AuthUser,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let u = accounts::force_reset(&app, &who.actor, user_id(&id)?, false).await?;
    Ok(Json(account_json(&u)))
}

async fn reset_2fa(
    State(app): State<App>,
    who: AuthUser,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let u = accounts::reset_2fa(&app, &who.actor, user_id(&id)?).await?;
    Ok(Json(account_json(&u)))
}

async fn require_2fa_on(
    State(app): State<App>,
    who: AuthUser,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let u = accounts::require_2fa(&app, &who.actor, user_id(&id)?, true).await?;
    Ok(Json(account_json(&u)))
}

async fn require_2fa_off(
    State(app): State<App>,
    who: AuthUser,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let u = accounts::require_2fa(&app, &who.actor, user_id(&id)?, false).await?;
    Ok(Json(account_json(&u)))
}

#[derive(Deserialize)]
struct DeleteBody {
    #[serde(default)]
    password: String,
    code: Option<String>,
}

impl Drop for DeleteBody {
    fn drop(&mut self) {
        zeroize::Zeroize::zeroize(&mut self.password);
    }
}

/// `DELETE /v1/users/current {password, code?}`.
async fn delete_own(
    State(app): State<App>,
    client: Client,
    AccountOwner(who): AccountOwner,
    AppJson(b): AppJson<DeleteBody>,
) -> Result<Json<Value>, ApiError> {
    let d = accounts::delete_own(
        &app,
        &who.user,
        SecretString::new(b.password.clone()),
        b.code.as_deref(),
        &ip(client),
    )
    .await?;
    Ok(Json(
        json!({"success": true, "projectsDeleted": d.projects}),
    ))
}
