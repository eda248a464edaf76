//! `/api/v2/assets/{uid}/exports/`: create, poll, list, delete, download (specs §3.1).

use axum::Json;
use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use fieldvault_store::KoboExportRow;
use serde::Deserialize;
use serde_json::{Value, json};

use super::assets::datetime;
use super::{BaseUrl, KoboError, page, strip_format};
use crate::App;
use crate::api::json::AppJson;
use crate::extract::AuthUser;
use crate::service::kobo_export::{self, Kind};

#[derive(Deserialize)]
pub struct P {
    uid: String,
    euid: Option<String>,
}

fn task_json(base: &str, asset_uid: &str, t: &KoboExportRow) -> Value {
    let url = format!("{base}/api/v2/assets/{asset_uid}/exports/{}/", t.uid);
    let mut data: Value = serde_json::from_str(&t.settings).unwrap_or_else(|_| json!({}));
    if let Some(o) = data.as_object_mut() {
        o.insert(
            "source".into(),
            json!(format!("{base}/api/v2/assets/{asset_uid}/")),
        );
        if let Some(done) = t.completed_at {
            o.insert(
                "processing_time_seconds".into(),
                json!((done - t.created_at) as f64 / 1000.0),
            );
        }
    }
    let messages = match &t.error {
        Some(e) => json!({ "error_type": "ExportError", "error": e }),
        None => json!({}),
    };
    let result = (t.status == "complete").then(|| format!("{url}download/"));
    json!({
        "url": url,
        "status": t.status,
        "messages": messages,
        "uid": t.uid,
        "date_created": datetime(t.created_at),
        "date_expires": datetime(t.expires_at),
        "result": result,
        "file_name": t.file_name,
        "data": data,
    })
}

/// `POST /exports/`: 201 with the new task, 200 with an identical running one.
pub async fn create(
    State(app): State<App>,
    who: AuthUser,
    BaseUrl(base): BaseUrl,
    Path(p): Path<P>,
    AppJson(body): AppJson<Value>,
) -> Result<(StatusCode, Json<Value>), KoboError> {
    let (t, created) = kobo_export::create(&app, &who.actor, &who.user, &p.uid, &body).await?;
    let status = if created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((status, Json(task_json(&base, &p.uid, &t))))
}

/// `GET /exports/`.
pub async fn list(
    State(app): State<App>,
    who: AuthUser,
    BaseUrl(base): BaseUrl,
    Path(p): Path<P>,
    Query(q): Query<Vec<(String, String)>>,
) -> Result<Json<Value>, KoboError> {
    let all = kobo_export::list(&app, &who.actor, &who.user, &p.uid).await?;
    let n = all.len();
    let results = all.iter().map(|t| task_json(&base, &p.uid, t)).collect();
    Ok(Json(page(
        &format!("{base}/api/v2/assets/{}/exports/", p.uid),
        &q,
        n,
        0,
        n.max(1),
        results,
    )))
}

/// `GET /exports/{euid}/`.
pub async fn detail(
    State(app): State<App>,
    who: AuthUser,
    BaseUrl(base): BaseUrl,
    Path(p): Path<P>,
) -> Result<Json<Value>, KoboError> {
    let euid = strip_format(p.euid.as_deref().unwrap_or_default())?;
    let t = kobo_export::get(&app, &who.actor, &who.user, &p.uid, euid).await?;
    Ok(Json(task_json(&base, &p.uid, &t)))
}

/// `DELETE /exports/{euid}/`.
pub async fn remove(
    State(app): State<App>,
    who: AuthUser,
    Path(p): Path<P>,
) -> Result<StatusCode, KoboError> {
    let euid = p.euid.as_deref().unwrap_or_default();
    kobo_export::delete(&app, &who.actor, &who.user, &p.uid, euid).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// `GET /exports/{euid}/download/`: the file, decrypted as it streams.
pub async fn download(
    State(app): State<App>,
    who: AuthUser,
    Path(p): Path<P>,
) -> Result<Response, KoboError> {
    let euid = p.euid.as_deref().unwrap_or_default();
    let (name, kind, stream) =
        kobo_export::download(&app, &who.actor, &who.user, &p.uid, euid).await?;
    Ok(file_response(&name, kind, stream))
}

/// An export file as a download (the stream decrypts as it goes).
pub(super) fn file_response(
    name: &str,
    kind: Kind,
    stream: impl futures_util::Stream<Item = Result<bytes::Bytes, fieldvault_store::StoreError>>
    + Send
    + 'static,
) -> Response {
    let mut resp = Body::from_stream(stream).into_response();
    let ct = match kind {
        Kind::Csv => "text/csv; charset=utf-8",
        Kind::Xlsx => "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
    };
    let h = resp.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(ct));
    let ascii: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_graphic() || c == ' ' {
                c
            } else {
                '_'
            }
        })
        .filter(|c| *c != '"' && *c != '\\')
        .collect();
    if let Ok(v) = HeaderValue::from_str(&format!("attachment; filename=\"{ascii}\"")) {
        h.insert(header::CONTENT_DISPOSITION, v);
    }
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    resp
}
