//! `/v1/projects/{id}/key`: project encryption with an owner-held key pair.
//!
//! Central's `POST /key {"passphrase"}` generates a key pair on the server and keeps the private
//! half wrapped by a passphrase; Fieldvault never holds a private key, so that body is refused
//! with directions, and `{"publicKey"}` (from `fieldvault keygen`) is what turns encryption on.

use axum::extract::{Path, State};
use axum::routing::get;
use axum::{Json, Router};
use fieldvault_core::ProjectId;
use fieldvault_store::ProjectKeyRow;
use serde::Deserialize;
use serde_json::{Value, json};

use crate::App;
use crate::api::json::{AppJson, iso, iso_opt};
use crate::api::projects::path_id;
use crate::extract::AuthUser;
use crate::problem::ApiError;
use crate::service::encryption::{self, EncryptionStatus};

/// The project key routes.
pub fn routes() -> Router<App> {
    Router::new().route("/v1/projects/{id}/key", get(read).post(set).delete(remove))
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct SetBody {
    #[serde(default)]
    public_key: Option<String>,
    /// Central's managed encryption; refused with an explanation.
    #[serde(default)]
    passphrase: Option<serde::de::IgnoredAny>,
    /// Central's passphrase hint; ignored like the passphrase.
    #[serde(default)]
    hint: Option<serde::de::IgnoredAny>,
}

fn key_json(k: &ProjectKeyRow) -> Value {
    json!({
        "id": k.id,
        "public": k.public_key,
        "fingerprint": encryption::fingerprint(&k.public_key),
        "managed": false,
        "createdAt": iso(k.created_at),
        "retiredAt": iso_opt(k.retired_at),
    })
}

fn status_json(s: &EncryptionStatus) -> Value {
    json!({
        "encrypted": s.current.is_some(),
        "current": s.current.as_ref().map(key_json),
        "keys": s.history.iter().map(key_json).collect::<Vec<_>>(),
        "reversionedForms": s.reversioned.iter()
            .map(|(f, v)| json!({ "xmlFormId": f, "version": v }))
            .collect::<Vec<_>>(),
    })
}

/// `GET /v1/projects/{id}/key`: whether the project is encrypted, and with which keys.
async fn read(
    State(app): State<App>,
    who: AuthUser,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let id = ProjectId(path_id(&id)?);
    Ok(Json(status_json(
        &encryption::status(&app, &who.actor, id).await?,
    )))
}

/// `POST /v1/projects/{id}/key {"publicKey": "<base64 SPKI>"}`: turns encryption on or changes
/// the key; the project's forms get new versions.
async fn set(
    State(app): State<App>,
    who: AuthUser,
    Path(id): Path<String>,
    AppJson(body): AppJson<SetBody>,
) -> Result<Json<Value>, ApiError> {
    let id = ProjectId(path_id(&id)?);
    let Some(key) = body.public_key else {
        let message = if body.passphrase.is_some() || body.hint.is_some() {
            "Fieldvault does not keep private keys on the server (ODK Central's passphrase \
             encryption does). Create a key pair on your own machine with `fieldvault keygen \
             --out project-key.pem` and send the printed public key as {\"publicKey\": \"…\"}."
        } else {
            "Send the project's RSA public key as {\"publicKey\": \"<base64 DER \
             SubjectPublicKeyInfo>\"} (`fieldvault keygen` prints it)."
        };
        return Err(ApiError::bad_request(
            "project.key.public_key_required",
            message,
        ));
    };
    let status = encryption::set_key(&app, &who.actor, id, Some(&key)).await?;
    Ok(Json(status_json(&status)))
}

/// `DELETE /v1/projects/{id}/key`: turns encryption off for forms that follow the project's key
/// (new form versions; submissions already received stay encrypted).
async fn remove(
    State(app): State<App>,
    who: AuthUser,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let id = ProjectId(path_id(&id)?);
    let status = encryption::set_key(&app, &who.actor, id, None).await?;
    Ok(Json(status_json(&status)))
}
