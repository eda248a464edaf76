//! The KoboToolbox API v2 subset (specs/kobo-api-v2.md): forms as "assets", submissions as flat
//! JSON with Mongo-style filters, bulk deletion and edits, validation statuses, and the
//! `/token/` endpoint. Exports are in [`super::kobo_export`], redaction in [`super::redaction`].
//!
//! An asset is a form the caller may read. Its uid (`a` + 21 characters of KoboToolbox's
//! alphabet) is derived from the form's id, so it is stable without a stored column. Reading data
//! decrypts and flattens submissions batch by batch ([`Scan`]); a filter is evaluated on the flat
//! JSON (`core::kobo_query`), so memory holds one batch and one page whatever the form's size.

use std::collections::HashMap;
use std::sync::Arc;

use fieldvault_core::flatten::{self, Typing};
use fieldvault_core::kobo_query::{Query, Sort};
use fieldvault_core::schema::{FormSchema, parse_schema};
use fieldvault_core::{Actor, CoreError, Resource, Scopes, Verb, authorize};
use fieldvault_crypto::{Key256, SecretString, mac, random};
use fieldvault_store::submissions::xml_aad;
use fieldvault_store::{
    ApiTokenRow, FormDefRow, FormRow, KoboRecord, NewSubmission, PageReader, ProjectRow,
    StoreError, SubmissionAttachmentRow, UserRow,
};
use serde_json::{Map, Value, json};
use sha2::Digest as _;

use super::ServiceError;
use super::context::project_actor;
use super::intake::MAX_XML_BYTES;
use crate::App;

/// KoboToolbox's uid alphabet (`kpi/fields/kpi_uid.py`).
pub const UID_ALPHABET: &[u8] = b"23456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz";
/// Default page size of `/data/`.
pub const DEFAULT_LIMIT: usize = 100;
/// Largest page of `/data/` (KoboToolbox's `MAX_API_PAGE_SIZE`).
pub const MAX_LIMIT: usize = 1000;
/// Most submissions one bulk request may touch.
pub const MAX_BULK: usize = 10_000;
/// Most results a non-default `sort` may order (they are held in memory to be sorted).
pub const MAX_SORTED: usize = 100_000;
/// Submissions read per database round trip.
const BATCH: i64 = 500;
/// Name of the API tokens `GET /token/` issues.
pub const KOBO_TOKEN_NAME: &str = "kobo-api";
/// How many `kobo-api` tokens an account keeps (older ones are deleted as new ones are issued).
pub const KOBO_TOKENS_KEPT: i64 = 5;
/// The validation statuses and their labels.
pub const VALIDATION_STATUSES: [(&str, &str); 3] = [
    ("validation_status_approved", "Approved"),
    ("validation_status_not_approved", "Not Approved"),
    ("validation_status_on_hold", "On Hold"),
];

/// The asset uid of a form: stable, derived from its id.
pub fn asset_uid(form_id: i64) -> String {
    let digest = mac::sha256(format!("fieldvault/kobo-asset/{form_id}").as_bytes());
    uid_from(b'a', &digest)
}

/// A random uid with `prefix` (`e` for an export task).
pub fn new_uid(prefix: u8) -> Result<String, ServiceError> {
    let bytes: [u8; 32] = random::bytes()?;
    Ok(uid_from(prefix, &bytes))
}

fn uid_from(prefix: u8, bytes: &[u8; 32]) -> String {
    // One byte per symbol, modulo 57: a small bias, irrelevant for identifiers.
    let mut s = String::with_capacity(22);
    s.push(char::from(prefix));
    for b in &bytes[..21] {
        s.push(char::from(
            UID_ALPHABET[usize::from(*b) % UID_ALPHABET.len()],
        ));
    }
    s
}

/// A form seen as a KoboToolbox asset, with the caller's role loaded.
pub struct Asset {
    /// Its uid.
    pub uid: String,
    /// The project.
    pub project: ProjectRow,
    /// The form.
    pub form: FormRow,
    /// The current definition (published, else the draft).
    pub def: FormDefRow,
    /// The caller, with its role in the project.
    pub actor: Actor,
}

impl Asset {
    fn resource(&self) -> Resource {
        Resource::Form {
            project: self.project.project_id(),
            form: self.form.id,
            anonymous: self.form.anonymous,
        }
    }

    /// Whether the caller may perform `verb` on this form.
    pub fn may(&self, verb: Verb) -> bool {
        authorize(&self.actor, verb, self.resource()).is_ok()
    }

    /// Refuses (403) unless the caller may perform `verb`.
    pub fn require(&self, verb: Verb) -> Result<(), ServiceError> {
        Ok(authorize(&self.actor, verb, self.resource())?)
    }

    /// Deployed: a published definition exists.
    pub fn deployed(&self) -> bool {
        self.form.published_def_id.is_some()
    }

    /// The field tree of the current definition.
    pub fn schema(&self) -> Result<FormSchema, ServiceError> {
        Ok(parse_schema(&self.def.xml, super::forms::MAX_FORM_BYTES)?)
    }

    /// ODK-encrypted form (the server cannot read new submissions).
    pub fn encrypted(&self) -> bool {
        self.def.public_key.is_some()
    }
}

/// The field tree of every published version merged, newest first (for exports with
/// `fields_from_all_versions`).
pub async fn merged_schema(app: &App, asset: &Asset) -> Result<FormSchema, ServiceError> {
    let mut schema = asset.schema()?;
    for def in app.store.published_defs(asset.form.id).await?.iter().rev() {
        if def.id != asset.def.id {
            schema.merge(&parse_schema(&def.xml, super::forms::MAX_FORM_BYTES)?);
        }
    }
    Ok(schema)
}

