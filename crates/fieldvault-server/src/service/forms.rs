//! Forms: upload an XForm (published at once or as a draft), replace and publish drafts, change
//! state, upload and serve media. XLSForm conversion comes later; an `.xlsx` upload gets a clear
//! 415 pointing at pyxform.

use bytes::Bytes;
use fieldvault_core::{Actor, ProjectId, Resource, Verb, authorize, parse_xform};
use fieldvault_store::forms::media_aad;
use fieldvault_store::{
    FormAttachmentRow, FormDefRow, FormRow, NewFormDef, ProjectRow, StoreError,
};
use futures_util::Stream;
use md5::Digest as _;

use super::ServiceError;
use super::context::project_actor;
use crate::App;

/// Largest XForm accepted, in bytes. Real forms are tens to hundreds of KiB.
pub const MAX_FORM_BYTES: usize = 10 * 1024 * 1024;
/// Largest form media file (images, audio, CSV for choices), in bytes.
pub const MAX_MEDIA_BYTES: u64 = 100 * 1024 * 1024;

/// Form states: listed and accepting, not listed but accepting, or closed.
pub const STATES: &[&str] = &["open", "closing", "closed"];

/// A form with the definition a reader sees (published, else the draft).
pub struct FormView {
    /// The form.
    pub form: FormRow,
    /// Its current definition.
    pub def: FormDefRow,
    /// Media slots of that definition.
    pub media: Vec<FormAttachmentRow>,
}

fn refuse_spreadsheet(body: &[u8], content_type: Option<&str>) -> Result<(), ServiceError> {
    let zip = body.starts_with(b"PK\x03\x04");
    let ole = body.starts_with(&[0xD0, 0xCF, 0x11, 0xE0]);
    let sheet_type =
        content_type.is_some_and(|c| c.contains("spreadsheet") || c.contains("ms-excel"));
    if zip || ole || sheet_type {
        return Err(ServiceError::Unsupported(
            "This looks like an XLSForm spreadsheet. Upload the XForm XML instead: convert it with \
             pyxform (`xls2xform form.xlsx form.xml`) until XLSForm upload is supported."
                .into(),
        ));
    }
    Ok(())
}

fn new_def(body: &[u8], content_type: Option<&str>) -> Result<NewFormDef, ServiceError> {
    refuse_spreadsheet(body, content_type)?;
    let x = parse_xform(body, MAX_FORM_BYTES)?;
    Ok(NewFormDef {
        xml_form_id: x.xml_form_id,
        version: x.version.unwrap_or_default(),
        title: Some(x.title),
        xml: body.to_vec(),
        md5: x.hash,
        public_key: x.base64_rsa_public_key,
        binary_fields: serde_json::to_string(&x.binary_fields)
            .map_err(|e| ServiceError::Internal(e.to_string()))?,
        media: x.media_files,
    })
}

async fn load(
    app: &App,
    actor: &Actor,
    project: ProjectId,
    xml_form_id: &str,
    verb: Verb,
) -> Result<(ProjectRow, FormRow, Actor), ServiceError> {
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
    // A caller who may not read the form must not learn that it exists.
    if authorize(&actor, Verb::FormRead, resource).is_err() && verb != Verb::SubmissionCreate {
        return Err(ServiceError::NotFound);
    }
    authorize(&actor, verb, resource)?;
    Ok((p, form, actor))
}

/// Creates a form from an XForm upload; `publish` makes it available to collectors at once.
pub async fn create(
    app: &App,
    actor: &Actor,
    project: ProjectId,
    body: &[u8],
    content_type: Option<&str>,
    publish: bool,
) -> Result<FormView, ServiceError> {
    let (_, actor) = project_actor(app.store.as_ref(), actor, project).await?;
    // Someone with no role in the project must not learn that it exists.
    if authorize(&actor, Verb::ProjectRead, Resource::Project(project)).is_err() {
        return Err(ServiceError::NotFound);
    }
    authorize(&actor, Verb::FormUpdate, Resource::Project(project))?;
    let def =
        super::encryption::apply_project_key(app, project, new_def(body, content_type)?).await?;
    let (form, def) = match app.store.create_form(project, &def, publish).await {
        Err(StoreError::Conflict { .. }) => {
            return Err(ServiceError::Conflict {
                code: "form.exists",
                message: format!(
                    "A form with the ID {:?} already exists in this project; upload a new \
                     version as a draft of that form instead.",
                    def.xml_form_id
                ),
            });
        }
        other => other?,
    };
    super::audit::record(
        app.store.as_ref(),
        super::audit::actor_name(&actor, None),
        if publish { "form.create.publish" } else { "form.create" },
        Some(format!("project:{}/form:{}", project.0, form.xml_form_id)),
        serde_json::json!({ "version": def.version, "hash": def.md5, "encrypted": def.public_key.is_some() }),
    )
    .await?;
    let media = app.store.form_attachments(def.id).await?;
    Ok(FormView { form, def, media })
}

