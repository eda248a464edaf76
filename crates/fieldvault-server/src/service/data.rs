//! Getting data out: the form's schema, a streaming decrypt-and-flatten pipeline over a form's
//! submissions, and the curation verbs (review state, delete to the trash, restore, purge).
//!
//! The pipeline reads keyset pages from the store, filters them on their system fields (no
//! decryption needed), then opens and parses the sealed XML of the rows kept on the blocking
//! thread pool, one chunk per core, and hands results on in order through a bounded channel. A
//! consumer therefore holds at most a couple of pages whatever the size of the form, and every
//! core works on decryption. ODK-encrypted submissions are never readable here: they pass through
//! as metadata only (their instance is `None`).

use std::sync::Arc;
use std::time::Duration;

use fieldvault_core::flatten::{self, Instance, Typing};
use fieldvault_core::odata::{Filter, Row};
use fieldvault_core::schema::{FormSchema, parse_schema};
use fieldvault_core::{Actor, ProjectId, Resource, Verb, authorize};
use fieldvault_crypto::Key256;
use fieldvault_store::submissions::xml_aad;
use fieldvault_store::{
    Cursor, Deleted, FormRow, PageQuery, ProjectRow, Store, StoreError, SubmissionRecord,
};
use serde_json::{Map, Value, json};
use tokio::sync::mpsc;

use super::ServiceError;
use super::context::project_actor;
use crate::App;

/// Rows read from the store per round trip.
pub const PAGE: i64 = 256;
/// Metadata rows read per round trip while passing over an offset.
const SKIP_PAGE: i64 = 2048;
/// Largest page of the JSON submission list.
pub const MAX_LIST: i64 = 1000;
/// Review states a submission can be given (`received` is the initial one).
pub const REVIEW_STATES: &[&str] = &["received", "hasIssues", "edited", "approved", "rejected"];
/// Largest submission XML that is parsed for flattening (the intake limit).
pub(super) const MAX_XML: usize = super::intake::MAX_XML_BYTES;

/// A form opened for reading its data: project, form, data key and field tree.
#[derive(Clone)]
pub struct FormData {
    /// The project.
    pub project: ProjectRow,
    /// The form.
    pub form: FormRow,
    /// The field tree of the current definition, with fields of earlier versions appended;
    /// `None` when the definition cannot be read (then trees are inferred from the data).
    pub schema: Option<Arc<FormSchema>>,
    /// Every published version parsed, and the merged tree's CSV layout covers each
    /// ([`flatten::CsvLayout::covers`]): then submissions that fit their own version add no column.
    pub versions_covered: bool,
    key: Arc<Key256>,
}

/// Opens a form for `verb` (a submission verb). A caller who may not even read the form gets
/// `NotFound`, so form ids do not leak.
pub async fn open_form(
    app: &App,
    actor: &Actor,
    project: ProjectId,
    xml_form_id: &str,
    verb: Verb,
) -> Result<FormData, ServiceError> {
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
    authorize(&actor, verb, resource)?;
    let key = Arc::new(super::forms::project_key(app, &p).await?);
    let (schema, versions_covered) = schema_of(app, &form).await?;
    Ok(FormData {
        project: p,
        form,
        schema: schema.map(Arc::new),
        versions_covered,
        key,
    })
}

/// The current definition's tree with every earlier published version's fields merged in, and
/// whether that tree's CSV layout covers every version (false when one cannot be read).
async fn schema_of(app: &App, form: &FormRow) -> Result<(Option<FormSchema>, bool), ServiceError> {
    let mut defs = app.store.published_defs(form.id).await?;
    // Newest first, so the current version decides the order of the fields it has.
    defs.sort_by_key(|d| std::cmp::Reverse(d.id));
    let mut schema: Option<FormSchema> = None;
    let mut versions = Vec::with_capacity(defs.len());
    let mut all_read = true;
    for d in &defs {
        let Ok(s) = parse_schema(&d.xml, super::forms::MAX_FORM_BYTES) else {
            all_read = false;
            continue;
        };
        match schema.as_mut() {
            Some(current) => current.merge(&s),
            None => schema = Some(s.clone()),
        }
        versions.push(s);
    }
    let covered = all_read
        && schema.as_ref().is_some_and(|merged| {
            let layout = flatten::CsvLayout::new(Some(merged));
            versions.iter().all(|v| layout.covers(v))
        });
    Ok((schema, covered))
}