async fn asset_of(
    app: &App,
    actor: &Actor,
    project: &ProjectRow,
    form: FormRow,
) -> Result<Option<Asset>, ServiceError> {
    if form.deleted_at.is_some() {
        return Ok(None);
    }
    let (_, scoped) = project_actor(app.store.as_ref(), actor, project.project_id()).await?;
    let resource = Resource::Form {
        project: project.project_id(),
        form: form.id,
        anonymous: form.anonymous,
    };
    // Assets are the caller's own or shared with it: a role in the project. Public forms of
    // other projects are not listed.
    if authorize(
        &scoped,
        Verb::ProjectRead,
        Resource::Project(project.project_id()),
    )
    .is_err()
        || authorize(&scoped, Verb::FormRead, resource).is_err()
    {
        return Ok(None);
    }
    let Some(def_id) = form.published_def_id.or(form.draft_def_id) else {
        return Ok(None);
    };
    let Some(def) = app.store.form_def(def_id).await? else {
        return Ok(None);
    };
    Ok(Some(Asset {
        uid: asset_uid(form.id),
        project: project.clone(),
        form,
        def,
        actor: scoped,
    }))
}

/// Every asset the caller may read, newest form first.
pub async fn assets(app: &App, actor: &Actor) -> Result<Vec<Asset>, ServiceError> {
    if matches!(actor, Actor::Anonymous) {
        return Err(ServiceError::Unauthenticated);
    }
    let mut out = Vec::new();
    for p in app.store.list_projects().await? {
        for form in app.store.forms(p.project_id()).await? {
            if let Some(a) = asset_of(app, actor, &p, form).await? {
                out.push(a);
            }
        }
    }
    out.sort_by(|a, b| {
        let ta = a.form.updated_at.unwrap_or(a.form.created_at);
        let tb = b.form.updated_at.unwrap_or(b.form.created_at);
        tb.cmp(&ta).then(b.form.id.cmp(&a.form.id))
    });
    Ok(out)
}

/// One asset by uid; 404 when unknown or not readable by the caller.
pub async fn asset(app: &App, actor: &Actor, uid: &str) -> Result<Asset, ServiceError> {
    if matches!(actor, Actor::Anonymous) {
        return Err(ServiceError::Unauthenticated);
    }
    if uid.len() != 22 || !uid.starts_with('a') {
        return Err(ServiceError::NotFound);
    }
    for p in app.store.list_projects().await? {
        for form in app.store.forms(p.project_id()).await? {
            if asset_uid(form.id) == uid {
                return asset_of(app, actor, &p, form)
                    .await?
                    .ok_or(ServiceError::NotFound);
            }
        }
    }
    Err(ServiceError::NotFound)
}

/// The asset of a form named the native way (`/v1/projects/{id}/forms/{xmlFormId}`).
pub async fn asset_for_form(
    app: &App,
    actor: &Actor,
    project: fieldvault_core::ProjectId,
    xml_form_id: &str,
) -> Result<Asset, ServiceError> {
    let p = app
        .store
        .project(project)
        .await?
        .filter(|p| p.deleted_at.is_none())
        .ok_or(ServiceError::NotFound)?;
    let form = app
        .store
        .form(project, xml_form_id)
        .await?
        .ok_or(ServiceError::NotFound)?;
    asset_of(app, actor, &p, form)
        .await?
        .ok_or(ServiceError::NotFound)
}

/// Live submissions and the latest receipt time.
pub async fn stats(app: &App, asset: &Asset) -> Result<(i64, Option<i64>), ServiceError> {
    Ok(app.store.kobo_count(asset.form.id).await?)
}

/// Turns stored records into KoboToolbox's flat JSON (§2.2).
pub struct Flattener {
    key: Key256,
    schema: FormSchema,
    project_id: i64,
    form_id: i64,
    asset_uid: String,
    data_url: String,
    has_files: bool,
}

impl Flattener {
    /// For `asset`; `base` is the server's absolute URL (scheme and host) for links.
    pub async fn new(app: &App, asset: &Asset, base: &str) -> Result<Self, ServiceError> {
        let schema = merged_schema(app, asset).await?;
        let has_files = schema.fields().iter().any(|n| {
            matches!(
                n.field_type(),
                Some(fieldvault_core::schema::FieldType::Binary)
            )
        });
        Ok(Self {
            key: super::forms::project_key(app, &asset.project).await?,
            schema,
            project_id: asset.project.id,
            form_id: asset.form.id,
            asset_uid: asset.uid.clone(),
            data_url: format!("{base}/api/v2/assets/{}/data", asset.uid),
            has_files,
        })
    }

    /// The form's field tree (all versions merged).
    pub fn schema(&self) -> &FormSchema {
        &self.schema
    }

    /// The decrypted XML of a record's current version.
    pub fn xml(&self, rec: &KoboRecord) -> Result<Vec<u8>, ServiceError> {
        Ok(fieldvault_crypto::envelope::open(
            &self.key,
            &xml_aad(self.project_id, self.form_id, &rec.instance_id),
            &rec.xml_sealed,
        )?)
    }

    /// The record as flat JSON. An ODK-encrypted submission shows its metadata only.
    pub async fn flat(
        &self,
        app: &App,
        rec: &KoboRecord,
    ) -> Result<Map<String, Value>, ServiceError> {
        let mut out = self.doc(rec)?;
        self.attach(app, rec, &mut out).await?;
        Ok(out)
    }

    /// Fills in the record's `_attachments` (a store query when the form has files).
    pub async fn attach(
        &self,
        app: &App,
        rec: &KoboRecord,
        doc: &mut Map<String, Value>,
    ) -> Result<(), ServiceError> {
        doc.insert("_attachments".into(), self.attachments(app, rec).await?);
        Ok(())
    }

