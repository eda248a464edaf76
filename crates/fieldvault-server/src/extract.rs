//! Extractors: who is calling. They authenticate and never authorize (that is `authorize`'s job
//! in the service layer). Spans skip all fields so credentials cannot reach the logs.
//!
//! Accepted credentials, in order: `Authorization: Bearer <token>` (a session from
//! `POST /v1/sessions`, prefix `fvs_`, or an API token, prefix `fvt_`), `Authorization: Token
//! <token>` (KoboToolbox clients; API tokens, including the 40-hex keys of `GET /token/`), and HTTP
//! Basic. Passwords (Basic) are accepted only
//! over HTTPS, from loopback, or through a trusted proxy that terminated HTTPS. Any other scheme,
//! and any token that does not resolve, is a 401 — never silently "anonymous".
//!
//! Without an `Authorization` header, a browser session cookie (`__Host-fv_session` over HTTPS,
//! `fv_session` otherwise) is accepted. Cookie sessions end after `session.idle_timeout_secs`
//! without a request, and a cookie-authenticated POST/PUT/PATCH/DELETE must carry the session's
//! CSRF token in `X-CSRF-Token` (compared in constant time; 403 `csrf` otherwise). Header
//! credentials are never subject to CSRF: a browser does not attach them by itself.
//!
//! An account an administrator required a second factor for reaches only enrolment and
//! sign-out until it has one (403 `auth.second_factor_enrolment_required`).

use axum::extract::FromRequestParts;
use axum::http::header;
use axum::http::request::Parts;
use base64::Engine as _;
use fieldvault_core::{Actor, Resource, Scopes, Verb};
use fieldvault_crypto::SecretString;
use fieldvault_store::UserRow;

use crate::App;
use crate::middleware::access_log::AuthSlot;
use crate::middleware::client_ip::ClientInfo;
use crate::problem::ApiError;
use crate::service::budget::{self, Class};
use crate::service::{self, ServiceError};

/// Prefix of session tokens.
pub const SESSION_PREFIX: &str = "fvs_";
/// Prefix of API tokens (recognisable if leaked into a log or a paste).
pub const API_TOKEN_PREFIX: &str = "fvt_";
/// Longest token accepted in a header.
const MAX_TOKEN_LEN: usize = 256;
/// Browser session cookie when served over HTTPS (`__Host-`: Secure, Path=/, no Domain).
pub const COOKIE_SECURE: &str = "__Host-fv_session";
/// Browser session cookie over plain HTTP (loopback development).
pub const COOKIE_PLAIN: &str = "fv_session";
/// Header carrying the CSRF token of a cookie session.
pub const CSRF_HEADER: &str = "x-csrf-token";
/// Routes an account that must enrol a second factor may still reach.
const ENROLMENT_PATHS: &[&str] = &[
    "/v1/users/current",
    "/v1/users/current/2fa",
    "/v1/users/current/2fa/confirm",
    "/v1/sessions/current",
    "/v1/sessions/current/logout-all",
    "/v1/sessions/all",
    // The console's account page, where enrolment happens in a browser.
    "/console/account",
];

/// A signed-in account. Rejects the request with 401 when credentials are missing or wrong.
pub struct AuthUser {
    /// The actor for `authorize`.
    pub actor: Actor,
    /// The account.
    pub user: UserRow,
    /// SHA-256 of the session token, when the caller used a session.
    pub session: Option<[u8; 32]>,
    /// True when the session came in a cookie (a browser).
    pub cookie: bool,
    /// The API token's id, when the caller used one (its own budget and restrictions).
    pub token_id: Option<i64>,
}

impl FromRequestParts<App> for AuthUser {
    type Rejection = ApiError;

    #[tracing::instrument(skip_all)]
    async fn from_request_parts(parts: &mut Parts, app: &App) -> Result<Self, Self::Rejection> {
        authenticate(parts, app)
            .await?
            .ok_or_else(|| ApiError::Unauthenticated {
                code: "auth.required",
                message: "This resource needs authentication.".into(),
            })
    }
}

/// A signed-in account acting on its own credentials (sessions, tokens, second factor, password,
/// deletion). Authorized as [`Verb::AccountManage`], which no API token holds: a leaked token
/// cannot mint more tokens, enrol a second factor or sign its owner out.
pub struct AccountOwner(pub AuthUser);

impl FromRequestParts<App> for AccountOwner {
    type Rejection = ApiError;

