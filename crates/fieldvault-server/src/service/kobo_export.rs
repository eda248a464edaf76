//! Asynchronous exports of the KoboToolbox API (`/api/v2/assets/{uid}/exports/`, specs §3.1):
//! a task is recorded, a background task writes the file, clients poll until `complete`.
//!
//! The file is produced in constant memory: submissions are read, decrypted and flattened one
//! batch at a time, rows are encoded and handed through a bounded channel to the blob store,
//! which encrypts them with the project's data key (STREAM, bound to the export's place) as they
//! arrive. Nothing is written in plaintext. A finished file can be downloaded by the account that
//! asked for it, while it still may read the form's data, until `exports.ttl_hours` have passed;
//! then the sweeper deletes the blob and the task. Creation and every download are audited.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use fieldvault_core::kobo_query::Query;
use fieldvault_core::schema::{FieldType, FormSchema, Node, NodeKind};
use fieldvault_core::{Actor, Verb};
use fieldvault_store::{
    BlobStore, KoboExportRow, KoboExportSettingRow, NewKoboExport, NewKoboExportSetting, Store,
    StoreError, UserRow,
};
use futures_util::Stream;
use serde_json::{Map, Value, json};

use super::ServiceError;
use super::kobo::{self, Asset, Flattener, Scan};
use crate::App;

/// Keys an export request must carry (KoboToolbox's `ExportCreatePayload`).
pub const REQUIRED: [&str; 6] = [
    "fields_from_all_versions",
    "group_sep",
    "hierarchy_in_labels",
    "lang",
    "multiple_select",
    "type",
];
/// Keys it may carry.
pub const ALLOWED: [&str; 14] = [
    "fields",
    "fields_from_all_versions",
    "flatten",
    "group_sep",
    "hierarchy_in_labels",
    "include_media_url",
    "lang",
    "multiple_select",
    "name",
    "query",
    "source",
    "submission_ids",
    "type",
    "xls_types_as_text",
];
/// Export tasks one account may hold per form (finished ones included, until they expire).
pub const MAX_TASKS: usize = 50;
/// Groups KoboToolbox does not export as columns.
const HIDDEN: [&str; 3] = ["meta", "formhub", "__version__"];
/// How often expired exports are swept.
const SWEEP_EVERY: Duration = Duration::from_secs(300);

/// File format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// `;`-separated UTF-8 CSV, as KoboToolbox writes it.
    Csv,
    /// Excel workbook.
    Xlsx,
}

/// How select_multiple answers become columns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MultipleSelect {
    /// The space-separated column and one 0/1 column per choice.
    Both,
    /// The space-separated column only.
    Summary,
    /// One 0/1 column per choice only.
    Details,
}

/// Validated export settings.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Format.
    pub kind: Kind,
    /// `_xml`, `_default`, or a language of the form.
    pub lang: String,
    /// Separator of group names in headers.
    pub group_sep: String,
    /// Headers carry the group path.
    pub hierarchy_in_labels: bool,
    /// select_multiple layout.
    pub multiple_select: MultipleSelect,
    /// Columns merged from every published version.
    pub fields_from_all_versions: bool,
    /// Only these field paths (empty: all).
    pub fields: Vec<String>,
    /// Only submissions matching this filter.
    pub query: Option<Value>,
    /// Only these submissions (empty: all).
    pub submission_ids: Vec<i64>,
}

fn bad(field: &'static str, message: impl Into<String>) -> ServiceError {
    ServiceError::Invalid {
        code: field,
        message: message.into(),
    }
}

fn boolean(body: &Map<String, Value>, key: &'static str) -> Result<bool, ServiceError> {
    match body.get(key) {
        None => Ok(false),
        Some(Value::Bool(b)) => Ok(*b),
        Some(Value::String(s)) if s == "true" => Ok(true),
        Some(Value::String(s)) if s == "false" => Ok(false),
        Some(_) => Err(bad(key, "Must be a boolean.")),
    }
}

/// Validates a request body; returns the settings and their normalised JSON.
pub fn parse_settings(body: &Value) -> Result<(Settings, Value), ServiceError> {
    let Value::Object(m) = body else {
        return Err(bad("data", "The body must be a JSON object."));
    };
    if REQUIRED.iter().any(|k| !m.contains_key(*k)) {
        return Err(bad(
            "data",
            format!(
                "Must contain all the following required keys: {}",
                REQUIRED.join(", ")
            ),
        ));
    }
    if m.keys().any(|k| !ALLOWED.contains(&k.as_str())) {
        return Err(bad(
            "data",
            format!(
                "Can contain only the following valid keys: {}",
                ALLOWED.join(", ")
            ),
        ));
    }
    let kind = match m.get("type").and_then(Value::as_str) {
        Some("csv") => Kind::Csv,
        Some("xls") | Some("xlsx") => Kind::Xlsx,
        _ => return Err(bad("type", "Must be csv or xls.")),
    };
    let lang = m
        .get("lang")
        .and_then(Value::as_str)
        .filter(|l| !l.is_empty() && l.len() <= 100)
        .ok_or_else(|| bad("lang", "Must be _xml, _default or a language of the form."))?
        .to_owned();
    let group_sep = m
        .get("group_sep")
        .and_then(Value::as_str)
        .filter(|s| s.chars().count() <= 10)
        .ok_or_else(|| bad("group_sep", "Must be a string of at most 10 characters."))?
        .to_owned();
    let hierarchy_in_labels = boolean(m, "hierarchy_in_labels")?;
    if hierarchy_in_labels && group_sep.is_empty() {
        return Err(bad(
            "group_sep",
            "Must not be empty when hierarchy_in_labels is true.",
        ));
    }
    let multiple_select = match m.get("multiple_select").and_then(Value::as_str) {
        Some("both") => MultipleSelect::Both,
        Some("summary") => MultipleSelect::Summary,
        Some("details") => MultipleSelect::Details,
        _ => return Err(bad("multiple_select", "Must be both, summary or details.")),
    };
    let fields = match m.get("fields") {
        None => Vec::new(),
        Some(Value::Array(a)) if a.len() <= 5000 => a
            .iter()
            .map(|v| v.as_str().map(str::to_owned))
            .collect::<Option<Vec<_>>>()
            .ok_or_else(|| bad("fields", "Must be a list of field paths."))?,
        Some(_) => return Err(bad("fields", "Must be a list of field paths.")),
    };
    let query = match m.get("query") {
        None => None,
        Some(Value::Object(q)) if q.is_empty() => None,
        Some(q @ Value::Object(_)) => {
            Query::parse(q).map_err(|e| bad("query", e.to_string()))?;
            Some(q.clone())
        }
        Some(_) => return Err(bad("query", "Must be a JSON object.")),
    };
    let submission_ids = match m.get("submission_ids") {
        None => Vec::new(),
        Some(Value::Array(a)) if a.len() <= kobo::MAX_BULK => a
            .iter()
            .map(Value::as_i64)
            .collect::<Option<Vec<_>>>()
            .ok_or_else(|| bad("submission_ids", "Must be a list of integers."))?,
        Some(_) => return Err(bad("submission_ids", "Must be a list of integers.")),
    };
    for k in ["include_media_url", "xls_types_as_text", "flatten"] {
        boolean(m, k)?;
    }
    let settings = Settings {
        kind,
        lang,
        group_sep,
        hierarchy_in_labels,
        multiple_select,
        fields_from_all_versions: boolean(m, "fields_from_all_versions")?,
        fields,
        query,
        submission_ids,
    };
    let normal = json!({
        "type": if kind == Kind::Csv { "csv" } else { "xls" },
        "lang": settings.lang,
        "group_sep": settings.group_sep,
        "hierarchy_in_labels": settings.hierarchy_in_labels,
        "multiple_select": m.get("multiple_select"),
        "fields_from_all_versions": settings.fields_from_all_versions,
        "fields": settings.fields,
        "query": settings.query.clone().unwrap_or_else(|| json!({})),
        "submission_ids": settings.submission_ids,
        "include_media_url": boolean(m, "include_media_url")?,
        "xls_types_as_text": boolean(m, "xls_types_as_text")?,
        "name": m.get("name").and_then(Value::as_str),
    });
    Ok((settings, normal))
}