    /// The record as flat JSON with an empty `_attachments` standing in for the real list:
    /// reading the list is a query per record, paid only for the records a page returns (and
    /// before matching only when a query or sort reads `_attachments`).
    pub fn doc(&self, rec: &KoboRecord) -> Result<Map<String, Value>, ServiceError> {
        let mut out = Map::new();
        let mut geo = (Value::Null, Value::Null);
        if rec.encrypted {
            out.insert("meta/instanceID".into(), json!(rec.instance_id));
        } else {
            let xml = self.xml(rec)?;
            let inst = flatten::parse_instance(&xml, MAX_XML_BYTES)?;
            out = flatten::kobo_json(&inst, Some(&self.schema), Typing::Strings);
            if let Some((lat, lon)) = flatten::geolocation(&inst, Some(&self.schema)) {
                geo = (json!(lat), json!(lon));
            }
        }
        if !out.contains_key("__version__") {
            out.insert("__version__".into(), json!(rec.form_version));
        }
        let uuid = rec
            .instance_id
            .strip_prefix("uuid:")
            .unwrap_or(&rec.instance_id);
        out.insert("_id".into(), json!(rec.id));
        out.insert("_uuid".into(), json!(uuid));
        if !out.contains_key("meta/rootUuid") {
            out.insert("meta/rootUuid".into(), json!(rec.root_instance_id));
        }
        out.insert("_xform_id_string".into(), json!(self.asset_uid));
        out.insert("_attachments".into(), json!([]));
        out.insert("_status".into(), json!("submitted_via_web"));
        out.insert("_geolocation".into(), json!([geo.0, geo.1]));
        out.insert(
            "_submission_time".into(),
            json!(submission_time(rec.created_at)),
        );
        out.insert("_tags".into(), json!([]));
        out.insert("_notes".into(), json!([]));
        out.insert("_validation_status".into(), validation_json(rec));
        out.insert("_submitted_by".into(), json!(rec.submitted_by));
        Ok(out)
    }

    async fn attachments(&self, app: &App, rec: &KoboRecord) -> Result<Value, ServiceError> {
        if !self.needs_attachments(rec) {
            return Ok(json!([]));
        }
        let rows = app.store.submission_attachments(rec.version_id).await?;
        Ok(self.attachment_list(rec, &rows))
    }

    fn needs_attachments(&self, rec: &KoboRecord) -> bool {
        self.has_files || rec.encrypted
    }

    /// Fills in `_attachments` of a page of documents with one store query for the page.
    pub async fn attach_page(
        &self,
        app: &App,
        page: &mut [(Map<String, Value>, KoboRecord)],
    ) -> Result<(), ServiceError> {
        let ids: Vec<i64> = page
            .iter()
            .filter(|(_, r)| self.needs_attachments(r))
            .map(|(_, r)| r.version_id)
            .collect();
        if ids.is_empty() {
            return Ok(());
        }
        let mut by_version: HashMap<i64, Vec<SubmissionAttachmentRow>> = HashMap::new();
        for a in app.store.attachments_of_versions(&ids).await? {
            by_version.entry(a.version_id).or_default().push(a);
        }
        for (doc, rec) in page.iter_mut() {
            if let Some(rows) = by_version.get(&rec.version_id) {
                doc.insert("_attachments".into(), self.attachment_list(rec, rows));
            }
        }
        Ok(())
    }

    /// KoboToolbox's `_attachments` list from a version's attachment rows (received files only).
    fn attachment_list(&self, rec: &KoboRecord, rows: &[SubmissionAttachmentRow]) -> Value {
        let root = rec
            .root_instance_id
            .strip_prefix("uuid:")
            .unwrap_or(&rec.root_instance_id);
        let list = rows
            .iter()
            .filter(|a| a.blob_name.is_some())
            .map(|a| {
                let url = format!("{}/{}/attachments/{}/", self.data_url, rec.id, a.id);
                json!({
                    "download_url": url,
                    "download_large_url": format!("{url}large/"),
                    "download_medium_url": format!("{url}medium/"),
                    "download_small_url": format!("{url}small/"),
                    "mimetype": a.content_type.clone().unwrap_or_else(|| "application/octet-stream".into()),
                    "filename": format!("attachments/{}/{root}/{}", self.asset_uid, a.name),
                    "media_file_basename": a.name,
                    "uid": format!("att{}", a.id),
                    "is_deleted": false,
                })
            })
            .collect();
        Value::Array(list)
    }
}

/// `_submission_time`: UTC, seconds, no zone (`2022-01-07T10:38:30`).
pub fn submission_time(ms: i64) -> String {
    let t =
        std::time::UNIX_EPOCH + std::time::Duration::from_millis(u64::try_from(ms).unwrap_or(0));
    let s = humantime::format_rfc3339_seconds(t).to_string();
    s.trim_end_matches('Z').to_owned()
}

/// `_validation_status` of a record: `{}` or `{timestamp, uid, by_whom, label}`.
pub fn validation_json(rec: &KoboRecord) -> Value {
    match &rec.validation_status {
        None => json!({}),
        Some(uid) => json!({
            "timestamp": rec.validation_at.unwrap_or(0) / 1000,
            "uid": uid,
            "by_whom": rec.validation_by,
            "label": VALIDATION_STATUSES.iter().find(|(u, _)| u == uid).map(|(_, l)| *l).unwrap_or(""),
        }),
    }
}

/// Reads a form's live records in id order, batch by batch.
///
/// On the embedded store the batches come from a blocking reader (`fieldvault_store::bulk_read`)
/// rather than the pool, and the next batch is read while the caller decodes this one: through
/// sqlx, reading a batch cost more CPU than decrypting and flattening it.
pub struct Scan {
    form_id: i64,
    after: i64,
    done: bool,
    reader: ScanReader,
    next: Option<tokio::task::JoinHandle<Result<Vec<KoboRecord>, ServiceError>>>,
}

