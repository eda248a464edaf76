//! Extractors: who is calling. They authenticate and never authorize (that is `authorize`'s job
//! in the service layer). Spans skip all fields so credentials cannot reach the logs.

use axum::extract::FromRequestParts;
use axum::http::header;
use axum::http::request::Parts;
use base64::Engine as _;
use fieldvault_core::Actor;
use fieldvault_crypto::SecretString;

use crate::App;
use crate::middleware::access_log::AuthSlot;
use crate::middleware::client_ip::ClientInfo;
use crate::problem::ApiError;
use crate::service;

/// A signed-in account. Rejects the request with 401 when credentials are missing or wrong.
///
/// Today: HTTP Basic (`username:password`), accepted over HTTPS, from loopback, or via a trusted
/// proxy that terminated HTTPS. Sessions, bearer tokens and API tokens join in the accounts work.
pub struct AuthUser {
    /// The actor for `authorize`.
    pub actor: Actor,
    /// The account.
    pub user: fieldvault_store::UserRow,
}

impl FromRequestParts<App> for AuthUser {
    type Rejection = ApiError;

    #[tracing::instrument(skip_all)]
    async fn from_request_parts(parts: &mut Parts, app: &App) -> Result<Self, Self::Rejection> {
        let Some(value) = parts.headers.get(header::AUTHORIZATION) else {
            return Err(ApiError::Unauthenticated {
                code: "auth.required",
                message: "This resource needs authentication.".into(),
            });
        };
        let text = value.to_str().map_err(|_| failed())?;
        let Some(encoded) = text
            .strip_prefix("Basic ")
            .or_else(|| text.strip_prefix("basic "))
        else {
            return Err(failed());
        };
        let client = parts.extensions.get::<ClientInfo>().copied();
        if !client.is_some_and(|c| c.secure || c.loopback) {
            return Err(ApiError::Unauthenticated {
                code: "auth.insecure_transport",
                message: "Passwords are only accepted over HTTPS.".into(),
            });
        }
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(encoded.trim())
            .map_err(|_| failed())?;
        let decoded = zeroize::Zeroizing::new(decoded);
        let text = std::str::from_utf8(&decoded).map_err(|_| failed())?;
        let (username, password) = text.split_once(':').ok_or_else(failed)?;
        let password = SecretString::from(password);
        let user = service::users::verify_password_cached(
            app.store.as_ref(),
            &app.auth_cache,
            username,
            password,
        )
        .await?
        .ok_or_else(failed)?;
        if let Some(slot) = parts.extensions.get::<AuthSlot>() {
            slot.record(&user.username, "basic");
        }
        Ok(AuthUser {
            actor: Actor::User {
                id: user.user_id(),
                superuser: user.superuser,
                project_role: None,
            },
            user,
        })
    }
}

fn failed() -> ApiError {
    ApiError::Unauthenticated {
        code: "auth.failed",
        message: "Could not authenticate with the provided credentials.".into(),
    }
}