/// `POST /exports/`: records a task and starts it; `(task, true)` when created now, `(task,
/// false)` for an identical task of the caller still running.
pub async fn create(
    app: &App,
    actor: &Actor,
    who: &UserRow,
    uid: &str,
    body: &Value,
) -> Result<(KoboExportRow, bool), ServiceError> {
    let asset = kobo::asset(app, actor, uid).await?;
    asset.require(Verb::SubmissionRead)?;
    if !asset.deployed() {
        return Err(bad("source", "The asset must be deployed."));
    }
    let (settings, normal) = parse_settings(body)?;
    let normal_text = normal.to_string();
    sweep(app.store.as_ref(), &app.blobs).await?;
    let mine = app.store.kobo_exports(asset.form.id, who.id).await?;
    if let Some(t) = mine.iter().find(|t| {
        t.settings == normal_text && matches!(t.status.as_str(), "created" | "processing")
    }) {
        return Ok((t.clone(), false));
    }
    if mine.len() >= MAX_TASKS {
        return Err(ServiceError::Conflict {
            code: "export.limit",
            message: format!("At most {MAX_TASKS} exports per form are kept; delete some first."),
        });
    }
    let ttl = i64::try_from(app.config.exports_ttl_hours).unwrap_or(24) * 3_600_000;
    let row = app
        .store
        .create_kobo_export(&NewKoboExport {
            uid: kobo::new_uid(b'e')?,
            project_id: asset.project.id,
            form_id: asset.form.id,
            user_id: who.id,
            settings: normal_text,
            expires_at: fieldvault_store::now_ms() + ttl,
        })
        .await?;
    super::audit::record(
        app.store.as_ref(),
        super::audit::actor_name(actor, Some(&who.username)),
        "export.create",
        Some(format!("export:{}", row.uid)),
        json!({
            "project": asset.project.id,
            "form": asset.form.xml_form_id,
            "settings": normal,
        }),
    )
    .await?;
    let task = row.clone();
    let app2 = app.clone();
    tokio::spawn(async move {
        let result = produce(&app2, &asset, &task, &settings).await;
        let done = match result {
            Ok((blob, name, size)) => {
                app2.store
                    .finish_kobo_export(task.id, "complete", None, Some((&blob, &name, size)))
                    .await
            }
            Err(e) => {
                tracing::warn!(export = %task.uid, error = %e, "export failed");
                let message = match &e {
                    ServiceError::Invalid { message, .. } => message.clone(),
                    ServiceError::Core(c) => c.to_string(),
                    _ => "The export failed; see the server log.".into(),
                };
                app2.store
                    .finish_kobo_export(task.id, "error", Some(&message), None)
                    .await
            }
        };
        if let Err(e) = done {
            tracing::error!(export = %task.uid, error = %e, "cannot record export result");
        }
    });
    Ok((row, true))
}

/// The caller's task `euid` of the form.
pub async fn get(
    app: &App,
    actor: &Actor,
    who: &UserRow,
    uid: &str,
    euid: &str,
) -> Result<KoboExportRow, ServiceError> {
    let asset = kobo::asset(app, actor, uid).await?;
    asset.require(Verb::SubmissionRead)?;
    sweep(app.store.as_ref(), &app.blobs).await?;
    app.store
        .kobo_export(euid)
        .await?
        .filter(|t| t.form_id == asset.form.id && t.user_id == who.id)
        .ok_or(ServiceError::NotFound)
}

/// The caller's tasks of the form, newest first.
pub async fn list(
    app: &App,
    actor: &Actor,
    who: &UserRow,
    uid: &str,
) -> Result<Vec<KoboExportRow>, ServiceError> {
    let asset = kobo::asset(app, actor, uid).await?;
    asset.require(Verb::SubmissionRead)?;
    sweep(app.store.as_ref(), &app.blobs).await?;
    Ok(app.store.kobo_exports(asset.form.id, who.id).await?)
}

/// Deletes one of the caller's tasks and its file.
pub async fn delete(
    app: &App,
    actor: &Actor,
    who: &UserRow,
    uid: &str,
    euid: &str,
) -> Result<(), ServiceError> {
    let t = get(app, actor, who, uid, euid).await?;
    if let Some(b) = &t.blob_name {
        app.blobs.delete(b).await?;
    }
    app.store.delete_kobo_export(t.id).await?;
    Ok(())
}