/// Whether this scan reads through a blocking reader (decided on the first batch).
enum ScanReader {
    Unknown,
    Pool,
    Blocking(Arc<std::sync::Mutex<Box<dyn PageReader>>>),
}

impl Scan {
    /// From the first record.
    pub fn new(asset: &Asset) -> Self {
        Self {
            form_id: asset.form.id,
            after: 0,
            done: false,
            reader: ScanReader::Unknown,
            next: None,
        }
    }

    /// The next batch, or `None` at the end.
    pub async fn next(&mut self, app: &App) -> Result<Option<Vec<KoboRecord>>, ServiceError> {
        if self.done {
            return Ok(None);
        }
        if matches!(self.reader, ScanReader::Unknown) {
            let store = app.store.clone();
            self.reader = match tokio::task::spawn_blocking(move || store.page_reader())
                .await
                .map_err(|e| ServiceError::Internal(format!("bulk reader: {e}")))?
            {
                Some(r) => ScanReader::Blocking(Arc::new(std::sync::Mutex::new(r?))),
                None => ScanReader::Pool,
            };
        }
        let batch = match (&self.reader, self.next.take()) {
            (_, Some(pending)) => pending
                .await
                .map_err(|e| ServiceError::Internal(format!("bulk reader: {e}")))??,
            (ScanReader::Blocking(r), None) => read_blocking(r.clone(), self.form_id, self.after)
                .await
                .map_err(|e| ServiceError::Internal(format!("bulk reader: {e}")))??,
            _ => {
                app.store
                    .kobo_records(self.form_id, self.after, BATCH)
                    .await?
            }
        };
        if (batch.len() as i64) < BATCH {
            self.done = true;
        }
        let Some(last) = batch.last() else {
            return Ok(None);
        };
        self.after = last.id;
        if let (ScanReader::Blocking(r), false) = (&self.reader, self.done) {
            self.next = Some(read_blocking(r.clone(), self.form_id, self.after));
        }
        Ok(Some(batch))
    }
}

/// Reads the batch after `after` on the blocking pool.
fn read_blocking(
    reader: Arc<std::sync::Mutex<Box<dyn PageReader>>>,
    form_id: i64,
    after: i64,
) -> tokio::task::JoinHandle<Result<Vec<KoboRecord>, ServiceError>> {
    tokio::task::spawn_blocking(move || {
        let mut r = reader
            .lock()
            .map_err(|_| ServiceError::Internal("bulk reader poisoned".into()))?;
        Ok(r.kobo_records(form_id, after, BATCH)?)
    })
}

impl Drop for Scan {
    fn drop(&mut self) {
        if let Some(pending) = self.next.take() {
            pending.abort();
        }
    }
}

/// A `/data/` request.
pub struct DataRequest {
    /// Offset.
    pub start: usize,
    /// Page size (1..=[`MAX_LIMIT`]).
    pub limit: usize,
    /// Filter.
    pub query: Query,
    /// Keys to return (plus the always-present ones).
    pub fields: Option<Vec<String>>,
    /// Order.
    pub sort: Sort,
}

/// A page of results.
pub struct DataPage {
    /// Matches in total.
    pub count: usize,
    /// This page.
    pub results: Vec<Map<String, Value>>,
}

/// Checks that the data of `asset` may be read and that it is deployed.
fn data_readable(asset: &Asset) -> Result<(), ServiceError> {
    asset.require(Verb::SubmissionRead)?;
    if !asset.deployed() {
        return Err(ServiceError::Invalid {
            code: "kobo.not_deployed",
            message: "The specified asset has not been deployed".into(),
        });
    }
    Ok(())
}

/// `GET /api/v2/assets/{uid}/data/`.
pub async fn data(
    app: &App,
    actor: &Actor,
    uid: &str,
    req: DataRequest,
    base: &str,
) -> Result<DataPage, ServiceError> {
    let asset = asset(app, actor, uid).await?;
    data_readable(&asset)?;
    let flat = Flattener::new(app, &asset, base).await?;
    let fields = req.fields.as_deref();
    let by_id = req.sort.is_by_id();
    if by_id && req.query.is_all() {
        // No filter and the stored order: count in the index and read only the page.
        let (total, _) = app.store.kobo_count(asset.form.id).await?;
        let recs = app
            .store
            .kobo_records_at(
                asset.form.id,
                i64::try_from(req.start).unwrap_or(i64::MAX),
                i64::try_from(req.limit).unwrap_or(MAX_LIMIT as i64),
            )
            .await?;
        // Decrypted and flattened on every core (the query matches everything).
        let flat = Arc::new(flat);
        let mut page = decode_matching(&flat, &Arc::new(req.query.clone()), recs).await?;
        for (_, rec) in &mut page {
            rec.xml_sealed = Vec::new();
        }
        return finish_page(
            app,
            &flat,
            page,
            false,
            fields,
            usize::try_from(total).unwrap_or(0),
        )
        .await;
    }
    let early = req.query.mentions("_attachments") || req.sort.mentions("_attachments");
    let mut scan = Scan::new(&asset);
    let mut count = 0usize;
    let mut page: Vec<(Map<String, Value>, KoboRecord)> = Vec::new();
    let flat = Arc::new(flat);
    let query = Arc::new(req.query.clone());
    while let Some(batch) = scan.next(app).await? {
        for (doc, mut rec) in scan_matching(app, &flat, &query, batch, early).await? {
            count += 1;
            if by_id && (count <= req.start || page.len() >= req.limit) {
                continue;
            }
            if !by_id && page.len() >= MAX_SORTED {
                return Err(ServiceError::Invalid {
                    code: "kobo.sort_too_large",
                    message: format!(
                        "sort orders at most {MAX_SORTED} matching submissions; narrow the query"
                    ),
                });
            }
            // Only metadata is kept for the page's attachment lists.
            rec.xml_sealed = Vec::new();
            page.push((doc, rec));
        }
    }
    if !by_id {
        page.sort_by(|a, b| req.sort.compare(&a.0, &b.0));
        page = page.into_iter().skip(req.start).take(req.limit).collect();
    }
    finish_page(app, &flat, page, early, fields, count).await
}

