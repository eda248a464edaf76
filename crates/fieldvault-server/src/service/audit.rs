//! Writing and reading the audit log (M5). Every security-relevant action of a service function
//! ends with one [`record`]; `fieldvault audit verify` and `GET /v1/audits` read it back.

use fieldvault_core::{Actor, Resource, Verb, authorize};
use fieldvault_store::audit_chain::{Verified, Verifier};
use fieldvault_store::{AuditRow, NewAudit, Store};
use serde_json::Value;

use super::ServiceError;

/// Largest page of `GET /v1/audits`.
pub const MAX_PAGE: i64 = 1000;
/// Entries read per round trip while verifying.
const VERIFY_BATCH: i64 = 10_000;

/// How an actor is named in the log.
pub fn actor_name(actor: &Actor, username: Option<&str>) -> String {
    match actor {
        Actor::Operator { os_user } => format!("cli:{os_user}"),
        Actor::User { id, .. } => match username {
            Some(u) => format!("user:{u}"),
            None => format!("user#{id}"),
        },
        Actor::AppUser { id, .. } => format!("app-user:{id}"),
        Actor::Anonymous => "anonymous".into(),
    }
}

/// Appends one entry. An audit write that fails fails the request: an action that cannot be
/// recorded must not be reported as done.
pub async fn record(
    store: &dyn Store,
    actor: String,
    action: &str,
    target: Option<String>,
    details: Value,
) -> Result<(), ServiceError> {
    store
        .append_audit(&NewAudit {
            actor,
            action: action.to_owned(),
            target,
            details: details.to_string(),
        })
        .await?;
    Ok(())
}

/// Entries for an administrator (site-level `config.read`-class access: admins only).
pub async fn list(
    store: &dyn Store,
    actor: &Actor,
    after_seq: i64,
    limit: i64,
) -> Result<Vec<AuditRow>, ServiceError> {
    authorize(actor, Verb::UserList, Resource::Site)?;
    Ok(store
        .audit_entries(after_seq.max(0), limit.clamp(1, MAX_PAGE))
        .await?)
}

/// A project's history for its managers (administrators need a role too: M6), newest first.
pub async fn project_history(
    store: &dyn Store,
    actor: &Actor,
    project: fieldvault_core::ProjectId,
    before_seq: Option<i64>,
    limit: i64,
) -> Result<Vec<AuditRow>, ServiceError> {
    let (_, actor) = super::projects::readable(store, actor, project).await?;
    authorize(&actor, Verb::ProjectUpdate, Resource::Project(project))?;
    Ok(store
        .audit_entries_for_project(
            project.0,
            before_seq.unwrap_or(i64::MAX),
            limit.clamp(1, MAX_PAGE),
        )
        .await?)
}

/// Walks the whole chain in batches, in constant memory.
pub async fn verify_all(store: &dyn Store, actor: &Actor) -> Result<Verified, ServiceError> {
    authorize(actor, Verb::UserList, Resource::Site)?;
    // Read the head first: entries appended while we walk are beyond it and not judged.
    let head = store.audit_head().await?;
    let end = head.as_ref().map_or(0, |h| h.0);
    let mut v = Verifier::from_anchor(store.audit_anchor().await?);
    let mut after = v.start_after();
    while after < end {
        let batch = store
            .audit_entries(after, VERIFY_BATCH.min(end - after))
            .await?;
        let Some(last) = batch.last() else { break };
        after = last.seq;
        for r in &batch {
            v.push(r);
        }
    }
    Ok(v.finish(head))
}

/// Deletes entries written before `before_at` (audit retention), keeping the chain verifiable
/// from the anchor, and records the deletion as an entry of its own. Returns how many went.
pub async fn prune(store: &dyn Store, actor: &Actor, before_at: i64) -> Result<u64, ServiceError> {
    authorize(actor, Verb::ConfigRead, Resource::Site)?;
    let deleted = store.audit_prune(before_at).await?;
    if deleted > 0 {
        let anchor = store.audit_anchor().await?;
        record(
            store,
            actor_name(actor, None),
            "audit.prune",
            None,
            serde_json::json!({
                "deleted": deleted,
                "before": before_at,
                "anchorSeq": anchor.as_ref().map(|a| a.0),
                "anchorHash": anchor.map(|a| fieldvault_crypto::random::to_hex(&a.1)),
            }),
        )
        .await?;
    }
    Ok(deleted)
}

/// Applies `audit.retention_days` hourly (and once at start); nothing when it is 0.
pub fn spawn_retention(app: crate::App) {
    let days = app.config.audit_retention_days;
    if days == 0 {
        return;
    }
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(std::time::Duration::from_secs(3600));
        let actor = Actor::Operator {
            os_user: "retention".into(),
        };
        let keep_ms = i64::try_from(days).unwrap_or(36_500) * 86_400_000;
        loop {
            tick.tick().await;
            let before = fieldvault_store::now_ms() - keep_ms;
            match prune(app.store.as_ref(), &actor, before).await {
                Ok(0) => {}
                Ok(n) => tracing::info!(deleted = n, "audit retention removed old entries"),
                Err(e) => tracing::warn!(error = %e, "audit retention failed"),
            }
        }
    });
}
