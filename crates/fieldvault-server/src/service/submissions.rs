//! Reading one submission's decrypted XML and attachments (lists and flattened data are in
//! `data.rs`). Only callers with `submission.read` on the form (managers, viewers) get here; site administrators
//! without a project role do not (M6).

use bytes::Bytes;
use fieldvault_core::{Actor, ProjectId, Resource, Verb, authorize};
use fieldvault_store::submissions::{attachment_aad, xml_aad};
use fieldvault_store::{
    FormRow, ProjectRow, StoreError, SubmissionAttachmentRow, SubmissionRow, SubmissionVersionRow,
};
use futures_util::Stream;

use super::ServiceError;
use super::context::project_actor;
use crate::App;

async fn load(
    app: &App,
    actor: &Actor,
    project: ProjectId,
    xml_form_id: &str,
) -> Result<(ProjectRow, FormRow), ServiceError> {
    let (p, actor) = project_actor(app.store.as_ref(), actor, project).await?;
    let form = app
        .store
        .form(project, xml_form_id)
        .await?
        .ok_or(ServiceError::NotFound)?;
    let resource = Resource::Form {
        project,
        form: form.id,
        anonymous: form.anonymous,
    };
    if authorize(&actor, Verb::FormRead, resource).is_err() {
        return Err(ServiceError::NotFound);
    }
    authorize(&actor, Verb::SubmissionRead, resource)?;
    Ok((p, form))
}

async fn version_for(
    app: &App,
    actor: &Actor,
    project: ProjectId,
    xml_form_id: &str,
    instance_id: &str,
) -> Result<(ProjectRow, FormRow, SubmissionRow, SubmissionVersionRow), ServiceError> {
    let (p, form) = load(app, actor, project, xml_form_id).await?;
    let s = app
        .store
        .submission(form.id, instance_id)
        .await?
        .filter(|s| s.deleted_at.is_none())
        .ok_or(ServiceError::NotFound)?;
    let current = app
        .store
        .submission_versions(s.id)
        .await?
        .into_iter()
        .find(|v| v.current)
        .ok_or(ServiceError::NotFound)?;
    Ok((p, form, s, current))
}

/// One version of a submission, with who sent it.
#[derive(Debug, Clone)]
pub struct VersionView {
    /// The stored version.
    pub version: SubmissionVersionRow,
    /// The submitting account's username or the collector's display name, when known.
    pub submitter_name: Option<String>,
}

/// Every version of a submission, newest first (Central's `…/versions`). Needs
/// `submission.read` on the form; 404 when the caller may not see the form, or the submission is
/// unknown or deleted.
pub async fn versions(
    app: &App,
    actor: &Actor,
    project: ProjectId,
    xml_form_id: &str,
    instance_id: &str,
) -> Result<Vec<VersionView>, ServiceError> {
    let (_, form) = load(app, actor, project, xml_form_id).await?;
    let s = app
        .store
        .submission(form.id, instance_id)
        .await?
        .filter(|s| s.deleted_at.is_none())
        .ok_or(ServiceError::NotFound)?;
    let mut rows = app.store.submission_versions(s.id).await?;
    rows.reverse();
    let collectors = if rows.iter().any(|v| v.submitter_app_user_id.is_some()) {
        app.store.app_users(project).await?
    } else {
        Vec::new()
    };
    let mut users: std::collections::HashMap<i64, Option<String>> =
        std::collections::HashMap::new();
    let mut out = Vec::with_capacity(rows.len());
    for v in rows {
        let submitter_name = if let Some(uid) = v.submitter_user_id {
            match users.get(&uid) {
                Some(known) => known.clone(),
                None => {
                    let name = app
                        .store
                        .user_by_id(fieldvault_core::UserId(uid))
                        .await?
                        .map(|u| u.username);
                    users.insert(uid, name.clone());
                    name
                }
            }
        } else {
            v.submitter_app_user_id.and_then(|aid| {
                collectors
                    .iter()
                    .find(|c| c.id == aid)
                    .map(|c| c.display_name.clone())
            })
        };
        out.push(VersionView {
            version: v,
            submitter_name,
        });
    }
    Ok(out)
}

/// The decrypted XML of the current version (for an ODK-encrypted submission: the envelope).
pub async fn xml(
    app: &App,
    actor: &Actor,
    project: ProjectId,
    xml_form_id: &str,
    instance_id: &str,
) -> Result<Vec<u8>, ServiceError> {
    let (p, form, _, v) = version_for(app, actor, project, xml_form_id, instance_id).await?;
    let key = super::forms::project_key(app, &p).await?;
    Ok(fieldvault_crypto::envelope::open(
        &key,
        &xml_aad(p.id, form.id, &v.instance_id),
        &v.xml_sealed,
    )?)
}

/// Attachment slots of the current version.
pub async fn attachments(
    app: &App,
    actor: &Actor,
    project: ProjectId,
    xml_form_id: &str,
    instance_id: &str,
) -> Result<Vec<SubmissionAttachmentRow>, ServiceError> {
    let (_, _, _, v) = version_for(app, actor, project, xml_form_id, instance_id).await?;
    Ok(app.store.submission_attachments(v.id).await?)
}

/// One attachment, decrypted as it streams.
pub async fn attachment(
    app: &App,
    actor: &Actor,
    project: ProjectId,
    xml_form_id: &str,
    instance_id: &str,
    name: &str,
) -> Result<
    (
        SubmissionAttachmentRow,
        impl Stream<Item = Result<Bytes, StoreError>> + Send + 'static,
    ),
    ServiceError,
> {
    let (p, form, _, v) = version_for(app, actor, project, xml_form_id, instance_id).await?;
    let slot = app
        .store
        .submission_attachments(v.id)
        .await?
        .into_iter()
        .find(|a| a.name == name && a.blob_name.is_some())
        .ok_or(ServiceError::NotFound)?;
    let key = super::forms::project_key(app, &p).await?;
    let blob = slot.blob_name.clone().unwrap_or_default();
    // Blobs are bound to the instanceID of the version that first received them; an edit that
    // carried a file forward keeps the original binding, found through the blob's first owner.
    let owner = first_owner(app, v.submission_id, &blob).await?;
    let stream = app
        .blobs
        .get_stream(&key, &blob, &attachment_aad(p.id, form.id, &owner, name))
        .await?;
    Ok((slot, stream))
}

pub(crate) async fn first_owner(
    app: &App,
    submission_id: i64,
    blob: &str,
) -> Result<String, ServiceError> {
    for v in app.store.submission_versions(submission_id).await? {
        let atts = app.store.submission_attachments(v.id).await?;
        if atts.iter().any(|a| a.blob_name.as_deref() == Some(blob)) {
            return Ok(v.instance_id);
        }
    }
    Err(ServiceError::NotFound)
}