/// The records of a batch that match `query`, with their flat documents, in order. When the
/// filter names `_attachments` (`early`), each record's list is read from the store before
/// matching; otherwise the batch is decoded and filtered on all cores.
pub(crate) async fn scan_matching(
    app: &App,
    flat: &std::sync::Arc<Flattener>,
    query: &std::sync::Arc<Query>,
    batch: Vec<KoboRecord>,
    early: bool,
) -> Result<Vec<(Map<String, Value>, KoboRecord)>, ServiceError> {
    if !early {
        return decode_matching(flat, query, batch).await;
    }
    let mut out = Vec::new();
    for rec in batch {
        let mut doc = flat.doc(&rec)?;
        flat.attach(app, &rec, &mut doc).await?;
        if query.matches(&doc) {
            out.push((doc, rec));
        }
    }
    Ok(out)
}

/// Decrypts, flattens and filters a batch on all cores (the blocking pool), in order: the
/// scan's cost is AES-GCM and XML parsing per row, not the database read.
async fn decode_matching(
    flat: &std::sync::Arc<Flattener>,
    query: &std::sync::Arc<Query>,
    batch: Vec<KoboRecord>,
) -> Result<Vec<(Map<String, Value>, KoboRecord)>, ServiceError> {
    let workers = std::thread::available_parallelism().map_or(2, |n| n.get());
    let per = batch.len().div_ceil(workers).max(1);
    let mut jobs = Vec::with_capacity(workers);
    let mut rest = batch;
    while !rest.is_empty() {
        let tail = rest.split_off(per.min(rest.len()));
        let chunk = std::mem::replace(&mut rest, tail);
        let (flat, query) = (flat.clone(), query.clone());
        jobs.push(tokio::task::spawn_blocking(move || {
            let mut out = Vec::with_capacity(chunk.len());
            for rec in chunk {
                let doc = flat.doc(&rec)?;
                if query.matches(&doc) {
                    out.push((doc, rec));
                }
            }
            Ok::<_, ServiceError>(out)
        }));
    }
    let mut matched = Vec::new();
    for job in jobs {
        matched.extend(
            job.await
                .map_err(|e| ServiceError::Internal(format!("decoding task: {e}")))??,
        );
    }
    Ok(matched)
}

/// Attaches the page's attachment lists (unless they were read before matching) and keeps the
/// requested fields.
async fn finish_page(
    app: &App,
    flat: &Flattener,
    mut page: Vec<(Map<String, Value>, KoboRecord)>,
    attached: bool,
    fields: Option<&[String]>,
    count: usize,
) -> Result<DataPage, ServiceError> {
    if !attached {
        flat.attach_page(app, &mut page).await?;
    }
    Ok(DataPage {
        count,
        results: page
            .into_iter()
            .map(|(doc, _)| project(doc, fields))
            .collect(),
    })
}

/// Keeps `fields` plus `_id`, `_uuid`, `meta/rootUuid` and `_validation_status` (`{}` unless
/// asked for).
fn project(mut doc: Map<String, Value>, fields: Option<&[String]>) -> Map<String, Value> {
    let Some(fields) = fields else { return doc };
    let mut out = Map::new();
    for f in fields {
        if let Some(v) = doc.remove(f) {
            out.insert(f.clone(), v);
        }
    }
    for k in ["_id", "_uuid", "meta/rootUuid"] {
        if let Some(v) = doc.remove(k) {
            out.insert(k.into(), v);
        }
    }
    if !out.contains_key("_validation_status") {
        out.insert("_validation_status".into(), json!({}));
    }
    out
}

/// Resolves `{id}` of a data route: the integer `_id`, or a `_uuid` / root uuid.
async fn find_record(app: &App, asset: &Asset, id: &str) -> Result<KoboRecord, ServiceError> {
    if let Ok(n) = id.parse::<i64>() {
        return app
            .store
            .kobo_record(asset.form.id, n)
            .await?
            .ok_or(ServiceError::NotFound);
    }
    let instance = format!("uuid:{}", id.trim_start_matches("uuid:"));
    let s = app
        .store
        .submission(asset.form.id, &instance)
        .await?
        .ok_or(ServiceError::NotFound)?;
    app.store
        .kobo_record(asset.form.id, s.id)
        .await?
        .ok_or(ServiceError::NotFound)
}

/// `GET /data/{id}/`.
pub async fn record(
    app: &App,
    actor: &Actor,
    uid: &str,
    id: &str,
    base: &str,
) -> Result<Map<String, Value>, ServiceError> {
    let asset = asset(app, actor, uid).await?;
    data_readable(&asset)?;
    let rec = find_record(app, &asset, id).await?;
    Flattener::new(app, &asset, base)
        .await?
        .flat(app, &rec)
        .await
}

/// `GET /data/{id}/attachments/{att}/`: the attachment slot `att` (`att<N>` or `N`) of the
/// submission's current version, decrypted as it streams.
pub async fn attachment(
    app: &App,
    actor: &Actor,
    uid: &str,
    id: &str,
    att: &str,
) -> Result<
    (
        fieldvault_store::SubmissionAttachmentRow,
        impl futures_util::Stream<Item = Result<bytes::Bytes, StoreError>> + Send + use<>,
    ),
    ServiceError,
