//! `/v1/projects/{pid}/forms/…`: forms, drafts, media, and reading submissions (Central-shaped,
//! specs/central-api.md §4 and §6). The `.xml` and media downloads are shared with OpenRosa
//! clients, so they accept the same callers (collector tokens are under `/v1/key/…`).

use axum::body::Body;
use axum::extract::{DefaultBodyLimit, Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use bytes::Bytes;
use fieldvault_core::{Actor, ProjectId};
use futures_util::StreamExt as _;
use serde::Deserialize;
use serde_json::{Value, json};

use super::json::{AppJson, iso, iso_opt};
use crate::App;
use crate::openrosa::caller::Caller;
use crate::openrosa::routes::form_xml_response;
use crate::problem::ApiError;
use crate::service::data::{self, DataView};
use crate::service::forms::{self, FormView};
use crate::service::submissions;

/// The routes.
pub fn routes() -> Router<App> {
    Router::new()
        .route(
            "/v1/projects/{pid}/forms",
            get(list)
                .post(create)
                .layer(DefaultBodyLimit::max(forms::MAX_FORM_BYTES)),
        )
        .route(
            "/v1/projects/{pid}/forms/{form}",
            get(read).patch(update).delete(remove),
        )
        .route(
            "/v1/projects/{pid}/forms/{form}/draft",
            get(read_draft)
                .post(replace_draft)
                .layer(DefaultBodyLimit::max(forms::MAX_FORM_BYTES)),
        )
        .route(
            "/v1/projects/{pid}/forms/{form}/draft/publish",
            post(publish),
        )
        .route(
            "/v1/projects/{pid}/forms/{form}/draft/attachments",
            get(draft_media_list),
        )
        .route(
            "/v1/projects/{pid}/forms/{form}/draft/attachments/{name}",
            post(upload_media),
        )
        .route(
            "/v1/projects/{pid}/forms/{form}/attachments",
            get(media_list),
        )
        .route(
            "/v1/projects/{pid}/forms/{form}/attachments/{name}",
            get(media),
        )
        .route(
            "/v1/projects/{pid}/forms/{form}/submissions",
            get(submission_list),
        )
        .route(
            "/v1/projects/{pid}/forms/{form}/submissions/{instance}",
            get(submission_read)
                .patch(submission_review)
                .delete(submission_delete),
        )
        .route(
            "/v1/projects/{pid}/forms/{form}/submissions/{instance}/restore",
            post(submission_restore),
        )
        .route(
            "/v1/projects/{pid}/forms/{form}/submissions/{instance}/attachments",
            get(submission_attachments),
        )
        .route(
            "/v1/projects/{pid}/forms/{form}/submissions/{instance}/versions",
            get(submission_versions),
        )
        .route(
            "/v1/projects/{pid}/forms/{form}/submissions/{instance}/attachments/{name}",
            get(submission_attachment),
        )
}

#[derive(Deserialize)]
struct P {
    pid: String,
    form: Option<String>,
    name: Option<String>,
    instance: Option<String>,
}

impl P {
    fn project(&self) -> Result<ProjectId, ApiError> {
        self.pid
            .parse()
            .map(ProjectId)
            .map_err(|_| ApiError::NotFound)
    }
    fn form(&self) -> &str {
        self.form.as_deref().unwrap_or_default()
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

/// Central's Form: the form row merged with its current definition.
fn form_json(v: &FormView) -> Value {
    json!({
        "projectId": v.form.project_id,
        "xmlFormId": v.form.xml_form_id,
        "name": v.def.title,
        "version": v.def.version,
        "enketoId": null,
        "enketoOnceId": null,
        "hash": v.def.md5.trim_start_matches("md5:"),
        "sha256": fieldvault_crypto::random::to_hex(&fieldvault_crypto::mac::sha256(&v.def.xml)),
        "keyId": null,
        "encrypted": v.def.public_key.is_some(),
        "draftToken": null,
        "state": v.form.state,
        "anonymous": v.form.anonymous,
        "publishedAt": iso_opt(v.def.published_at),
        "createdAt": iso(v.form.created_at),
        "updatedAt": iso_opt(v.form.updated_at),
    })
}

fn media_json(v: &FormView) -> Value {
    Value::Array(
        v.media
            .iter()
            .map(|m| {
                json!({
                    "name": m.name,
                    "type": media_type(&m.name),
                    "exists": m.blob_name.is_some(),
                    "blobExists": m.blob_name.is_some(),
                    "hash": m.md5.as_deref().map(|h| h.trim_start_matches("md5:")),
                    "size": m.size,
                })
            })
            .collect(),
    )
}

fn media_type(name: &str) -> &'static str {
    let ext = name
        .rsplit('.')
        .next()
        .unwrap_or_default()
        .to_ascii_lowercase();
    match ext.as_str() {
        "png" | "jpg" | "jpeg" | "gif" | "svg" | "webp" => "image",
        "mp3" | "wav" | "ogg" | "m4a" | "amr" => "audio",
        "mp4" | "3gp" | "webm" | "mov" => "video",
        _ => "file",
    }
}

#[derive(Deserialize)]
struct CreateQuery {
    publish: Option<String>,
}

fn is_true(v: Option<&str>) -> bool {
    // pyodk sends Python booleans (`True`); Central compares case-insensitively.
    v.is_some_and(|v| v.eq_ignore_ascii_case("true"))
}

async fn create(
    State(app): State<App>,
    caller: Caller,
    Path(p): Path<P>,
    Query(q): Query<CreateQuery>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Json<Value>, ApiError> {
    let actor = signed_in(&caller)?;
    let ct = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok());
    let v = forms::create(
        &app,
        actor,
        p.project()?,
        &body,
        ct,
        is_true(q.publish.as_deref()),
    )
    .await?;
    Ok(Json(form_json(&v)))
}

async fn list(
    State(app): State<App>,
    caller: Caller,
    Path(p): Path<P>,
) -> Result<Json<Value>, ApiError> {
    let actor = signed_in(&caller)?;
    let views = forms::list(&app, actor, p.project()?).await?;
    Ok(Json(Value::Array(views.iter().map(form_json).collect())))
}

async fn read(
    State(app): State<App>,
    caller: Caller,
    headers: HeaderMap,
    Path(p): Path<P>,
) -> Result<Response, ApiError> {
    if p.form().ends_with(".svc") {
        return super::data::service_document(&app, &caller, &headers, p.project()?, p.form())
            .await;
    }
    if let Some(id) = p.form().strip_suffix(".xml") {
        return form_xml_response(&app, &caller, p.project()?, id)
            .await
            .map_err(|e| e.0);
    }
    Ok(Json(form_json(&view(&app, &caller, &p, false).await?)).into_response())
}

async fn read_draft(
    State(app): State<App>,
    caller: Caller,
    Path(p): Path<P>,
) -> Result<Json<Value>, ApiError> {
    Ok(Json(form_json(&view(&app, &caller, &p, true).await?)))
}

#[derive(Deserialize)]
struct FormPatch {
    state: Option<String>,
    anonymous: Option<bool>,
}

async fn update(
    State(app): State<App>,
    caller: Caller,
    Path(p): Path<P>,
    AppJson(patch): AppJson<FormPatch>,
) -> Result<Json<Value>, ApiError> {
    let actor = signed_in(&caller)?;
    let pid = p.project()?;
    forms::update(
        &app,
        actor,
        pid,
        p.form(),
        patch.state.as_deref(),
        patch.anonymous,
    )
    .await?;
    let v = forms::get(&app, actor, pid, p.form(), false).await?;
    Ok(Json(form_json(&v)))
}

async fn remove(
    State(app): State<App>,
    caller: Caller,
    Path(p): Path<P>,
) -> Result<Json<Value>, ApiError> {
    let actor = signed_in(&caller)?;
    forms::delete(&app, actor, p.project()?, p.form()).await?;
    Ok(Json(json!({"success": true})))
}

async fn replace_draft(
    State(app): State<App>,
    caller: Caller,
    Path(p): Path<P>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Json<Value>, ApiError> {
    let actor = signed_in(&caller)?;
    if body.is_empty() {
        return Err(ApiError::bad_request(
            "form.draft_body",
            "Send the new version's XForm as the request body.",
        ));
    }
    let ct = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok());
    forms::replace_draft(&app, actor, p.project()?, p.form(), &body, ct).await?;
    Ok(Json(json!({"success": true})))
}

#[derive(Deserialize)]
struct PublishQuery {
    version: Option<String>,
}

async fn publish(
    State(app): State<App>,
    caller: Caller,
    Path(p): Path<P>,
    Query(q): Query<PublishQuery>,
) -> Result<Json<Value>, ApiError> {
    let actor = signed_in(&caller)?;
    forms::publish(&app, actor, p.project()?, p.form(), q.version.as_deref()).await?;
    Ok(Json(json!({"success": true})))
}

async fn draft_media_list(
    State(app): State<App>,
    caller: Caller,
    Path(p): Path<P>,
) -> Result<Json<Value>, ApiError> {
    Ok(Json(media_json(&view(&app, &caller, &p, true).await?)))
}

async fn media_list(
    State(app): State<App>,
    caller: Caller,
    Path(p): Path<P>,
) -> Result<Json<Value>, ApiError> {
    Ok(Json(media_json(&view(&app, &caller, &p, false).await?)))
}

/// The form a signed-in caller asked for: its draft, or its current definition.
async fn view(app: &App, caller: &Caller, p: &P, draft: bool) -> Result<FormView, ApiError> {
    let actor = signed_in(caller)?;
    Ok(forms::get(app, actor, p.project()?, p.form(), draft).await?)
}

async fn upload_media(
    State(app): State<App>,
    caller: Caller,
    Path(p): Path<P>,
    headers: HeaderMap,
    body: Body,
) -> Result<Json<Value>, ApiError> {
    let actor = signed_in(&caller)?;
    let ct = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok());
    let name = p.name.clone().unwrap_or_default();
    let stream = body.into_data_stream();
    let slot = forms::upload_media(&app, actor, p.project()?, p.form(), &name, ct, stream).await?;
    Ok(Json(json!({
        "name": slot.name,
        "type": media_type(&slot.name),
        "exists": true,
        "blobExists": true,
        "hash": slot.md5.as_deref().map(|h| h.trim_start_matches("md5:")),
        "size": slot.size,
    })))
}

async fn media(
    State(app): State<App>,
    caller: Caller,
    Path(p): Path<P>,
) -> Result<Response, ApiError> {
    let (slot, stream) = forms::media(
        &app,
        &caller.actor,
        p.project()?,
        p.form(),
        p.name.as_deref().unwrap_or_default(),
    )
    .await
    .map_err(|e| anonymous_challenge(&caller, e.into()))?;
    Ok(file_response(
        &slot.name,
        slot.content_type.as_deref(),
        Body::from_stream(stream),
    ))
}

fn anonymous_challenge(caller: &Caller, e: ApiError) -> ApiError {
    match (&caller.actor, e) {
        (Actor::Anonymous, ApiError::NotFound | ApiError::Forbidden { .. }) => {
            ApiError::Unauthenticated {
                code: "auth.required",
                message: "This resource needs authentication.".into(),
            }
        }
        (_, e) => e,
    }
}

fn file_response(name: &str, content_type: Option<&str>, body: Body) -> Response {
    let mut h = HeaderMap::new();
    let ct = content_type.unwrap_or("application/octet-stream");
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_str(ct).unwrap_or(HeaderValue::from_static("application/octet-stream")),
    );
    let safe: String = name
        .chars()
        .filter(|c| c.is_ascii_graphic() && *c != '"' && *c != '\\')
        .collect();
    if let Ok(v) = HeaderValue::from_str(&format!("attachment; filename=\"{safe}\"")) {
        h.insert(header::CONTENT_DISPOSITION, v);
    }
    (StatusCode::OK, h, body).into_response()
}

