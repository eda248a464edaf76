//! Submission intake (openrosa.md §6.3), in three steps so the HTTP layer can stream:
//! [`prepare`] parses the instance XML and resolves form, version and permission before any
//! attachment byte is read; [`Prepared::add_attachment`] encrypts each expected file straight into
//! the blob store; [`Prepared::commit`] seals the XML and hands the row to the group-commit queue.
//! Nothing is visible to readers until that commit, and a refused submission leaves no row and
//! no blob behind.

use bytes::Bytes;
use fieldvault_core::{Actor, ProjectId, Resource, SubmissionMeta, Verb, authorize};
use fieldvault_crypto::Key256;
use fieldvault_store::submissions::{attachment_aad, xml_aad};
use fieldvault_store::{
    FormDefMeta, FormRow, IngestOutcome, NewSubmission, ProjectRow, ReceivedAttachment,
};
use futures_util::{Stream, StreamExt as _};
use sha2::Digest as _;

use super::ServiceError;
use crate::App;

/// Largest instance XML accepted (the form data itself; files travel as attachments).
pub const MAX_XML_BYTES: usize = 10 * 1024 * 1024;

/// Which forms a submission may go to.
#[derive(Debug, Clone)]
pub enum Target {
    /// One project (`/v1/projects/{id}/submission`, `/v1/key/{token}/projects/{id}/submission`).
    Project(ProjectId),
    /// Any project the signed-in account may submit to (KoboCollect's server-root setup).
    AnyProject,
    /// Forms open to anonymous submission in projects managed by this account
    /// (`/{username}/submission`, KoboToolbox's public-collection URL).
    OwnerAnonymous(String),
}

/// A submission whose XML is accepted and whose form is resolved; attachments may follow.
pub struct Prepared {
    project: ProjectRow,
    form: FormRow,
    def: FormDefMeta,
    meta: SubmissionMeta,
    expected: Vec<String>,
    key: Key256,
    xml: Bytes,
    attachments: Vec<ReceivedAttachment>,
    submitter_user_id: Option<i64>,
    submitter_app_user_id: Option<i64>,
    device_id: Option<String>,
    fits_form: Option<bool>,
}

/// What happened, for the OpenRosa response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Accepted {
    /// A new submission.
    Created,
    /// Already had it (retry or split upload); `added` attachments stored now.
    Duplicate {
        /// Files stored by this request.
        added: u32,
    },
    /// A new version of an existing submission.
    Edited,
    /// The database is unreachable: durably in the intake journal, stored when it is back.
    Journaled,
}

async fn candidate_forms(
    app: &App,
    actor: &Actor,
    target: &Target,
    xml_form_id: &str,
) -> Result<Vec<(ProjectId, Actor)>, ServiceError> {
    Ok(match target {
        Target::Project(p) => vec![(*p, actor.clone())],
        Target::AnyProject => {
            let listed = if app.ingest.health().degraded() {
                Err(fieldvault_store::StoreError::Unavailable("degraded".into()))
            } else {
                any_project_forms(app, xml_form_id).await
            };
            match listed {
                Ok(ids) => ids,
                // Degraded intake: the projects this instance last saw holding the form.
                Err(fieldvault_store::StoreError::Unavailable(why)) => {
                    app.ingest.health().mark_unreachable(&why);
                    app.hot.last_projects_with_form(xml_form_id)
                }
                Err(e) => return Err(e.into()),
            }
            .into_iter()
            .map(|p| (p, actor.clone()))
            .collect()
        }
        Target::OwnerAnonymous(username) => {
            let Some(owner) = app.store.user_by_username(username).await? else {
                return Err(ServiceError::NotFound);
            };
            let mut out = Vec::new();
            for p in app.store.list_projects().await? {
                let managed = app
                    .store
                    .project_role(p.project_id(), owner.user_id())
                    .await?
                    .as_deref()
                    == Some("manager");
                if managed && app.store.form(p.project_id(), xml_form_id).await?.is_some() {
                    out.push((p.project_id(), actor.clone()));
                }
            }
            out
        }
    })
}

async fn any_project_forms(
    app: &App,
    xml_form_id: &str,
) -> Result<Vec<ProjectId>, fieldvault_store::StoreError> {
    let mut out = Vec::new();
    for p in app.store.list_projects().await? {
        if app.store.form(p.project_id(), xml_form_id).await?.is_some() {
            out.push(p.project_id());
        }
    }
    Ok(out)
}