> {
    let asset = asset(app, actor, uid).await?;
    data_readable(&asset)?;
    let rec = find_record(app, &asset, id).await?;
    let att_id: i64 = att
        .strip_prefix("att")
        .unwrap_or(att)
        .parse()
        .map_err(|_| ServiceError::NotFound)?;
    let slot = app
        .store
        .submission_attachments(rec.version_id)
        .await?
        .into_iter()
        .find(|a| a.id == att_id && a.blob_name.is_some())
        .ok_or(ServiceError::NotFound)?;
    let blob = slot.blob_name.clone().unwrap_or_default();
    // A blob is bound to the instanceID of the version that first received it (an edit carries
    // files forward with their original binding).
    let mut owner = None;
    for v in app.store.submission_versions(rec.id).await? {
        let atts = app.store.submission_attachments(v.id).await?;
        if atts
            .iter()
            .any(|a| a.blob_name.as_deref() == Some(blob.as_str()))
        {
            owner = Some(v.instance_id);
            break;
        }
    }
    let owner = owner.ok_or(ServiceError::NotFound)?;
    let key = super::forms::project_key(app, &asset.project).await?;
    let aad = fieldvault_store::submissions::attachment_aad(
        asset.project.id,
        asset.form.id,
        &owner,
        &slot.name,
    );
    let stream = app.blobs.get_stream(&key, &blob, &aad).await?;
    Ok((slot, stream))
}

/// `GET /data/{id}/validation_status/`.
pub async fn record_validation(
    app: &App,
    actor: &Actor,
    uid: &str,
    id: &str,
) -> Result<Value, ServiceError> {
    let asset = asset(app, actor, uid).await?;
    data_readable(&asset)?;
    Ok(validation_json(&find_record(app, &asset, id).await?))
}

/// Which submissions a bulk request is about.
pub enum Selection {
    /// These `_id`s (all must be live submissions of the form).
    Ids(Vec<i64>),
    /// Those matching a filter.
    Query(Query),
    /// All of them (`"confirm": true`).
    All,
}

/// The submission ids a selection names (bounded by [`MAX_BULK`]).
pub async fn resolve(app: &App, asset: &Asset, sel: Selection) -> Result<Vec<i64>, ServiceError> {
    let too_many = || ServiceError::Invalid {
        code: "kobo.bulk_too_large",
        message: format!("A bulk request may touch at most {MAX_BULK} submissions."),
    };
    match sel {
        Selection::Ids(ids) => {
            if ids.len() > MAX_BULK {
                return Err(too_many());
            }
            for id in &ids {
                if app.store.kobo_record(asset.form.id, *id).await?.is_none() {
                    return Err(invalid_ids());
                }
            }
            Ok(ids)
        }
        Selection::Query(q) => {
            let flat = Flattener::new(app, asset, "").await?;
            let mut scan = Scan::new(asset);
            let mut ids = Vec::new();
            let early = q.mentions("_attachments");
            while let Some(batch) = scan.next(app).await? {
                for rec in &batch {
                    let mut doc = flat.doc(rec)?;
                    if early {
                        flat.attach(app, rec, &mut doc).await?;
                    }
                    if q.matches(&doc) {
                        ids.push(rec.id);
                        if ids.len() > MAX_BULK {
                            return Err(too_many());
                        }
                    }
                }
            }
            Ok(ids)
        }
        Selection::All => {
            let mut scan = Scan::new(asset);
            let mut ids = Vec::new();
            while let Some(batch) = scan.next(app).await? {
                ids.extend(batch.iter().map(|r| r.id));
                if ids.len() > MAX_BULK {
                    return Err(too_many());
                }
            }
            Ok(ids)
        }
    }
}

fn invalid_ids() -> ServiceError {
    ServiceError::Invalid {
        code: "kobo.invalid_ids",
        message: "One or more submission ids are invalid".into(),
    }
}

fn store_ids(e: StoreError) -> ServiceError {
    match e {
        StoreError::NotFound => invalid_ids(),
        other => other.into(),
    }
}

/// `DELETE /data/{id}/` and `DELETE /data/bulk/`: soft-deletes the selection; audited.
pub async fn delete(
    app: &App,
    actor: &Actor,
    who: &UserRow,
    uid: &str,
    sel: Selection,
) -> Result<u64, ServiceError> {
    let asset = asset(app, actor, uid).await?;
    asset.require(Verb::SubmissionDelete)?;
    let ids = resolve(app, &asset, sel).await?;
    let n = if ids.is_empty() {
        0
    } else {
        app.store
            .kobo_delete(asset.form.id, &ids)
            .await
            .map_err(store_ids)?
    };
    super::audit::record(
        app.store.as_ref(),
        super::audit::actor_name(actor, Some(&who.username)),
        "submission.delete",
        Some(form_target(&asset)),
        json!({ "ids": ids, "count": n, "api": "kobo-v2" }),
    )
    .await?;
    Ok(n)
}

/// `DELETE /data/{id}/` for one submission given as `_id` or uuid.
pub async fn delete_one(
    app: &App,
    actor: &Actor,
    who: &UserRow,
    uid: &str,
    id: &str,
) -> Result<(), ServiceError> {
    let asset = asset(app, actor, uid).await?;
    asset.require(Verb::SubmissionDelete)?;
    let rec = find_record(app, &asset, id).await?;
    delete(app, actor, who, uid, Selection::Ids(vec![rec.id])).await?;
    Ok(())
}

fn form_target(asset: &Asset) -> String {
    format!(
        "project:{}/form:{}",
        asset.project.id, asset.form.xml_form_id
    )
}

/// Parses a validation status uid.
pub fn parse_validation(uid: &str) -> Result<&'static str, ServiceError> {
    VALIDATION_STATUSES
        .iter()
        .find(|(u, _)| *u == uid)
        .map(|(u, _)| *u)
        .ok_or_else(|| ServiceError::Invalid {
            code: "kobo.invalid_validation_status",
            message: format!("Invalid validation status: `{uid}`"),
        })
}

