//! Getting data out over HTTP: `submissions.csv`, `submissions.csv.zip` and the OData service at
//! `/v1/projects/{pid}/forms/{xmlFormId}.svc` (specs/central-api.md §6–7). Bodies stream.

use axum::Router;
use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use bytes::Bytes;
use fieldvault_core::odata::Filter;
use fieldvault_core::{Actor, ProjectId};
use serde::Deserialize;
use serde_json::json;
use tokio::sync::mpsc;

use crate::App;
use crate::openrosa::caller::Caller;
use crate::problem::ApiError;
use crate::service::export::{self, Format};
use crate::service::odata::{self, Options};

/// The routes (the service document itself, `….svc`, is answered by the form route).
pub fn routes() -> Router<App> {
    Router::new()
        .route(
            "/v1/projects/{pid}/forms/{form}/submissions.csv",
            get(csv).post(csv),
        )
        .route(
            "/v1/projects/{pid}/forms/{form}/submissions.csv.zip",
            get(csv_zip).post(csv_zip),
        )
        .route("/v1/projects/{pid}/forms/{form}/{table}", get(odata_table))
}

#[derive(Deserialize)]
struct P {
    pid: String,
    form: String,
    table: Option<String>,
}

impl P {
    fn project(&self) -> Result<ProjectId, ApiError> {
        self.pid
            .parse()
            .map(ProjectId)
            .map_err(|_| ApiError::NotFound)
    }
}

fn signed_in(caller: &Caller) -> Result<&Actor, ApiError> {
    match caller.actor {
        Actor::Anonymous => Err(ApiError::Unauthenticated {
            code: "auth.required",
            message: "This resource needs authentication.".into(),
        }),
        ref a => Ok(a),
    }
}

fn param<'a>(q: &'a [(String, String)], name: &str) -> Option<&'a str> {
    q.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
}

fn is_true(v: Option<&str>) -> bool {
    v.is_some_and(|v| v.eq_ignore_ascii_case("true"))
}

fn filter(q: &[(String, String)]) -> Result<Option<Filter>, ApiError> {
    param(q, "$filter")
        .map(|f| {
            Filter::parse(f).map_err(|e| {
                ApiError::bad_request(
                    "odata.filter",
                    format!("The $filter could not be used: {e}"),
                )
            })
        })
        .transpose()
}

fn streamed(rx: mpsc::Receiver<Result<Bytes, std::io::Error>>) -> Body {
    Body::from_stream(futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|item| (item, rx))
    }))
}

async fn csv(
    State(app): State<App>,
    caller: Caller,
    Path(p): Path<P>,
    Query(q): Query<Vec<(String, String)>>,
) -> Result<Response, ApiError> {
    export_response(app, caller, p, q, false).await
}

async fn csv_zip(
    State(app): State<App>,
    caller: Caller,
    Path(p): Path<P>,
    Query(q): Query<Vec<(String, String)>>,
) -> Result<Response, ApiError> {
    export_response(app, caller, p, q, true).await
}

/// Central's CSV options: `groupPaths`, `splitSelectMultiples`, `deletedFields` (`true`/`false`).
fn csv_options(q: &[(String, String)]) -> Result<fieldvault_core::flatten::CsvOptions, ApiError> {
    let flag = |name: &'static str, default: bool| match param(q, name) {
        None => Ok(default),
        Some(v) if v.eq_ignore_ascii_case("true") => Ok(true),
        Some(v) if v.eq_ignore_ascii_case("false") => Ok(false),
        Some(_) => Err(ApiError::bad_request(
            "query.invalid",
            format!("{name} must be true or false"),
        )),
    };
    let d = fieldvault_core::flatten::CsvOptions::default();
    Ok(fieldvault_core::flatten::CsvOptions {
        group_paths: flag("groupPaths", d.group_paths)?,
        split_select_multiples: flag("splitSelectMultiples", d.split_select_multiples)?,
        deleted_fields: flag("deletedFields", d.deleted_fields)?,
    })
}

async fn export_response(
    app: App,
    caller: Caller,
    p: P,
    q: Vec<(String, String)>,
    zip: bool,
) -> Result<Response, ApiError> {
    let actor = signed_in(&caller)?;
    let format = if zip {
        // Central: `attachments=false` leaves the media out.
        let media = !param(&q, "attachments").is_some_and(|v| v.eq_ignore_ascii_case("false"));
        Format::Zip { media }
    } else {
        Format::Csv
    };
    let options = csv_options(&q)?;
    let ex = export::start(
        &app,
        actor,
        p.project()?,
        &p.form,
        format,
        options,
        filter(&q)?,
    )
    .await?;
    let mut h = HeaderMap::new();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(ex.content_type),
    );
    let safe: String = ex
        .file_name
        .chars()
        .filter(|c| c.is_ascii_graphic() && *c != '"' && *c != '\\')
        .collect();
    if let Ok(v) = HeaderValue::from_str(&format!("attachment; filename=\"{safe}\"")) {
        h.insert(header::CONTENT_DISPOSITION, v);
    }
    Ok((StatusCode::OK, h, streamed(ex.body)).into_response())
}

