//! OData v4 (JSON) over a form's submissions, shaped as ODK Central serves it (specs/central-api.md
//! §7): the service document, `$metadata` (EDMX), the `Submissions` table and one table per
//! repeat, with `$top`, `$skip`, `$count`, `$select`, `$filter` on system fields, `$wkt` and
//! `$skiptoken` paging. Tables stream: rows are written as the decrypt pipeline produces them,
//! and `@odata.count` / `@odata.nextLink` follow `value`, as Central orders them, so nothing waits
//! for the whole table.

use std::sync::Arc;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use bytes::Bytes;
use fieldvault_core::odata::Filter;
use fieldvault_core::odata_rows::{self, Table};
use fieldvault_core::schema::{FieldType, FormSchema, Node, NodeKind};
use fieldvault_core::{Actor, ProjectId, Verb};
use fieldvault_store::{Deleted, SubmissionRecord};
use serde_json::{Map, Value, json};
use tokio::sync::mpsc;

use super::ServiceError;
use super::data::{self, Doc, FormData, Selection};
use crate::api::json::{iso, iso_opt};

use crate::App;

/// The query options of a table request.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// `$top`.
    pub top: Option<u64>,
    /// `$skip`.
    pub skip: Option<u64>,
    /// `$count=true`.
    pub count: bool,
    /// `$wkt=true`.
    pub wkt: bool,
    /// `$filter`.
    pub filter: Option<String>,
    /// `$select`.
    pub select: Option<String>,
    /// `$skiptoken`.
    pub skiptoken: Option<String>,
}

/// Opens a form for OData: it must have a readable definition (the model comes from it).
async fn open(
    app: &App,
    actor: &Actor,
    project: ProjectId,
    xml_form_id: &str,
) -> Result<(FormData, Arc<FormSchema>), ServiceError> {
    let fd = data::open_form(app, actor, project, xml_form_id, Verb::SubmissionRead).await?;
    let schema = fd.schema.clone().ok_or(ServiceError::NotFound)?;
    Ok((fd, schema))
}

/// The entity sets (service document).
pub async fn tables(
    app: &App,
    actor: &Actor,
    project: ProjectId,
    xml_form_id: &str,
) -> Result<Vec<String>, ServiceError> {
    let (_, schema) = open(app, actor, project, xml_form_id).await?;
    Ok(odata_rows::tables(&schema)
        .into_iter()
        .map(|t| t.name)
        .collect())
}

/// `$metadata`: the EDMX document.
pub async fn metadata(
    app: &App,
    actor: &Actor,
    project: ProjectId,
    xml_form_id: &str,
) -> Result<String, ServiceError> {
    let (fd, schema) = open(app, actor, project, xml_form_id).await?;
    Ok(edmx(&fd.form.xml_form_id, &schema))
}

/// A streamed table response.
pub type Body = mpsc::Receiver<Result<Bytes, std::io::Error>>;