/// The finished file, decrypted as it streams; audited.
pub async fn download(
    app: &App,
    actor: &Actor,
    who: &UserRow,
    uid: &str,
    euid: &str,
) -> Result<
    (
        String,
        Kind,
        impl Stream<Item = Result<Bytes, StoreError>> + Send + 'static + use<>,
    ),
    ServiceError,
> {
    let t = get(app, actor, who, uid, euid).await?;
    let (Some(blob), Some(name), "complete") = (&t.blob_name, &t.file_name, t.status.as_str())
    else {
        return Err(ServiceError::NotFound);
    };
    let project = app
        .store
        .project(fieldvault_core::ProjectId(t.project_id))
        .await?
        .ok_or(ServiceError::NotFound)?;
    let key = super::forms::project_key(app, &project).await?;
    let stream = app
        .blobs
        .get_stream(&key, blob, &export_aad(t.project_id, &t.uid))
        .await?;
    super::audit::record(
        app.store.as_ref(),
        super::audit::actor_name(actor, Some(&who.username)),
        "export.download",
        Some(format!("export:{}", t.uid)),
        json!({ "project": t.project_id, "size": t.size }),
    )
    .await?;
    let kind = if name.ends_with(".csv") {
        Kind::Csv
    } else {
        Kind::Xlsx
    };
    Ok((name.clone(), kind, stream))
}

/// Longest saved export setting name.
const MAX_SETTING_NAME: usize = 200;
/// Most saved export settings per form.
const MAX_SETTINGS: usize = 100;
/// A synchronous export reuses the caller's identical file this recent (KoboToolbox: 5 minutes).
const SYNC_REUSE_MS: i64 = 5 * 60_000;
/// Longest a synchronous export request waits for its file.
const SYNC_WAIT: Duration = Duration::from_secs(30 * 60);

/// Checks a saved setting's `{name, export_settings}` body; returns the name and the normalised
/// settings JSON.
fn setting_body(
    body: &Value,
    current: Option<&KoboExportSettingRow>,
) -> Result<(String, String), ServiceError> {
    let m = body
        .as_object()
        .ok_or_else(|| bad("non_field_errors", "Expected a JSON object."))?;
    let name = match (m.get("name"), current) {
        (Some(Value::String(n)), _) => n.trim().to_owned(),
        (None, Some(c)) => c.name.clone(),
        _ => return Err(bad("name", "This field is required.")),
    };
    if name.is_empty() || name.chars().count() > MAX_SETTING_NAME {
        return Err(bad(
            "name",
            format!("A name of 1 to {MAX_SETTING_NAME} characters is required."),
        ));
    }
    let settings = match (m.get("export_settings"), current) {
        (Some(v), _) => parse_settings(v)?.1.to_string(),
        (None, Some(c)) => c.settings.clone(),
        _ => return Err(bad("export_settings", "This field is required.")),
    };
    Ok((name, settings))
}

fn name_taken(e: StoreError) -> ServiceError {
    match e {
        StoreError::Conflict { .. } => ServiceError::Conflict {
            code: "name",
            message: "Export setting with this name already exists.".into(),
        },
        other => other.into(),
    }
}

/// `GET /export-settings/`: the form's saved settings (readers of its data may use them).
pub async fn settings_list(
    app: &App,
    actor: &Actor,
    uid: &str,
) -> Result<Vec<KoboExportSettingRow>, ServiceError> {
    let asset = kobo::asset(app, actor, uid).await?;
    asset.require(Verb::SubmissionRead)?;
    Ok(app.store.kobo_export_settings(asset.form.id).await?)
}

/// One saved setting of the form.
pub async fn setting(
    app: &App,
    actor: &Actor,
    uid: &str,
    es: &str,
) -> Result<KoboExportSettingRow, ServiceError> {
    let asset = kobo::asset(app, actor, uid).await?;
    asset.require(Verb::SubmissionRead)?;
    app.store
        .kobo_export_setting(es)
        .await?
        .filter(|r| r.form_id == asset.form.id)
        .ok_or(ServiceError::NotFound)
}

/// `POST /export-settings/`: anyone who may export the data may save a setting; changing or
/// deleting one takes its author or someone who may change the form.
pub async fn settings_create(
    app: &App,
    actor: &Actor,
    who: &UserRow,
    uid: &str,
    body: &Value,
) -> Result<KoboExportSettingRow, ServiceError> {
    let asset = kobo::asset(app, actor, uid).await?;
    asset.require(Verb::SubmissionRead)?;
    let (name, settings) = setting_body(body, None)?;
    if app.store.kobo_export_settings(asset.form.id).await?.len() >= MAX_SETTINGS {
        return Err(ServiceError::Conflict {
            code: "export_settings.limit",
            message: format!("A form keeps at most {MAX_SETTINGS} saved export settings."),
        });
    }
    let row = app
        .store
        .create_kobo_export_setting(&NewKoboExportSetting {
            uid: format!("es{}", &kobo::new_uid(b'x')?[1..]),
            project_id: asset.project.id,
            form_id: asset.form.id,
            name,
            settings,
            created_by: Some(who.id),
        })
        .await
        .map_err(name_taken)?;
    super::audit::record(
        app.store.as_ref(),
        super::audit::actor_name(actor, Some(&who.username)),
        "export_settings.create",
        Some(format!("export_settings:{}", row.uid)),
        json!({"project": asset.project.id, "form": asset.form.xml_form_id, "name": row.name}),
    )
    .await?;
    Ok(row)
}

/// Its author, or someone who may change the form.
async fn may_change(
    app: &App,
    actor: &Actor,
    who: &UserRow,
    uid: &str,
    row: &KoboExportSettingRow,
) -> Result<(), ServiceError> {
    if row.created_by == Some(who.id) {
        return Ok(());
    }
    kobo::asset(app, actor, uid)
        .await?
        .require(Verb::FormUpdate)
}