    #[tracing::instrument(skip_all)]
    async fn from_request_parts(parts: &mut Parts, app: &App) -> Result<Self, Self::Rejection> {
        let who = AuthUser::from_request_parts(parts, app).await?;
        who.authorize_self_service()?;
        Ok(AccountOwner(who))
    }
}

impl AuthUser {
    /// Refuses (403) a credential that may not manage the account itself (an API token).
    pub fn authorize_self_service(&self) -> Result<(), ApiError> {
        fieldvault_core::authorize(&self.actor, Verb::AccountManage, Resource::Site)
            .map_err(|e| ServiceError::Core(e).into())
    }
}

/// A caller that may be signed in. Unlike `Option<AuthUser>`, credentials that are present but
/// wrong are still a 401, never quietly "nobody" (realworld's `MaybeAuthUser`).
pub struct MaybeAuthUser(pub Option<AuthUser>);

impl FromRequestParts<App> for MaybeAuthUser {
    type Rejection = ApiError;

    #[tracing::instrument(skip_all)]
    async fn from_request_parts(parts: &mut Parts, app: &App) -> Result<Self, Self::Rejection> {
        Ok(MaybeAuthUser(authenticate(parts, app).await?))
    }
}

/// Authenticates the `Authorization` header, or else a session cookie, for the JSON APIs; `None`
/// when there is neither. Draws on the caller's API budget (see [`budget`]).
pub async fn authenticate(parts: &Parts, app: &App) -> Result<Option<AuthUser>, ApiError> {
    authenticate_as(parts, app, Class::Api).await
}

/// [`authenticate`], drawing on the budget of `class`: the OpenRosa endpoints use the larger
/// collector budget.
pub async fn authenticate_as(
    parts: &Parts,
    app: &App,
    class: Class,
) -> Result<Option<AuthUser>, ApiError> {
    let who = authenticate_credentials(parts, app).await?;
    spend_budget(parts, app, class, who.as_ref()).await?;
    let Some(who) = who else {
        return Ok(None);
    };
    if who.user.require_2fa
        && !ENROLMENT_PATHS.contains(&parts.uri.path())
        && !service::two_factor::enabled(app, &who.user).await?
    {
        return Err(ApiError::Refused {
            code: "auth.second_factor_enrolment_required",
            message: "An administrator requires two-factor sign-in for this account: enrol at POST /v1/users/current/2fa first.".into(),
        });
    }
    Ok(Some(who))
}

/// Whether the request changes something (what a read-only restriction refuses).
pub fn changes(parts: &Parts) -> bool {
    !matches!(
        parts.method,
        axum::http::Method::GET | axum::http::Method::HEAD | axum::http::Method::OPTIONS
    )
}

/// Refuses restricted callers, then counts the request against each budget it draws on: a
/// token's own and its account's, or an account's, or (without credentials) the client IP's.
async fn spend_budget(
    parts: &Parts,
    app: &App,
    class: Class,
    who: Option<&AuthUser>,
) -> Result<(), ApiError> {
    let b = &app.budgets;
    let c = &app.config;
    let Some(who) = who else {
        let Some(client) = parts.extensions.get::<ClientInfo>() else {
            return Ok(());
        };
        let key = budget::ip_key(client.ip);
        return Ok(b
            .spend(app, &key, c.limits_anonymous_per_window, None)
            .await?);
    };
    let uid = who.user.id;
    let user = format!("user:{uid}");
    // Signing out and reading one's own account stay possible under any restriction.
    let exempt = parts.uri.path().starts_with("/v1/sessions");
    if !exempt {
        b.check_restricted(&user, changes(parts))?;
        if let Some(t) = who.token_id {
            b.check_restricted(&format!("token:{t}"), changes(parts))?;
        }
    }
    match class {
        Class::Api => {
            if let Some(t) = who.token_id {
                let key = format!("token:{t}");
                b.spend(app, &key, c.limits_api_per_window, Some(uid))
                    .await?;
            }
            b.spend(app, &user, c.limits_api_per_window, Some(uid))
                .await?;
        }
        Class::Collector => {
            let key = format!("collector:{uid}");
            b.spend(app, &key, c.limits_collector_per_window, Some(uid))
                .await?;
        }
    }
    Ok(())
}