/// Parses the instance XML and resolves where it goes. Errors are the OpenRosa ones: 400 for bad
/// XML, 401/403 for missing rights, 404 for an unknown form or version, 409 for a closed form.
pub async fn prepare(
    app: &App,
    actor: &Actor,
    target: Target,
    xml: Bytes,
    device_id: Option<String>,
) -> Result<Prepared, ServiceError> {
    let (meta, instance) =
        fieldvault_core::submission::parse_submission_instance(&xml, MAX_XML_BYTES)?;
    let candidates = candidate_forms(app, actor, &target, &meta.xml_form_id).await?;
    let mut denied = false;
    for (pid, actor) in candidates {
        let Some(project) = app
            .hot
            .project(app.store.as_ref(), pid)
            .await?
            .filter(|p| p.deleted_at.is_none())
        else {
            continue;
        };
        let actor = match actor {
            Actor::User {
                id,
                superuser,
                scopes,
                second_factor,
                ..
            } => {
                let role = app.hot.role(app.store.as_ref(), pid, id).await?;
                Actor::User {
                    id,
                    superuser,
                    scopes,
                    second_factor,
                    project_role: role
                        .as_deref()
                        .and_then(fieldvault_core::authz::Role::parse)
                        .map(|r| (pid, r)),
                }
            }
            other => other,
        };
        let Some(form) = app
            .hot
            .form(app.store.as_ref(), pid, &meta.xml_form_id)
            .await?
        else {
            continue;
        };
        let resource = Resource::Form {
            project: pid,
            form: form.id,
            anonymous: form.anonymous,
        };
        if authorize(&actor, Verb::SubmissionCreate, resource).is_err() {
            // A member without the right hears 403; an outsider may not learn the form exists.
            if authorize(&actor, Verb::ProjectRead, Resource::Project(pid)).is_ok() {
                denied = true;
            }
            continue;
        }
        if project.archived || form.state == "closed" {
            return Err(ServiceError::Conflict {
                code: "form.closed",
                message: format!(
                    "The form {:?} is closed and does not accept submissions.",
                    form.xml_form_id
                ),
            });
        }
        let version = meta.version.clone().unwrap_or_default();
        let def = app
            .hot
            .def(app.store.as_ref(), form.id, &version)
            .await?
            .ok_or_else(|| {
                ServiceError::NotFoundWith(format!(
                    "The form {:?} has no published version {version:?}; download the form again.",
                    form.xml_form_id
                ))
            })?;
        match (&def.public_key, &meta.encrypted) {
            (Some(_), None) if !app.config.allow_plaintext_to_encrypted_forms => {
                return Err(ServiceError::Invalid {
                    code: "submission.not_encrypted",
                    message: "This form is encrypted; plaintext submissions to it are refused."
                        .into(),
                });
            }
            (None, Some(_)) => {
                return Err(ServiceError::Invalid {
                    code: "submission.unexpected_encryption",
                    message: "This form is not encrypted, but the submission is.".into(),
                });
            }
            _ => {}
        }
        let expected = if meta.encrypted.is_some() {
            meta.expected_encrypted_files()
                .into_iter()
                .map(str::to_owned)
                .collect()
        } else {
            let fields: Vec<String> = serde_json::from_str(&def.binary_fields).unwrap_or_default();
            fieldvault_core::submission::attachment_names(&meta, &instance, &fields)
        };
        // Recorded so a CSV export can skip its pass looking for columns the form lacks. An
        // envelope never adds columns (its answers are not readable here).
        let fits_form = if meta.encrypted.is_some() {
            Some(true)
        } else {
            app.hot
                .def_layout(app.store.as_ref(), def.id)
                .await
                .map(|l| !l.would_grow(&instance))
        };
        let key = super::forms::project_key(app, &project).await?;
        let (submitter_user_id, submitter_app_user_id) = match &actor {
            Actor::User { id, .. } => (Some(id.0), None),
            Actor::AppUser { id, .. } => (None, Some(*id)),
            _ => (None, None),
        };
        return Ok(Prepared {
            project,
            form,
            def,
            meta,
            expected,
            key,
            xml,
            attachments: Vec::new(),
            submitter_user_id,
            submitter_app_user_id,
            device_id: device_id.filter(|d| !d.is_empty() && d.len() <= 255),
            fits_form,
        });
    }
    if denied {
        return Err(if matches!(actor, Actor::Anonymous) {
            ServiceError::Unauthenticated
        } else {
            ServiceError::Core(fieldvault_core::CoreError::Denied {
                verb: Verb::SubmissionCreate.as_str(),
            })
        });
    }
    if matches!(actor, Actor::Anonymous) && !matches!(target, Target::OwnerAnonymous(_)) {
        // Do not reveal which forms exist to someone who has not signed in.
        return Err(ServiceError::Unauthenticated);
    }
    Err(ServiceError::NotFoundWith(format!(
        "No form with the ID {:?} accepts submissions here.",
        meta.xml_form_id
    )))
}

impl Prepared {
    /// The submission's instanceID.
    pub fn instance_id(&self) -> &str {
        &self.meta.instance_id
    }

    /// Whether a file of this name belongs to the submission (others are ignored, as Collect
    /// uploads every file in the instance folder).
    pub fn expects(&self, name: &str) -> bool {
        self.expected.iter().any(|n| n == name) && !self.attachments.iter().any(|a| a.name == name)
    }