/// `PATCH /export-settings/{uid}/`: a new name and/or new settings.
pub async fn settings_update(
    app: &App,
    actor: &Actor,
    who: &UserRow,
    uid: &str,
    es: &str,
    body: &Value,
) -> Result<KoboExportSettingRow, ServiceError> {
    let current = setting(app, actor, uid, es).await?;
    may_change(app, actor, who, uid, &current).await?;
    let (name, settings) = setting_body(body, Some(&current))?;
    app.store
        .update_kobo_export_setting(current.id, &name, &settings)
        .await
        .map_err(name_taken)?;
    setting(app, actor, uid, es).await
}

/// `DELETE /export-settings/{uid}/`.
pub async fn settings_delete(
    app: &App,
    actor: &Actor,
    who: &UserRow,
    uid: &str,
    es: &str,
) -> Result<(), ServiceError> {
    let current = setting(app, actor, uid, es).await?;
    may_change(app, actor, who, uid, &current).await?;
    app.store.delete_kobo_export_setting(current.id).await?;
    Ok(())
}

/// `GET /export-settings/{uid}/data.csv` and `data.xlsx`: the file of a saved setting, made
/// while the request waits (Excel, Power BI and scripts point at these stable URLs). It is an
/// ordinary export task of the caller underneath, so it is encrypted at rest, audited and
/// expires like one; an identical file the caller got in the last 5 minutes is served again,
/// older identical ones are deleted as they are superseded.
pub async fn synchronous(
    app: &App,
    actor: &Actor,
    who: &UserRow,
    uid: &str,
    es: &str,
    kind: Kind,
) -> Result<
    (
        String,
        Kind,
        impl Stream<Item = Result<Bytes, StoreError>> + Send + 'static + use<>,
    ),
    ServiceError,
> {
    let row = setting(app, actor, uid, es).await?;
    let mut body: Value = serde_json::from_str(&row.settings)
        .map_err(|e| ServiceError::Internal(format!("saved export setting: {e}")))?;
    if let Some(o) = body.as_object_mut() {
        o.insert(
            "type".into(),
            json!(if kind == Kind::Csv { "csv" } else { "xls" }),
        );
    }
    let normal = parse_settings(&body)?.1.to_string();
    let now = fieldvault_store::now_ms();
    let form_id = row.form_id;
    let mut fresh = None;
    for t in app.store.kobo_exports(form_id, who.id).await? {
        if t.settings != normal {
            continue;
        }
        match (t.status.as_str(), t.completed_at) {
            ("complete", Some(done)) if now - done < SYNC_REUSE_MS && fresh.is_none() => {
                fresh = Some(t.uid.clone());
            }
            ("complete" | "error", _) => {
                if let Some(b) = &t.blob_name {
                    app.blobs.delete(b).await?;
                }
                app.store.delete_kobo_export(t.id).await?;
            }
            _ => {}
        }
    }
    let euid = match fresh {
        Some(e) => e,
        None => {
            let (task, _) = create(app, actor, who, uid, &body).await?;
            let started = std::time::Instant::now();
            // The task's row alone is watched (access was checked above), more rarely as it goes.
            let mut pause = Duration::from_millis(20);
            loop {
                let t = app
                    .store
                    .kobo_export(&task.uid)
                    .await?
                    .ok_or(ServiceError::NotFound)?;
                match t.status.as_str() {
                    "complete" => break t.uid,
                    "error" => {
                        return Err(ServiceError::Invalid {
                            code: "export.failed",
                            message: t.error.unwrap_or_else(|| "The export failed.".into()),
                        });
                    }
                    _ if started.elapsed() > SYNC_WAIT => {
                        return Err(ServiceError::Busy {
                            code: "export.pending",
                            message: "The export is still being made; poll /exports/ or try \
                                      again later."
                                .into(),
                        });
                    }
                    _ => {
                        tokio::time::sleep(pause).await;
                        pause = (pause * 2).min(Duration::from_millis(500));
                    }
                }
            }
        }
    };
    download(app, actor, who, uid, &euid).await
}

/// Associated data of an export file.
pub fn export_aad(project_id: i64, uid: &str) -> Vec<u8> {
    format!("project:{project_id}/export:{uid}").into_bytes()
}

/// Deletes expired tasks and their files.
pub async fn sweep(store: &dyn Store, blobs: &BlobStore) -> Result<u64, ServiceError> {
    let mut n = 0;
    for t in store
        .expired_kobo_exports(fieldvault_store::now_ms())
        .await?
    {
        if let Some(b) = &t.blob_name {
            match blobs.delete(b).await {
                Ok(()) | Err(StoreError::NotFound) => {}
                Err(e) => return Err(e.into()),
            }
        }
        store.delete_kobo_export(t.id).await?;
        n += 1;
    }
    Ok(n)
}

/// Sweeps expired exports every few minutes for the life of the process.
pub fn spawn_sweeper(store: Arc<dyn Store>, blobs: BlobStore) {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(SWEEP_EVERY);
        loop {
            tick.tick().await;
            if let Err(e) = sweep(store.as_ref(), &blobs).await {
                tracing::warn!(error = %e, "export sweep failed");
            }
        }
    });
}

/// One output column.
#[derive(Debug, Clone)]
pub struct Column {
    /// Header text.
    pub header: String,
    /// Flat key in the submission JSON.
    pub key: String,
    /// What goes in the cell.
    pub cell: Cell,
}

/// How a cell is filled.
#[derive(Debug, Clone)]
pub enum Cell {
    /// The value as stored.
    Raw,
    /// A select's value(s) shown as choice labels (label exports).
    Labels(Vec<(String, String)>),
    /// `1`/`0`: whether a select_multiple answer holds this choice.
    Choice(String),
    /// A server key rendered by name (`_validation_status` → its label).
    System,
}

/// A repeat met while walking a scope: its flat key, name, children and header path.
type FoundRepeat = (String, String, Vec<Node>, Vec<String>);