async fn authenticate_credentials(parts: &Parts, app: &App) -> Result<Option<AuthUser>, ApiError> {
    let Some(value) = parts.headers.get(header::AUTHORIZATION) else {
        return cookie_session(parts, app).await;
    };
    let text = value.to_str().map_err(|_| failed())?;
    let (scheme, rest) = text.split_once(' ').ok_or_else(failed)?;
    let rest = rest.trim();
    let slot = parts.extensions.get::<AuthSlot>();
    let client = parts.extensions.get::<ClientInfo>().copied();
    let authenticated = match scheme.to_ascii_lowercase().as_str() {
        "bearer" | "token" => {
            if rest.is_empty() || rest.len() > MAX_TOKEN_LEN {
                return Err(failed());
            }
            let hash = fieldvault_crypto::mac::sha256(rest.as_bytes());
            let now = fieldvault_store::now_ms();
            if rest.starts_with(SESSION_PREFIX) && scheme.eq_ignore_ascii_case("bearer") {
                // A browser session's token is only good in its cookie (idle timeout, CSRF).
                let session = app
                    .store
                    .session_by_hash(&hash, now)
                    .await?
                    .filter(|s| !s.cookie)
                    .ok_or_else(failed)?;
                let user = active_user(app, session.user_id).await?;
                record(slot, &user.username, "session");
                AuthUser {
                    actor: actor(&user, Scopes::ALL, has_second_factor(app, &user).await?),
                    user,
                    session: Some(hash),
                    cookie: false,
                    token_id: None,
                }
            } else if rest.starts_with(API_TOKEN_PREFIX)
                || (scheme.eq_ignore_ascii_case("token") && is_kobo_key(rest))
            {
                let token = app
                    .store
                    .api_token_by_hash(&hash, now)
                    .await?
                    .ok_or_else(failed)?;
                let user = active_user(app, token.user_id).await?;
                let scopes =
                    Scopes::parse(token.scopes.split_whitespace()).map_err(|_| failed())?;
                // Last use is recorded at most once a minute: enough for "last used", and no write
                // on every request of a busy script.
                if token.last_used_at.is_none_or(|t| now - t > 60_000) {
                    let ip = client.map(|c| c.ip.to_string()).unwrap_or_default();
                    let _ = app.store.touch_api_token(token.id, now, &ip).await;
                }
                record(slot, &user.username, "api-token");
                AuthUser {
                    actor: actor(&user, scopes, has_second_factor(app, &user).await?),
                    user,
                    session: None,
                    cookie: false,
                    token_id: Some(token.id),
                }
            } else {
                return Err(failed());
            }
        }
        "basic" => {
            if !client.is_some_and(|c| c.secure || c.loopback) {
                return Err(ApiError::Unauthenticated {
                    code: "auth.insecure_transport",
                    message: "Passwords are only accepted over HTTPS.".into(),
                });
            }
            let decoded = zeroize::Zeroizing::new(
                base64::engine::general_purpose::STANDARD
                    .decode(rest)
                    .map_err(|_| failed())?,
            );
            let pair = std::str::from_utf8(&decoded).map_err(|_| failed())?;
            let (username, password) = pair.split_once(':').ok_or_else(failed)?;
            let ip = client.map(|c| c.ip.to_string()).unwrap_or_default();
            let password = SecretString::from(password);
            let health = app.ingest.health();
            let offline = || app.auth_cache.lookup_offline(username, &password);
            let cached = if health.degraded() { offline() } else { None };
            let user = match cached {
                Some(u) => u,
                None => {
                    let checked = async {
                        let user = service::users::verify_password_cached(
                            app.store.as_ref(),
                            &app.auth_cache,
                            username,
                            password.clone(),
                            &ip,
                        )
                        .await?
                        .ok_or(ServiceError::BadCredentials)?;
                        // A password alone does not sign in an account that has a second factor.
                        if service::two_factor::enabled(app, &user).await? {
                            return Err(ServiceError::SecondFactor { required: true });
                        }
                        Ok(user)
                    }
                    .await;
                    match checked {
                        Ok(user) => {
                            app.auth_cache.mark_basic_ok(username, &password);
                            user
                        }
                        // Degraded intake: the database cannot check; a recent verification can.
                        Err(ServiceError::Store(fieldvault_store::StoreError::Unavailable(
                            why,
                        ))) => {
                            health.mark_unreachable(&why);
                            offline().ok_or(ApiError::Unavailable(why))?
                        }
                        Err(e) => return Err(e.into()),
                    }
                }
            };
            record(slot, &user.username, "basic");
            AuthUser {
                // Basic is refused above for accounts with a second factor.
                actor: actor(&user, Scopes::ALL, false),
                user,
                session: None,
                cookie: false,
                token_id: None,
            }
        }
        _ => return Err(failed()),
    };
    Ok(Some(authenticated))
}

