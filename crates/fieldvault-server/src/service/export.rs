//! `submissions.csv` and `submissions.csv.zip` (Central's layout, specs/central-api.md §6),
//! streamed in constant memory.
//!
//! The columns must be known before the first line, and a field the form does not declare (an
//! older version's) must not be lost, so a first pass over the decrypted submissions only
//! collects column names. Then each table gets its own pass, because a ZIP stream writes one file
//! at a time: the main table, each repeat table, and finally the media files, each decrypted as
//! it streams. Every pass goes through the decrypt pipeline of `data.rs`; nothing holds more than
//! a few pages of rows. Export requests are audited (`form.submission.export`) before the first
//! byte is sent.

use std::collections::HashSet;
use std::io::Write;
use std::sync::Arc;

use bytes::Bytes;
use fieldvault_core::flatten::{
    CsvLayout, CsvOptions, RowMeta, RowScratch, csv_line, parse_instance,
};
use fieldvault_core::odata::Filter;
use fieldvault_core::{Actor, ProjectId, Verb};
use fieldvault_store::submissions::attachment_aad;
use fieldvault_store::{Cursor, PageQuery, SubmissionRecord};
use futures_util::StreamExt as _;
use serde_json::json;
use tokio::sync::mpsc;

use super::ServiceError;
use super::data::{self, FormData, Selection};
use crate::App;
use crate::api::json::iso;

/// Bytes gathered before a chunk is handed to the response.
const CHUNK: usize = 64 * 1024;

/// What to export.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// The main table only, as CSV.
    Csv,
    /// A ZIP of every table, plus media files when `media`.
    Zip {
        /// Include `media/<file>` entries.
        media: bool,
    },
}

/// A started export: the body arrives on `body`.
pub struct Export {
    /// Suggested file name.
    pub file_name: String,
    /// `text/csv` or `application/zip`.
    pub content_type: &'static str,
    /// The bytes; an `Err` item means the export failed part-way (the response is cut short).
    pub body: mpsc::Receiver<Result<Bytes, std::io::Error>>,
}

/// Starts an export of a form's (non-deleted) submissions matching `filter`.
pub async fn start(
    app: &App,
    actor: &Actor,
    project: ProjectId,
    xml_form_id: &str,
    format: Format,
    options: CsvOptions,
    filter: Option<Filter>,
) -> Result<Export, ServiceError> {
    let fd = data::open_form(app, actor, project, xml_form_id, Verb::SubmissionRead).await?;
    super::audit::record(
        app.store.as_ref(),
        super::audit::actor_name(actor, None),
        "form.submission.export",
        Some(format!(
            "project:{}/form:{}",
            fd.project.id, fd.form.xml_form_id
        )),
        json!({
            "projectId": fd.project.id,
            "xmlFormId": fd.form.xml_form_id,
            "format": match format { Format::Csv => "csv", Format::Zip { .. } => "csv.zip" },
            "filtered": filter.is_some(),
        }),
    )
    .await?;
    let sel = Selection {
        filter: filter.map(Arc::new),
        ..Selection::default()
    };
    let (tx, rx) = mpsc::channel(8);
    let id = fd.form.xml_form_id.clone();
    let app = app.clone();
    let (file_name, content_type) = match format {
        Format::Csv => (format!("{id}.csv"), "text/csv; charset=utf-8"),
        Format::Zip { .. } => (format!("{id}.zip"), "application/zip"),
    };
    tokio::spawn(async move {
        let result = match format {
            Format::Csv => csv(&app, &fd, &sel, options, tx.clone()).await,
            Format::Zip { media } => zip(&app, &fd, &sel, media, options, tx.clone()).await,
        };
        if let Err(e) = result {
            tracing::warn!(error = %e, form = %fd.form.xml_form_id, "export failed part-way");
            let _ = tx.send(Err(std::io::Error::other("export failed"))).await;
        }
    });
    Ok(Export {
        file_name,
        content_type,
        body: rx,
    })
}

