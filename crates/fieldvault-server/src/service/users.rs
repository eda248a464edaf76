//! Accounts: creation (CLI and API) and password verification.

use fieldvault_core::account::{validate_email, validate_username};
use fieldvault_core::{Actor, CoreError, Resource, Verb, authorize};
use fieldvault_crypto::{SecretString, password};
use fieldvault_store::{NewUser, Store, StoreError, UserRow};

use super::ServiceError;

/// What creating an account takes.
pub struct NewAccount {
    /// Login name.
    pub username: String,
    /// Optional e-mail.
    pub email: Option<String>,
    /// Password (checked against the policy, then hashed).
    pub password: SecretString,
    /// Site administrator.
    pub superuser: bool,
}

/// Creates an account after authorization and policy checks.
pub async fn create(
    store: &dyn Store,
    actor: &Actor,
    new: NewAccount,
    iterations: u32,
) -> Result<UserRow, ServiceError> {
    authorize(actor, Verb::UserCreate, Resource::Site)?;
    validate_username(&new.username)?;
    if let Some(e) = &new.email {
        validate_email(e)?;
    }
    check_password_policy(&new.password, &new.username, new.email.as_deref())?;
    if store.user_by_username(&new.username).await?.is_some() {
        return Err(ServiceError::Taken { what: "username" });
    }
    let pw = new.password.clone();
    // PBKDF2 at 1,000,000 iterations takes ~0.3 s of CPU: keep it off the async workers.
    let hash = tokio::task::spawn_blocking(move || password::hash(&pw, iterations))
        .await
        .map_err(|e| ServiceError::Internal(e.to_string()))?
        .map_err(|e| ServiceError::Core(CoreError::invalid("password", e.to_string())))?;
    let created = match store
        .create_user(&NewUser {
            username: new.username,
            email: new.email,
            password_hash: hash,
            superuser: new.superuser,
            active: true,
            must_reset_password: false,
        })
        .await
    {
        Err(StoreError::Conflict { .. }) => return Err(ServiceError::Taken { what: "username" }),
        other => other?,
    };
    super::audit::record(
        store,
        super::audit::actor_name(actor, None),
        "user.create",
        Some(format!("user:{}", created.username)),
        serde_json::json!({ "superuser": created.superuser }),
    )
    .await?;
    Ok(created)
}

/// The password policy (`core::password_policy`): length, not the username, zxcvbn score ≥ 3.
pub fn check_password_policy(
    password: &SecretString,
    username: &str,
    email: Option<&str>,
) -> Result<(), CoreError> {
    fieldvault_core::password_policy::check(password.expose(), username, email)
}

/// Like [`verify_password`], but trusts a recent successful check of the same credentials when
/// the account's stored hash is unchanged and the account still active (see `auth_cache`).
pub async fn verify_password_cached(
    store: &dyn Store,
    cache: &crate::auth_cache::AuthCache,
    username: &str,
    password: SecretString,
    client_ip: &str,
) -> Result<Option<UserRow>, ServiceError> {
    if let Some((user_id, hash)) = cache.lookup(username, &password) {
        match store.user_by_id(fieldvault_core::UserId(user_id)).await? {
            Some(u) if u.active && u.password_hash == hash && !u.must_reset_password => {
                return Ok(Some(u));
            }
            _ => cache.remove(username, &password),
        }
    }
    let user = login(store, username, password.clone(), client_ip).await?;
    if let Some(u) = &user {
        cache.insert(username, &password, u);
    }
    Ok(user)
}

/// Signs in with a password: [`check_credentials`], then refuses an account whose password must
/// be replaced first (`PasswordResetRequired`, a distinct answer). An account whose stored hash
/// cannot be checked at all (imported from KoboToolbox in another format) gets that answer for
/// any password, since no password will ever work for it and the person needs to know why.
pub async fn login(
    store: &dyn Store,
    username: &str,
    password: SecretString,
    client_ip: &str,
) -> Result<Option<UserRow>, ServiceError> {
    if let Some(u) = store.user_by_username(username).await?
        && u.active
        && u.must_reset_password
        && u.password_hash == super::import::RESET_REQUIRED
    {
        return Err(ServiceError::PasswordResetRequired);
    }
    let user = check_credentials(store, username, password, client_ip).await?;
    if user.as_ref().is_some_and(|u| u.must_reset_password) {
        return Err(ServiceError::PasswordResetRequired);
    }
    Ok(user)
}

/// Checks a password under login throttling (`core::softlock`, M4): refused with
/// `RateLimited` while the (account, address) pair or the address is locked; each failure counts
/// against both; a success clears the pair. Every instance sharing the database shares the counts.
/// Does not look at the forced-reset flag (the password change route needs exactly this check).
pub async fn check_credentials(
    store: &dyn Store,
    username: &str,
    password: SecretString,
    client_ip: &str,
) -> Result<Option<UserRow>, ServiceError> {
    use fieldvault_core::softlock::{ACCOUNT_IP, IP, LockState};
    let now = fieldvault_store::now_ms();
    let pair = format!("acct-ip:{}|{client_ip}", username.to_lowercase());
    let addr = format!("ip:{client_ip}");
    let wait = store
        .throttle_state(&pair)
        .await?
        .retry_after(now)
        .max(store.throttle_state(&addr).await?.retry_after(now));
    if wait > 0 {
        return Err(ServiceError::RateLimited {
            retry_after_ms: wait,
        });
    }
    let user = verify_password(store, username, password.clone()).await?;
    if let Some(u) = user {
        store.throttle_clear(&pair).await?;
        return Ok(Some(rehash_if_weak(store, u, password).await?));
    }
    store
        .throttle_update(&pair, &|s: LockState| s.fail(&ACCOUNT_IP, now))
        .await?;
    store
        .throttle_update(&addr, &|s: LockState| s.fail(&IP, now))
        .await?;
    Ok(None)
}