/// The session cookie's value, if the request carries one.
pub fn session_cookie(headers: &axum::http::HeaderMap) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, _)| *name == COOKIE_SECURE || *name == COOKIE_PLAIN)
        .map(|(_, value)| value.trim().to_owned())
}

/// A browser session from its cookie: idle timeout, CSRF on changes, coarse last-seen updates.
async fn cookie_session(parts: &Parts, app: &App) -> Result<Option<AuthUser>, ApiError> {
    let Some(token) = session_cookie(&parts.headers) else {
        return Ok(None);
    };
    if !token.starts_with(SESSION_PREFIX) || token.len() > MAX_TOKEN_LEN {
        return Err(failed());
    }
    let hash = fieldvault_crypto::mac::sha256(token.as_bytes());
    let now = fieldvault_store::now_ms();
    // A bearer token copied into a cookie is not a browser session.
    let session = app
        .store
        .session_by_hash(&hash, now)
        .await?
        .filter(|s| s.cookie)
        .ok_or_else(expired)?;
    let idle_ms = i64::try_from(app.config.session_idle_timeout_secs)
        .unwrap_or(i64::MAX / 2_000)
        .saturating_mul(1000);
    if now - session.last_seen_at > idle_ms {
        app.store.delete_session(&hash).await?;
        return Err(expired());
    }
    let changes = !matches!(
        parts.method,
        axum::http::Method::GET | axum::http::Method::HEAD | axum::http::Method::OPTIONS
    );
    if changes {
        let expected = service::sessions::csrf_token(app, &token).await?;
        let sent = parts
            .headers
            .get(CSRF_HEADER)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        let same: bool = subtle::ConstantTimeEq::ct_eq(sent.as_bytes(), expected.as_bytes()).into();
        if !same {
            return Err(ApiError::Refused {
                code: "csrf",
                message: "A change made with a browser session needs the session's CSRF token in the X-CSRF-Token header.".into(),
            });
        }
    }
    // Recorded at a tenth of the idle timeout (at most once a minute): accurate enough for the
    // timeout, and no write on every request.
    if now - session.last_seen_at > (idle_ms / 10).min(60_000) {
        app.store.touch_session(&hash, now).await?;
    }
    let user = active_user(app, session.user_id).await?;
    record(parts.extensions.get::<AuthSlot>(), &user.username, "cookie");
    Ok(Some(AuthUser {
        actor: actor(&user, Scopes::ALL, has_second_factor(app, &user).await?),
        user,
        session: Some(hash),
        cookie: true,
        token_id: None,
    }))
}

fn expired() -> ApiError {
    ApiError::Unauthenticated {
        code: "auth.session_expired",
        message: "The session has ended (signed out, timed out, or never existed); sign in again."
            .into(),
    }
}

/// A KoboToolbox-style key (40 lowercase hex characters, as `GET /token/` issues them: KoboToolbox
/// clients check that shape before sending it).
pub fn is_kobo_key(s: &str) -> bool {
    s.len() == 40
        && s.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

async fn active_user(app: &App, id: i64) -> Result<UserRow, ApiError> {
    app.store
        .user_by_id(fieldvault_core::UserId(id))
        .await?
        .filter(|u| u.active)
        .ok_or_else(failed)
}

fn actor(user: &UserRow, scopes: Scopes, second_factor: bool) -> Actor {
    Actor::User {
        id: user.user_id(),
        superuser: user.superuser,
        project_role: None,
        scopes,
        second_factor,
    }
}

/// Whether the account has a confirmed second factor. Only administrators need the answer
/// (site-level verbs require it), so other accounts cost no extra query.
async fn has_second_factor(app: &App, user: &UserRow) -> Result<bool, ApiError> {
    if !user.superuser {
        return Ok(false);
    }
    Ok(service::two_factor::enabled(app, user).await?)
}

fn record(slot: Option<&AuthSlot>, user: &str, method: &'static str) {
    if let Some(s) = slot {
        s.record(user, method);
    }
}

/// The 401 for credentials that do not check out.
pub fn failed() -> ApiError {
    ApiError::Unauthenticated {
        code: "auth.failed",
        message: "Could not authenticate with the provided credentials.".into(),
    }
}
