//! Project encryption (ODK end-to-end): a manager gives the project an RSA public key; every form
//! of the project then carries it, so Collect, KoboCollect and Enketo encrypt each submission
//! before it leaves the device. The private key stays with the owner (`fieldvault keygen`,
//! `fieldvault decrypt`); unlike ODK Central's managed encryption, no passphrase-wrapped private
//! key is ever kept here.
//!
//! Setting, changing or removing the key re-versions every published form that uses the
//! project's key (or none): clients re-download a form only when its version and hash change, so
//! the same bytes under a new key would be silently ignored. Forms uploaded with their own key
//! keep it.

use fieldvault_core::xform_rewrite::{XFormRewrite, encryption_version, rewrite_xform};
use fieldvault_core::{Actor, ProjectId, Resource, Verb, authorize, md5_hash};
use fieldvault_crypto::odk::OdkPublicKey;
use fieldvault_store::{FormDefRow, KeyedDef, NewFormDef, ProjectKeyRow, StoreError};

use super::ServiceError;
use super::projects::readable;
use crate::App;

/// Smallest RSA modulus accepted for a project key, in bits (ODK tools generate 2048 or more).
pub const MIN_KEY_BITS: usize = 2048;
/// Largest base64 key accepted, in characters (an RSA-8192 SPKI is about 1.4 K characters).
const MAX_KEY_CHARS: usize = 4096;

/// A project's encryption state, as the API shows it.
#[derive(Debug, Clone)]
pub struct EncryptionStatus {
    /// The current key, if encryption is on.
    pub current: Option<ProjectKeyRow>,
    /// Every key the project has carried, oldest first.
    pub history: Vec<ProjectKeyRow>,
    /// Forms re-versioned by this change: (xmlFormId, new version).
    pub reversioned: Vec<(String, String)>,
}

/// A short, stable fingerprint of a base64 public key: hex SHA-256 of its DER, first 16 digits.
pub fn fingerprint(base64_spki: &str) -> String {
    let compact: String = base64_spki.split_whitespace().collect();
    let der = base64::Engine::decode(&base64::engine::general_purpose::STANDARD, compact)
        .unwrap_or_default();
    let mut hex = fieldvault_crypto::random::to_hex(&fieldvault_crypto::mac::sha256(&der));
    hex.truncate(16);
    hex
}

/// The project's encryption state.
pub async fn status(
    app: &App,
    actor: &Actor,
    project: ProjectId,
) -> Result<EncryptionStatus, ServiceError> {
    readable(app.store.as_ref(), actor, project).await?;
    Ok(EncryptionStatus {
        current: app.store.project_public_key(project.0).await?,
        history: app.store.project_public_keys(project.0).await?,
        reversioned: Vec::new(),
    })
}

/// Validates a public key from a request: base64 DER SubjectPublicKeyInfo of an RSA key of at
/// least [`MIN_KEY_BITS`] bits; returns it in canonical base64.
pub fn check_public_key(b64: &str) -> Result<String, ServiceError> {
    let compact: String = b64.split_whitespace().collect();
    let invalid = |message: String| ServiceError::Invalid {
        code: "project.key.invalid",
        message,
    };
    if compact.is_empty() {
        return Err(invalid("publicKey is empty.".into()));
    }
    if compact.len() > MAX_KEY_CHARS || compact.contains("-----") {
        return Err(invalid(
            "publicKey must be the base64 DER SubjectPublicKeyInfo (the line `fieldvault keygen` \
             prints, without PEM armour)."
                .into(),
        ));
    }
    let key = OdkPublicKey::from_base64_spki(&compact).map_err(|_| {
        invalid(
            "publicKey is not a base64 RSA public key (DER SubjectPublicKeyInfo); create one \
             with `fieldvault keygen --out project-key.pem`."
                .into(),
        )
    })?;
    if key.size_bytes() * 8 < MIN_KEY_BITS {
        return Err(invalid(format!(
            "The RSA key has {} bits; at least {MIN_KEY_BITS} are required.",
            key.size_bytes() * 8
        )));
    }
    Ok(key.to_base64_spki())
}