/// Replaces the draft of an existing form.
pub async fn replace_draft(
    app: &App,
    actor: &Actor,
    project: ProjectId,
    xml_form_id: &str,
    body: &[u8],
    content_type: Option<&str>,
) -> Result<FormView, ServiceError> {
    let (_, form, _) = load(app, actor, project, xml_form_id, Verb::FormUpdate).await?;
    let def =
        super::encryption::apply_project_key(app, project, new_def(body, content_type)?).await?;
    if def.xml_form_id != form.xml_form_id {
        return Err(ServiceError::Invalid {
            code: "form.id_mismatch",
            message: format!(
                "The uploaded XForm's ID is {:?}, but this is the form {:?}.",
                def.xml_form_id, form.xml_form_id
            ),
        });
    }
    let def = app.store.replace_draft(form.id, &def).await?;
    app.hot.clear();
    let media = app.store.form_attachments(def.id).await?;
    Ok(FormView { form, def, media })
}

/// Publishes the draft. A version already published is refused: collectors would not notice
/// the change.
pub async fn publish(
    app: &App,
    actor: &Actor,
    project: ProjectId,
    xml_form_id: &str,
    version: Option<&str>,
) -> Result<FormView, ServiceError> {
    let (_, form, _) = load(app, actor, project, xml_form_id, Verb::FormUpdate).await?;
    let draft_id = form.draft_def_id.ok_or(ServiceError::NotFound)?;
    if let Some(v) = version {
        let draft = app
            .store
            .form_def(draft_id)
            .await?
            .ok_or(ServiceError::NotFound)?;
        if draft.version != v {
            return Err(ServiceError::Invalid {
                code: "form.version_mismatch",
                message: format!(
                    "The draft's version is {:?}, not {v:?}; set the version in the XForm and \
                     upload the draft again.",
                    draft.version
                ),
            });
        }
    }
    let def = match app.store.publish_draft(form.id).await {
        Err(StoreError::Conflict { .. }) => {
            return Err(ServiceError::Conflict {
                code: "form.version_exists",
                message: "This version of the form was already published; give the draft a new \
                          version (the XForm's version attribute) and upload it again."
                    .into(),
            });
        }
        other => other?,
    };
    app.hot.clear();
    super::audit::record(
        app.store.as_ref(),
        super::audit::actor_name(actor, None),
        "form.publish",
        Some(format!("project:{}/form:{xml_form_id}", project.0)),
        serde_json::json!({ "version": def.version, "hash": def.md5 }),
    )
    .await?;
    let form = app
        .store
        .form(project, xml_form_id)
        .await?
        .ok_or(ServiceError::NotFound)?;
    let media = app.store.form_attachments(def.id).await?;
    Ok(FormView { form, def, media })
}

/// Every form of a project the caller may read, with its current definition.
pub async fn list(
    app: &App,
    actor: &Actor,
    project: ProjectId,
) -> Result<Vec<FormView>, ServiceError> {
    let (_, actor) = project_actor(app.store.as_ref(), actor, project).await?;
    // Callers without a role see only public forms, and a project with none stays invisible.
    let member = authorize(&actor, Verb::ProjectRead, Resource::Project(project)).is_ok();
    let mut out = Vec::new();
    for form in app.store.forms(project).await? {
        let resource = Resource::Form {
            project,
            form: form.id,
            anonymous: form.anonymous,
        };
        if authorize(&actor, Verb::FormRead, resource).is_err() {
            continue;
        }
        let Some(def_id) = form.published_def_id.or(form.draft_def_id) else {
            continue;
        };
        let Some(def) = app.store.form_def(def_id).await? else {
            continue;
        };
        let media = app.store.form_attachments(def.id).await?;
        out.push(FormView { form, def, media });
    }
    if !member && out.is_empty() {
        return Err(ServiceError::NotFound);
    }
    Ok(out)
}

/// One form. `draft` selects the draft instead of the published definition.
pub async fn get(
    app: &App,
    actor: &Actor,
    project: ProjectId,
    xml_form_id: &str,
    draft: bool,
) -> Result<FormView, ServiceError> {
    let verb = if draft {
        Verb::FormUpdate
    } else {
        Verb::FormRead
    };
    let (_, form, _) = load(app, actor, project, xml_form_id, verb).await?;
    let def_id = if draft {
        form.draft_def_id
    } else {
        form.published_def_id.or(form.draft_def_id)
    };
    let def = app
        .store
        .form_def(def_id.ok_or(ServiceError::NotFound)?)
        .await?
        .ok_or(ServiceError::NotFound)?;
    let media = app.store.form_attachments(def.id).await?;
    Ok(FormView { form, def, media })
}

/// Changes a form's state (`open`, `closing`, `closed`) and whether it takes anonymous submissions.
pub async fn update(
    app: &App,
    actor: &Actor,
    project: ProjectId,
    xml_form_id: &str,
    state: Option<&str>,
    anonymous: Option<bool>,
) -> Result<FormRow, ServiceError> {
    let (_, form, _) = load(app, actor, project, xml_form_id, Verb::FormUpdate).await?;
    let state = state.unwrap_or(&form.state);
    if !STATES.contains(&state) {
        return Err(ServiceError::Invalid {
            code: "form.state",
            message: format!("state must be one of open, closing, closed; got {state:?}"),
        });
    }
    let updated = app
        .store
        .update_form(form.id, state, anonymous.unwrap_or(form.anonymous))
        .await?;
    app.hot.clear();
    Ok(updated)
}