/// What to read.
#[derive(Clone)]
pub struct Selection {
    /// Deleted rows wanted.
    pub deleted: Deleted,
    /// A `$filter` on system fields.
    pub filter: Option<Arc<Filter>>,
    /// Start after this row.
    pub after: Cursor,
    /// Rows to skip (after filtering).
    pub skip: u64,
    /// Most rows to produce.
    pub take: Option<u64>,
}

impl Default for Selection {
    fn default() -> Self {
        Self {
            deleted: Deleted::Exclude,
            filter: None,
            after: Cursor::START,
            skip: 0,
            take: None,
        }
    }
}

/// Maps one decrypted submission (`None`: ODK-encrypted) to what the consumer wants; runs on
/// the blocking pool.
pub type MapFn<T> =
    Arc<dyn Fn(&SubmissionRecord, Option<&Doc>) -> Result<T, ServiceError> + Send + Sync>;

/// A decrypted submission as a map receives it: the plaintext, parsed into a tree only when the
/// map asks (a CSV export's main table is written from the plaintext without one).
pub struct Doc {
    xml: Vec<u8>,
    tree: std::cell::OnceCell<Instance>,
}

impl Doc {
    /// The submission's XML.
    pub fn xml(&self) -> &[u8] {
        &self.xml
    }

    /// The parsed submission, parsed on the first call.
    pub fn instance(&self) -> Result<&Instance, ServiceError> {
        if let Some(t) = self.tree.get() {
            return Ok(t);
        }
        let parsed = flatten::parse_instance(&self.xml, MAX_XML)?;
        Ok(self.tree.get_or_init(|| parsed))
    }
}

/// One produced item: the record (its sealed XML dropped) and the mapped value.
pub type Item<T> = Result<(SubmissionRecord, T), ServiceError>;

/// Whether a record passes a filter.
pub fn passes(filter: Option<&Filter>, r: &SubmissionRecord, now: i64) -> bool {
    let Some(f) = filter else { return true };
    let review = (r.review_state != "received").then_some(r.review_state.as_str());
    f.matches(
        &Row {
            id: &r.instance_id,
            submission_date: r.created_at,
            updated_at: r.updated_at,
            submitter_id: r.submitter_user_id.or(r.submitter_app_user_id),
            review_state: review,
            deleted_at: r.deleted_at,
        },
        now,
    )
}

/// Starts the pipeline; results arrive in order on the returned channel, which closes at the end.
/// Dropping the receiver stops the work at the next page.
pub fn stream<T: Send + 'static>(
    app: &App,
    fd: &FormData,
    sel: Selection,
    map: MapFn<T>,
) -> mpsc::Receiver<Item<T>> {
    let (tx, rx) = mpsc::channel::<Item<T>>(PAGE as usize * 2);
    let src = Source {
        store: app.store.clone(),
        key: fd.key.clone(),
        project_id: fd.project.id,
        form_id: fd.form.id,
    };
    tokio::spawn(async move {
        // The embedded store reads on blocking threads, every core reading and decrypting
        // chunks of its own; other backends page through the pool below.
        // The probe's reader goes straight back to the store's idle readers.
        let probe = src.store.clone();
        match tokio::task::spawn_blocking(move || probe.page_reader().map(|r| r.map(drop))).await {
            Ok(Some(Ok(()))) => super::data_scan::run(src, sel, map, tx).await,
            Ok(Some(Err(e))) => {
                let _ = tx.send(Err(e.into())).await;
            }
            Ok(None) => pooled(src, sel, map, tx).await,
            Err(e) => {
                let _ = tx
                    .send(Err(ServiceError::Internal(format!("bulk reader: {e}"))))
                    .await;
            }
        }
    });
    rx
}

/// Where a pipeline reads: the store, and the form's data key and ids.
pub(super) struct Source {
    pub(super) store: Arc<dyn Store>,
    pub(super) key: Arc<Key256>,
    pub(super) project_id: i64,
    pub(super) form_id: i64,
}

