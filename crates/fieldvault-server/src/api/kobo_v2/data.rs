//! `/api/v2/assets/{uid}/data/…`: submissions as flat JSON, one submission, deletion, bulk edits
//! and deletions, validation statuses (specs/kobo-api-v2.md §2).

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use fieldvault_core::kobo_query::{self, QueryError, Sort};
use serde::Deserialize;
use serde_json::{Value, json};

use super::{BaseUrl, KoboError, check_format, page, strip_format};
use crate::App;
use crate::api::json::AppJson;
use crate::extract::AuthUser;
use crate::service::kobo::{self, DataRequest, Selection};
use crate::service::redaction;

#[derive(Deserialize)]
pub struct P {
    uid: String,
    id: Option<String>,
    att: Option<String>,
    size: Option<String>,
}

fn query_error(e: QueryError) -> KoboError {
    match e {
        QueryError::NotJson => KoboError::field("query", "Value must be valid JSON."),
        other => KoboError::field("query", other.to_string()),
    }
}

/// `GET /data/`.
pub async fn list(
    State(app): State<App>,
    who: AuthUser,
    BaseUrl(base): BaseUrl,
    Path(p): Path<P>,
    Query(q): Query<Vec<(String, String)>>,
) -> Result<Json<Value>, KoboError> {
    check_format(&q)?;
    let get = |k: &str| q.iter().find(|(key, _)| key == k).map(|(_, v)| v.as_str());
    if get("count").is_some() {
        return Err(KoboError::field(
            "count",
            "This param is not implemented. Use `count` property of the response instead.",
        ));
    }
    let limit = match get("limit") {
        None => kobo::DEFAULT_LIMIT,
        Some(v) => match v.parse::<usize>() {
            Ok(n) if n > 0 => n.min(kobo::MAX_LIMIT),
            _ => return Err(KoboError::field("limit", "A positive integer is required")),
        },
    };
    let start = match get("start").or_else(|| get("offset")) {
        None => 0,
        Some(v) => v
            .parse::<usize>()
            .map_err(|_| KoboError::field("start", "A positive integer is required."))?,
    };
    let query = match get("query") {
        None | Some("") => kobo_query::Query::all(),
        Some(text) => kobo_query::Query::parse_str(text).map_err(query_error)?,
    };
    let fields = match get("fields") {
        None | Some("") => None,
        Some(text) => {
            let list: Vec<String> = serde_json::from_str(text)
                .map_err(|_| KoboError::field("fields", "Value must be a JSON list of keys."))?;
            if list.len() > 5000 {
                return Err(KoboError::field("fields", "At most 5000 keys."));
            }
            Some(list)
        }
    };
    let sort = match get("sort") {
        None | Some("") => Sort(Vec::new()),
        Some(text) => Sort::parse_str(text).map_err(|e| KoboError::field("sort", e.to_string()))?,
    };
    let uid = strip_format(&p.uid)?.to_owned();
    let req = DataRequest {
        start,
        limit,
        query,
        fields,
        sort,
    };
    let got = kobo::data(&app, &who.actor, &uid, req, &base).await?;
    Ok(Json(page(
        &format!("{base}/api/v2/assets/{uid}/data/"),
        &q,
        got.count,
        start,
        limit,
        got.results.into_iter().map(Value::Object).collect(),
    )))
}

fn id_of(p: &P) -> Result<&str, KoboError> {
    strip_format(p.id.as_deref().unwrap_or_default())
}

/// `GET /data/{id}/`.
pub async fn one(
    State(app): State<App>,
    who: AuthUser,
    BaseUrl(base): BaseUrl,
    Path(p): Path<P>,
    Query(q): Query<Vec<(String, String)>>,
) -> Result<Json<Value>, KoboError> {
    check_format(&q)?;
    let doc = kobo::record(&app, &who.actor, &p.uid, id_of(&p)?, &base).await?;
    Ok(Json(Value::Object(doc)))
}

