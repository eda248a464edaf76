//! The tables `fieldvault decrypt` writes after decrypting: per form, `<formId>.csv` (one row per
//! submission), `<formId>-<repeat>.csv` per repeat group (linked by `PARENT_KEY` / `KEY`), with
//! the same column names as the server's CSV export, and `<formId>.jsonl` (one
//! KoboToolbox-shaped JSON object per submission).
//!
//! They are rebuilt from every decrypted submission in the output directory on each run, so a
//! resumed run ends with complete tables. Two streaming passes per form (columns, then rows) keep
//! one submission in memory at a time. Column names and order come from the form definition that
//! `fieldvault pull` saves as `form.xml`; without it they are inferred from the data.

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io::{BufWriter, Write as _};
use std::path::{Path, PathBuf};

use anyhow::{Context as _, anyhow};
use fieldvault_core::flatten::{self, CsvLayout, RowMeta, TableWriter, Typing};
use fieldvault_core::{CoreError, FormSchema, parse_instance, parse_schema};
use serde_json::{Map, Value};

/// Largest decrypted submission XML read back for the tables.
const MAX_XML: usize = 64 * 1024 * 1024;
/// Largest form definition read.
const MAX_FORM: usize = 10 * 1024 * 1024;
/// The form definition `fieldvault pull` saves beside a form's submissions.
pub const FORM_FILE: &str = "form.xml";
/// The per-submission metadata `fieldvault pull` saves (submission time, submitter, device).
pub const META_FILE: &str = "meta.json";

/// One decrypted submission, as recorded in the decrypt index.
#[derive(Debug, Clone)]
pub struct Decrypted {
    /// Form id from the envelope.
    pub form_id: String,
    /// Output directory holding `submission.xml` and the media.
    pub out_dir: PathBuf,
    /// Input directory (for `meta.json` saved by `pull`).
    pub in_dir: PathBuf,
    /// Media files written.
    pub media: Vec<String>,
    /// Media files the envelope names.
    pub media_expected: usize,
}

/// What was written, for the summary line.
#[derive(Debug, Default)]
pub struct TablesReport {
    /// Files written.
    pub files: Vec<String>,
    /// Submissions that could not be read back (named on standard error).
    pub unreadable: usize,
}

/// Finds `form.xml` definitions under `input` (any depth), by form id.
pub fn find_schemas(input: &Path) -> BTreeMap<String, FormSchema> {
    let mut out = BTreeMap::new();
    let mut stack = vec![input.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let Ok(entries) = fs::read_dir(&dir) else {
            continue;
        };
        for e in entries.flatten() {
            let path = e.path();
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                stack.push(path);
            } else if e.file_name() == FORM_FILE
                && let Ok(bytes) = fs::read(&path)
                && let Ok(schema) = parse_schema(&bytes, MAX_FORM)
            {
                out.insert(schema.xml_form_id.clone(), schema);
            }
        }
    }
    out
}

/// Writes the tables of every form in `done` into `out`.
pub fn write_tables(
    out: &Path,
    done: &[Decrypted],
    schemas: &BTreeMap<String, FormSchema>,
) -> anyhow::Result<TablesReport> {
    let mut by_form: BTreeMap<&str, Vec<&Decrypted>> = BTreeMap::new();
    for d in done {
        by_form.entry(&d.form_id).or_default().push(d);
    }
    let mut report = TablesReport::default();
    for (form_id, mut subs) in by_form {
        subs.sort_by(|a, b| a.out_dir.cmp(&b.out_dir));
        let schema = schemas.get(form_id);
        let stem = file_stem(form_id);

        // Pass 1: the columns (the form's, plus any leaf an older version had).
        let mut layout = CsvLayout::new(schema);
        let mut readable = Vec::with_capacity(subs.len());
        for d in &subs {
            match read_instance(d) {
                Ok(inst) => {
                    layout
                        .discover(&inst)
                        .map_err(|e| anyhow!("{form_id}: {e}"))?;
                    readable.push(*d);
                }
                Err(e) => {
                    eprintln!("{}: cannot be tabulated: {e:#}", d.out_dir.display());
                    report.unreadable += 1;
                }
            }
        }
        let tables = layout.tables();
        let mut writers = Vec::with_capacity(tables.len());
        for t in &tables {
            let name = match t.repeat_name() {
                None => format!("{stem}.csv"),
                Some(r) => format!("{stem}-{}.csv", file_stem(r)),
            };
            let path = out.join(&name);
            let file = create_private(&path)?;
            writers.push((
                TableWriter::new(BufWriter::new(file), &t.header)
                    .with_context(|| format!("cannot write {}", path.display()))?,
                path,
            ));
            report.files.push(name);
        }
        let json_name = format!("{stem}.jsonl");
        let json_path = out.join(&json_name);
        let mut json = BufWriter::new(create_private(&json_path)?);
        report.files.push(json_name);

        // Pass 2: the rows, one submission at a time.
        for d in readable {
            let inst = read_instance(d)?;
            let meta = row_meta(d, inst.instance_id().unwrap_or_default());
            let mut failure: Option<std::io::Error> = None;
            layout
                .rows(&inst, &meta, None, &mut |table, cells| {
                    if let Some((w, _)) = writers.get_mut(table)
                        && let Err(e) = w.write_row(&cells)
                    {
                        failure = Some(e);
                        return Err(CoreError::invalid("output", "write failed"));
                    }
                    Ok(())
                })
                .map_err(|e| match failure.take() {
                    Some(io) => anyhow!("cannot write the CSV tables of {form_id}: {io}"),
                    None => anyhow!("{}: {e}", d.out_dir.display()),
                })?;
            let mut obj = flatten::kobo_json(&inst, schema, Typing::FromForm);
            add_system_fields(&mut obj, d, &meta, &inst, schema);
            serde_json::to_writer(&mut json, &Value::Object(obj))
                .map_err(std::io::Error::other)
                .and_then(|()| json.write_all(b"\n"))
                .with_context(|| format!("cannot write {}", json_path.display()))?;
        }
        for (w, path) in writers {
            w.finish()
                .and_then(|mut b| b.flush())
                .with_context(|| format!("cannot write {}", path.display()))?;
        }
        json.flush()
            .with_context(|| format!("cannot write {}", json_path.display()))?;
    }
    Ok(report)
}