/// The pipeline over the pool: pages read through the store, decrypted on the blocking pool.
async fn pooled<T: Send + 'static>(
    src: Source,
    sel: Selection,
    map: MapFn<T>,
    tx: mpsc::Sender<Item<T>>,
) {
    let Source {
        store,
        key,
        project_id,
        form_id,
    } = src;
    let workers = std::thread::available_parallelism().map_or(2, |n| n.get());
    let now = fieldvault_store::now_ms();
    let mut after = sel.after;
    let mut skip = sel.skip;
    let mut left = sel.take.unwrap_or(u64::MAX);
    // Rows before the offset are passed over without reading their sealed XML: without a
    // filter in the live-rows index alone, with one on their metadata.
    if skip > 0 && sel.filter.is_none() && sel.deleted == Deleted::Exclude {
        match store
            .live_cursor_after(form_id, after, i64::try_from(skip).unwrap_or(i64::MAX))
            .await
        {
            Ok(Some(c)) => (after, skip) = (c, 0),
            Ok(None) => return,
            Err(e) => {
                let _ = tx.send(Err(e.into())).await;
                return;
            }
        }
    }
    while skip > 0 && left > 0 {
        let page = match store
            .submission_page(&PageQuery {
                form_id,
                deleted: sel.deleted,
                after,
                limit: SKIP_PAGE,
                with_xml: false,
            })
            .await
        {
            Ok(p) => p,
            Err(e) => {
                let _ = tx.send(Err(e.into())).await;
                return;
            }
        };
        if page.is_empty() {
            return;
        }
        for r in &page {
            if skip == 0 {
                break;
            }
            after = r.cursor();
            if passes(sel.filter.as_deref(), r, now) {
                skip -= 1;
            }
        }
    }
    // The next page is read while this one is decrypted, so the store and the decrypting
    // cores work at the same time.
    let fetch = |after: Cursor| {
        let store = store.clone();
        let q = PageQuery {
            form_id,
            deleted: sel.deleted,
            after,
            limit: PAGE,
            with_xml: true,
        };
        tokio::spawn(async move { store.submission_page(&q).await })
    };
    let mut next = (left > 0).then(|| fetch(after));
    while let Some(pending) = next.take() {
        let page = match pending.await {
            Ok(Ok(p)) => p,
            Ok(Err(e)) => {
                let _ = tx.send(Err(e.into())).await;
                return;
            }
            Err(e) => {
                let _ = tx
                    .send(Err(ServiceError::Internal(format!("page reader: {e}"))))
                    .await;
                return;
            }
        };
        let Some(last) = page.last() else { break };
        if page.len() as i64 == PAGE {
            next = Some(fetch(last.cursor()));
        }
        let mut kept = Vec::new();
        for r in page {
            if left == 0 {
                break;
            }
            // The offset was passed over above, so every passing row is produced.
            if !passes(sel.filter.as_deref(), &r, now) {
                continue;
            }
            left -= 1;
            kept.push(r);
        }
        if left == 0
            && let Some(unneeded) = next.take()
        {
            unneeded.abort();
        }
        let chunk = kept.len().div_ceil(workers).max(1);
        let mut jobs = Vec::new();
        let mut rest = kept;
        while !rest.is_empty() {
            let tail = rest.split_off(chunk.min(rest.len()));
            let part = std::mem::replace(&mut rest, tail);
            let key = key.clone();
            let map = map.clone();
            jobs.push(tokio::task::spawn_blocking(move || {
                part.into_iter()
                    .map(|r| decode(&key, project_id, form_id, r, map.as_ref()))
                    .collect::<Vec<_>>()
            }));
        }
        for job in jobs {
            let results = match job.await {
                Ok(r) => r,
                Err(e) => vec![Err(ServiceError::Internal(format!("decrypt worker: {e}")))],
            };
            for item in results {
                if tx.send(item).await.is_err() {
                    return;
                }
            }
        }
    }
}

type MapRef<'a, T> =
    &'a (dyn Fn(&SubmissionRecord, Option<&Doc>) -> Result<T, ServiceError> + Send + Sync);

pub(super) fn decode<T>(
    key: &Key256,
    project_id: i64,
    form_id: i64,
    mut r: SubmissionRecord,
    map: MapRef<'_, T>,
) -> Item<T> {
    let sealed = std::mem::take(&mut r.xml_sealed);
    if r.encrypted {
        let v = map(&r, None)?;
        return Ok((r, v));
    }
    let xml = fieldvault_crypto::envelope::open(
        key,
        &xml_aad(project_id, form_id, &r.current_instance_id),
        &sealed,
    )?;
    let doc = Doc {
        xml,
        tree: std::cell::OnceCell::new(),
    };
    let v = map(&r, Some(&doc))?;
    Ok((r, v))
}

