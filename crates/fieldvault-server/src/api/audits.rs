//! `GET /v1/audits`: the audit log, for administrators (Central-shaped entries plus the chain
//! fields), and `GET /v1/audits/verify`: the chain's verification status.

use axum::extract::{Query, State};
use axum::routing::get;
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{Value, json};

use super::json::iso;
use crate::App;
use crate::extract::AuthUser;
use crate::problem::ApiError;
use crate::service::audit;

/// The routes.
pub fn routes() -> Router<App> {
    Router::new()
        .route("/v1/audits", get(list))
        .route("/v1/audits/verify", get(verify))
        .route("/v1/projects/{id}/audits", get(project_history))
}

#[derive(Deserialize)]
struct Page {
    after: Option<i64>,
    limit: Option<i64>,
}

#[derive(Deserialize)]
struct HistoryPage {
    before: Option<i64>,
    limit: Option<i64>,
}

/// `GET /v1/projects/{id}/audits[?before=SEQ&limit=N]`: the project's history, newest first, for
/// its managers.
async fn project_history(
    State(app): State<App>,
    who: AuthUser,
    axum::extract::Path(id): axum::extract::Path<String>,
    Query(p): Query<HistoryPage>,
) -> Result<Json<Value>, ApiError> {
    // A malformed id names no project: 404, like every project route.
    let id: i64 = id.parse().map_err(|_| ApiError::NotFound)?;
    let rows = audit::project_history(
        app.store.as_ref(),
        &who.actor,
        fieldvault_core::ProjectId(id),
        p.before,
        p.limit.unwrap_or(100),
    )
    .await?;
    Ok(Json(Value::Array(rows.iter().map(entry_json).collect())))
}

fn entry_json(r: &fieldvault_store::AuditRow) -> Value {
    json!({
        "seq": r.seq,
        "loggedAt": iso(r.at),
        "actor": r.actor,
        "action": r.action,
        "target": r.target,
        "details": serde_json::from_str::<Value>(&r.details).unwrap_or(Value::Null),
        "hash": fieldvault_crypto::random::to_hex(&r.hash),
    })
}

async fn list(
    State(app): State<App>,
    who: AuthUser,
    Query(p): Query<Page>,
) -> Result<Json<Value>, ApiError> {
    let rows = audit::list(
        app.store.as_ref(),
        &who.actor,
        p.after.unwrap_or(0),
        p.limit.unwrap_or(100),
    )
    .await?;
    Ok(Json(Value::Array(rows.iter().map(entry_json).collect())))
}

async fn verify(State(app): State<App>, who: AuthUser) -> Result<Json<Value>, ApiError> {
    Ok(Json(
        match audit::verify_all(app.store.as_ref(), &who.actor).await? {
            fieldvault_store::audit_chain::Verified::Intact { entries } => {
                json!({"intact": true, "entries": entries})
            }
            fieldvault_store::audit_chain::Verified::Broken { seq, reason } => {
                json!({"intact": false, "brokenAt": seq, "reason": reason})
            }
        },
    ))
}