/// One table. `service_root` is the absolute URL of `….svc`; `query` the request's query pairs
/// (for `@odata.nextLink`).
#[allow(clippy::too_many_arguments)]
pub async fn table(
    app: &App,
    actor: &Actor,
    project: ProjectId,
    xml_form_id: &str,
    table_name: &str,
    opts: Options,
    service_root: &str,
    query: &[(String, String)],
) -> Result<Body, ServiceError> {
    let (fd, schema) = open(app, actor, project, xml_form_id).await?;
    let table = odata_rows::tables(&schema)
        .into_iter()
        .find(|t| t.name == table_name)
        .ok_or(ServiceError::NotFound)?;
    let filter = match opts.filter.as_deref() {
        Some(f) => Some(Arc::new(Filter::parse(f).map_err(|e| {
            ServiceError::Invalid {
                code: "odata.filter",
                message: format!("The $filter could not be used: {e}"),
            }
        })?)),
        None => None,
    };
    let select = match opts.select.as_deref() {
        Some(s) => Some(parse_select(&schema, &table, s)?),
        None => None,
    };
    let deleted = if filter.as_deref().is_some_and(Filter::mentions_deleted) {
        Deleted::Include
    } else {
        Deleted::Exclude
    };
    let context = format!("{service_root}/$metadata#{}", table.name);
    let next_base = next_link_base(service_root, &table.name, query);
    let (tx, rx) = mpsc::channel(8);
    let app = app.clone();
    if table.path.is_empty() {
        let mut sel = Selection {
            deleted,
            filter: filter.clone(),
            skip: opts.skip.unwrap_or(0),
            take: opts.top.map(|t| t.saturating_add(1)),
            ..Selection::default()
        };
        if let Some(token) = &opts.skiptoken {
            let id = decode_token(token, "instanceId")?;
            let r = app
                .store
                .submission_record(fd.form.id, &id, false)
                .await?
                .ok_or_else(|| ServiceError::Invalid {
                    code: "odata.skiptoken",
                    message: "The $skiptoken names a record that does not exist.".into(),
                })?;
            sel.after = r.cursor();
            sel.skip = 0;
        }
        let count = if opts.count {
            Some(
                data::count(
                    &app,
                    &fd,
                    &Selection {
                        deleted,
                        filter,
                        ..Selection::default()
                    },
                )
                .await?,
            )
        } else {
            None
        };
        let wkt = opts.wkt;
        let map: data::MapFn<Map<String, Value>> = Arc::new(move |r, doc| {
            Ok(odata_rows::root_row(
                &schema,
                &r.instance_id,
                system(r),
                doc.map(Doc::instance).transpose()?,
                wkt,
            ))
        });
        let rows = data::stream(&app, &fd, sel, map);
        tokio::spawn(async move {
            let out = Out { tx: tx.clone() };
            if let Err(e) =
                write_root(out, rows, opts.top, select, &context, &next_base, count).await
            {
                tracing::warn!(error = %e, "OData table failed part-way");
                let _ = tx.send(Err(std::io::Error::other("OData failed"))).await;
            }
        });
    } else {
        let wkt = opts.wkt;
        let path = table.path.clone();
        let map: data::MapFn<Vec<Map<String, Value>>> = Arc::new(move |r, doc: Option<&Doc>| {
            let mut rows = Vec::new();
            if let Some(inst) = doc.map(Doc::instance).transpose()? {
                odata_rows::repeat_rows(&schema, &path, &r.instance_id, inst, wkt, &mut |row| {
                    rows.push(row)
                });
            }
            Ok(rows)
        });
        let after = match &opts.skiptoken {
            Some(t) => Some(decode_token(t, "repeatId")?),
            None => None,
        };
        let rows = data::stream(
            &app,
            &fd,
            Selection {
                deleted,
                filter,
                ..Selection::default()
            },
            map,
        );
        let paging = RepeatPaging {
            skip: if after.is_some() {
                0
            } else {
                opts.skip.unwrap_or(0)
            },
            top: opts.top,
            after,
            count: opts.count,
        };
        tokio::spawn(async move {
            let out = Out { tx: tx.clone() };
            if let Err(e) = write_repeat(out, rows, paging, select, &context, &next_base).await {
                tracing::warn!(error = %e, "OData table failed part-way");
                let _ = tx.send(Err(std::io::Error::other("OData failed"))).await;
            }
        });
    }
    Ok(rx)
}

/// `__system` of a root row, in Central's key order.
fn system(r: &SubmissionRecord) -> Value {
    let review = (r.review_state != "received").then_some(r.review_state.as_str());
    json!({
        "submissionDate": iso(r.created_at),
        "updatedAt": iso_opt(r.updated_at),
        "submitterId": r.submitter_user_id.or(r.submitter_app_user_id).map(|n| n.to_string()),
        "submitterName": r.submitter_name,
        "attachmentsPresent": r.attachments_present,
        "attachmentsExpected": r.attachments_expected,
        "status": if r.encrypted { Some("notDecrypted") } else { None },
        "reviewState": review,
        "deviceId": r.device_id,
        "edits": r.edits,
        "formVersion": r.form_version,
        "deletedAt": iso_opt(r.deleted_at),
    })
}

struct Out {
    tx: mpsc::Sender<Result<Bytes, std::io::Error>>,
}

impl Out {
    async fn send(&self, s: String) -> Result<(), ServiceError> {
        self.tx
            .send(Ok(Bytes::from(s)))
            .await
            .map_err(|_| ServiceError::Internal("the client went away".into()))
    }
}