/// Columns of one scope (the form, or a repeat's children): fields and groups in form order;
/// repeats inside it are collected in `repeats`, not walked.
fn walk(
    nodes: &[Node],
    lang: Option<Option<&str>>,
    s: &Settings,
    heads: &mut Vec<String>,
    out: &mut Vec<Column>,
    repeats: &mut Vec<FoundRepeat>,
) {
    for n in nodes {
        if n.path.len() == 1 && HIDDEN.contains(&n.name.as_str()) {
            continue;
        }
        let own = match lang {
            None => n.name.clone(),
            Some(l) => n.label(l).unwrap_or(&n.name).to_owned(),
        };
        match &n.kind {
            NodeKind::Repeat(c) => {
                let mut h = heads.clone();
                h.push(own);
                repeats.push((n.path.join("/"), n.name.clone(), c.clone(), h));
            }
            NodeKind::Group(c) => {
                heads.push(own);
                walk(c, lang, s, heads, out, repeats);
                heads.pop();
            }
            NodeKind::Field { ty, choices } => {
                let key = n.path.join("/");
                if !s.fields.is_empty() && !s.fields.contains(&key) {
                    continue;
                }
                let header = if s.hierarchy_in_labels && !heads.is_empty() {
                    format!("{}{}{own}", heads.join(&s.group_sep), s.group_sep)
                } else {
                    own
                };
                let labels = || -> Vec<(String, String)> {
                    choices
                        .iter()
                        .map(|c| {
                            let label = match lang {
                                None => c.value.clone(),
                                Some(l) => c.label(l).unwrap_or(&c.value).to_owned(),
                            };
                            (c.value.clone(), label)
                        })
                        .collect()
                };
                let value_cell = if lang.is_some() && !choices.is_empty() {
                    Cell::Labels(labels())
                } else {
                    Cell::Raw
                };
                if *ty == FieldType::Select {
                    if s.multiple_select != MultipleSelect::Details {
                        out.push(Column {
                            header: header.clone(),
                            key: key.clone(),
                            cell: value_cell,
                        });
                    }
                    if s.multiple_select != MultipleSelect::Summary {
                        for (value, label) in labels() {
                            out.push(Column {
                                header: format!(
                                    "{header}{}{label}",
                                    if s.group_sep.is_empty() {
                                        "/"
                                    } else {
                                        &s.group_sep
                                    }
                                ),
                                key: key.clone(),
                                cell: Cell::Choice(value),
                            });
                        }
                    }
                } else {
                    out.push(Column {
                        header,
                        key,
                        cell: value_cell,
                    });
                }
            }
        }
    }
}

/// The columns of an export: the form's fields outside repeats in form order (select_multiple
/// as configured), then KoboToolbox's system columns.
pub fn columns(schema: &FormSchema, s: &Settings) -> Vec<Column> {
    let lang = language(schema, s);
    let mut out = Vec::new();
    walk(
        &schema.children,
        lang,
        s,
        &mut Vec::new(),
        &mut out,
        &mut Vec::new(),
    );
    for k in [
        "_id",
        "_uuid",
        "_submission_time",
        "_validation_status",
        "_notes",
        "_status",
        "_submitted_by",
        "__version__",
        "_tags",
    ] {
        out.push(Column {
            header: k.into(),
            key: k.into(),
            cell: Cell::System,
        });
    }
    out
}

fn language<'a>(schema: &'a FormSchema, s: &'a Settings) -> Option<Option<&'a str>> {
    match s.lang.as_str() {
        "_xml" => None,
        "_default" => Some(schema.languages.first().map(String::as_str)),
        l => Some(Some(l)),
    }
}

/// A repeat group's own sheet in an XLSX export, as KoboToolbox writes them: the repeat's
/// fields, then `_index`, `_parent_table_name`, `_parent_index` and the submission's keys.
#[derive(Debug, Clone)]
pub struct RepeatSheet {
    /// Sheet name (the repeat's name, made a valid and unique sheet name).
    pub name: String,
    /// Flat key of the repeat's array in the submission JSON (also inside a parent's item).
    pub key: String,
    /// The sheet of the repeat this one is inside (`None`: the main sheet).
    pub parent: Option<usize>,
    /// Field columns.
    pub cols: Vec<Column>,
}

/// Name of the main sheet.
pub const MAIN_SHEET: &str = "Data";
/// Columns after a repeat sheet's fields.
const REPEAT_SYSTEM: [&str; 9] = [
    "_index",
    "_parent_table_name",
    "_parent_index",
    "_submission__id",
    "_submission__uuid",
    "_submission__submission_time",
    "_submission__validation_status",
    "_submission__submitted_by",
    "_submission___version__",
];

impl RepeatSheet {
    /// The header row.
    pub fn header(&self) -> Vec<String> {
        self.cols
            .iter()
            .map(|c| c.header.clone())
            .chain(REPEAT_SYSTEM.iter().map(|s| (*s).to_owned()))
            .collect()
    }
}

/// The repeat sheets of an export, parents before children. A repeat none of whose fields is
/// selected has no sheet (nor have the repeats inside it).
pub fn repeat_sheets(schema: &FormSchema, s: &Settings) -> Vec<RepeatSheet> {
    let lang = language(schema, s);
    let mut found = Vec::new();
    walk(
        &schema.children,
        lang,
        s,
        &mut Vec::new(),
        &mut Vec::new(),
        &mut found,
    );
    let mut queue: std::collections::VecDeque<(Option<usize>, FoundRepeat)> =
        found.into_iter().map(|f| (None, f)).collect();
    let mut out: Vec<RepeatSheet> = Vec::new();
    let mut names: Vec<String> = vec![MAIN_SHEET.to_lowercase()];
    while let Some((parent, (key, name, children, mut heads))) = queue.pop_front() {
        let mut cols = Vec::new();
        let mut inner = Vec::new();
        walk(&children, lang, s, &mut heads, &mut cols, &mut inner);
        if cols.is_empty() {
            continue;
        }
        let mut sheet: String = name
            .chars()
            .map(|c| if "[]:*?/\\".contains(c) { '_' } else { c })
            .take(28)
            .collect();
        let base = sheet.clone();
        let mut n = 1;
        while names.contains(&sheet.to_lowercase()) {
            n += 1;
            sheet = format!("{base}~{n}");
        }
        names.push(sheet.to_lowercase());
        let me = out.len();
        out.push(RepeatSheet {
            name: sheet,
            key,
            parent,
            cols,
        });
        queue.extend(inner.into_iter().map(|f| (Some(me), f)));
    }
    out
}

