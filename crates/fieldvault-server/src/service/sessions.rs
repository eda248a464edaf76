//! Login sessions (`POST /v1/sessions`, as ODK Central and pyodk use them) and API tokens.
//!
//! Both kinds of token are random, prefixed (`fvs_`, `fvt_`) so a leaked one is recognisable,
//! shown once, and stored only as a SHA-256. An API token carries scopes that narrow what the
//! account's roles allow (`core::authz::Scopes`).

use fieldvault_core::{Actor, CoreError, Scopes};
use fieldvault_crypto::{SecretString, mac, random};
use fieldvault_store::{ApiTokenRow, SessionRow, StoreError, UserRow, now_ms};

use super::ServiceError;
use crate::App;
use crate::extract::{API_TOKEN_PREFIX, SESSION_PREFIX};

/// How long a session lasts (Central's default).
pub const SESSION_LIFETIME_MS: i64 = 24 * 3600 * 1000;
/// Random bytes in a token (384 bits).
const TOKEN_BYTES: usize = 48;
/// Longest API token name.
const MAX_NAME_CHARS: usize = 200;
/// Most API tokens one account may hold (active or not), a bound on rows per account.
const MAX_TOKENS_PER_USER: usize = 100;

/// A new session and its token (shown once).
pub struct NewSession {
    /// The stored row.
    pub row: SessionRow,
    /// The bearer token.
    pub token: SecretString,
}

/// Signs in with a username (or e-mail) and password for a bearer token.
pub async fn create(
    app: &App,
    login: &str,
    password: SecretString,
    code: Option<&str>,
    client_ip: &str,
) -> Result<NewSession, ServiceError> {
    let user = sign_in(app, login, password, code, client_ip).await?;
    let token = format!("{SESSION_PREFIX}{}", random::token(TOKEN_BYTES)?);
    let row = app
        .store
        .create_session(
            user.id,
            &mac::sha256(token.as_bytes()),
            now_ms() + SESSION_LIFETIME_MS,
        )
        .await?;
    super::audit::record(
        app.store.as_ref(),
        format!("user:{}", user.username),
        "user.session.create",
        None,
        serde_json::json!({}),
    )
    .await?;
    Ok(NewSession {
        row,
        token: SecretString::new(token),
    })
}

/// A new browser session: the cookie value and the CSRF token the page sends back in
/// `X-CSRF-Token` with every state-changing request.
pub struct NewBrowserSession {
    /// The stored row.
    pub row: SessionRow,
    /// The cookie value (never in a response body).
    pub token: SecretString,
    /// The CSRF token bound to this session.
    pub csrf: String,
}

/// Signs in for a browser session carried in a cookie. A session presented by the browser at
/// sign-in (`replaced`) is ended: each sign-in gets a new id (no session fixation).
pub async fn create_browser(
    app: &App,
    login: &str,
    password: SecretString,
    code: Option<&str>,
    client_ip: &str,
    replaced: Option<&str>,
) -> Result<NewBrowserSession, ServiceError> {
    let user = sign_in(app, login, password, code, client_ip).await?;
    if let Some(old) = replaced {
        app.store
            .delete_session(&mac::sha256(old.as_bytes()))
            .await?;
    }
    let token = format!("{SESSION_PREFIX}{}", random::token(TOKEN_BYTES)?);
    let lifetime = i64::try_from(app.config.session_absolute_timeout_secs)
        .unwrap_or(i64::MAX / 2_000)
        .saturating_mul(1000);
    let row = app
        .store
        .create_browser_session(user.id, &mac::sha256(token.as_bytes()), now_ms() + lifetime)
        .await?;
    super::audit::record(
        app.store.as_ref(),
        format!("user:{}", user.username),
        "user.session.create",
        None,
        serde_json::json!({ "cookie": true }),
    )
    .await?;
    let csrf = csrf_token(app, &token).await?;
    Ok(NewBrowserSession {
        row,
        token: SecretString::new(token),
        csrf,
    })
}

/// The CSRF token of a browser session: an HMAC of the session token under the site key, so it
/// is bound to the session, needs no storage, and cannot be computed from anything a page on
/// another origin can read (the cookie is HttpOnly and the site key never leaves the server).
pub async fn csrf_token(app: &App, session_token: &str) -> Result<String, ServiceError> {
    use base64::Engine as _;
    let key = app.keyring.site_key().await?;
    let mac = mac::hmac_sha256(&key, &[b"fieldvault csrf v1", session_token.as_bytes()]);
    Ok(base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(mac))
}

/// Checks the password (throttled), the forced-reset flag and the second factor.
async fn sign_in(
    app: &App,
    login: &str,
    password: SecretString,
    code: Option<&str>,
    client_ip: &str,
) -> Result<UserRow, ServiceError> {
    if login.trim().is_empty() || password.expose().is_empty() {
        return Err(ServiceError::Invalid {
            code: "auth.missing_fields",
            message: "Both email (or username) and password are required.".into(),
        });
    }
    let Some(user) =
        super::users::login(app.store.as_ref(), login.trim(), password, client_ip).await?
    else {
        super::audit::record(
            app.store.as_ref(),
            "anonymous".into(),
            "user.session.fail",
            None,
            serde_json::json!({ "login": login.trim().chars().take(150).collect::<String>() }),
        )
        .await?;
        return Err(ServiceError::BadCredentials);
    };
    super::two_factor::check(app, &user, code).await?;
    Ok(user)
}