/// `DELETE /data/{id}/`.
pub async fn delete_one(
    State(app): State<App>,
    who: AuthUser,
    Path(p): Path<P>,
) -> Result<StatusCode, KoboError> {
    kobo::delete_one(&app, &who.actor, &who.user, &p.uid, id_of(&p)?).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// The `payload` object of a bulk body (a bare body is accepted too).
fn payload(body: &Value) -> &Value {
    body.get("payload").unwrap_or(body)
}

fn selection(payload: &Value) -> Result<Selection, KoboError> {
    if let Some(ids) = payload.get("submission_ids") {
        let list = ids.as_array().filter(|l| !l.is_empty()).ok_or_else(|| {
            KoboError::field("payload", "`submission_ids` must be a non-empty list")
        })?;
        let mut out = Vec::with_capacity(list.len());
        for v in list {
            let n = match v {
                Value::Number(n) => n.as_i64(),
                Value::String(s) => s.trim().parse().ok(),
                _ => None,
            };
            out.push(n.ok_or_else(|| {
                KoboError::field("detail", "One or more submission ids are invalid")
            })?);
        }
        return Ok(Selection::Ids(out));
    }
    if let Some(q) = payload.get("query") {
        return Ok(Selection::Query(
            kobo_query::Query::parse(q).map_err(query_error)?,
        ));
    }
    if payload.get("confirm") == Some(&Value::Bool(true)) {
        return Ok(Selection::All);
    }
    Err(KoboError::field("payload", "Confirmation is required"))
}

/// `DELETE /data/bulk/`.
pub async fn bulk_delete(
    State(app): State<App>,
    who: AuthUser,
    Path(p): Path<P>,
    AppJson(body): AppJson<Value>,
) -> Result<Json<Value>, KoboError> {
    let sel = selection(payload(&body))?;
    let n = kobo::delete(&app, &who.actor, &who.user, &p.uid, sel).await?;
    Ok(Json(
        json!({ "detail": format!("{n} submissions have been deleted") }),
    ))
}

/// `PATCH /data/bulk/`: `data` sets values (a new version of each submission); Fieldvault's
/// `redact` object redacts instead (docs/redaction.md).
pub async fn bulk_patch(
    State(app): State<App>,
    who: AuthUser,
    Path(p): Path<P>,
    AppJson(body): AppJson<Value>,
) -> Result<(StatusCode, Json<Value>), KoboError> {
    let pl = payload(&body);
    let sel = selection(pl)?;
    if let Some(r) = pl.get("redact") {
        let req = redaction::parse_request(r, sel)?;
        let asset = kobo::asset(&app, &who.actor, &p.uid).await?;
        let report = redaction::redact(&app, &who.actor, &who.user, &asset, req).await?;
        return Ok((StatusCode::OK, Json(report.to_json())));
    }
    let data = pl
        .get("data")
        .and_then(Value::as_object)
        .ok_or_else(|| KoboError::field("data", "`data` is required and must be an object"))?;
    let results = kobo::bulk_edit(&app, &who.actor, &who.user, &p.uid, sel, data).await?;
    let ok = results.iter().filter(|r| r.status_code == 201).count();
    let body = json!({
        "count": results.len(),
        "successes": ok,
        "failures": results.len() - ok,
        "results": results.iter().map(|r| json!({
            "uuid": r.uuid,
            "root_uuid": r.root_uuid,
            "status_code": r.status_code,
            "message": r.message,
        })).collect::<Vec<_>>(),
    });
    let status = if ok > 0 {
        StatusCode::OK
    } else {
        StatusCode::BAD_REQUEST
    };
    Ok((status, Json(body)))
}

fn status_uid(body: &Value, allow_null: bool) -> Result<Option<&'static str>, KoboError> {
    let pl = payload(body);
    let v = pl
        .get("validation_status.uid")
        .or_else(|| body.get("validation_status.uid"));
    match v {
        Some(Value::String(s)) => Ok(Some(kobo::parse_validation(s)?)),
        Some(Value::Null) if allow_null => Ok(None),
        Some(other) => Err(KoboError::field(
            "detail",
            format!("Invalid validation status: `{other}`"),
        )),
        None => Err(KoboError::field(
            "detail",
            "Invalid validation status: `None`",
        )),
    }
}