/// Bytes gathered before a chunk is sent.
const CHUNK: usize = 64 * 1024;

async fn write_root(
    out: Out,
    mut rows: mpsc::Receiver<data::Item<Map<String, Value>>>,
    top: Option<u64>,
    select: Option<Vec<Vec<String>>>,
    context: &str,
    next_base: &str,
    count: Option<u64>,
) -> Result<(), ServiceError> {
    let mut buf = String::from("{\"value\":[");
    let mut n = 0u64;
    let mut last: Option<String> = None;
    let mut more = false;
    while let Some(item) = rows.recv().await {
        let (r, row) = item?;
        if top.is_some_and(|t| n >= t) {
            more = true;
            break;
        }
        if n > 0 {
            buf.push(',');
        }
        let row = match &select {
            Some(s) => selected(&row, s),
            None => row,
        };
        buf.push_str(&Value::Object(row).to_string());
        n += 1;
        last = Some(r.instance_id);
        if buf.len() >= CHUNK {
            out.send(std::mem::take(&mut buf)).await?;
        }
    }
    drop(rows);
    buf.push_str("],\"@odata.context\":");
    buf.push_str(&Value::String(context.to_owned()).to_string());
    if more && let Some(id) = last {
        let token = encode_token("instanceId", &id);
        buf.push_str(",\"@odata.nextLink\":");
        buf.push_str(&Value::String(format!("{next_base}%24skiptoken={token}")).to_string());
    }
    if let Some(c) = count {
        buf.push_str(&format!(",\"@odata.count\":{c}"));
    }
    buf.push('}');
    out.send(buf).await
}

struct RepeatPaging {
    skip: u64,
    top: Option<u64>,
    after: Option<String>,
    count: bool,
}

async fn write_repeat(
    out: Out,
    mut rows: mpsc::Receiver<data::Item<Vec<Map<String, Value>>>>,
    mut p: RepeatPaging,
    select: Option<Vec<Vec<String>>>,
    context: &str,
    next_base: &str,
) -> Result<(), ServiceError> {
    let mut buf = String::from("{\"value\":[");
    let mut written = 0u64;
    let mut total = 0u64;
    let mut last: Option<String> = None;
    let mut more = false;
    let mut found_after = p.after.is_none();
    while let Some(item) = rows.recv().await {
        let (_, list) = item?;
        for row in list {
            let id = row
                .get("__id")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_owned();
            total += 1;
            if !found_after {
                found_after = p.after.as_deref() == Some(id.as_str());
                continue;
            }
            if p.skip > 0 {
                p.skip -= 1;
                continue;
            }
            if p.top.is_some_and(|t| written >= t) {
                more = true;
                continue;
            }
            if written > 0 {
                buf.push(',');
            }
            let row = match &select {
                Some(s) => selected(&row, s),
                None => row,
            };
            buf.push_str(&Value::Object(row).to_string());
            written += 1;
            last = Some(id);
            if buf.len() >= CHUNK {
                out.send(std::mem::take(&mut buf)).await?;
            }
        }
        if more && !p.count {
            break;
        }
    }
    drop(rows);
    if !found_after {
        return Err(ServiceError::Internal(
            "the $skiptoken row was not found".into(),
        ));
    }
    buf.push_str("],\"@odata.context\":");
    buf.push_str(&Value::String(context.to_owned()).to_string());
    if more && let Some(id) = last {
        let token = encode_token("repeatId", &id);
        buf.push_str(",\"@odata.nextLink\":");
        buf.push_str(&Value::String(format!("{next_base}%24skiptoken={token}")).to_string());
    }
    if p.count {
        buf.push_str(&format!(",\"@odata.count\":{total}"));
    }
    buf.push('}');
    out.send(buf).await
}

/// `01` + base64 of `{"<kind>": id}`, percent-encoded for a URL.
fn encode_token(kind: &str, id: &str) -> String {
    let raw = format!("01{}", STANDARD.encode(json!({ kind: id }).to_string()));
    percent(&raw)
}

