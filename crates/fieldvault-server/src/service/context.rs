//! Loading what `authorize` needs: the project (404 when missing or deleted — never 403, so
//! project ids do not leak) and the caller's role in it.

use fieldvault_core::authz::Role;
use fieldvault_core::{Actor, ProjectId};
use fieldvault_store::{ProjectRow, Store};

use super::ServiceError;

/// The project and the actor carrying its role in that project.
pub async fn project_actor(
    store: &dyn Store,
    actor: &Actor,
    project: ProjectId,
) -> Result<(ProjectRow, Actor), ServiceError> {
    let row = store
        .project(project)
        .await?
        .filter(|p| p.deleted_at.is_none())
        .ok_or(ServiceError::NotFound)?;
    let actor = match actor {
        Actor::User {
            id,
            superuser,
            scopes,
            second_factor,
            ..
        } => {
            let role = store
                .project_role(project, *id)
                .await?
                .and_then(|r| Role::parse(&r));
            Actor::User {
                id: *id,
                superuser: *superuser,
                project_role: role.map(|r| (project, r)),
                scopes: *scopes,
                second_factor: *second_factor,
            }
        }
        other => other.clone(),
    };
    Ok((row, actor))
}
