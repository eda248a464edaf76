//! Who is calling an OpenRosa endpoint: a collector token in the path (`/v1/key/{token}/…`), an
//! account (see `extract::authenticate`: Basic, session or API token), or nobody. Anonymous callers are not rejected here: a form may accept
//! anonymous submissions, and the 401 challenge Collect expects comes from the service's answer.

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use fieldvault_core::{Actor, ProjectId};

use fieldvault_store::StoreError;

use crate::App;
use crate::middleware::access_log::AuthSlot;
use crate::problem::ApiError;

/// The authenticated (or anonymous) caller.
pub struct Caller {
    /// For `authorize`.
    pub actor: Actor,
    /// The collector token from the path, when the request used one (links must keep it).
    pub key: Option<String>,
}

/// Longest token accepted in a path (ours are 68 characters).
const MAX_TOKEN_LEN: usize = 200;

impl FromRequestParts<App> for Caller {
    type Rejection = ApiError;

    #[tracing::instrument(skip_all)]
    async fn from_request_parts(parts: &mut Parts, app: &App) -> Result<Self, Self::Rejection> {
        let slot = parts.extensions.get::<AuthSlot>().cloned();
        if let Some(token) = parts
            .uri
            .path()
            .strip_prefix("/v1/key/")
            .and_then(|r| r.split('/').next())
        {
            if token.is_empty() || token.len() > MAX_TOKEN_LEN {
                return Err(bad_key());
            }
            let hash = fieldvault_crypto::mac::sha256(token.as_bytes());
            let (user, forms) = app_user(app, hash).await?;
            let subject = format!("app_user:{}", user.id);
            app.budgets
                .check_restricted(&subject, crate::extract::changes(parts))?;
            let c = &app.config;
            app.budgets
                .spend(app, &subject, c.limits_collector_per_window, None)
                .await?;
            if let Some(s) = &slot {
                s.record(&format!("app-user:{}", user.id), "app-user");
            }
            return Ok(Caller {
                actor: Actor::AppUser {
                    id: user.id,
                    project: ProjectId(user.project_id),
                    forms,
                },
                key: Some(token.to_owned()),
            });
        }
        let class = crate::service::budget::Class::Collector;
        Ok(
            match crate::extract::authenticate_as(parts, app, class).await? {
                Some(a) => Caller {
                    actor: a.actor,
                    key: None,
                },
                None => Caller {
                    actor: Actor::Anonymous,
                    key: None,
                },
            },
        )
    }
}

/// Resolves a collector token in the store; while the store is unreachable, from the last
/// resolution this instance remembers (degraded intake).
async fn app_user(
    app: &App,
    hash: [u8; 32],
) -> Result<(fieldvault_store::AppUserRow, Vec<i64>), ApiError> {
    let health = app.hot.health();
    let looked_up = if health.degraded() {
        Err(StoreError::Unavailable("degraded".into()))
    } else {
        lookup(app, &hash).await
    };
    match looked_up {
        Ok(Some((user, forms))) => {
            app.hot.remember_app_user(hash, user.clone(), forms.clone());
            Ok((user, forms))
        }
        Ok(None) => Err(bad_key()),
        Err(StoreError::Unavailable(why)) => {
            health.mark_unreachable(&why);
            app.hot
                .last_app_user(&hash)
                .ok_or(ApiError::Unavailable(why))
        }
        Err(e) => Err(e.into()),
    }
}

async fn lookup(
    app: &App,
    hash: &[u8; 32],
) -> Result<Option<(fieldvault_store::AppUserRow, Vec<i64>)>, StoreError> {
    app.store.app_user_with_forms_by_token_hash(hash).await
}

fn bad_key() -> ApiError {
    ApiError::Forbidden {
        verb: "app_user.token",
    }
}