/// Sets (or clears, `None`) the validation status of the selection; audited.
pub async fn set_validation(
    app: &App,
    actor: &Actor,
    who: &UserRow,
    uid: &str,
    sel: Selection,
    status: Option<&'static str>,
) -> Result<u64, ServiceError> {
    let asset = asset(app, actor, uid).await?;
    asset.require(Verb::SubmissionUpdate)?;
    let ids = resolve(app, &asset, sel).await?;
    let n = if ids.is_empty() {
        0
    } else {
        app.store
            .kobo_set_validation(
                asset.form.id,
                &ids,
                status,
                Some(&who.username),
                fieldvault_store::now_ms(),
            )
            .await
            .map_err(store_ids)?
    };
    super::audit::record(
        app.store.as_ref(),
        super::audit::actor_name(actor, Some(&who.username)),
        "submission.validation",
        Some(form_target(&asset)),
        json!({ "ids": ids, "status": status, "count": n }),
    )
    .await?;
    Ok(n)
}

/// The new status of one submission after [`set_validation`].
pub async fn validation_of(
    app: &App,
    actor: &Actor,
    uid: &str,
    id: &str,
) -> Result<(i64, Value), ServiceError> {
    let asset = asset(app, actor, uid).await?;
    let rec = find_record(app, &asset, id).await?;
    Ok((rec.id, validation_json(&rec)))
}

/// Resolves `{id}` to the integer id (for single-submission writes).
pub async fn record_id(app: &App, actor: &Actor, uid: &str, id: &str) -> Result<i64, ServiceError> {
    let asset = asset(app, actor, uid).await?;
    data_readable(&asset)?;
    Ok(find_record(app, &asset, id).await?.id)
}

/// One item of a bulk edit's answer.
pub struct EditResult {
    /// New `_uuid` (empty on failure).
    pub uuid: String,
    /// Root uuid without prefix.
    pub root_uuid: String,
    /// 201 or 400.
    pub status_code: u16,
    /// "Successful submission" or the error.
    pub message: String,
}

/// `PATCH /data/bulk/` with `data`: each submission gets a new version with the values set; the
/// old version stays as history. Keys under `__version__`, `formhub` and `meta` are ignored.
pub async fn bulk_edit(
    app: &App,
    actor: &Actor,
    who: &UserRow,
    uid: &str,
    sel: Selection,
    data: &Map<String, Value>,
) -> Result<Vec<EditResult>, ServiceError> {
    let asset = asset(app, actor, uid).await?;
    asset.require(Verb::SubmissionUpdate)?;
    if data.is_empty() || data.len() > 1000 {
        return Err(ServiceError::Invalid {
            code: "kobo.bulk_data",
            message: "`data` must set between 1 and 1000 fields".into(),
        });
    }
    let mut values = Vec::new();
    for (k, v) in data {
        if ["__version__", "formhub", "meta"]
            .iter()
            .any(|p| k.starts_with(p))
        {
            continue;
        }
        let text = match v {
            Value::String(s) => s.clone(),
            Value::Number(n) => n.to_string(),
            Value::Bool(b) => b.to_string(),
            Value::Null => String::new(),
            _ => {
                return Err(ServiceError::Invalid {
                    code: "kobo.bulk_data",
                    message: format!("`data`: {k} must be a string, number or boolean"),
                });
            }
        };
        let path: Vec<String> = k.split('/').map(str::to_owned).collect();
        values.push((path, text));
    }
    let ids = resolve(app, &asset, sel).await?;
    let flat = Flattener::new(app, &asset, "").await?;
    let key = super::forms::project_key(app, &asset.project).await?;
    let mut results = Vec::with_capacity(ids.len());
    for id in &ids {
        let Some(rec) = app.store.kobo_record(asset.form.id, *id).await? else {
            results.push(failed(String::new(), "Submission not found"));
            continue;
        };
        let root = rec
            .root_instance_id
            .strip_prefix("uuid:")
            .unwrap_or(&rec.root_instance_id)
            .to_owned();
        if rec.encrypted {
            results.push(failed(
                root,
                "Encrypted submissions cannot be edited on the server",
            ));
            continue;
        }
        match edit_one(app, &asset, &flat, &key, &rec, who, &values).await {
            Ok(new_uuid) => results.push(EditResult {
                uuid: new_uuid,
                root_uuid: root,
                status_code: 201,
                message: "Successful submission".into(),
            }),
            Err(ServiceError::Core(CoreError::Invalid { reason, .. })) => {
                results.push(failed(root, &reason))
            }
            Err(e) => return Err(e),
        }
    }
    let ok = results.iter().filter(|r| r.status_code == 201).count();
    super::audit::record(
        app.store.as_ref(),
        super::audit::actor_name(actor, Some(&who.username)),
        "submission.update",
        Some(form_target(&asset)),
        json!({
            "ids": ids,
            "fields": values.iter().map(|(p, _)| p.join("/")).collect::<Vec<_>>(),
            "successes": ok,
            "failures": results.len() - ok,
        }),
    )
    .await?;
    Ok(results)
}

fn failed(root: String, message: &str) -> EditResult {
    EditResult {
        uuid: String::new(),
        root_uuid: root,
        status_code: 400,
        message: message.into(),
    }
}