/// The repeat sheets' rows of one submission, through `emit(sheet, cells)`. `counters` holds
/// each sheet's last `_index`.
pub fn repeat_rows(
    sheets: &[RepeatSheet],
    doc: &Map<String, Value>,
    main_index: u64,
    counters: &mut [u64],
    emit: &mut dyn FnMut(usize, Vec<String>) -> Result<(), ServiceError>,
) -> Result<(), ServiceError> {
    let submission: Vec<String> = [
        "_id",
        "_uuid",
        "_submission_time",
        "_validation_status",
        "_submitted_by",
        "__version__",
    ]
    .iter()
    .map(|k| {
        let v = doc.get(*k);
        if *k == "_validation_status" {
            v.and_then(|s| s.get("label"))
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_owned()
        } else {
            text(v)
        }
    })
    .collect();
    fn level(
        sheets: &[RepeatSheet],
        parent: Option<usize>,
        scope: &Map<String, Value>,
        parent_index: u64,
        submission: &[String],
        counters: &mut [u64],
        emit: &mut dyn FnMut(usize, Vec<String>) -> Result<(), ServiceError>,
    ) -> Result<(), ServiceError> {
        for (i, sheet) in sheets
            .iter()
            .enumerate()
            .filter(|(_, s)| s.parent == parent)
        {
            let Some(items) = scope.get(&sheet.key).and_then(Value::as_array) else {
                continue;
            };
            for item in items.iter().filter_map(Value::as_object) {
                counters[i] += 1;
                let index = counters[i];
                let mut cells = cells(&sheet.cols, item);
                cells.push(index.to_string());
                cells.push(
                    parent
                        .map_or(MAIN_SHEET, |p| sheets[p].name.as_str())
                        .to_owned(),
                );
                cells.push(parent_index.to_string());
                cells.extend_from_slice(submission);
                emit(i, cells)?;
                level(sheets, Some(i), item, index, submission, counters, emit)?;
            }
        }
        Ok(())
    }
    level(sheets, None, doc, main_index, &submission, counters, emit)
}

fn text(v: Option<&Value>) -> String {
    match v {
        None | Some(Value::Null) => String::new(),
        Some(Value::String(s)) => s.clone(),
        Some(Value::Array(a)) if a.is_empty() => String::new(),
        Some(other) => other.to_string(),
    }
}

/// One row of cells for a flat submission.
pub fn row(cols: &[Column], doc: &Map<String, Value>, index: u64) -> Vec<String> {
    let mut out = cells(cols, doc);
    out.push(index.to_string());
    out
}

/// The cells of `cols` from a flat submission or a repeat item.
fn cells(cols: &[Column], doc: &Map<String, Value>) -> Vec<String> {
    cols.iter()
        .map(|c| {
            let v = doc.get(&c.key);
            match &c.cell {
                Cell::Raw => text(v),
                Cell::Labels(map) => text(v)
                    .split(' ')
                    .filter(|p| !p.is_empty())
                    .map(|p| {
                        map.iter()
                            .find(|(val, _)| val == p)
                            .map_or(p.to_owned(), |(_, l)| l.clone())
                    })
                    .collect::<Vec<_>>()
                    .join(" "),
                Cell::Choice(choice) => match v {
                    None => String::new(),
                    Some(v) => {
                        if text(Some(v)).split(' ').any(|p| p == choice) {
                            "1".into()
                        } else {
                            "0".into()
                        }
                    }
                },
                Cell::System if c.key == "_validation_status" => v
                    .and_then(|s| s.get("label"))
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_owned(),
                Cell::System => text(v),
            }
        })
        .collect()
}

fn io(e: impl std::fmt::Display) -> ServiceError {
    ServiceError::Internal(format!("writing export: {e}"))
}

/// A byte buffer the CSV writer appends to and the producer empties after each batch.
#[derive(Clone, Default)]
struct Shared(Arc<std::sync::Mutex<Vec<u8>>>);

impl std::io::Write for Shared {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0
            .lock()
            .map_err(|_| std::io::Error::other("poisoned"))?
            .extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Shared {
    fn take(&self) -> Result<Vec<u8>, ServiceError> {
        Ok(std::mem::take(&mut *self.0.lock().map_err(io)?))
    }
}

/// Where rows go: CSV is encoded in memory a batch at a time, XLSX by its writer thread.
enum Out {
    Csv(Box<csv::Writer<Shared>>, Shared),
    Xlsx(super::kobo_xlsx::XlsxSink),
}

impl Out {
    fn write(&mut self, cells: Vec<String>) -> Result<(), ServiceError> {
        match self {
            Out::Csv(w, _) => w.write_record(&cells).map_err(io),
            Out::Xlsx(x) => x.write(0, cells),
        }
    }