/// `PATCH /data/validation_statuses/`.
pub async fn statuses_patch(
    State(app): State<App>,
    who: AuthUser,
    Path(p): Path<P>,
    AppJson(body): AppJson<Value>,
) -> Result<Json<Value>, KoboError> {
    let status = status_uid(&body, true)?;
    let sel = selection(payload(&body))?;
    let n = kobo::set_validation(&app, &who.actor, &who.user, &p.uid, sel, status).await?;
    Ok(Json(
        json!({ "detail": format!("{n} submissions have been updated") }),
    ))
}

/// `DELETE /data/validation_statuses/`: resets statuses to `{}`.
pub async fn statuses_delete(
    State(app): State<App>,
    who: AuthUser,
    Path(p): Path<P>,
    AppJson(body): AppJson<Value>,
) -> Result<Json<Value>, KoboError> {
    let status = status_uid(&body, true).unwrap_or(None);
    let sel = selection(payload(&body))?;
    let n = kobo::set_validation(&app, &who.actor, &who.user, &p.uid, sel, status).await?;
    Ok(Json(
        json!({ "detail": format!("{n} submissions have been updated") }),
    ))
}

/// `GET /data/{id}/validation_status/`.
pub async fn status(
    State(app): State<App>,
    who: AuthUser,
    Path(p): Path<P>,
) -> Result<Json<Value>, KoboError> {
    Ok(Json(
        kobo::record_validation(&app, &who.actor, &p.uid, id_of(&p)?).await?,
    ))
}

/// `PATCH /data/{id}/validation_status/`.
pub async fn status_patch(
    State(app): State<App>,
    who: AuthUser,
    Path(p): Path<P>,
    AppJson(body): AppJson<Value>,
) -> Result<Json<Value>, KoboError> {
    let status = status_uid(&body, false)?;
    let id = kobo::record_id(&app, &who.actor, &p.uid, id_of(&p)?).await?;
    kobo::set_validation(
        &app,
        &who.actor,
        &who.user,
        &p.uid,
        Selection::Ids(vec![id]),
        status,
    )
    .await?;
    let (_, v) = kobo::validation_of(&app, &who.actor, &p.uid, &id.to_string()).await?;
    Ok(Json(v))
}

/// `DELETE /data/{id}/validation_status/`.
pub async fn status_delete(
    State(app): State<App>,
    who: AuthUser,
    Path(p): Path<P>,
) -> Result<StatusCode, KoboError> {
    let id = kobo::record_id(&app, &who.actor, &p.uid, id_of(&p)?).await?;
    kobo::set_validation(
        &app,
        &who.actor,
        &who.user,
        &p.uid,
        Selection::Ids(vec![id]),
        None,
    )
    .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// `GET /data/{id}/attachments/{att}/`: the file (a stray `?format=json` is ignored, as KPI's own
/// URLs sometimes carry it).
pub async fn attachment(
    State(app): State<App>,
    who: AuthUser,
    Path(p): Path<P>,
) -> Result<axum::response::Response, KoboError> {
    use axum::response::IntoResponse as _;
    use futures_util::StreamExt as _;
    let att = p.att.as_deref().unwrap_or_default();
    let (slot, stream) = kobo::attachment(&app, &who.actor, &p.uid, id_of(&p)?, att).await?;
    let body = axum::body::Body::from_stream(stream.map(|r| r.map_err(std::io::Error::other)));
    let mut resp = body.into_response();
    let ct = slot
        .content_type
        .as_deref()
        .and_then(|c| axum::http::HeaderValue::from_str(c).ok())
        .unwrap_or(axum::http::HeaderValue::from_static(
            "application/octet-stream",
        ));
    resp.headers_mut()
        .insert(axum::http::header::CONTENT_TYPE, ct);
    Ok(resp)
}

/// `GET /data/{id}/attachments/{att}/{size}/`: `original` is the file; resized images are not
/// produced, so `small`/`medium`/`large` also answer with the original.
pub async fn attachment_sized(
    state: State<App>,
    who: AuthUser,
    path: Path<P>,
) -> Result<axum::response::Response, KoboError> {
    match path.size.as_deref() {
        Some("original" | "small" | "medium" | "large") => attachment(state, who, path).await,
        _ => Err(KoboError::field(
            "size",
            "Use small, medium, large or original.",
        )),
    }
}