    /// Encrypts an expected file into the blob store. Returns `false` (and reads nothing) for a
    /// file the submission does not name; the caller must then drain it.
    pub async fn add_attachment<S, E>(
        &mut self,
        app: &App,
        name: &str,
        content_type: Option<&str>,
        body: S,
    ) -> Result<bool, ServiceError>
    where
        S: Stream<Item = Result<Bytes, E>> + Unpin + Send,
        E: std::fmt::Display + Send,
    {
        if !self.expects(name) {
            return Ok(false);
        }
        let blob = format!(
            "p{}/f{}/{}",
            self.project.id,
            self.form.id,
            fieldvault_crypto::random::hex(16)?
        );
        let aad = attachment_aad(self.project.id, self.form.id, &self.meta.instance_id, name);
        let mut sha = sha2::Sha256::new();
        let limit = app.config.max_attachment_bytes;
        let mut size = 0u64;
        let too_large = std::sync::atomic::AtomicBool::new(false);
        let hashing = body.map(|c: Result<Bytes, E>| {
            let b = c.map_err(|e| e.to_string())?;
            size += b.len() as u64;
            if size > limit {
                too_large.store(true, std::sync::atomic::Ordering::Relaxed);
                return Err(format!("{name} is larger than {limit} bytes"));
            }
            sha.update(&b);
            Ok::<_, String>(b)
        });
        let stored = app
            .blobs
            .put_stream(&self.key, &blob, &aad, Box::pin(hashing))
            .await;
        let info = match stored {
            Ok(i) => i,
            Err(e) => {
                let _ = app.blobs.delete(&blob).await;
                if too_large.load(std::sync::atomic::Ordering::Relaxed) {
                    return Err(ServiceError::TooLarge(format!(
                        "The file {name} is larger than this server accepts ({limit} bytes)."
                    )));
                }
                return Err(e.into());
            }
        };
        self.attachments.push(ReceivedAttachment {
            name: name.to_owned(),
            content_type: content_type.map(str::to_owned),
            blob_name: blob,
            size: i64::try_from(info.size).unwrap_or(i64::MAX),
            sha256: sha.finalize().to_vec(),
        });
        Ok(true)
    }

    /// Deletes the blobs written so far (the request failed before commit).
    pub async fn abandon(self, app: &App) {
        for a in &self.attachments {
            let _ = app.blobs.delete(&a.blob_name).await;
        }
    }

    /// Seals the XML and stores the submission (group commit). Durable when this returns `Ok`.
    pub async fn commit(self, app: &App) -> Result<Accepted, ServiceError> {
        let aad = xml_aad(self.project.id, self.form.id, &self.meta.instance_id);
        let sealed = fieldvault_crypto::envelope::seal(&self.key, &aad, &self.xml)?;
        let sha = fieldvault_crypto::mac::sha256(&self.xml);
        let s = NewSubmission {
            project_id: self.project.id,
            form_id: self.form.id,
            form_def_id: self.def.id,
            form_version: self.def.version.clone(),
            instance_id: self.meta.instance_id.clone(),
            deprecated_id: self.meta.deprecated_id.clone(),
            instance_name: self.meta.instance_name.clone(),
            xml_sealed: sealed,
            xml_sha256: sha.to_vec(),
            xml_size: i64::try_from(self.xml.len()).unwrap_or(i64::MAX),
            encrypted: self.meta.encrypted.is_some(),
            submitter_user_id: self.submitter_user_id,
            submitter_app_user_id: self.submitter_app_user_id,
            device_id: self.device_id.clone(),
            expected_attachments: self.expected.clone(),
            attachments: self.attachments.clone(),
            fits_form: self.fits_form,
        };
        let outcome = match app.ingest.submit(s).await? {
            super::ingest_queue::Queued::Stored(o) => o,
            super::ingest_queue::Queued::Journaled => return Ok(Accepted::Journaled),
        };
        match outcome {
            IngestOutcome::Created { .. } => Ok(Accepted::Created),
            IngestOutcome::Duplicate {
                added_attachments, ..
            } => Ok(Accepted::Duplicate {
                added: added_attachments,
            }),
            IngestOutcome::Edited { .. } => Ok(Accepted::Edited),
            IngestOutcome::Conflict => Err(ServiceError::Conflict {
                code: "submission.conflict",
                message: "A submission with this instanceID already exists with different content."
                    .into(),
            }),
            IngestOutcome::DeprecatedNotFound => Err(ServiceError::NotFoundWith(
                "The submission this one edits (deprecatedID) does not exist.".into(),
            )),
            IngestOutcome::DeprecatedNotCurrent => Err(ServiceError::Conflict {
                code: "submission.stale_edit",
                message: "This edit is based on a version that has already been replaced.".into(),
            }),
            IngestOutcome::Deleted => Err(ServiceError::Conflict {
                code: "submission.deleted",
                message: "A submission with this instanceID was deleted.".into(),
            }),
        }
    }
}