/// Central's Submission, plus `data`: the answers flattened the KoboToolbox way (`null` for
/// ODK-encrypted submissions, which the server cannot read).
fn submission_json(v: &DataView) -> Value {
    let r = &v.record;
    let review = (r.review_state != "received").then_some(r.review_state.as_str());
    let submitter = r.submitter_user_id.or(r.submitter_app_user_id);
    json!({
        "instanceId": r.instance_id,
        "submitterId": submitter,
        "submitterName": r.submitter_name,
        "deviceId": r.device_id,
        "userAgent": null,
        "reviewState": review,
        "encrypted": r.encrypted,
        "createdAt": iso(r.created_at),
        "updatedAt": iso_opt(r.updated_at),
        "deletedAt": iso_opt(r.deleted_at),
        "edits": r.edits,
        "attachmentsPresent": r.attachments_present,
        "attachmentsExpected": r.attachments_expected,
        "formVersion": r.form_version,
        "currentVersion": {
            "instanceId": r.current_instance_id,
            "instanceName": r.instance_name,
            "submitterId": submitter,
            "deviceId": r.device_id,
            "userAgent": null,
            "createdAt": iso(r.updated_at.unwrap_or(r.created_at)),
            "formVersion": r.form_version,
            "current": true,
        },
        "data": v.data,
    })
}

