//! Redaction (pseudonymization, M6): chosen fields of chosen submissions are replaced — blank, or
//! an HMAC-SHA256 keyed with the project's data key so equal values stay linkable — in the current
//! version AND every earlier version; attachments named by those fields are deleted. Irreversible
//! and audited (docs/redaction.md).
//!
//! Old bytes are overwritten, not hidden: each version row's sealed XML is replaced in place (one
//! transaction per submission), emptied attachment slots lose their blob, whose object is deleted,
//! and the store is then scrubbed (SQLite: `secure_delete` zeroes freed pages and the write-ahead
//! log is checkpointed and truncated; PostgreSQL: the submission tables are vacuumed). ODK-encrypted
//! submissions cannot be read by the server and are left as they are (counted as `skipped`).

use fieldvault_core::schema::{FieldType, NodeKind};
use fieldvault_core::xml_edit::replace_leaves;
use fieldvault_core::{CoreError, Verb};
use fieldvault_crypto::{Key256, mac, random};
use fieldvault_store::submissions::xml_aad;
use fieldvault_store::{UserRow, VersionRewrite};
use serde_json::{Value, json};
use sha2::Digest as _;

use super::ServiceError;
use super::intake::MAX_XML_BYTES;
use super::kobo::{self, Asset, Selection};
use crate::App;

/// Most fields one redaction may name.
pub const MAX_FIELDS: usize = 100;

/// What replaces a value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Replacement {
    /// An empty value.
    Blank,
    /// Lowercase hex HMAC-SHA256 of the value under the project's data key.
    Hash,
}

/// A redaction to perform.
pub struct RedactionRequest {
    /// Field paths (`grp/q`).
    pub fields: Vec<String>,
    /// Which submissions.
    pub scope: Selection,
    /// Blank or keyed hash.
    pub replacement: Replacement,
    /// Count only; change nothing.
    pub dry_run: bool,
}

/// What a redaction did (or, for a dry run, would do).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Report {
    /// Submissions in scope.
    pub submissions: u64,
    /// Submissions that held at least one value to replace.
    pub changed_submissions: u64,
    /// Versions rewritten.
    pub versions: u64,
    /// Values replaced (over all versions).
    pub values: u64,
    /// Attachment files deleted.
    pub attachments: u64,
    /// ODK-encrypted submissions left alone.
    pub skipped: u64,
    /// Export files of the form deleted (they held the old values).
    pub exports_deleted: u64,
    /// Nothing was changed.
    pub dry_run: bool,
}

impl Report {
    /// The JSON answer.
    pub fn to_json(&self) -> Value {
        json!({
            "dryRun": self.dry_run,
            "count": self.submissions,
            "submissions": self.submissions,
            "changedSubmissions": self.changed_submissions,
            "versions": self.versions,
            "values": self.values,
            "attachments": self.attachments,
            "skippedEncrypted": self.skipped,
            "exportsDeleted": self.exports_deleted,
        })
    }
}

/// Reads `{"fields": [...], "replacement": "blank"|"hash", "dryRun": bool}`.
pub fn parse_request(v: &Value, scope: Selection) -> Result<RedactionRequest, ServiceError> {
    let bad = |m: &str| ServiceError::Invalid {
        code: "redaction.invalid",
        message: m.to_owned(),
    };
    let fields = match v.get("fields") {
        Some(Value::Array(list)) if !list.is_empty() && list.len() <= MAX_FIELDS => list
            .iter()
            .map(|f| f.as_str().map(str::to_owned))
            .collect::<Option<Vec<_>>>()
            .ok_or_else(|| bad("`fields` must be a list of field paths"))?,
        _ => {
            return Err(bad(&format!(
                "`fields` must list 1 to {MAX_FIELDS} field paths"
            )));
        }
    };
    let replacement = match v.get("replacement").and_then(Value::as_str) {
        None | Some("blank") => Replacement::Blank,
        Some("hash") => Replacement::Hash,
        Some(other) => {
            return Err(bad(&format!(
                "`replacement` must be \"blank\" or \"hash\", not {other:?}"
            )));
        }
    };
    let dry_run = match v.get("dryRun") {
        None => false,
        Some(Value::Bool(b)) => *b,
        Some(_) => return Err(bad("`dryRun` must be true or false")),
    };
    Ok(RedactionRequest {
        fields,
        scope,
        replacement,
        dry_run,
    })
}

/// Reads the native body: the fields of [`parse_request`] plus `"scope": {"all": true} |
/// {"query": {…}} | {"ids": [ints]}`.
pub fn parse_native(body: &Value) -> Result<RedactionRequest, ServiceError> {
    let bad = |m: &str| ServiceError::Invalid {
        code: "redaction.invalid_scope",
        message: m.to_owned(),
    };
    let scope = body.get("scope").ok_or_else(|| {
        bad("`scope` is required: {\"all\": true}, {\"query\": {…}} or {\"ids\": […]}")
    })?;
    let sel = if scope.get("all") == Some(&Value::Bool(true)) {
        Selection::All
    } else if let Some(q) = scope.get("query") {
        Selection::Query(
            fieldvault_core::kobo_query::Query::parse(q)
                .map_err(|e| bad(&format!("scope.query: {e}")))?,
        )
    } else if let Some(Value::Array(ids)) = scope.get("ids") {
        if ids.is_empty() {
            return Err(bad("scope.ids must not be empty"));
        }
        Selection::Ids(
            ids.iter()
                .map(Value::as_i64)
                .collect::<Option<Vec<_>>>()
                .ok_or_else(|| bad("scope.ids must be submission ids (integers)"))?,
        )
    } else {
        return Err(bad(
            "`scope` must be {\"all\": true}, {\"query\": {…}} or {\"ids\": […]}",
        ));
    };
    parse_request(body, sel)
}

