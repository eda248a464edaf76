//! Account lifecycle (issue #5): sign-up under `signup.mode` with invite links, password change,
//! admin-issued reset links and forced resets, administration of other accounts' second factor,
//! and deleting one's own account (with crypto-shredding of the projects it alone manages).
//!
//! Invite and reset tokens are random, prefixed (`fvi_`, `fvr_`), shown once and stored only as
//! a SHA-256; each is single-use and expires. Every change is audited.

use fieldvault_core::account::{validate_email, validate_username};
use fieldvault_core::softlock::{IP, LockState, SIGNUP};
use fieldvault_core::{Actor, CoreError, Resource, UserId, Verb, authorize};
use fieldvault_crypto::{SecretString, mac, password, random};
use fieldvault_store::{InviteRow, NewInvite, NewUser, StoreError, UserRow, now_ms};

use super::ServiceError;
use super::audit::{actor_name, record};
use crate::App;
use crate::config::SignupMode;

/// Prefix of invite tokens.
pub const INVITE_PREFIX: &str = "fvi_";
/// Prefix of password-reset tokens.
pub const RESET_PREFIX: &str = "fvr_";
/// Random bytes in an invite or reset token (256 bits).
const TOKEN_BYTES: usize = 32;
/// Longest accepted token.
const MAX_TOKEN_LEN: usize = 128;
/// Default and longest lifetime of an invite link, in seconds (7 and 30 days).
pub const INVITE_SECS: (i64, i64) = (7 * 86_400, 30 * 86_400);
/// Default and longest lifetime of a password-reset link, in seconds (1 and 7 days).
pub const RESET_SECS: (i64, i64) = (86_400, 7 * 86_400);

/// What `POST /v1/signup` carries.
pub struct Signup {
    /// Login name.
    pub username: String,
    /// Password (policy-checked).
    pub password: SecretString,
    /// Optional e-mail.
    pub email: Option<String>,
    /// Invite token, needed unless sign-up is open.
    pub invite: Option<String>,
}

/// Creates an account by sign-up. Every attempt from an address counts against the sign-up
/// throttle of that address (successful or not), so accounts cannot be mass-created and invite
/// tokens cannot be guessed at speed.
pub async fn signup(app: &App, req: Signup, client_ip: &str) -> Result<UserRow, ServiceError> {
    let store = app.store.as_ref();
    let now = now_ms();
    let key = format!("signup-ip:{client_ip}");
    let wait = store.throttle_state(&key).await?.retry_after(now);
    if wait > 0 {
        return Err(ServiceError::RateLimited {
            retry_after_ms: wait,
        });
    }
    store
        .throttle_update(&key, &|s: LockState| s.fail(&SIGNUP, now))
        .await?;
    let mode = app.config.signup_mode;
    let invite = match req
        .invite
        .as_deref()
        .map(str::trim)
        .filter(|t| !t.is_empty())
    {
        Some(token) => Some(usable_invite(app, token, now).await?),
        None if mode == SignupMode::Open => None,
        None => {
            return Err(ServiceError::Refused {
                code: "signup.invite_required",
                message: "Sign-up needs an invite link on this server.".into(),
            });
        }
    };
    let username = req.username.trim().to_owned();
    let email = req
        .email
        .map(|e| e.trim().to_owned())
        .filter(|e| !e.is_empty());
    if let Some(inv) = &invite {
        if inv
            .username
            .as_ref()
            .is_some_and(|u| !u.eq_ignore_ascii_case(&username))
        {
            return Err(
                CoreError::invalid("username", "this invite is for another username").into(),
            );
        }
        if inv
            .email
            .as_ref()
            .is_some_and(|e| email.as_ref().is_none_or(|g| !g.eq_ignore_ascii_case(e)))
        {
            return Err(
                CoreError::invalid("email", "this invite is for another e-mail address").into(),
            );
        }
    }
    validate_username(&username)?;
    if let Some(e) = &email {
        validate_email(e)?;
    }
    super::users::check_password_policy(&req.password, &username, email.as_deref())?;
    if store.user_by_username(&username).await?.is_some() {
        return Err(ServiceError::Taken { what: "username" });
    }
    let hash = hash_password(req.password).await?;
    let new = NewUser {
        username,
        email,
        password_hash: hash,
        superuser: false,
        active: true,
        must_reset_password: false,
    };
    let created = match &invite {
        Some(inv) => store.create_user_with_invite(inv.id, now, &new).await,
        None => store.create_user(&new).await,
    };
    let user = match created {
        Err(StoreError::Conflict { .. }) => return Err(ServiceError::Taken { what: "username" }),
        Err(StoreError::NotFound) => return Err(invite_invalid()),
        other => other?,
    };
    record(
        store,
        format!("user:{}", user.username),
        "user.signup",
        Some(format!("user:{}", user.username)),
        serde_json::json!({ "mode": mode.as_str(), "invite": invite.map(|i| i.id) }),
    )
    .await?;
    Ok(user)
}