/// Turns encryption on (or changes the key) with `Some(key)`, or off with `None`, re-versioning
/// the project's forms. Managers only. Setting the key the project already has changes nothing.
pub async fn set_key(
    app: &App,
    actor: &Actor,
    project: ProjectId,
    public_key: Option<&str>,
) -> Result<EncryptionStatus, ServiceError> {
    let (_, scoped) = readable(app.store.as_ref(), actor, project).await?;
    authorize(&scoped, Verb::ProjectUpdate, Resource::Project(project))?;
    let new_key = public_key.map(check_public_key).transpose()?;
    let old = app.store.project_public_key(project.0).await?;
    let old_key = old.as_ref().map(|k| k.public_key.as_str());
    if old_key == new_key.as_deref() {
        return status(app, actor, project).await;
    }

    let stamp = stamp();
    let mut published = Vec::new();
    let mut drafts = Vec::new();
    let mut reversioned = Vec::new();
    for form in app.store.forms(project).await? {
        if let Some(def_id) = form.published_def_id
            && let Some(def) = app.store.form_def(def_id).await?
            && follows_project(&def, old_key)
        {
            let version = encryption_version(&def.version, new_key.is_some(), &stamp);
            let keyed = rekey(&def, new_key.as_deref(), &version)?;
            reversioned.push((form.xml_form_id.clone(), version));
            published.push(KeyedDef {
                form_id: form.id,
                old_def_id: def.id,
                def: keyed,
            });
        }
        if let Some(def_id) = form.draft_def_id
            && let Some(def) = app.store.form_def(def_id).await?
            && follows_project(&def, old_key)
        {
            // A draft is not yet on any device: it takes the key without a new version.
            let version = def.version.clone();
            drafts.push(KeyedDef {
                form_id: form.id,
                old_def_id: def.id,
                def: rekey(&def, new_key.as_deref(), &version)?,
            });
        }
    }
    let by = match &scoped {
        Actor::User { id, .. } => Some(id.0),
        _ => None,
    };
    match app
        .store
        .change_project_key(project.0, new_key.as_deref(), by, &published, &drafts)
        .await
    {
        Err(StoreError::Conflict { .. }) => {
            return Err(ServiceError::Conflict {
                code: "project.key.concurrent",
                message: "A form of this project changed while its key was being set; send the \
                          request again."
                    .into(),
            });
        }
        other => other?,
    };
    app.hot.clear();
    super::audit::record(
        app.store.as_ref(),
        super::audit::actor_name(&scoped, None),
        if new_key.is_some() {
            "project.key.set"
        } else {
            "project.key.remove"
        },
        Some(format!("project:{}", project.0)),
        serde_json::json!({
            "fingerprint": new_key.as_deref().map(fingerprint),
            "previous": old_key.map(fingerprint),
            "forms": reversioned.iter().map(|(f, v)| serde_json::json!({"xmlFormId": f, "version": v})).collect::<Vec<_>>(),
        }),
    )
    .await?;
    let mut out = status(app, actor, project).await?;
    out.reversioned = reversioned;
    Ok(out)
}

/// A new upload in a project with a key: the form takes the key unless it brings its own.
pub async fn apply_project_key(
    app: &App,
    project: ProjectId,
    def: NewFormDef,
) -> Result<NewFormDef, ServiceError> {
    if def.public_key.is_some() {
        return Ok(def);
    }
    let Some(key) = app.store.project_public_key(project.0).await? else {
        return Ok(def);
    };
    let version = def.version.clone();
    let xml = rewrite_xform(
        &def.xml,
        XFormRewrite {
            public_key: Some(&key.public_key),
            version: &version,
        },
    )?;
    Ok(NewFormDef {
        md5: md5_hash(&xml),
        xml,
        public_key: Some(key.public_key),
        ..def
    })
}

/// Whether a definition carries the project's key (or none): only those follow key changes.
fn follows_project(def: &FormDefRow, project_key: Option<&str>) -> bool {
    match (&def.public_key, project_key) {
        (None, _) => true,
        (Some(own), Some(project)) => own == project,
        (Some(_), None) => false,
    }
}

fn rekey(def: &FormDefRow, key: Option<&str>, version: &str) -> Result<NewFormDef, ServiceError> {
    let xml = rewrite_xform(
        &def.xml,
        XFormRewrite {
            public_key: key,
            version,
        },
    )?;
    let parsed = fieldvault_core::parse_xform(&xml, super::forms::MAX_FORM_BYTES)?;
    Ok(NewFormDef {
        xml_form_id: parsed.xml_form_id,
        version: version.to_owned(),
        title: def.title.clone(),
        md5: parsed.hash,
        public_key: parsed.base64_rsa_public_key,
        binary_fields: def.binary_fields.clone(),
        media: parsed.media_files,
        xml,
    })
}

/// A version stamp unique per change: milliseconds since the epoch in base 36.
fn stamp() -> String {
    let mut n = u64::try_from(fieldvault_store::now_ms()).unwrap_or(0);
    let digits = b"0123456789abcdefghijklmnopqrstuvwxyz";
    let mut out = Vec::new();
    while n > 0 {
        out.push(digits[usize::try_from(n % 36).unwrap_or(0)]);
        n /= 36;
    }
    out.reverse();
    String::from_utf8(out).unwrap_or_default()
}
