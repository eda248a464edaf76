//! Who is calling an OpenRosa endpoint: a collector token in the path (`/v1/key/{token}/…`), an
//! account by HTTP Basic, or nobody. Anonymous callers are not rejected here: a form may accept
//! anonymous submissions, and the 401 challenge Collect expects comes from the service's answer.

use axum::extract::FromRequestParts;
use axum::http::header;
use axum::http::request::Parts;
use base64::Engine as _;
use fieldvault_core::{Actor, ProjectId};
use fieldvault_crypto::SecretString;

use crate::App;
use crate::middleware::access_log::AuthSlot;
use crate::middleware::client_ip::ClientInfo;
use crate::problem::ApiError;
use crate::service;

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
            let user = app
                .store
                .app_user_by_token_hash(&hash)
                .await?
                .ok_or_else(bad_key)?;
            let forms = app.store.assigned_forms(user.id).await?;
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
        let Some(value) = parts.headers.get(header::AUTHORIZATION) else {
            return Ok(Caller {
                actor: Actor::Anonymous,
                key: None,
            });
        };
        let client = parts.extensions.get::<ClientInfo>().copied();
        if !client.is_some_and(|c| c.secure || c.loopback) {
            return Err(ApiError::Unauthenticated {
                code: "auth.insecure_transport",
                message: "Passwords are only accepted over HTTPS.".into(),
            });
        }
        let text = value.to_str().map_err(|_| failed())?;
        let encoded = text
            .strip_prefix("Basic ")
            .or_else(|| text.strip_prefix("basic "))
            .ok_or_else(failed)?;
        let decoded = zeroize::Zeroizing::new(
            base64::engine::general_purpose::STANDARD
                .decode(encoded.trim())
                .map_err(|_| failed())?,
        );
        let pair = std::str::from_utf8(&decoded).map_err(|_| failed())?;
        let (username, password) = pair.split_once(':').ok_or_else(failed)?;
        let user = service::users::verify_password_cached(
            app.store.as_ref(),
            &app.auth_cache,
            username,
            SecretString::from(password),
        )
        .await?
        .ok_or_else(failed)?;
        if let Some(s) = &slot {
            s.record(&user.username, "basic");
        }
        Ok(Caller {
            actor: Actor::User {
                id: user.user_id(),
                superuser: user.superuser,
                project_role: None,
            },
            key: None,
        })
    }
}

fn bad_key() -> ApiError {
    ApiError::Forbidden {
        verb: "app_user.token",
    }
}

fn failed() -> ApiError {
    ApiError::Unauthenticated {
        code: "auth.failed",
        message: "Could not authenticate with the provided credentials.".into(),
    }
}
