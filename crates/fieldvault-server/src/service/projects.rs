//! Projects: create, list, read, edit, and granting, listing and revoking project roles.
//!
//! Every function authorizes first. A project the caller has no role in answers 404 (via
//! [`project_actor`] and the verb check order), never 403 for a read, so project ids do not leak
//! to strangers; a caller who can see a project but lacks the verb gets 403.

use fieldvault_core::authz::Role;
use fieldvault_core::{Actor, CoreError, ProjectId, Resource, UserId, Verb, authorize};
use fieldvault_store::{NewProject, ProjectRoleRow, ProjectRow, Store, StoreError};

use super::ServiceError;
use super::context::project_actor;
use crate::App;

/// Longest project name, in characters (Central has no limit; ours keeps lists readable).
pub const MAX_NAME_CHARS: usize = 200;
/// Longest project description, in characters.
pub const MAX_DESCRIPTION_CHARS: usize = 2000;

/// A requested change; `None` keeps the current value (PATCH semantics).
#[derive(Debug, Default)]
pub struct ProjectPatch {
    /// New name.
    pub name: Option<String>,
    /// New description; `Some(None)` clears it.
    pub description: Option<Option<String>>,
    /// New archived flag.
    pub archived: Option<bool>,
}

/// Creates a project with its own data key, and makes the creating account its manager so the
/// creator can use what they just made (site administrators hold no implicit project rights).
pub async fn create(
    app: &App,
    actor: &Actor,
    name: &str,
    description: Option<&str>,
) -> Result<ProjectRow, ServiceError> {
    authorize(actor, Verb::ProjectCreate, Resource::Site)?;
    let name = clean_name(name)?;
    let description = clean_description(description)?;
    let created_by = match actor {
        Actor::User { id, .. } => Some(*id),
        _ => None,
    };
    // A rotation by another process must not leave this key wrapped under a retired master key.
    app.keyring.ensure_current().await?;
    let (row, key) = app.keyring.new_data_key()?;
    let project = app
        .store
        .create_project(
            &NewProject {
                name,
                description,
                created_by,
            },
            &row,
        )
        .await?;
    app.keyring.remember(&row.id, &key);
    if let Some(user) = created_by {
        app.store
            .set_project_role(project.project_id(), user, Role::Manager.as_str())
            .await?;
    }
    super::audit::record(
        app.store.as_ref(),
        super::audit::actor_name(actor, None),
        "project.create",
        Some(format!("project:{}", project.id)),
        serde_json::json!({ "name": project.name }),
    )
    .await?;
    Ok(project)
}

/// The projects the caller may read. A per-project role check keeps this on the one
/// authorization function rather than a second, SQL-side notion of visibility; it costs one
/// role lookup per project, which is fine at the scale of projects per installation.
pub async fn list(store: &dyn Store, actor: &Actor) -> Result<Vec<ProjectRow>, ServiceError> {
    let mut visible = Vec::new();
    for p in store.list_projects().await? {
        let (row, scoped) = project_actor(store, actor, p.project_id()).await?;
        if authorize(
            &scoped,
            Verb::ProjectRead,
            Resource::Project(row.project_id()),
        )
        .is_ok()
        {
            visible.push(row);
        }
    }
    Ok(visible)
}

/// One project; 404 when it is missing, deleted, or the caller may not read it.
pub async fn get(
    store: &dyn Store,
    actor: &Actor,
    id: ProjectId,
) -> Result<ProjectRow, ServiceError> {
    Ok(readable(store, actor, id).await?.0)
}

/// Applies a PATCH. All values are validated before anything is written.
pub async fn update(
    store: &dyn Store,
    actor: &Actor,
    id: ProjectId,
    patch: ProjectPatch,
) -> Result<ProjectRow, ServiceError> {
    let (row, actor) = readable(store, actor, id).await?;
    authorize(&actor, Verb::ProjectUpdate, Resource::Project(id))?;
    let name = match patch.name {
        Some(n) => clean_name(&n)?,
        None => row.name.clone(),
    };
    let description = match patch.description {
        Some(d) => clean_description(d.as_deref())?,
        None => row.description.clone(),
    };
    let archived = patch.archived.unwrap_or(row.archived);
    let updated = store
        .update_project(id, &name, description.as_deref(), archived)
        .await?;
    super::audit::record(
        store,
        super::audit::actor_name(&actor, None),
        "project.update",
        Some(format!("project:{}", id.0)),
        serde_json::json!({ "name": updated.name, "archived": updated.archived }),
    )
    .await?;
    Ok(updated)
}

/// Deletes a project (soft: it disappears at once; data keys are destroyed when the trash is
/// purged). Managers only.
pub async fn delete(store: &dyn Store, actor: &Actor, id: ProjectId) -> Result<(), ServiceError> {
    let (_, actor) = readable(store, actor, id).await?;
    authorize(&actor, Verb::ProjectDelete, Resource::Project(id))?;
    store.delete_project(id).await?;
    super::audit::record(
        store,
        super::audit::actor_name(&actor, None),
        "project.delete",
        Some(format!("project:{}", id.0)),
        serde_json::json!({}),
    )
    .await
}

