//! App users ("field keys" in Central): per-project collector tokens, and the forms each may see.
//!
//! The token is shown once, at creation; only its SHA-256 is stored, so a database leak does not
//! hand out working credentials. Tokens carry an `fvc_` prefix so a leaked one is recognisable
//! (secret scanners, logs) and cannot be mistaken for another kind of credential. Revocation is
//! Central's DELETE: a revoked app user is gone as far as the API is concerned (404 afterwards).

use fieldvault_core::{Actor, CoreError, ProjectId, Resource, Verb, authorize};
use fieldvault_crypto::{mac, random};
use fieldvault_store::{AppUserRow, FormRow, Store};

use super::ServiceError;
use super::projects::readable;

/// Prefix of every app-user token.
pub const TOKEN_PREFIX: &str = "fvc_";
/// Random bytes in a token (384 bits, as Central's 48-byte session tokens).
pub const TOKEN_BYTES: usize = 48;
/// Longest display name, in characters.
pub const MAX_DISPLAY_NAME_CHARS: usize = 200;

/// A freshly created app user with the only copy of its token.
pub struct CreatedAppUser {
    /// The stored row.
    pub row: AppUserRow,
    /// The secret token, to hand to the caller once.
    pub token: String,
}

impl std::fmt::Debug for CreatedAppUser {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CreatedAppUser")
            .field("row", &self.row)
            .finish_non_exhaustive()
    }
}

/// The hash under which a token is stored and looked up.
pub fn token_hash(token: &str) -> [u8; 32] {
    mac::sha256(token.as_bytes())
}

/// Creates an app user in the project and returns its token (once).
pub async fn create(
    store: &dyn Store,
    actor: &Actor,
    project: ProjectId,
    display_name: &str,
) -> Result<CreatedAppUser, ServiceError> {
    let actor = manager(store, actor, project).await?;
    let name = display_name.trim();
    if name.is_empty() {
        return Err(CoreError::invalid("displayName", "is required").into());
    }
    if name.chars().count() > MAX_DISPLAY_NAME_CHARS {
        return Err(CoreError::invalid(
            "displayName",
            format!("must be at most {MAX_DISPLAY_NAME_CHARS} characters"),
        )
        .into());
    }
    let token = format!(
        "{TOKEN_PREFIX}{}",
        random::token(TOKEN_BYTES).map_err(|e| ServiceError::Internal(e.to_string()))?
    );
    let created_by = match actor {
        Actor::User { id, .. } => Some(id),
        _ => None,
    };
    let row = store
        .create_app_user(project, name, &token_hash(&token), created_by)
        .await?;
    super::audit::record(
        store,
        super::audit::actor_name(&actor, None),
        "app_user.create",
        Some(format!("project:{}/app-user:{}", project.0, row.id)),
        serde_json::json!({ "displayName": row.display_name }),
    )
    .await?;
    Ok(CreatedAppUser { row, token })
}

/// The project's app users, revoked ones included (Central lists them with `deletedAt`), active
/// ones first, then newest first.
pub async fn list(
    store: &dyn Store,
    actor: &Actor,
    project: ProjectId,
) -> Result<Vec<AppUserRow>, ServiceError> {
    manager(store, actor, project).await?;
    let mut rows = store.app_users(project).await?;
    rows.sort_by_key(|r| {
        (
            r.revoked_at.is_some(),
            std::cmp::Reverse((r.created_at, r.id)),
        )
    });
    Ok(rows)
}

/// Revokes an app user of this project; its token stops working at once.
pub async fn revoke(
    store: &dyn Store,
    actor: &Actor,
    project: ProjectId,
    app_user: i64,
) -> Result<(), ServiceError> {
    manager(store, actor, project).await?;
    let row = active_app_user(store, project, app_user).await?;
    store.revoke_app_user(row.id).await?;
    super::audit::record(
        store,
        super::audit::actor_name(actor, None),
        "app_user.revoke",
        Some(format!("project:{}/app-user:{}", project.0, row.id)),
        serde_json::json!({}),
    )
    .await?;
    Ok(())
}

/// Lets an app user of this project see and fill one of its forms. Idempotent.
pub async fn assign_form(
    store: &dyn Store,
    actor: &Actor,
    project: ProjectId,
    xml_form_id: &str,
    app_user: i64,
) -> Result<(), ServiceError> {
    set_assignment(store, actor, project, xml_form_id, app_user, true).await
}

/// Withdraws that permission. Idempotent.
pub async fn unassign_form(
    store: &dyn Store,
    actor: &Actor,
    project: ProjectId,
    xml_form_id: &str,
    app_user: i64,
) -> Result<(), ServiceError> {
    set_assignment(store, actor, project, xml_form_id, app_user, false).await
}

async fn set_assignment(
    store: &dyn Store,
    actor: &Actor,
    project: ProjectId,
    xml_form_id: &str,
    app_user: i64,
    assigned: bool,
) -> Result<(), ServiceError> {
    manager(store, actor, project).await?;
    let form = live_form(store, project, xml_form_id).await?;
    let row = active_app_user(store, project, app_user).await?;
    if assigned {
        store.assign_form(row.id, form.id).await?;
    } else {
        store.unassign_form(row.id, form.id).await?;
    }
    super::audit::record(
        store,
        super::audit::actor_name(actor, None),
        if assigned {
            "app_user.assign"
        } else {
            "app_user.unassign"
        },
        Some(format!("project:{}/app-user:{}", project.0, row.id)),
        serde_json::json!({ "form": form.xml_form_id }),
    )
    .await
}

/// 404 for callers who cannot see the project, 403 for those who see it but may not manage
/// app users. Returns the actor carrying its project role.
async fn manager(
    store: &dyn Store,
    actor: &Actor,
    project: ProjectId,
) -> Result<Actor, ServiceError> {
    let (_, actor) = readable(store, actor, project).await?;
    authorize(&actor, Verb::AppUserManage, Resource::Project(project))?;
    Ok(actor)
}

/// An unrevoked app user of this project; an id from another project is 404 like an unknown one.
async fn active_app_user(
    store: &dyn Store,
    project: ProjectId,
    id: i64,
) -> Result<AppUserRow, ServiceError> {
    store
        .app_users(project)
        .await?
        .into_iter()
        .find(|r| r.id == id && r.project_id == project.0 && r.revoked_at.is_none())
        .ok_or(ServiceError::NotFound)
}

async fn live_form(
    store: &dyn Store,
    project: ProjectId,
    xml_form_id: &str,
) -> Result<FormRow, ServiceError> {
    store
        .form(project, xml_form_id)
        .await?
        .filter(|f| f.deleted_at.is_none())
        .ok_or(ServiceError::NotFound)
}