fn decode_token(token: &str, kind: &str) -> Result<String, ServiceError> {
    let bad = || ServiceError::Invalid {
        code: "odata.skiptoken",
        message: "The $skiptoken is not valid; use the @odata.nextLink as given.".into(),
    };
    let b64 = token.strip_prefix("01").ok_or_else(bad)?;
    let bytes = STANDARD.decode(b64).map_err(|_| bad())?;
    let v: Value = serde_json::from_slice(&bytes).map_err(|_| bad())?;
    v.get(kind)
        .and_then(Value::as_str)
        .map(str::to_owned)
        .ok_or_else(bad)
}

/// Percent-encodes a query value (RFC 3986 unreserved characters stay).
fn percent(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// The nextLink up to its `$skiptoken`: the request's options minus `$skip` and `$skiptoken`.
fn next_link_base(service_root: &str, table: &str, query: &[(String, String)]) -> String {
    let mut link = format!("{service_root}/{table}?");
    for (k, v) in query {
        if k == "$skip" || k == "$skiptoken" {
            continue;
        }
        link.push_str(&percent(k));
        link.push('=');
        link.push_str(&percent(v));
        link.push('&');
    }
    link
}

/// Parses `$select` against the table's fields: names (group paths with `/`), `__id`, `__system`,
/// `__system/<field>`.
fn parse_select(
    schema: &FormSchema,
    table: &Table,
    select: &str,
) -> Result<Vec<Vec<String>>, ServiceError> {
    const SYSTEM: [&str; 12] = [
        "submissionDate",
        "updatedAt",
        "submitterId",
        "submitterName",
        "attachmentsPresent",
        "attachmentsExpected",
        "status",
        "reviewState",
        "deviceId",
        "edits",
        "formVersion",
        "deletedAt",
    ];
    let mut out = Vec::new();
    for item in select.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        let path: Vec<String> = item.split('/').map(str::to_owned).collect();
        let ok = match path.as_slice() {
            [id] if id == "__id" => true,
            [s] if s == "__system" && table.path.is_empty() => true,
            [s, f] if s == "__system" && table.path.is_empty() => SYSTEM.contains(&f.as_str()),
            _ => {
                let mut full = table.path.clone();
                full.extend(path.iter().cloned());
                match schema.node(&full) {
                    None => false,
                    Some(_) => {
                        // Nothing on the way may be a repeat (that is another table).
                        let inside_repeat = (table.path.len() + 1..=full.len()).any(|n| {
                            schema
                                .node(full.get(..n).unwrap_or_default())
                                .is_some_and(Node::is_repeat)
                        });
                        if inside_repeat {
                            return Err(ServiceError::Invalid {
                                code: "odata.select_repeat",
                                message: format!(
                                    "$select cannot reach into the repeat at '{item}'; query its own table"
                                ),
                            });
                        }
                        true
                    }
                }
            }
        };
        if !ok {
            return Err(ServiceError::Invalid {
                code: "odata.select",
                message: format!("$select names '{item}', which this table does not have"),
            });
        }
        out.push(path);
    }
    Ok(out)
}

/// Keeps the selected paths of a row (and always `__id`), in the row's order.
fn selected(row: &Map<String, Value>, select: &[Vec<String>]) -> Map<String, Value> {
    let mut out = Map::new();
    for (k, v) in row {
        if k == "__id" || select.iter().any(|p| p.len() == 1 && p.first() == Some(k)) {
            out.insert(k.clone(), v.clone());
            continue;
        }
        let tails: Vec<Vec<String>> = select
            .iter()
            .filter(|p| p.len() > 1 && p.first() == Some(k))
            .map(|p| p.get(1..).unwrap_or_default().to_vec())
            .collect();
        if tails.is_empty() {
            continue;
        }
        if let Value::Object(inner) = v {
            let mut sub = selected(inner, &tails);
            if !tails.iter().any(|t| t.first().is_some_and(|f| f == "__id")) {
                sub.remove("__id");
            }
            out.insert(k.clone(), Value::Object(sub));
        }
    }
    out
}

/// An OData identifier from a field name (Central's sanitising).
fn ident(name: &str) -> String {
    let mut out = String::new();
    let mut in_bad = false;
    for c in name.chars() {
        if c.is_ascii_alphanumeric() || c == '_' {
            out.push(c);
            in_bad = false;
        } else if !in_bad {
            out.push('_');
            in_bad = true;
        }
    }
    if !out.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_') {
        out.insert(0, '_');
    }
    out
}