/// The query options OData tables accept; others starting with `$` are refused.
const KNOWN: [&str; 8] = [
    "$top",
    "$skip",
    "$count",
    "$wkt",
    "$filter",
    "$select",
    "$skiptoken",
    "$format",
];

fn count_param(q: &[(String, String)], name: &str) -> Result<Option<u64>, ApiError> {
    param(q, name)
        .map(|v| {
            v.parse::<u64>().map_err(|_| {
                ApiError::bad_request(
                    "odata.bad_query",
                    format!("{name} must be a non-negative integer"),
                )
            })
        })
        .transpose()
}

fn odata_headers(json: bool) -> HeaderMap {
    let mut h = HeaderMap::new();
    h.insert("OData-Version", HeaderValue::from_static("4.0"));
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(if json {
            "application/json; charset=utf-8; odata.metadata=minimal"
        } else {
            "application/xml"
        }),
    );
    h
}

/// `https://host/v1/projects/1/forms/x.svc`, from the request's Host (and scheme as served or
/// as a proxy reports it).
fn service_root(app: &App, headers: &HeaderMap, pid: ProjectId, svc: &str) -> String {
    let host = headers
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("localhost");
    let forwarded_https = headers
        .get("x-forwarded-proto")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("https"));
    let scheme = if app.config.tls_enabled() || forwarded_https {
        "https"
    } else {
        "http"
    };
    let form: String = svc
        .bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                char::from(b).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect();
    format!("{scheme}://{host}/v1/projects/{}/forms/{form}", pid.0)
}

/// `GET ….svc`: the service document (called from the form route).
pub async fn service_document(
    app: &App,
    caller: &Caller,
    headers: &HeaderMap,
    pid: ProjectId,
    svc: &str,
) -> Result<Response, ApiError> {
    let actor = signed_in(caller)?;
    let id = svc.strip_suffix(".svc").unwrap_or(svc);
    let tables = odata::tables(app, actor, pid, id).await?;
    let root = service_root(app, headers, pid, svc);
    let body = json!({
        "@odata.context": format!("{root}/$metadata"),
        "value": tables
            .iter()
            .map(|t| json!({"name": t, "kind": "EntitySet", "url": t}))
            .collect::<Vec<_>>(),
    });
    Ok((StatusCode::OK, odata_headers(true), body.to_string()).into_response())
}

async fn odata_table(
    State(app): State<App>,
    caller: Caller,
    headers: HeaderMap,
    Path(p): Path<P>,
    Query(q): Query<Vec<(String, String)>>,
) -> Result<Response, ApiError> {
    let Some(id) = p.form.strip_suffix(".svc") else {
        return Err(ApiError::NotFound);
    };
    let actor = signed_in(&caller)?;
    let pid = p.project()?;
    let table = p.table.clone().unwrap_or_default();
    if table == "$metadata" {
        let xml = odata::metadata(&app, actor, pid, id).await?;
        return Ok((StatusCode::OK, odata_headers(false), xml).into_response());
    }
    if let Some((k, _)) = q
        .iter()
        .find(|(k, _)| k.starts_with('$') && !KNOWN.contains(&k.as_str()))
    {
        return Err(ApiError::NotImplemented {
            code: "odata.unsupported",
            message: format!("The OData query option {k} is not supported."),
        });
    }
    if param(&q, "$format").is_some_and(|f| !f.eq_ignore_ascii_case("json")) {
        return Err(ApiError::bad_request(
            "odata.format",
            "Only $format=json is served for tables.",
        ));
    }
    let opts = Options {
        top: count_param(&q, "$top")?,
        skip: count_param(&q, "$skip")?,
        count: is_true(param(&q, "$count")),
        wkt: is_true(param(&q, "$wkt")),
        filter: param(&q, "$filter").map(str::to_owned),
        select: param(&q, "$select").map(str::to_owned),
        skiptoken: param(&q, "$skiptoken").map(str::to_owned),
    };
    let root = service_root(&app, &headers, pid, &p.form);
    let rx = odata::table(&app, actor, pid, id, &table, opts, &root, &q).await?;
    Ok((StatusCode::OK, odata_headers(true), streamed(rx)).into_response())
}