/// The row metadata Central puts in the main table.
fn row_meta(r: &SubmissionRecord) -> RowMeta {
    RowMeta {
        submission_date: iso(r.created_at),
        instance_id: r.current_instance_id.clone(),
        submitter_id: r
            .submitter_user_id
            .or(r.submitter_app_user_id)
            .map(|n| n.to_string())
            .unwrap_or_default(),
        submitter_name: r.submitter_name.clone().unwrap_or_default(),
        attachments_present: u64::try_from(r.attachments_present).unwrap_or(0),
        attachments_expected: u64::try_from(r.attachments_expected).unwrap_or(0),
        status: if r.encrypted {
            "notDecrypted".into()
        } else {
            String::new()
        },
        review_state: if r.review_state == "received" {
            String::new()
        } else {
            r.review_state.clone()
        },
        device_id: r.device_id.clone().unwrap_or_default(),
        edits: u64::try_from(r.edits).unwrap_or(0),
        form_version: r.form_version.clone(),
    }
}

/// First pass: the layout with every column the data needs.
async fn layout(
    app: &App,
    fd: &FormData,
    sel: &Selection,
    options: CsvOptions,
) -> Result<CsvLayout, ServiceError> {
    let mut layout = CsvLayout::with_options(fd.schema.as_deref(), options);
    if fits_as_declared(app, fd, options).await? {
        return Ok(layout);
    }
    // The decrypting cores hand on only the submissions that change the form's own layout (the
    // few with fields of no published version), not a copy of every one.
    let base = Arc::new(layout.clone());
    let mut rx = data::stream(
        app,
        fd,
        sel.clone(),
        Arc::new(move |_r, doc: Option<&data::Doc>| {
            let Some(inst) = doc.map(data::Doc::instance).transpose()? else {
                return Ok(None);
            };
            Ok(base.would_grow(inst).then(|| inst.clone()))
        }),
    );
    while let Some(item) = rx.recv().await {
        if let (_, Some(inst)) = item? {
            layout.discover(&inst)?;
        }
    }
    Ok(layout)
}

/// Whether no submission can add to `layout`: every current version was found at intake to fit
/// its own definition, and every published definition is covered by the form's layout (worked
/// out once in [`data::open_form`]); select-multiples split from the answers always need the
/// pass. Then the first pass, which would decrypt every submission only to find nothing, is
/// skipped; it halves the time of an export.
async fn fits_as_declared(
    app: &App,
    fd: &FormData,
    options: CsvOptions,
) -> Result<bool, ServiceError> {
    Ok(fd.versions_covered
        && !options.split_select_multiples
        && !app.store.form_has_unfitted(fd.form.id).await?)
}

thread_local! {
    /// The streaming row writer's buffers, one set per decrypting thread.
    static SCRATCH: std::cell::RefCell<RowScratch> = std::cell::RefCell::default();
}