async fn usable_invite(app: &App, token: &str, now: i64) -> Result<InviteRow, ServiceError> {
    if !token.starts_with(INVITE_PREFIX) || token.len() > MAX_TOKEN_LEN {
        return Err(invite_invalid());
    }
    app.store
        .invite_by_hash(&mac::sha256(token.as_bytes()), now)
        .await?
        .ok_or_else(invite_invalid)
}

fn invite_invalid() -> ServiceError {
    ServiceError::Invalid {
        code: "signup.invite_invalid",
        message: "This invite link is unknown, already used or expired.".into(),
    }
}

/// What an invite may fix in advance.
pub struct InviteSpec {
    /// Fixed username.
    pub username: Option<String>,
    /// Fixed e-mail.
    pub email: Option<String>,
    /// Lifetime in seconds (default [`INVITE_SECS`].0).
    pub secs: Option<i64>,
}

/// Creates an invite link (token shown once). Administrators (with two-factor sign-in) may do so
/// under every mode; under `signup.mode = "invite"` any signed-in account may.
pub async fn create_invite(
    app: &App,
    actor: &Actor,
    spec: InviteSpec,
) -> Result<(InviteRow, SecretString), ServiceError> {
    let by_member = app.config.signup_mode == SignupMode::Invite
        && matches!(actor, Actor::User { scopes, .. } if scopes.contains(fieldvault_core::Scopes::MANAGE_PROJECTS));
    if !by_member {
        authorize(actor, Verb::UserInvite, Resource::Site)?;
    }
    let username = spec
        .username
        .map(|u| u.trim().to_owned())
        .filter(|u| !u.is_empty());
    let email = spec
        .email
        .map(|e| e.trim().to_owned())
        .filter(|e| !e.is_empty());
    if let Some(u) = &username {
        validate_username(u)?;
        if app.store.user_by_username(u).await?.is_some() {
            return Err(ServiceError::Taken { what: "username" });
        }
    }
    if let Some(e) = &email {
        validate_email(e)?;
    }
    let expires_at = now_ms() + lifetime(spec.secs, INVITE_SECS)? * 1000;
    let token = format!("{INVITE_PREFIX}{}", random::token(TOKEN_BYTES)?);
    let row = app
        .store
        .create_invite(&NewInvite {
            token_hash: mac::sha256(token.as_bytes()).to_vec(),
            created_by: actor_id(actor),
            expires_at,
            username,
            email,
        })
        .await?;
    record(
        app.store.as_ref(),
        actor_name(actor, None),
        "user.invite.create",
        Some(format!("invite:{}", row.id)),
        serde_json::json!({ "username": row.username, "expiresAt": row.expires_at }),
    )
    .await?;
    Ok((row, SecretString::new(token)))
}

fn lifetime(asked: Option<i64>, (default, max): (i64, i64)) -> Result<i64, ServiceError> {
    let s = asked.unwrap_or(default);
    if !(1..=max).contains(&s) {
        return Err(
            CoreError::invalid("expiresInSecs", format!("must be between 1 and {max}")).into(),
        );
    }
    Ok(s)
}

fn actor_id(actor: &Actor) -> Option<UserId> {
    match actor {
        Actor::User { id, .. } => Some(*id),
        _ => None,
    }
}

async fn hash_password(pw: SecretString) -> Result<String, ServiceError> {
    // PBKDF2 at 1,000,000 iterations takes ~0.3 s of CPU: keep it off the async workers.
    tokio::task::spawn_blocking(move || password::hash(&pw, password::DEFAULT_ITERATIONS))
        .await
        .map_err(|e| ServiceError::Internal(e.to_string()))?
        .map_err(|e| ServiceError::Core(CoreError::invalid("password", e.to_string())))
}

/// A password change, proven with the current password (and the second factor when the caller
/// is not already signed in). `caller` is the signed-in account, if any; otherwise `username`
/// names the account (the way in for an account under a forced reset, which cannot sign in).
pub struct PasswordChange<'a> {
    /// The signed-in account and the hash of its session, if the caller is signed in.
    pub caller: Option<(&'a UserRow, Option<[u8; 32]>)>,
    /// The account's name when nobody is signed in.
    pub username: Option<&'a str>,
    /// The current password.
    pub current: SecretString,
    /// The new password.
    pub new: SecretString,
    /// Second factor (TOTP or recovery code) when not signed in.
    pub code: Option<&'a str>,
}