#[derive(Deserialize)]
struct Page {
    limit: Option<String>,
    offset: Option<String>,
    deleted: Option<String>,
}

fn int_param(name: &str, v: Option<&str>) -> Result<Option<i64>, ApiError> {
    v.map(|s| {
        s.parse::<i64>().map_err(|_| {
            ApiError::bad_request("request.bad_query", format!("{name} must be an integer"))
        })
    })
    .transpose()
}

async fn submission_list(
    State(app): State<App>,
    caller: Caller,
    Path(p): Path<P>,
    Query(q): Query<Page>,
) -> Result<Json<Value>, ApiError> {
    let actor = signed_in(&caller)?;
    let limit = int_param("limit", q.limit.as_deref())?;
    let offset = int_param("offset", q.offset.as_deref())?;
    let deleted = is_true(q.deleted.as_deref());
    let rows = data::list(&app, actor, p.project()?, p.form(), deleted, limit, offset).await?;
    Ok(Json(Value::Array(
        rows.iter().map(submission_json).collect(),
    )))
}

async fn submission_read(
    State(app): State<App>,
    caller: Caller,
    Path(p): Path<P>,
) -> Result<Response, ApiError> {
    let actor = signed_in(&caller)?;
    let instance = p.instance.clone().unwrap_or_default();
    if let Some(id) = instance.strip_suffix(".xml") {
        let xml = submissions::xml(&app, actor, p.project()?, p.form(), id).await?;
        return Ok(([(header::CONTENT_TYPE, "application/xml")], xml).into_response());
    }
    let v = data::get(&app, actor, p.project()?, p.form(), &instance).await?;
    Ok(Json(submission_json(&v)).into_response())
}