fn instance_name_path() -> Vec<String> {
    vec!["meta".into(), "instanceName".into()]
}

/// The replacement of one value.
pub fn replace_value(key: &Key256, how: Replacement, value: &str) -> String {
    match how {
        Replacement::Blank => String::new(),
        Replacement::Hash => random::to_hex(&mac::hmac_sha256(
            key,
            &[b"fieldvault/redaction/v1", value.as_bytes()],
        )),
    }
}

/// Performs (or, with `dry_run`, counts) a redaction. Needs `submission.delete`.
pub async fn redact(
    app: &App,
    actor: &fieldvault_core::Actor,
    who: &UserRow,
    asset: &Asset,
    req: RedactionRequest,
) -> Result<Report, ServiceError> {
    asset.require(Verb::SubmissionDelete)?;
    let schema = kobo::merged_schema(app, asset).await?;
    let mut paths = Vec::with_capacity(req.fields.len());
    let mut file_fields = Vec::new();
    for f in &req.fields {
        let path: Vec<String> = f.split('/').map(str::to_owned).collect();
        match schema.node(&path).map(|n| &n.kind) {
            Some(NodeKind::Field { ty, .. }) => {
                if *ty == FieldType::Binary {
                    file_fields.push(path.clone());
                }
                paths.push(path);
            }
            _ => {
                return Err(ServiceError::Core(CoreError::invalid(
                    "fields",
                    format!("{f:?} is not a field of this form"),
                )));
            }
        }
    }
    let ids = kobo::resolve(app, asset, req.scope).await?;
    let key = super::forms::project_key(app, &asset.project).await?;
    let (pid, fid) = (asset.project.id, asset.form.id);
    let mut report = Report {
        submissions: ids.len() as u64,
        dry_run: req.dry_run,
        ..Report::default()
    };
    for id in &ids {
        let Some(rec) = app.store.kobo_record(fid, *id).await? else {
            continue;
        };
        if rec.encrypted {
            report.skipped += 1;
            continue;
        }
        let mut rewrites = Vec::new();
        let mut cleared = Vec::new();
        for v in app.store.submission_versions(*id).await? {
            let aad = xml_aad(pid, fid, &v.instance_id);
            let xml = fieldvault_crypto::envelope::open(&key, &aad, &v.xml_sealed)?;
            let mut file_values = Vec::new();
            let (new_xml, old) = replace_leaves(&xml, MAX_XML_BYTES, &paths, &mut |p, value| {
                if file_fields.iter().any(|f| f.as_slice() == p) {
                    file_values.push(value.to_owned());
                }
                replace_value(&key, req.replacement, value)
            })?;
            if old.is_empty() {
                continue;
            }
            // `meta/instanceName` is often computed from the redacted fields: it goes too when it
            // repeats one of the old values.
            let repeats = |v: &str| {
                old.iter()
                    .any(|o| !o.trim().is_empty() && v.contains(o.trim()))
            };
            let (new_xml, _) = replace_leaves(
                &new_xml,
                MAX_XML_BYTES,
                &[instance_name_path()],
                &mut |_, v| {
                    if repeats(v) {
                        String::new()
                    } else {
                        v.to_owned()
                    }
                },
            )?;
            report.values += old.len() as u64;
            for a in app.store.submission_attachments(v.id).await? {
                if file_values.contains(&a.name) && a.blob_name.is_some() {
                    cleared.push(a.id);
                }
            }
            let clear_instance_name = v.instance_name.as_deref().is_some_and(repeats);
            rewrites.push(VersionRewrite {
                version_id: v.id,
                xml_sealed: fieldvault_crypto::envelope::seal(&key, &aad, &new_xml)?,
                xml_sha256: sha2::Sha256::digest(&new_xml).to_vec(),
                xml_size: new_xml.len() as i64,
                clear_instance_name,
            });
        }
        if rewrites.is_empty() {
            continue;
        }
        report.changed_submissions += 1;
        report.versions += rewrites.len() as u64;
        if req.dry_run {
            report.attachments += cleared.len() as u64;
            continue;
        }
        let blobs = app.store.redact(&rewrites, &cleared).await?;
        report.attachments += blobs.len() as u64;
        for b in blobs {
            app.blobs.delete(&b).await?;
        }
    }
    if !req.dry_run {
        // Export files made before hold the old values: they go too.
        for t in app.store.kobo_form_exports(fid).await? {
            if let Some(b) = &t.blob_name {
                app.blobs.delete(b).await?;
            }
            app.store.delete_kobo_export(t.id).await?;
            report.exports_deleted += 1;
        }
        app.store.scrub().await?;
        super::audit::record(
            app.store.as_ref(),
            super::audit::actor_name(actor, Some(&who.username)),
            "submission.redact",
            Some(format!(
                "project:{}/form:{}",
                asset.project.id, asset.form.xml_form_id
            )),
            json!({
                "fields": req.fields,
                "replacement": match req.replacement {
                    Replacement::Blank => "blank",
                    Replacement::Hash => "hash",
                },
                "ids": ids,
                "versions": report.versions,
                "values": report.values,
                "attachments": report.attachments,
                "exportsDeleted": report.exports_deleted,
            }),
        )
        .await?;
    }
    Ok(report)
}