/// Changes a password: ends every other session of the account and clears a forced reset.
pub async fn change_password(
    app: &App,
    req: PasswordChange<'_>,
    client_ip: &str,
) -> Result<u64, ServiceError> {
    let store = app.store.as_ref();
    let (login, keep, signed_in) = match (&req.caller, req.username) {
        (Some((u, keep)), _) => (u.username.clone(), *keep, true),
        (None, Some(name)) if !name.trim().is_empty() => (name.trim().to_owned(), None, false),
        _ => return Err(ServiceError::Unauthenticated),
    };
    if req.current.expose().is_empty() {
        return Err(CoreError::invalid("password", "the current password is required").into());
    }
    let Some(user) =
        super::users::check_credentials(store, &login, req.current.clone(), client_ip).await?
    else {
        record(
            store,
            "anonymous".into(),
            "user.password.change.fail",
            None,
            serde_json::json!({ "login": login.chars().take(150).collect::<String>() }),
        )
        .await?;
        return Err(ServiceError::BadCredentials);
    };
    if !signed_in {
        super::two_factor::check(app, &user, req.code).await?;
    }
    if req.new.expose() == req.current.expose() {
        return Err(CoreError::invalid(
            "newPassword",
            "choose a password different from the current one",
        )
        .into());
    }
    super::users::check_password_policy(&req.new, &user.username, user.email.as_deref())?;
    let hash = hash_password(req.new).await?;
    let ended = store
        .change_password(user.user_id(), &hash, keep.as_ref().map(|k| &k[..]))
        .await?;
    record(
        store,
        format!("user:{}", user.username),
        "user.password.change",
        Some(format!("user:{}", user.username)),
        serde_json::json!({ "sessionsEnded": ended, "wasForced": user.must_reset_password }),
    )
    .await?;
    Ok(ended)
}

/// An administrator issues a single-use password-reset link for an account (token shown once).
pub async fn issue_reset(
    app: &App,
    actor: &Actor,
    target: UserId,
    secs_asked: Option<i64>,
) -> Result<(fieldvault_store::PasswordResetRow, SecretString), ServiceError> {
    authorize(actor, Verb::UserManage, Resource::Site)?;
    let user = live_user(app, target).await?;
    let expires_at = now_ms() + lifetime(secs_asked, RESET_SECS)? * 1000;
    let token = format!("{RESET_PREFIX}{}", random::token(TOKEN_BYTES)?);
    let row = app
        .store
        .create_password_reset(
            target,
            &mac::sha256(token.as_bytes()),
            actor_id(actor),
            expires_at,
        )
        .await?;
    record(
        app.store.as_ref(),
        actor_name(actor, None),
        "user.password.reset_link",
        Some(format!("user:{}", user.username)),
        serde_json::json!({ "expiresAt": expires_at }),
    )
    .await?;
    Ok((row, SecretString::new(token)))
}

/// Sets a new password with a reset link: single use, ends every session of the account, clears
/// a forced reset. Failed attempts count against the client address like failed sign-ins.
pub async fn complete_reset(
    app: &App,
    token: &str,
    new: SecretString,
    client_ip: &str,
) -> Result<UserRow, ServiceError> {
    let store = app.store.as_ref();
    let now = now_ms();
    let addr = format!("ip:{client_ip}");
    let wait = store.throttle_state(&addr).await?.retry_after(now);
    if wait > 0 {
        return Err(ServiceError::RateLimited {
            retry_after_ms: wait,
        });
    }
    let token = token.trim();
    let found = if token.starts_with(RESET_PREFIX) && token.len() <= MAX_TOKEN_LEN {
        store
            .password_reset_by_hash(&mac::sha256(token.as_bytes()), now)
            .await?
    } else {
        None
    };
    let Some(reset) = found else {
        store
            .throttle_update(&addr, &|s: LockState| s.fail(&IP, now))
            .await?;
        return Err(reset_invalid());
    };
    let user = live_user(app, UserId(reset.user_id)).await?;
    super::users::check_password_policy(&new, &user.username, user.email.as_deref())?;
    let hash = hash_password(new).await?;
    match store.complete_password_reset(reset.id, now, &hash).await {
        Err(StoreError::NotFound) => return Err(reset_invalid()),
        other => other?,
    };
    record(
        store,
        format!("user:{}", user.username),
        "user.password.reset",
        Some(format!("user:{}", user.username)),
        serde_json::json!({ "resetLink": reset.id }),
    )
    .await?;
    Ok(user)
}

fn reset_invalid() -> ServiceError {
    ServiceError::Invalid {
        code: "reset.invalid",
        message: "This password-reset link is unknown, already used or expired.".into(),
    }
}