    /// CSV bytes encoded so far (XLSX has none until the end).
    fn take(&mut self) -> Result<Vec<u8>, ServiceError> {
        match self {
            Out::Csv(w, buf) => {
                w.flush().map_err(io)?;
                buf.take()
            }
            Out::Xlsx(_) => Ok(Vec::new()),
        }
    }
}

async fn send(
    tx: &tokio::sync::mpsc::Sender<Result<Bytes, std::io::Error>>,
    chunk: Vec<u8>,
) -> Result<(), ServiceError> {
    if !chunk.is_empty() && tx.send(Ok(Bytes::from(chunk))).await.is_err() {
        return Err(ServiceError::Internal("export upload stopped".into()));
    }
    Ok(())
}

/// Writes the export file into the blob store; returns `(blob, file name, plaintext size)`.
async fn produce(
    app: &App,
    asset: &Asset,
    task: &KoboExportRow,
    s: &Settings,
) -> Result<(String, String, i64), ServiceError> {
    app.store
        .finish_kobo_export(task.id, "processing", None, None)
        .await?;
    let flat = Arc::new(Flattener::new(app, asset, "").await?);
    let schema = if s.fields_from_all_versions {
        flat.schema().clone()
    } else {
        asset.schema()?
    };
    let cols = columns(&schema, s);
    // Repeat groups get sheets of their own in XLSX; CSV has the main table only (as in
    // KoboToolbox).
    let sheets = match s.kind {
        Kind::Xlsx => repeat_sheets(&schema, s),
        Kind::Csv => Vec::new(),
    };
    let mut header: Vec<String> = cols.iter().map(|c| c.header.clone()).collect();
    header.push("_index".into());
    let query = Arc::new(match &s.query {
        Some(q) => Query::parse(q).map_err(|e| bad("query", e.to_string()))?,
        None => Query::all(),
    });
    let mut out = match s.kind {
        Kind::Csv => {
            let buf = Shared::default();
            let mut w = csv::WriterBuilder::new()
                .delimiter(b';')
                .from_writer(buf.clone());
            w.write_record(&header).map_err(io)?;
            Out::Csv(Box::new(w), buf)
        }
        Kind::Xlsx => {
            let mut all = vec![(MAIN_SHEET.to_owned(), header.clone())];
            all.extend(sheets.iter().map(|r| (r.name.clone(), r.header())));
            Out::Xlsx(super::kobo_xlsx::XlsxSink::new(
                &all,
                &app.config.data_dir.join("tmp"),
            )?)
        }
    };
    let mut counters = vec![0u64; sheets.len()];
    let key = super::forms::project_key(app, &asset.project).await?;
    let blob = format!("exports/{}", task.uid);
    let aad = export_aad(asset.project.id, &task.uid);
    let (tx, mut rx) = tokio::sync::mpsc::channel::<Result<Bytes, std::io::Error>>(4);
    let body = futures_util::stream::poll_fn(move |cx| rx.poll_recv(cx));
    let blobs = app.blobs.clone();
    let (key2, blob2) = (key.clone(), blob.clone());
    let upload =
        tokio::spawn(async move { blobs.put_stream(&key2, &blob2, &aad, Box::pin(body)).await });
    // Export rows have no attachment columns: the lists are read only if the query needs them.
    let early = query.mentions("_attachments");
    let mut scan = Scan::new(asset);
    let mut index = 0u64;
    let produced: Result<(), ServiceError> = async {
        while let Some(mut batch) = scan.next(app).await? {
            if !s.submission_ids.is_empty() {
                batch.retain(|rec| s.submission_ids.contains(&rec.id));
            }
            for (doc, _) in &kobo::scan_matching(app, &flat, &query, batch, early).await? {
                index += 1;
                out.write(row(&cols, doc, index))?;
                if let Out::Xlsx(x) = &mut out
                    && !sheets.is_empty()
                {
                    repeat_rows(&sheets, doc, index, &mut counters, &mut |i, cells| {
                        x.write(i + 1, cells)
                    })?;
                }
            }
            send(&tx, out.take()?).await?;
        }
        match out {
            Out::Csv(w, buf) => {
                drop((*w).into_inner().map_err(io)?);
                send(&tx, buf.take()?).await
            }
            Out::Xlsx(x) => {
                let (_dir, path) = x.finish()?;
                let mut f = tokio::fs::File::open(&path).await.map_err(io)?;
                loop {
                    let mut buf = vec![0u8; 256 * 1024];
                    let n = tokio::io::AsyncReadExt::read(&mut f, &mut buf)
                        .await
                        .map_err(io)?;
                    if n == 0 {
                        break;
                    }
                    buf.truncate(n);
                    send(&tx, buf).await?;
                }
                Ok(())
            }
        }
    }
    .await;
    if produced.is_err() {
        let _ = tx
            .send(Err(std::io::Error::other("export production failed")))
            .await;
    }
    drop(tx);
    let stored = upload
        .await
        .map_err(|e| ServiceError::Internal(format!("export upload task: {e}")))?;
    produced?;
    let info = stored?;
    let title = asset
        .def
        .title
        .clone()
        .unwrap_or_else(|| asset.form.xml_form_id.clone());
    let safe: String = title
        .chars()
        .map(|c| {
            if c.is_alphanumeric() || " -_".contains(c) {
                c
            } else {
                '_'
            }
        })
        .take(80)
        .collect();
    let stamp = kobo::submission_time(task.created_at).replace(':', "-");
    let ext = if s.kind == Kind::Csv { "csv" } else { "xlsx" };
    Ok((
        blob,
        format!("{safe} - {stamp}.{ext}"),
        i64::try_from(info.size).unwrap_or(i64::MAX),
    ))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    const FORM: &str = r#"<h:html xmlns="http://www.w3.org/2002/xforms" xmlns:h="http://www.w3.org/1999/xhtml"><h:head><h:title>T</h:title><model><instance><data id="t" version="1"><q/><g><ms/></g><meta><instanceID/></meta></data></instance><bind nodeset="/data/q" type="string"/><bind nodeset="/data/g/ms" type="string"/></model></h:head><h:body><input ref="/data/q"><label>Question</label></input><group ref="/data/g"><label>Grp</label><select ref="/data/g/ms"><label>Many</label><item><label>Alpha</label><value>a</value></item><item><label>Beta</label><value>b</value></item></select></group></h:body></h:html>"#;

    fn settings(extra: Value) -> Settings {
        let mut body = json!({"type": "csv", "fields_from_all_versions": true, "group_sep": "/",
            "hierarchy_in_labels": true, "lang": "_xml", "multiple_select": "both"});
        if let (Some(b), Some(e)) = (body.as_object_mut(), extra.as_object()) {
            for (k, v) in e {
                b.insert(k.clone(), v.clone());
            }
        }
        parse_settings(&body).unwrap().0
    }

    const NESTED: &str = r#"<h:html xmlns="http://www.w3.org/2002/xforms" xmlns:h="http://www.w3.org/1999/xhtml" xmlns:jr="http://openrosa.org/javarosa"><h:head><h:title>N</h:title><model><instance><data id="n" version="1"><q/><member jr:template=""><mname/><visit jr:template=""><place/></visit></member><meta><instanceID/></meta></data></instance><bind nodeset="/data/q" type="string"/><bind nodeset="/data/member/mname" type="string"/><bind nodeset="/data/member/visit/place" type="string"/></model></h:head><h:body><input ref="/data/q"><label>Q</label></input><group ref="/data/member"><label>Members</label><repeat nodeset="/data/member"><input ref="/data/member/mname"><label>Name</label></input><group ref="/data/member/visit"><label>Visits</label><repeat nodeset="/data/member/visit"><input ref="/data/member/visit/place"><label>Place</label></input></repeat></group></repeat></group></h:body></h:html>"#;

    #[test]
    fn repeats_get_sheets_with_parent_indexes() {
        let schema = fieldvault_core::schema::parse_schema(NESTED.as_bytes(), 1 << 20).unwrap();
        let s = settings(json!({"type": "xls"}));
        let main: Vec<String> = columns(&schema, &s).into_iter().map(|c| c.header).collect();
        assert_eq!(main[0], "q");
        assert!(!main.iter().any(|h| h.contains("mname")), "{main:?}");
        let sheets = repeat_sheets(&schema, &s);
        assert_eq!(
            sheets
                .iter()
                .map(|r| (r.name.as_str(), r.key.as_str(), r.parent))
                .collect::<Vec<_>>(),
            [
                ("member", "member", None),
                ("visit", "member/visit", Some(0))
            ]
        );
        assert_eq!(
            sheets[0].header()[..4],
            [
                "member/mname",
                "_index",
                "_parent_table_name",
                "_parent_index"
            ]
        );
        assert_eq!(sheets[1].header()[0], "member/visit/place");
        let doc = json!({
            "q": "x", "_id": 7, "_uuid": "u7", "_submission_time": "t",
            "_validation_status": {"label": "Approved"}, "_submitted_by": "alice", "__version__": "1",
            "member": [
                {"member/mname": "Ana", "member/visit": [{"member/visit/place": "A"}, {"member/visit/place": "B"}]},
                {"member/mname": "Bo"}
            ]
        });
        let mut counters = vec![0; sheets.len()];
        let mut rows = Vec::new();
        for index in [1, 2] {
            repeat_rows(
                &sheets,
                doc.as_object().unwrap(),
                index,
                &mut counters,
                &mut |i, c| {
                    rows.push((i, c));
                    Ok(())
                },
            )
            .unwrap();
        }
        let brief: Vec<(usize, &str, &str, &str, &str)> = rows
            .iter()
            .map(|(i, c)| {
                (
                    *i,
                    c[0].as_str(),
                    c[1].as_str(),
                    c[2].as_str(),
                    c[3].as_str(),
                )
            })
            .collect();
        assert_eq!(
            brief,
            [
                (0, "Ana", "1", "Data", "1"),
                (1, "A", "1", "member", "1"),
                (1, "B", "2", "member", "1"),
                (0, "Bo", "2", "Data", "1"),
                (0, "Ana", "3", "Data", "2"),
                (1, "A", "3", "member", "3"),
                (1, "B", "4", "member", "3"),
                (0, "Bo", "4", "Data", "2"),
            ]
        );
        assert_eq!(rows[0].1[4..], ["7", "u7", "t", "Approved", "alice", "1"]);
        // A repeat none of whose fields is selected has no sheet.
        let only_q = settings(json!({"type": "xls", "fields": ["q"]}));
        assert!(repeat_sheets(&schema, &only_q).is_empty());
    }

    #[test]
    fn columns_follow_names_labels_and_select_layout() {
        let schema = fieldvault_core::schema::parse_schema(FORM.as_bytes(), 1 << 20).unwrap();
        let heads = |s: &Settings| -> Vec<String> {
            columns(&schema, s)
                .into_iter()
                .map(|c| c.header)
                .take_while(|h| h != "_id")
                .collect()
        };
        assert_eq!(
            heads(&settings(json!({}))),
            ["q", "g/ms", "g/ms/a", "g/ms/b"]
        );
        assert_eq!(
            heads(&settings(
                json!({"lang": "_default", "multiple_select": "summary", "group_sep": " > "})
            )),
            ["Question", "Grp > Many"]
        );
        assert_eq!(
            heads(&settings(
                json!({"hierarchy_in_labels": false, "multiple_select": "details"})
            )),
            ["q", "ms/a", "ms/b"]
        );
        assert_eq!(
            heads(&settings(
                json!({"fields": ["g/ms"], "multiple_select": "summary"})
            )),
            ["g/ms"]
        );
        let s = settings(json!({"lang": "_default"}));
        let cols = columns(&schema, &s);
        let doc =
            json!({"q": "hi", "g/ms": "b a", "_id": 7, "_validation_status": {"label": "On Hold"}});
        let r = row(&cols, doc.as_object().unwrap(), 3);
        assert_eq!(r[..4], ["hi", "Beta Alpha", "1", "1"]);
        assert_eq!(r[4], "7");
        assert_eq!(r[7], "On Hold");
        assert_eq!(r.last().map(String::as_str), Some("3"));
        let empty = row(&cols, json!({"_id": 8}).as_object().unwrap(), 4);
        assert_eq!(
            empty[..4],
            ["", "", "", ""],
            "an unanswered select has no 0/1 cells"
        );
    }

    #[test]
    fn settings_are_validated_like_kobotoolbox() {
        let err = |b: Value| match parse_settings(&b) {
            Err(ServiceError::Invalid { code, message }) => (code, message),
            other => panic!("{:?}", other.map(|x| x.1)),
        };
        let (code, m) = err(json!({"type": "csv"}));
        assert_eq!(code, "data");
        assert!(m.starts_with("Must contain all the following required keys"));
        let ok = json!({"type": "csv", "fields_from_all_versions": "true", "group_sep": "/",
            "hierarchy_in_labels": "false", "lang": "_xml", "multiple_select": "both"});
        assert!(parse_settings(&ok).is_ok());
        let mut bad = ok.clone();
        bad["surprise"] = json!(1);
        assert_eq!(err(bad).0, "data");
        let mut bad = ok.clone();
        bad["type"] = json!("spss_labels");
        assert_eq!(err(bad).0, "type");
        let mut bad = ok.clone();
        bad["multiple_select"] = json!("all");
        assert_eq!(err(bad).0, "multiple_select");
        let mut bad = ok.clone();
        bad["hierarchy_in_labels"] = json!(true);
        bad["group_sep"] = json!("");
        assert_eq!(err(bad).0, "group_sep");
        let mut bad = ok;
        bad["query"] = json!({"a": {"$where": "x"}});
        assert_eq!(err(bad).0, "query");
    }
}