#[derive(Deserialize)]
struct Review {
    #[serde(rename = "reviewState")]
    review_state: Option<String>,
}

async fn submission_review(
    State(app): State<App>,
    caller: Caller,
    Path(p): Path<P>,
    AppJson(body): AppJson<Review>,
) -> Result<Json<Value>, ApiError> {
    let actor = signed_in(&caller)?;
    let instance = p.instance.clone().unwrap_or_default();
    // Central writes "received" as null.
    let state = body.review_state.unwrap_or_else(|| "received".into());
    let record = data::review(&app, actor, p.project()?, p.form(), &instance, &state).await?;
    Ok(Json(submission_json(&DataView { record, data: None })))
}

async fn submission_delete(
    State(app): State<App>,
    caller: Caller,
    Path(p): Path<P>,
) -> Result<Json<Value>, ApiError> {
    let actor = signed_in(&caller)?;
    let instance = p.instance.clone().unwrap_or_default();
    data::delete(&app, actor, p.project()?, p.form(), &instance).await?;
    Ok(Json(json!({"success": true})))
}

async fn submission_restore(
    State(app): State<App>,
    caller: Caller,
    Path(p): Path<P>,
) -> Result<Json<Value>, ApiError> {
    let actor = signed_in(&caller)?;
    let instance = p.instance.clone().unwrap_or_default();
    data::restore(&app, actor, p.project()?, p.form(), &instance).await?;
    Ok(Json(json!({"success": true})))
}

async fn submission_attachments(
    State(app): State<App>,
    caller: Caller,
    Path(p): Path<P>,
) -> Result<Json<Value>, ApiError> {
    let actor = signed_in(&caller)?;
    let instance = p.instance.clone().unwrap_or_default();
    let rows = submissions::attachments(&app, actor, p.project()?, p.form(), &instance).await?;
    Ok(Json(Value::Array(
        rows.iter()
            .map(|a| {
                json!({
                    "name": a.name,
                    "exists": a.blob_name.is_some(),
                    "size": a.size,
                    "sha256": a.sha256.as_deref().map(fieldvault_crypto::random::to_hex),
                })
            })
            .collect(),
    )))
}

/// `GET …/submissions/{instanceId}/versions`: Central's SubmissionVersion[], newest first, with
/// `formVersion` (Central's extended field), `submitterName` and `deprecatedId` (the version each
/// edit replaced).
async fn submission_versions(
    State(app): State<App>,
    caller: Caller,
    Path(p): Path<P>,
) -> Result<Json<Value>, ApiError> {
    let actor = signed_in(&caller)?;
    let instance = p.instance.clone().unwrap_or_default();
    let rows = submissions::versions(&app, actor, p.project()?, p.form(), &instance).await?;
    Ok(Json(Value::Array(
        rows.iter()
            .map(|r| {
                let v = &r.version;
                json!({
                    "instanceId": v.instance_id,
                    "instanceName": v.instance_name,
                    "submitterId": v.submitter_user_id.or(v.submitter_app_user_id),
                    "submitterName": r.submitter_name,
                    "deviceId": v.device_id,
                    "userAgent": null,
                    "createdAt": iso(v.created_at),
                    "formVersion": v.form_version,
                    "deprecatedId": v.deprecated_id,
                    "current": v.current,
                })
            })
            .collect(),
    )))
}

async fn submission_attachment(
    State(app): State<App>,
    caller: Caller,
    Path(p): Path<P>,
) -> Result<Response, ApiError> {
    let actor = signed_in(&caller)?;
    let instance = p.instance.clone().unwrap_or_default();
    let name = p.name.clone().unwrap_or_default();
    let (slot, stream) =
        submissions::attachment(&app, actor, p.project()?, p.form(), &instance, &name).await?;
    let body = Body::from_stream(stream.map(|r| r.map_err(std::io::Error::other)));
    Ok(file_response(
        &slot.name,
        slot.content_type.as_deref(),
        body,
    ))
}