/// Deletes a form (soft: submissions stay, the id can be reused by a new form).
pub async fn delete(
    app: &App,
    actor: &Actor,
    project: ProjectId,
    xml_form_id: &str,
) -> Result<(), ServiceError> {
    let (_, form, _) = load(app, actor, project, xml_form_id, Verb::FormUpdate).await?;
    app.store.delete_form(form.id).await?;
    app.hot.clear();
    super::audit::record(
        app.store.as_ref(),
        super::audit::actor_name(actor, None),
        "form.delete",
        Some(format!("project:{}/form:{xml_form_id}", project.0)),
        serde_json::json!({}),
    )
    .await
}

/// Uploads a media file the draft (else the published definition) references.
pub async fn upload_media<S, E>(
    app: &App,
    actor: &Actor,
    project: ProjectId,
    xml_form_id: &str,
    name: &str,
    content_type: Option<&str>,
    body: S,
) -> Result<FormAttachmentRow, ServiceError>
where
    S: Stream<Item = Result<Bytes, E>> + Unpin + Send,
    E: std::fmt::Display + Send,
{
    let (p, form, _) = load(app, actor, project, xml_form_id, Verb::FormUpdate).await?;
    let def_id = form
        .draft_def_id
        .or(form.published_def_id)
        .ok_or(ServiceError::NotFound)?;
    let slots = app.store.form_attachments(def_id).await?;
    if !slots.iter().any(|s| s.name == name) {
        return Err(ServiceError::Invalid {
            code: "form.media_unexpected",
            message: format!(
                "The form does not reference a media file named {name:?}; expected one of: {}",
                slots
                    .iter()
                    .map(|s| s.name.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        });
    }
    let key = project_key(app, &p).await?;
    let blob = format!("p{}/media/{}", p.id, fieldvault_crypto::random::hex(16)?);
    let mut md5 = md5::Md5::new();
    let mut size = 0u64;
    let counted = futures_util::StreamExt::map(body, |chunk: Result<Bytes, E>| {
        let b = chunk.map_err(|e| e.to_string())?;
        size += b.len() as u64;
        if size > MAX_MEDIA_BYTES {
            return Err(format!(
                "media files are limited to {MAX_MEDIA_BYTES} bytes"
            ));
        }
        md5.update(&b);
        Ok(b)
    });
    let stored = app
        .blobs
        .put_stream(
            &key,
            &blob,
            &media_aad(p.id, def_id, name),
            Box::pin(counted),
        )
        .await;
    let info = match stored {
        Ok(info) => info,
        Err(e) => {
            let _ = app.blobs.delete(&blob).await;
            return Err(e.into());
        }
    };
    let hash = format!("md5:{}", fieldvault_crypto::random::to_hex(&md5.finalize()));
    let size_i = i64::try_from(info.size).unwrap_or(i64::MAX);
    let previous = app
        .store
        .set_form_attachment(def_id, name, content_type, &blob, &hash, size_i)
        .await?;
    if let Some(old) = previous {
        let _ = app.blobs.delete(&old).await;
    }
    app.store
        .form_attachments(def_id)
        .await?
        .into_iter()
        .find(|s| s.name == name)
        .ok_or(ServiceError::NotFound)
}

/// A media file's decrypted bytes, streamed.
pub async fn media(
    app: &App,
    actor: &Actor,
    project: ProjectId,
    xml_form_id: &str,
    name: &str,
) -> Result<
    (
        FormAttachmentRow,
        impl Stream<Item = Result<Bytes, StoreError>> + Send + 'static,
    ),
    ServiceError,
> {
    let (p, form, _) = load(app, actor, project, xml_form_id, Verb::FormRead).await?;
    let def_id = form
        .published_def_id
        .or(form.draft_def_id)
        .ok_or(ServiceError::NotFound)?;
    let slot = app
        .store
        .form_attachments(def_id)
        .await?
        .into_iter()
        .find(|s| s.name == name && s.blob_name.is_some())
        .ok_or(ServiceError::NotFound)?;
    let key = project_key(app, &p).await?;
    let blob = slot.blob_name.clone().unwrap_or_default();
    let stream = app
        .blobs
        .get_stream(&key, &blob, &media_aad(p.id, slot.sealed_def_id(), name))
        .await?;
    Ok((slot, stream))
}

/// The project's data key (cached by the keyring).
pub async fn project_key(
    app: &App,
    p: &ProjectRow,
) -> Result<fieldvault_crypto::Key256, ServiceError> {
    let id = p
        .data_key_id
        .as_deref()
        .ok_or_else(|| ServiceError::Conflict {
            code: "project.shredded",
            message:
                "This project's data key was destroyed; its data can no longer be read or written."
                    .into(),
        })?;
    Ok(app.keyring.data_key(id).await?)
}