/// One table's pass: its rows, CSV-encoded, handed to `out` in chunks.
///
/// The decrypting cores encode the rows, each submission's into its own bytes, so the one task
/// that gathers them only appends. The main table is written from the plaintext without a
/// tree (`MainRowWriter`) unless the layout needs the general path.
async fn table_pass<F, Fut>(
    app: &App,
    fd: &FormData,
    sel: &Selection,
    layout: &Arc<CsvLayout>,
    table: usize,
    header: &[String],
    mut out: F,
) -> Result<(), ServiceError>
where
    F: FnMut(Vec<u8>) -> Fut,
    Fut: std::future::Future<Output = Result<(), ServiceError>>,
{
    let l = layout.clone();
    let root = fd
        .schema
        .as_ref()
        .map_or_else(|| "data".to_owned(), |s| s.root.clone());
    let empty = Arc::new(parse_instance(format!("<{root}/>").as_bytes(), 1024)?);
    let streaming = if table == 0 {
        layout.main_row_writer()
    } else {
        None
    };
    let map: data::MapFn<Vec<u8>> = Arc::new(move |r, doc| {
        let meta = row_meta(r);
        let mut bytes = Vec::with_capacity(doc.map_or(0, |d| d.xml().len()) + 512);
        if let (Some(w), Some(doc)) = (&streaming, doc) {
            SCRATCH.with_borrow_mut(|s| {
                let written = w.write_row(doc.xml(), data::MAX_XML, &meta, s, &mut bytes);
                s.shrink();
                written
            })?;
            return Ok(bytes);
        }
        let inst = match doc {
            Some(d) => d.instance()?,
            None => &empty,
        };
        l.rows(inst, &meta, Some(table), &mut |_, row| {
            csv_line(&mut bytes, &row);
            Ok(())
        })?;
        Ok(bytes)
    });
    let mut buf = Vec::with_capacity(CHUNK * 2);
    csv_line(&mut buf, header);
    let mut rx = data::stream(app, fd, sel.clone(), map);
    while let Some(item) = rx.recv().await {
        let (_, rows) = item?;
        buf.extend_from_slice(&rows);
        if buf.len() >= CHUNK {
            out(std::mem::replace(&mut buf, Vec::with_capacity(CHUNK * 2))).await?;
        }
    }
    if !buf.is_empty() {
        out(buf).await?;
    }
    Ok(())
}

fn io(e: std::io::Error) -> ServiceError {
    ServiceError::Internal(format!("export: {e}"))
}

async fn csv(
    app: &App,
    fd: &FormData,
    sel: &Selection,
    options: CsvOptions,
    tx: mpsc::Sender<Result<Bytes, std::io::Error>>,
) -> Result<(), ServiceError> {
    let layout = Arc::new(layout(app, fd, sel, options).await?);
    let tables = layout.tables();
    let header = tables.first().map(|t| t.header.clone()).unwrap_or_default();
    table_pass(app, fd, sel, &layout, 0, &header, |buf| {
        let tx = tx.clone();
        async move {
            tx.send(Ok(Bytes::from(buf)))
                .await
                .map_err(|_| ServiceError::Internal("the client went away".into()))
        }
    })
    .await
}

/// Commands to the thread that owns the ZIP writer.
enum ZipCmd {
    Start(String),
    Data(Vec<u8>),
}

async fn zip(
    app: &App,
    fd: &FormData,
    sel: &Selection,
    media: bool,
    options: CsvOptions,
    tx: mpsc::Sender<Result<Bytes, std::io::Error>>,
) -> Result<(), ServiceError> {
    let layout = Arc::new(layout(app, fd, sel, options).await?);
    let (cmd_tx, cmd_rx) = mpsc::channel::<ZipCmd>(16);
    // Deflating is CPU work: it runs on its own blocking thread, fed through a bounded channel.
    let writer = tokio::task::spawn_blocking(move || zip_thread(cmd_rx, tx));
    let send = |cmd: ZipCmd| {
        let cmd_tx = cmd_tx.clone();
        async move {
            cmd_tx
                .send(cmd)
                .await
                .map_err(|_| ServiceError::Internal("the ZIP writer stopped".into()))
        }
    };
    let id = &fd.form.xml_form_id;
    let mut names: HashSet<String> = HashSet::new();
    for (t, spec) in layout.tables().iter().enumerate() {
        let base = match spec.repeat_name() {
            None => format!("{id}.csv"),
            Some(r) => format!("{id}-{r}.csv"),
        };
        let mut name = base.clone();
        let mut n = 1;
        while !names.insert(name.clone()) {
            name = format!("{}~{n}.csv", base.trim_end_matches(".csv"));
            n += 1;
        }
        send(ZipCmd::Start(name)).await?;
        table_pass(app, fd, sel, &layout, t, &spec.header, |buf| {
            send(ZipCmd::Data(buf))
        })
        .await?;
    }
    if media {
        media_pass(app, fd, sel, &send).await?;
    }
    drop(cmd_tx);
    writer
        .await
        .map_err(|e| ServiceError::Internal(format!("ZIP writer: {e}")))?
}