async fn edit_one(
    app: &App,
    asset: &Asset,
    flat: &Flattener,
    key: &Key256,
    rec: &KoboRecord,
    who: &UserRow,
    values: &[(Vec<String>, String)],
) -> Result<String, ServiceError> {
    let xml = flat.xml(rec)?;
    let new_uuid = uuid_v4()?;
    let new_instance = format!("uuid:{new_uuid}");
    let mut all = values.to_vec();
    all.push((
        vec!["meta".into(), "instanceID".into()],
        new_instance.clone(),
    ));
    all.push((
        vec!["meta".into(), "deprecatedID".into()],
        rec.instance_id.clone(),
    ));
    if !rec.root_instance_id.is_empty() {
        all.push((
            vec!["meta".into(), "rootUuid".into()],
            rec.root_instance_id.clone(),
        ));
    }
    let new_xml = fieldvault_core::xml_edit::set_leaves(&xml, MAX_XML_BYTES, &all)?;
    let meta = fieldvault_core::parse_submission(&new_xml, MAX_XML_BYTES)?;
    let expected = app
        .store
        .submission_attachments(rec.version_id)
        .await?
        .into_iter()
        .map(|a| a.name)
        .collect();
    let sealed = fieldvault_crypto::envelope::seal(
        key,
        &xml_aad(asset.project.id, asset.form.id, &new_instance),
        &new_xml,
    )?;
    let new = NewSubmission {
        project_id: asset.project.id,
        form_id: asset.form.id,
        form_def_id: rec.form_def_id,
        form_version: rec.form_version.clone(),
        instance_id: new_instance,
        deprecated_id: Some(rec.instance_id.clone()),
        instance_name: meta.instance_name,
        xml_sealed: sealed,
        xml_sha256: sha2::Sha256::digest(&new_xml).to_vec(),
        xml_size: new_xml.len() as i64,
        encrypted: false,
        submitter_user_id: Some(who.id),
        submitter_app_user_id: None,
        device_id: None,
        expected_attachments: expected,
        attachments: Vec::new(),
        // Edited values are not checked against the form: the next CSV export looks.
        fits_form: None,
    };
    let outcome = app.store.ingest(std::slice::from_ref(&new)).await?;
    match outcome.outcomes.first() {
        Some(fieldvault_store::IngestOutcome::Edited { .. }) => {
            app.hot.clear();
            Ok(new_uuid)
        }
        other => Err(ServiceError::Core(CoreError::invalid(
            "submission",
            format!("the edit was not stored ({other:?})"),
        ))),
    }
}

/// A random (version 4) UUID, lowercase with hyphens.
pub fn uuid_v4() -> Result<String, ServiceError> {
    let mut b: [u8; 16] = random::bytes()?;
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let h = random::to_hex(&b);
    Ok(format!(
        "{}-{}-{}-{}-{}",
        &h[0..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    ))
}

/// `GET /token/`: issues a KoboToolbox-style key (40 hex characters) for the caller.
///
/// Keys are stored hashed, so the same key cannot be shown twice: each call issues a new API
/// token named `kobo-api` with the scopes `data:read data:write`, and only the newest
/// [`KOBO_TOKENS_KEPT`] such tokens stay valid. A credential that does not itself hold both
/// scopes (a read-only token) cannot obtain one. Audited.
pub async fn issue_token(
    app: &App,
    actor: &Actor,
    who: &UserRow,
) -> Result<SecretString, ServiceError> {
    let wanted = Scopes::parse(["data:read", "data:write"])?;
    match actor {
        Actor::User { scopes, .. } if scopes.contains(wanted) => {}
        Actor::User { .. } => {
            return Err(ServiceError::Core(CoreError::Denied {
                verb: "token.create",
            }));
        }
        _ => return Err(ServiceError::Unauthenticated),
    }
    let key = random::hex(20)?;
    let row: ApiTokenRow = app
        .store
        .kobo_issue_token(
            who.id,
            KOBO_TOKEN_NAME,
            &mac::sha256(key.as_bytes()),
            &wanted.names().join(" "),
            KOBO_TOKENS_KEPT,
        )
        .await?;
    super::audit::record(
        app.store.as_ref(),
        super::audit::actor_name(actor, Some(&who.username)),
        "token.create",
        Some(format!("token:{}", row.id)),
        json!({ "name": row.name, "scopes": row.scopes, "api": "kobo-v2" }),
    )
    .await?;
    Ok(SecretString::new(key))
}

/// `DELETE /token/`: revokes the caller's `kobo-api` tokens; `NotFound` when there are none.
pub async fn revoke_tokens(app: &App, actor: &Actor, who: &UserRow) -> Result<(), ServiceError> {
    if !matches!(actor, Actor::User { .. }) {
        return Err(ServiceError::Unauthenticated);
    }
    let mut n = 0;
    for t in app.store.api_tokens(who.id).await? {
        if t.name == KOBO_TOKEN_NAME && t.revoked_at.is_none() {
            app.store.revoke_api_token(who.id, t.id).await?;
            n += 1;
        }
    }
    if n == 0 {
        return Err(ServiceError::NotFound);
    }
    super::audit::record(
        app.store.as_ref(),
        super::audit::actor_name(actor, Some(&who.username)),
        "token.revoke",
        None,
        json!({ "name": KOBO_TOKEN_NAME, "count": n }),
    )
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uids_have_kobo_shape_and_are_stable() {
        let a = asset_uid(42);
        assert_eq!(a, asset_uid(42));
        assert_ne!(a, asset_uid(43));
        assert_eq!(a.len(), 22);
        assert!(a.starts_with('a'));
        assert!(a[1..].bytes().all(|b| UID_ALPHABET.contains(&b)));
        let e = new_uid(b'e').unwrap_or_default();
        assert!(e.starts_with('e') && e.len() == 22);
        assert_ne!(e, new_uid(b'e').unwrap_or_default());
    }

    #[test]
    fn submission_time_has_no_zone_or_fraction() {
        assert_eq!(submission_time(1_641_551_910_686), "2022-01-07T10:38:30");
    }

    #[test]
    fn uuids_are_version_4() {
        let u = uuid_v4().unwrap_or_default();
        assert_eq!(u.len(), 36);
        assert_eq!(&u[14..15], "4");
    }
}