fn read_instance(d: &Decrypted) -> anyhow::Result<fieldvault_core::Instance> {
    let path = d.out_dir.join("submission.xml");
    let bytes = fs::read(&path).with_context(|| format!("cannot read {}", path.display()))?;
    parse_instance(&bytes, MAX_XML).map_err(|e| anyhow!("{}: {e}", path.display()))
}

/// The row's system values: what the envelope and `pull`'s `meta.json` tell.
fn row_meta(d: &Decrypted, instance_id: &str) -> RowMeta {
    let meta: Value = fs::read(d.in_dir.join(META_FILE))
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or(Value::Null);
    let s = |v: &Value| match v {
        Value::String(s) => s.clone(),
        Value::Number(n) => n.to_string(),
        _ => String::new(),
    };
    RowMeta {
        submission_date: s(&meta["createdAt"]),
        instance_id: instance_id.to_owned(),
        submitter_id: s(&meta["submitterId"]),
        submitter_name: s(&meta["submitterName"]),
        attachments_present: d.media.len() as u64,
        attachments_expected: d.media_expected as u64,
        status: String::new(),
        review_state: s(&meta["reviewState"]),
        device_id: s(&meta["deviceId"]),
        edits: 0,
        form_version: s(&meta["formVersion"]),
    }
}

/// KoboToolbox's server keys that make sense offline.
fn add_system_fields(
    obj: &mut Map<String, Value>,
    d: &Decrypted,
    meta: &RowMeta,
    inst: &fieldvault_core::Instance,
    schema: Option<&FormSchema>,
) {
    let uuid = meta
        .instance_id
        .strip_prefix("uuid:")
        .unwrap_or(&meta.instance_id);
    obj.insert("_uuid".into(), Value::String(uuid.to_owned()));
    if !meta.form_version.is_empty() {
        obj.insert(
            "__version__".into(),
            Value::String(meta.form_version.clone()),
        );
    }
    if !meta.submission_date.is_empty() {
        obj.insert(
            "_submission_time".into(),
            Value::String(meta.submission_date.clone()),
        );
    }
    if !meta.submitter_name.is_empty() {
        obj.insert(
            "_submitted_by".into(),
            Value::String(meta.submitter_name.clone()),
        );
    }
    obj.insert(
        "_attachments".into(),
        Value::Array(
            d.media
                .iter()
                .map(|m| {
                    serde_json::json!({
                        "filename": m,
                        "path": d.out_dir.join(m).display().to_string(),
                    })
                })
                .collect(),
        ),
    );
    let geo = flatten::geolocation(inst, schema)
        .map(|(lat, lon)| serde_json::json!([lat, lon]))
        .unwrap_or(serde_json::json!([null, null]));
    obj.insert("_geolocation".into(), geo);
}

/// A form or repeat name as a file name: anything unusual becomes `_`.
fn file_stem(name: &str) -> String {
    let s: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.' {
                c
            } else {
                '_'
            }
        })
        .collect();
    if s.is_empty() || s.starts_with('.') {
        format!("_{s}")
    } else {
        s
    }
}

fn create_private(path: &Path) -> anyhow::Result<File> {
    let mut o = fs::OpenOptions::new();
    o.write(true).create(true).truncate(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut o, 0o600);
    o.open(path)
        .with_context(|| format!("cannot create {}", path.display()))
}