async fn live_user(app: &App, id: UserId) -> Result<UserRow, ServiceError> {
    app.store
        .user_by_id(id)
        .await?
        .filter(|u| !u.username.starts_with("deleted:"))
        .ok_or(ServiceError::NotFound)
}

/// An administrator sets (or clears) the forced password reset; setting it ends the account's
/// sessions, and password sign-in then answers `auth.password_reset_required`.
pub async fn force_reset(
    app: &App,
    actor: &Actor,
    target: UserId,
    on: bool,
) -> Result<UserRow, ServiceError> {
    let action = [
        "user.password.force_reset.clear",
        "user.password.force_reset",
    ][usize::from(on)];
    set_account_flag(app, actor, target, action, || {
        app.store.set_must_reset_password(target, on)
    })
    .await
}

/// One administrator switch on an account (forced reset, required 2FA): authorize, check the
/// account is live, set, audit, and answer with the account as it now is.
async fn set_account_flag<'a, F, Fut>(
    app: &'a App,
    actor: &Actor,
    target: UserId,
    action: &str,
    set: F,
) -> Result<UserRow, ServiceError>
where
    F: FnOnce() -> Fut,
    Fut: std::future::Future<Output = Result<(), fieldvault_store::StoreError>> + 'a,
{
    authorize(actor, Verb::UserManage, Resource::Site)?;
    let user = live_user(app, target).await?;
    set().await?;
    record(
        app.store.as_ref(),
        actor_name(actor, None),
        action,
        Some(format!("user:{}", user.username)),
        serde_json::json!({}),
    )
    .await?;
    live_user(app, target).await
}

/// An administrator removes an account's second factor (a lost phone): the account signs in with
/// its password again and can enrol anew; its sessions end.
pub async fn reset_2fa(app: &App, actor: &Actor, target: UserId) -> Result<UserRow, ServiceError> {
    authorize(actor, Verb::UserManage, Resource::Site)?;
    let user = live_user(app, target).await?;
    app.store.delete_totp(target.0).await?;
    let ended = app.store.delete_user_sessions(target.0).await?;
    record(
        app.store.as_ref(),
        actor_name(actor, None),
        "user.2fa.reset",
        Some(format!("user:{}", user.username)),
        serde_json::json!({ "sessionsEnded": ended }),
    )
    .await?;
    Ok(user)
}

/// An administrator requires (or stops requiring) a second factor for an account. Until it
/// enrols, such an account reaches nothing but enrolment and sign-out (see `extract`).
pub async fn require_2fa(
    app: &App,
    actor: &Actor,
    target: UserId,
    on: bool,
) -> Result<UserRow, ServiceError> {
    let action = ["user.2fa.require.clear", "user.2fa.require"][usize::from(on)];
    set_account_flag(app, actor, target, action, || {
        app.store.set_require_2fa(target, on)
    })
    .await
}

/// What deleting one's account ended.
pub struct Deleted {
    /// Projects deleted with it (their data keys destroyed).
    pub projects: Vec<i64>,
}

/// Deletes the caller's own account, proven with its password and, when enrolled, a second
/// factor. Projects it alone manages are deleted with it and their data keys destroyed
/// (crypto-shredding: their stored ciphertext can never be read again). The last active
/// administrator cannot delete itself.
pub async fn delete_own(
    app: &App,
    caller: &UserRow,
    current: SecretString,
    code: Option<&str>,
    client_ip: &str,
) -> Result<Deleted, ServiceError> {
    let store = app.store.as_ref();
    if current.expose().is_empty() {
        return Err(CoreError::invalid("password", "the current password is required").into());
    }
    let Some(user) =
        super::users::check_credentials(store, &caller.username, current, client_ip).await?
    else {
        return Err(ServiceError::BadCredentials);
    };
    if user.id != caller.id {
        return Err(ServiceError::BadCredentials);
    }
    super::two_factor::check(app, &user, code).await?;
    if user.superuser && store.count_active_superusers().await? <= 1 {
        return Err(ServiceError::Conflict {
            code: "user.last_superuser",
            message: "The last active administrator cannot delete their own account; make another administrator first.".into(),
        });
    }
    let projects = store.delete_account(user.user_id(), now_ms()).await?;
    for p in &projects {
        if let Some(key) = &p.data_key_id {
            app.keyring.forget(key);
        }
    }
    app.hot.clear();
    let ids: Vec<i64> = projects.iter().map(|p| p.id).collect();
    record(
        store,
        format!("user:{}", user.username),
        "user.delete",
        Some(format!("user:{}", user.username)),
        serde_json::json!({ "projectsDeleted": ids, "dataKeysDestroyed": projects.iter().filter(|p| p.data_key_id.is_some()).count() }),
    )
    .await?;
    Ok(Deleted { projects: ids })
}