/// Counts the rows a selection matches (metadata only, nothing decrypted).
pub async fn count(app: &App, fd: &FormData, sel: &Selection) -> Result<u64, ServiceError> {
    if sel.filter.is_none() && sel.deleted == Deleted::Exclude {
        // The common case (`$count` or a plain list): one COUNT over the live-rows index.
        let (n, _) = app.store.kobo_count(fd.form.id).await?;
        return Ok(u64::try_from(n).unwrap_or(0));
    }
    let now = fieldvault_store::now_ms();
    let mut after = Cursor::START;
    let mut n = 0u64;
    loop {
        let page = app
            .store
            .submission_page(&PageQuery {
                form_id: fd.form.id,
                deleted: sel.deleted,
                after,
                limit: PAGE * 4,
                with_xml: false,
            })
            .await?;
        let Some(last) = page.last() else { break };
        after = last.cursor();
        n += page
            .iter()
            .filter(|r| passes(sel.filter.as_deref(), r, now))
            .count() as u64;
    }
    Ok(n)
}

/// A submission with its flattened answers (`None` for ODK-encrypted submissions).
pub struct DataView {
    /// Metadata.
    pub record: SubmissionRecord,
    /// KoboToolbox-style flattened, typed answers plus `_geolocation`.
    pub data: Option<Map<String, Value>>,
}

fn flattened(schema: Option<Arc<FormSchema>>) -> MapFn<Option<Map<String, Value>>> {
    Arc::new(move |_r, doc| {
        let Some(i) = doc.map(Doc::instance).transpose()? else {
            return Ok(None);
        };
        let mut m = flatten::kobo_json(i, schema.as_deref(), Typing::FromForm);
        let geo = flatten::geolocation(i, schema.as_deref());
        m.insert(
            "_geolocation".into(),
            match geo {
                Some((lat, lon)) => json!([lat, lon]),
                None => json!([null, null]),
            },
        );
        Ok(Some(m))
    })
}

/// A page of a form's submissions with their data, newest first.
pub async fn list(
    app: &App,
    actor: &Actor,
    project: ProjectId,
    xml_form_id: &str,
    deleted: bool,
    limit: Option<i64>,
    offset: Option<i64>,
) -> Result<Vec<DataView>, ServiceError> {
    let fd = open_form(app, actor, project, xml_form_id, Verb::SubmissionRead).await?;
    let take = limit.unwrap_or(MAX_LIST).clamp(0, MAX_LIST);
    let sel = Selection {
        deleted: if deleted {
            Deleted::Only
        } else {
            Deleted::Exclude
        },
        skip: u64::try_from(offset.unwrap_or(0).max(0)).unwrap_or(0),
        take: Some(u64::try_from(take).unwrap_or(0)),
        ..Selection::default()
    };
    let mut rx = stream(app, &fd, sel, flattened(fd.schema.clone()));
    let mut out = Vec::new();
    while let Some(item) = rx.recv().await {
        let (record, data) = item?;
        out.push(DataView { record, data });
    }
    Ok(out)
}

/// One submission with its data (deleted ones only when `deleted`).
pub async fn get(
    app: &App,
    actor: &Actor,
    project: ProjectId,
    xml_form_id: &str,
    instance_id: &str,
) -> Result<DataView, ServiceError> {
    let fd = open_form(app, actor, project, xml_form_id, Verb::SubmissionRead).await?;
    let r = app
        .store
        .submission_record(fd.form.id, instance_id, true)
        .await?
        .filter(|r| r.deleted_at.is_none())
        .ok_or(ServiceError::NotFound)?;
    let map = flattened(fd.schema.clone());
    let key = fd.key.clone();
    let (pid, fid) = (fd.project.id, fd.form.id);
    let (record, data) =
        tokio::task::spawn_blocking(move || decode(&key, pid, fid, r, map.as_ref()))
            .await
            .map_err(|e| ServiceError::Internal(format!("decrypt worker: {e}")))??;
    Ok(DataView { record, data })
}

async fn record_for(
    app: &App,
    fd: &FormData,
    instance_id: &str,
) -> Result<SubmissionRecord, ServiceError> {
    app.store
        .submission_record(fd.form.id, instance_id, false)
        .await?
        .ok_or(ServiceError::NotFound)
}