/// Ends the session with this token. Only its owner may end it (anyone else learns nothing).
pub async fn end(app: &App, caller: &UserRow, token: &str) -> Result<(), ServiceError> {
    let hash = mac::sha256(token.as_bytes());
    match app.store.session_by_hash(&hash, now_ms()).await? {
        Some(s) if s.user_id == caller.id => {
            app.store.delete_session(&hash).await?;
            Ok(())
        }
        _ => Err(ServiceError::Core(CoreError::Denied {
            verb: "session.end",
        })),
    }
}

/// The caller's live sessions, newest first: browser sessions past their idle timeout are left
/// out (the next request with them would end them anyway).
pub async fn list(app: &App, caller: &UserRow) -> Result<Vec<SessionRow>, ServiceError> {
    let now = now_ms();
    let idle_ms = i64::try_from(app.config.session_idle_timeout_secs)
        .unwrap_or(i64::MAX / 2_000)
        .saturating_mul(1000);
    Ok(app
        .store
        .user_sessions(caller.id, now)
        .await?
        .into_iter()
        .filter(|s| !s.cookie || now - s.last_seen_at <= idle_ms)
        .collect())
}

/// Ends one of the caller's sessions by id (from [`list`]); another account's id is "not found".
pub async fn end_by_id(app: &App, caller: &UserRow, id: i64) -> Result<(), ServiceError> {
    if !app.store.delete_user_session(caller.id, id).await? {
        return Err(ServiceError::NotFound);
    }
    super::audit::record(
        app.store.as_ref(),
        format!("user:{}", caller.username),
        "user.session.end",
        Some(format!("session:{id}")),
        serde_json::json!({}),
    )
    .await
}

/// Ends every session of the caller, bearer and browser alike ("log out everywhere").
pub async fn end_all(app: &App, caller: &UserRow) -> Result<u64, ServiceError> {
    let n = app.store.delete_user_sessions(caller.id).await?;
    super::audit::record(
        app.store.as_ref(),
        format!("user:{}", caller.username),
        "user.session.end_all",
        None,
        serde_json::json!({ "ended": n }),
    )
    .await?;
    Ok(n)
}

/// A new API token (shown once).
pub struct NewToken {
    /// The stored row.
    pub row: ApiTokenRow,
    /// The token.
    pub token: SecretString,
}

/// Creates an API token for the caller. A token can hold no scope the caller's credential lacks
/// (a read-only token cannot mint a write token).
pub async fn create_token(
    app: &App,
    actor: &Actor,
    caller: &UserRow,
    name: &str,
    scopes: &[String],
    expires_at: Option<i64>,
) -> Result<NewToken, ServiceError> {
    let name = name.trim();
    if name.is_empty() || name.chars().count() > MAX_NAME_CHARS {
        return Err(ServiceError::Core(CoreError::invalid(
            "name",
            format!("a token needs a name of 1 to {MAX_NAME_CHARS} characters"),
        )));
    }
    let wanted = Scopes::parse(scopes.iter().map(String::as_str))?;
    let held = match actor {
        Actor::User { scopes, .. } => *scopes,
        _ => return Err(ServiceError::Unauthenticated),
    };
    if !held.contains(wanted) {
        return Err(ServiceError::Core(CoreError::Denied {
            verb: "token.create",
        }));
    }
    if wanted.contains(Scopes::ADMIN) && !caller.superuser {
        return Err(ServiceError::Core(CoreError::invalid(
            "scopes",
            "only administrators can hold the admin scope",
        )));
    }
    if expires_at.is_some_and(|t| t <= now_ms()) {
        return Err(ServiceError::Core(CoreError::invalid(
            "expiresAt",
            "must be in the future",
        )));
    }
    if app.store.api_tokens(caller.id).await?.len() >= MAX_TOKENS_PER_USER {
        return Err(ServiceError::Conflict {
            code: "token.limit",
            message: format!(
                "An account can hold at most {MAX_TOKENS_PER_USER} tokens; revoke some first."
            ),
        });
    }
    let token = format!("{API_TOKEN_PREFIX}{}", random::token(TOKEN_BYTES)?);
    let row = app
        .store
        .create_api_token(
            caller.id,
            name,
            &mac::sha256(token.as_bytes()),
            &wanted.names().join(" "),
            expires_at,
        )
        .await?;
    super::audit::record(
        app.store.as_ref(),
        format!("user:{}", caller.username),
        "token.create",
        Some(format!("token:{}", row.id)),
        serde_json::json!({ "name": row.name, "scopes": row.scopes, "expiresAt": row.expires_at }),
    )
    .await?;
    Ok(NewToken {
        row,
        token: SecretString::new(token),
    })
}

/// The caller's API tokens.
pub async fn tokens(app: &App, caller: &UserRow) -> Result<Vec<ApiTokenRow>, ServiceError> {
    Ok(app.store.api_tokens(caller.id).await?)
}

/// Revokes one of the caller's tokens.
pub async fn revoke_token(app: &App, caller: &UserRow, id: i64) -> Result<(), ServiceError> {
    match app.store.revoke_api_token(caller.id, id).await {
        Err(StoreError::NotFound) => return Err(ServiceError::NotFound),
        other => other?,
    }
    super::audit::record(
        app.store.as_ref(),
        format!("user:{}", caller.username),
        "token.revoke",
        Some(format!("token:{id}")),
        serde_json::json!({}),
    )
    .await
}