fn xml_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
        .replace('\'', "&apos;")
}

fn edm_type(ty: &FieldType) -> &'static str {
    match ty {
        FieldType::Int => "Edm.Int64",
        FieldType::Decimal => "Edm.Decimal",
        FieldType::Boolean => "Edm.Boolean",
        FieldType::Date => "Edm.Date",
        FieldType::DateTime => "Edm.DateTimeOffset",
        FieldType::Geopoint => "Edm.GeographyPoint",
        FieldType::Geotrace => "Edm.GeographyLineString",
        FieldType::Geoshape => "Edm.GeographyPolygon",
        _ => "Edm.String",
    }
}

/// The EDMX document of a form.
fn edmx(xml_form_id: &str, schema: &FormSchema) -> String {
    let ns = format!("org.opendatakit.user.{}", xml_escape(xml_form_id));
    let mut types = String::new();
    // Properties of one structured type; complex types and repeat entity types are collected.
    fn props(nodes: &[Node], ns: &str, types: &mut Vec<(String, String)>) -> String {
        let mut s = String::new();
        for n in nodes {
            let name = xml_escape(&ident(&n.name));
            let dotted = xml_escape(&n.path.join("."));
            match &n.kind {
                NodeKind::Field { ty, .. } => {
                    s.push_str(&format!(
                        "<Property Name=\"{name}\" Type=\"{}\"/>",
                        edm_type(ty)
                    ));
                }
                NodeKind::Group(c) => {
                    s.push_str(&format!(
                        "<Property Name=\"{name}\" Type=\"{ns}.{dotted}\"/>"
                    ));
                    let inner = props(c, ns, types);
                    types.push((
                        "ComplexType".into(),
                        format!("<ComplexType Name=\"{dotted}\">{inner}</ComplexType>"),
                    ));
                }
                NodeKind::Repeat(_) => {
                    s.push_str(&format!(
                        "<NavigationProperty Name=\"{name}\" Type=\"Collection({ns}.Submissions.{dotted})\"/>"
                    ));
                }
            }
        }
        s
    }
    let mut collected = Vec::new();
    let root_props = props(&schema.children, &ns, &mut collected);
    types.push_str(&format!(
        "<EntityType Name=\"Submissions\"><Key><PropertyRef Name=\"__id\"/></Key>\
         <Property Name=\"__id\" Type=\"Edm.String\"/>\
         <Property Name=\"__system\" Type=\"org.opendatakit.submission.metadata\"/>{root_props}</EntityType>"
    ));
    let mut sets = String::new();
    for r in schema.repeats() {
        let dotted = xml_escape(&r.path.join("."));
        let key = xml_escape(&odata_rows::parent_key_name(schema, &r.path));
        let inner = props(r.children(), &ns, &mut collected);
        types.push_str(&format!(
            "<EntityType Name=\"Submissions.{dotted}\"><Key><PropertyRef Name=\"__id\"/></Key>\
             <Property Name=\"__id\" Type=\"Edm.String\"/><Property Name=\"{key}\" Type=\"Edm.String\"/>\
             {inner}</EntityType>"
        ));
        sets.push_str(&format!(
            "<EntitySet Name=\"Submissions.{dotted}\" EntityType=\"{ns}.Submissions.{dotted}\"/>"
        ));
    }
    for (_, t) in &collected {
        types.push_str(t);
    }
    let container = xml_escape(&ident(xml_form_id));
    format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\
<edmx:Edmx xmlns:edmx=\"http://docs.oasis-open.org/odata/ns/edmx\" Version=\"4.0\">\
<edmx:Reference Uri=\"http://docs.oasis-open.org/odata/odata/v4.0/os/vocabularies/Org.OData.Core.V1.xml\"><edmx:Include Alias=\"Core\" Namespace=\"Org.OData.Core.V1\"/></edmx:Reference>\
<edmx:Reference Uri=\"http://docs.oasis-open.org/odata/odata/v4.0/os/vocabularies/Org.OData.Capabilities.V1.xml\"><edmx:Include Alias=\"Capabilities\" Namespace=\"Org.OData.Capabilities.V1\"/></edmx:Reference>\
<edmx:DataServices>\
<Schema xmlns=\"http://docs.oasis-open.org/odata/ns/edm\" Namespace=\"org.opendatakit.submission\">\
<ComplexType Name=\"metadata\">\
<Property Name=\"submissionDate\" Type=\"Edm.DateTimeOffset\"/>\
<Property Name=\"updatedAt\" Type=\"Edm.DateTimeOffset\"/>\
<Property Name=\"deletedAt\" Type=\"Edm.DateTimeOffset\"/>\
<Property Name=\"submitterId\" Type=\"Edm.String\"/>\
<Property Name=\"submitterName\" Type=\"Edm.String\"/>\
<Property Name=\"attachmentsPresent\" Type=\"Edm.Int64\"/>\
<Property Name=\"attachmentsExpected\" Type=\"Edm.Int64\"/>\
<Property Name=\"status\" Type=\"org.opendatakit.submission.Status\"/>\
<Property Name=\"reviewState\" Type=\"org.opendatakit.submission.ReviewState\"/>\
<Property Name=\"deviceId\" Type=\"Edm.String\"/>\
<Property Name=\"edits\" Type=\"Edm.Int64\"/>\
<Property Name=\"formVersion\" Type=\"Edm.String\"/>\
</ComplexType>\
<EnumType Name=\"Status\"><Member Name=\"notDecrypted\"/><Member Name=\"missingEncryptedFormData\"/></EnumType>\
<EnumType Name=\"ReviewState\"><Member Name=\"hasIssues\"/><Member Name=\"edited\"/><Member Name=\"rejected\"/><Member Name=\"approved\"/></EnumType>\
</Schema>\
<Schema xmlns=\"http://docs.oasis-open.org/odata/ns/edm\" Namespace=\"{ns}\">{types}\
<EntityContainer Name=\"{container}\">\
<EntitySet Name=\"Submissions\" EntityType=\"{ns}.Submissions\">\
<Annotation Term=\"Org.OData.Capabilities.V1.ConformanceLevel\" EnumMember=\"Org.OData.Capabilities.V1.ConformanceLevelType/Minimal\"/>\
<Annotation Term=\"Org.OData.Capabilities.V1.BatchSupported\" Bool=\"false\"/>\
<Annotation Term=\"Org.OData.Capabilities.V1.CountRestrictions\"><Record><PropertyValue Property=\"Countable\" Bool=\"true\"/></Record></Annotation>\
<Annotation Term=\"Org.OData.Capabilities.V1.SortRestrictions\"><Record><PropertyValue Property=\"Sortable\" Bool=\"false\"/></Record></Annotation>\
<Annotation Term=\"Org.OData.Capabilities.V1.ExpandRestrictions\"><Record><PropertyValue Property=\"Expandable\" Bool=\"false\"/></Record></Annotation>\
</EntitySet>{sets}\
</EntityContainer></Schema></edmx:DataServices></edmx:Edmx>"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identifiers_tokens_and_selection() {
        assert_eq!(ident("a-b.c"), "a_b_c");
        assert_eq!(ident("1x"), "_1x");
        let t = encode_token("instanceId", "uuid:1");
        let raw = t
            .replace("%3D", "=")
            .replace("%2B", "+")
            .replace("%2F", "/");
        assert_eq!(decode_token(&raw, "instanceId").unwrap(), "uuid:1");
        assert!(decode_token("02abc", "instanceId").is_err());
        let row: Map<String, Value> = serde_json::from_value(json!({
            "__id": "x", "__system": {"a": 1}, "n": 1, "g": {"p": 2, "q": 3}
        }))
        .unwrap();
        let s = selected(&row, &[vec!["g".into(), "q".into()], vec!["n".into()]]);
        assert_eq!(
            Value::Object(s),
            json!({"__id": "x", "n": 1, "g": {"q": 3}})
        );
        assert_eq!(
            next_link_base(
                "https://h/v1/p.svc",
                "Submissions",
                &[("$top".into(), "2".into()), ("$skip".into(), "4".into())]
            ),
            "https://h/v1/p.svc/Submissions?%24top=2&"
        );
    }
}