/// Sets a submission's review state (audited as `submission.update`).
pub async fn review(
    app: &App,
    actor: &Actor,
    project: ProjectId,
    xml_form_id: &str,
    instance_id: &str,
    state: &str,
) -> Result<SubmissionRecord, ServiceError> {
    let fd = open_form(app, actor, project, xml_form_id, Verb::SubmissionUpdate).await?;
    if !REVIEW_STATES.contains(&state) {
        return Err(ServiceError::Invalid {
            code: "submission.review_state",
            message: format!(
                "\"{state}\" is not a review state; use one of {}",
                REVIEW_STATES.join(", ")
            ),
        });
    }
    let r = record_for(app, &fd, instance_id).await?;
    if r.deleted_at.is_some() {
        return Err(ServiceError::NotFound);
    }
    app.store.set_review_state(r.id, state).await?;
    audit(
        app,
        actor,
        &fd,
        "submission.update",
        &r,
        json!({"reviewState": state}),
    )
    .await?;
    record_for(app, &fd, instance_id).await
}

/// Moves a submission to the trash (audited); it is purged after `data.purge_after_days`.
pub async fn delete(
    app: &App,
    actor: &Actor,
    project: ProjectId,
    xml_form_id: &str,
    instance_id: &str,
) -> Result<(), ServiceError> {
    let fd = open_form(app, actor, project, xml_form_id, Verb::SubmissionDelete).await?;
    let r = record_for(app, &fd, instance_id).await?;
    app.store
        .set_submission_deleted(r.id, Some(fieldvault_store::now_ms()))
        .await
        .map_err(not_found)?;
    audit(app, actor, &fd, "submission.delete", &r, json!({})).await
}

/// Takes a submission out of the trash (audited).
pub async fn restore(
    app: &App,
    actor: &Actor,
    project: ProjectId,
    xml_form_id: &str,
    instance_id: &str,
) -> Result<(), ServiceError> {
    let fd = open_form(app, actor, project, xml_form_id, Verb::SubmissionDelete).await?;
    let r = record_for(app, &fd, instance_id).await?;
    app.store
        .set_submission_deleted(r.id, None)
        .await
        .map_err(not_found)?;
    audit(app, actor, &fd, "submission.restore", &r, json!({})).await
}

fn not_found(e: StoreError) -> ServiceError {
    match e {
        StoreError::NotFound => ServiceError::NotFound,
        e => e.into(),
    }
}

async fn audit(
    app: &App,
    actor: &Actor,
    fd: &FormData,
    action: &str,
    r: &SubmissionRecord,
    mut details: Value,
) -> Result<(), ServiceError> {
    if let Some(m) = details.as_object_mut() {
        m.insert("projectId".into(), json!(fd.project.id));
        m.insert("xmlFormId".into(), json!(fd.form.xml_form_id));
        m.insert("instanceId".into(), json!(r.instance_id));
        m.insert("submissionId".into(), json!(r.id));
    }
    super::audit::record(
        app.store.as_ref(),
        super::audit::actor_name(actor, None),
        action,
        Some(format!(
            "project:{}/form:{}/submission:{}",
            fd.project.id, fd.form.xml_form_id, r.instance_id
        )),
        details,
    )
    .await
}

/// Submissions purged per transaction.
const PURGE_BATCH: i64 = 100;

/// Destroys submissions deleted more than `purge_after_days` ago; returns how many. Each one is
/// audited as `submission.purge` by `system`.
pub async fn purge(app: &App) -> Result<u64, ServiceError> {
    let days = i64::try_from(app.config.purge_after_days).unwrap_or(i64::MAX / 86_400_000);
    let before = fieldvault_store::now_ms().saturating_sub(days.saturating_mul(86_400_000));
    let mut total = 0u64;
    loop {
        let purged = app
            .store
            .purge_deleted_submissions(before, PURGE_BATCH)
            .await?;
        for blob in &purged.blobs {
            app.blobs.delete(blob).await?;
        }
        for (form_id, instance_id) in &purged.submissions {
            super::audit::record(
                app.store.as_ref(),
                "system".into(),
                "submission.purge",
                Some(format!("form#{form_id}/submission:{instance_id}")),
                json!({"formId": form_id, "instanceId": instance_id}),
            )
            .await?;
        }
        let n = purged.submissions.len();
        total += n as u64;
        if n < PURGE_BATCH as usize {
            return Ok(total);
        }
    }
}

/// Runs [`purge`] every `data.purge_interval_secs` for as long as the runtime lives.
pub fn spawn_purge(app: App) {
    tokio::spawn(async move {
        let every = Duration::from_secs(app.config.purge_interval_secs.max(1));
        loop {
            tokio::time::sleep(every).await;
            match purge(&app).await {
                Ok(0) => {}
                Ok(n) => tracing::info!(purged = n, "purged deleted submissions"),
                Err(e) => tracing::warn!(error = %e, "purging deleted submissions failed"),
            }
        }
    });
}