/// Grants `user` a role in the project (replacing any role it had). `role` is a Central system
/// name (`manager`, `viewer`, `formfill`) or Central's numeric role id (3, 4, 6), since Central
/// clients may send either.
pub async fn grant_role(
    store: &dyn Store,
    actor: &Actor,
    id: ProjectId,
    role: &str,
    user: UserId,
) -> Result<(), ServiceError> {
    let (_, actor) = readable(store, actor, id).await?;
    authorize(&actor, Verb::ProjectUpdate, Resource::Project(id))?;
    let role = parse_role(role)?;
    let target = store
        .user_by_id(user)
        .await?
        .filter(|u| u.active)
        .ok_or(ServiceError::NotFound)?;
    store
        .set_project_role(id, target.user_id(), role.as_str())
        .await?;
    super::audit::record(
        store,
        super::audit::actor_name(&actor, None),
        "project.role.grant",
        Some(format!("project:{}", id.0)),
        serde_json::json!({ "user": target.username, "role": role.as_str() }),
    )
    .await?;
    Ok(())
}

/// The accounts with a role in the project, by account id; only those holding `role` when it is
/// given (a system name or Central's numeric id, as [`grant_role`] takes). Managers only: a member
/// with another role gets 403, anyone else 404.
pub async fn list_roles(
    store: &dyn Store,
    actor: &Actor,
    id: ProjectId,
    role: Option<&str>,
) -> Result<Vec<ProjectRoleRow>, ServiceError> {
    let (_, actor) = readable(store, actor, id).await?;
    authorize(&actor, Verb::ProjectUpdate, Resource::Project(id))?;
    let role = role.map(parse_role).transpose()?;
    Ok(store.project_roles(id, role.map(Role::as_str)).await?)
}

/// Takes `role` from `user` in the project (managers only). 404 when the account does not hold
/// that role there; the project's last manager cannot be removed (400), so a project never ends
/// up without anyone able to manage it.
pub async fn revoke_role(
    store: &dyn Store,
    actor: &Actor,
    id: ProjectId,
    role: &str,
    user: UserId,
) -> Result<(), ServiceError> {
    let (_, actor) = readable(store, actor, id).await?;
    authorize(&actor, Verb::ProjectUpdate, Resource::Project(id))?;
    let role = parse_role(role)?;
    let held = store.project_role(id, user).await?;
    if held.as_deref() != Some(role.as_str()) {
        return Err(ServiceError::NotFound);
    }
    if role == Role::Manager && store.project_roles(id, Some("manager")).await?.len() <= 1 {
        return Err(CoreError::invalid(
            "actorId",
            "is the project's only manager; make someone else manager first",
        )
        .into());
    }
    store
        .remove_project_role(id, user, role.as_str())
        .await
        .map_err(|e| match e {
            StoreError::NotFound => ServiceError::NotFound,
            other => other.into(),
        })?;
    let username = store
        .user_by_id(user)
        .await?
        .map(|u| u.username)
        .unwrap_or_default();
    super::audit::record(
        store,
        super::audit::actor_name(&actor, None),
        "project.role.revoke",
        Some(format!("project:{}", id.0)),
        serde_json::json!({ "user": username, "role": role.as_str() }),
    )
    .await?;
    Ok(())
}

/// Loads the project and checks `ProjectRead`, answering 404 (not 403) to callers who may not
/// see it, so the existence of other people's projects is not revealed.
pub(crate) async fn readable(
    store: &dyn Store,
    actor: &Actor,
    id: ProjectId,
) -> Result<(ProjectRow, Actor), ServiceError> {
    let (row, actor) = project_actor(store, actor, id).await?;
    authorize(&actor, Verb::ProjectRead, Resource::Project(id))
        .map_err(|_| ServiceError::NotFound)?;
    Ok((row, actor))
}

fn parse_role(s: &str) -> Result<Role, ServiceError> {
    let by_id = match s {
        "3" => Some(Role::Manager),
        "4" => Some(Role::Viewer),
        "6" => Some(Role::DataCollector),
        _ => None,
    };
    by_id.or_else(|| Role::parse(s)).ok_or_else(|| {
        CoreError::invalid("role", "must be one of manager, editor, viewer or formfill").into()
    })
}

fn clean_name(name: &str) -> Result<String, ServiceError> {
    let name = name.trim();
    if name.is_empty() {
        return Err(CoreError::invalid("name", "is required").into());
    }
    if name.chars().count() > MAX_NAME_CHARS {
        return Err(CoreError::invalid(
            "name",
            format!("must be at most {MAX_NAME_CHARS} characters"),
        )
        .into());
    }
    Ok(name.to_owned())
}

fn clean_description(d: Option<&str>) -> Result<Option<String>, ServiceError> {
    match d {
        Some(d) if d.chars().count() > MAX_DESCRIPTION_CHARS => Err(CoreError::invalid(
            "description",
            format!("must be at most {MAX_DESCRIPTION_CHARS} characters"),
        )
        .into()),
        Some(d) if d.trim().is_empty() => Ok(None),
        Some(d) => Ok(Some(d.to_owned())),
        None => Ok(None),
    }
}