/// Adds `media/<name>` for every stored attachment of the selected submissions' current versions.
async fn media_pass<F, Fut>(
    app: &App,
    fd: &FormData,
    sel: &Selection,
    send: &F,
) -> Result<(), ServiceError>
where
    F: Fn(ZipCmd) -> Fut,
    Fut: std::future::Future<Output = Result<(), ServiceError>>,
{
    let now = fieldvault_store::now_ms();
    let mut after = Cursor::START;
    let mut seen: HashSet<String> = HashSet::new();
    loop {
        let page = app
            .store
            .submission_page(&PageQuery {
                form_id: fd.form.id,
                deleted: sel.deleted,
                after,
                limit: data::PAGE,
                with_xml: false,
            })
            .await?;
        let Some(last) = page.last() else { break };
        after = last.cursor();
        for r in page
            .iter()
            .filter(|r| r.attachments_present > 0 && data::passes(sel.filter.as_deref(), r, now))
        {
            for a in app.store.submission_attachments(r.version_id).await? {
                let Some(blob) = a.blob_name.as_deref() else {
                    continue;
                };
                if !seen.insert(a.name.clone()) {
                    continue;
                }
                let owner = super::submissions::first_owner(app, r.id, blob).await?;
                let key = super::forms::project_key(app, &fd.project).await?;
                let stream = app
                    .blobs
                    .get_stream(
                        &key,
                        blob,
                        &attachment_aad(fd.project.id, fd.form.id, &owner, &a.name),
                    )
                    .await?;
                let mut stream = std::pin::pin!(stream);
                send(ZipCmd::Start(format!("media/{}", a.name))).await?;
                while let Some(chunk) = stream.next().await {
                    send(ZipCmd::Data(chunk?.to_vec())).await?;
                }
            }
        }
    }
    Ok(())
}

fn zip_thread(
    mut cmds: mpsc::Receiver<ZipCmd>,
    tx: mpsc::Sender<Result<Bytes, std::io::Error>>,
) -> Result<(), ServiceError> {
    use zip::write::SimpleFileOptions;
    let options = SimpleFileOptions::default()
        .compression_method(zip::CompressionMethod::Deflated)
        .large_file(true);
    let mut z = zip::ZipWriter::new_stream(ChannelWriter {
        tx,
        buf: Vec::with_capacity(CHUNK * 2),
    });
    let zerr = |e: zip::result::ZipError| ServiceError::Internal(format!("ZIP: {e}"));
    while let Some(cmd) = cmds.blocking_recv() {
        match cmd {
            ZipCmd::Start(name) => z.start_file(name, options).map_err(zerr)?,
            ZipCmd::Data(bytes) => z.write_all(&bytes).map_err(io)?,
        }
    }
    let mut inner = z.finish().map_err(zerr)?.into_inner();
    inner.flush().map_err(io)?;
    Ok(())
}

/// A `Write` that hands 64 KiB chunks to the response body (from a blocking thread).
struct ChannelWriter {
    tx: mpsc::Sender<Result<Bytes, std::io::Error>>,
    buf: Vec<u8>,
}

impl Write for ChannelWriter {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.buf.extend_from_slice(b);
        if self.buf.len() >= CHUNK {
            self.flush()?;
        }
        Ok(b.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let chunk = std::mem::replace(&mut self.buf, Vec::with_capacity(CHUNK * 2));
        self.tx
            .blocking_send(Ok(Bytes::from(chunk)))
            .map_err(|_| std::io::Error::new(std::io::ErrorKind::BrokenPipe, "client went away"))
    }
}