/// After a successful check: if the stored hash is weaker than the current policy (an imported
/// KoboToolbox hash, or one made under an older iteration count), store a fresh one (M1).
async fn rehash_if_weak(
    store: &dyn Store,
    mut user: UserRow,
    password: SecretString,
) -> Result<UserRow, ServiceError> {
    let iterations = password::DEFAULT_ITERATIONS;
    if !password::needs_rehash(&user.password_hash, iterations) {
        return Ok(user);
    }
    let hash = tokio::task::spawn_blocking(move || password::hash(&password, iterations))
        .await
        .map_err(|e| ServiceError::Internal(e.to_string()))??;
    store.update_password_hash(user.user_id(), &hash).await?;
    user.password_hash = hash;
    Ok(user)
}

/// Checks a username and password; `None` when either is wrong or the account is inactive.
/// Unknown users cost the same PBKDF2 work as known ones, so timing does not reveal which names
/// exist.
pub async fn verify_password(
    store: &dyn Store,
    username: &str,
    password: SecretString,
) -> Result<Option<UserRow>, ServiceError> {
    let user = store.user_by_username(username).await?;
    let hash = user
        .as_ref()
        .map_or_else(|| DUMMY_HASH.to_owned(), |u| u.password_hash.clone());
    let ok =
        tokio::task::spawn_blocking(move || password::verify(&password, &hash).unwrap_or(false))
            .await
            .map_err(|e| ServiceError::Internal(e.to_string()))?;
    Ok(user.filter(|u| ok && u.active))
}

/// Most accounts one `GET /v1/users` answers.
pub const MAX_LIST: i64 = 1000;
/// Accounts answered when no `limit` is given.
pub const DEFAULT_LIST: i64 = 250;
/// Longest `q` accepted (as long as an e-mail address may be).
const MAX_QUERY_CHARS: usize = 320;

/// Lists accounts that are not deleted, by id (administrators with two-factor sign-in, or
/// operators). `query` keeps those whose username or e-mail contains it, case-insensitively;
/// blank means every account. `limit` must be 1 to [`MAX_LIST`], `offset` at least 0.
pub async fn list(
    store: &dyn Store,
    actor: &Actor,
    query: Option<&str>,
    limit: i64,
    offset: i64,
) -> Result<Vec<UserRow>, ServiceError> {
    authorize(actor, Verb::UserList, Resource::Site)?;
    if !(1..=MAX_LIST).contains(&limit) {
        return Err(CoreError::invalid("limit", format!("must be 1 to {MAX_LIST}")).into());
    }
    if offset < 0 {
        return Err(CoreError::invalid("offset", "must be 0 or more").into());
    }
    let query = query.map(str::trim).filter(|q| !q.is_empty());
    if query.is_some_and(|q| q.chars().count() > MAX_QUERY_CHARS) {
        return Err(CoreError::invalid(
            "q",
            format!("must be at most {MAX_QUERY_CHARS} characters"),
        )
        .into());
    }
    Ok(store.list_users(query, limit, offset).await?)
}

/// A valid hash of a random password at the default cost, verified for unknown usernames.
const DUMMY_HASH: &str =
    "pbkdf2_sha256$1000000$8xQ1mYv0ZsXpKfTgB2hLcW$7m2m6bV2bm0iB0l6a3T1f3s0a6l6c8D9o3p2H1k4JmQ=";

/// Suspends or reactivates an account (administrators with two-factor sign-in, or operators).
/// Suspension ends its sessions at once; its API tokens and cached credentials stop working
/// because every authentication re-reads the account's active flag.
pub async fn set_active(
    store: &dyn Store,
    actor: &Actor,
    id: fieldvault_core::UserId,
    active: bool,
) -> Result<UserRow, ServiceError> {
    authorize(actor, Verb::UserSuspend, Resource::Site)?;
    if !active && matches!(actor, Actor::User { id: me, .. } if *me == id) {
        return Err(ServiceError::Core(CoreError::invalid(
            "user",
            "you cannot suspend your own account",
        )));
    }
    store
        .set_user_active(id, active)
        .await
        .map_err(|e| match e {
            StoreError::NotFound => ServiceError::NotFound,
            other => other.into(),
        })?;
    if !active {
        store.delete_user_sessions(id.0).await?;
    }
    let user = store.user_by_id(id).await?.ok_or(ServiceError::NotFound)?;
    super::audit::record(
        store,
        super::audit::actor_name(actor, None),
        if active {
            "user.activate"
        } else {
            "user.suspend"
        },
        Some(format!("user:{}", user.username)),
        serde_json::json!({}),
    )
    .await?;
    Ok(user)
}
