//! OpenRosa endpoints under every base a client may be configured with:
//! `/v1/key/{token}/projects/{id}` (collector tokens, Enketo), `/v1/projects/{id}` (accounts by
//! Basic), the server root (KoboCollect with username and password: every form the account may
//! fill), and `/{username}` (that user's forms open to anonymous submission).

use axum::Router;
use axum::extract::{Multipart, Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use bytes::Bytes;
use fieldvault_core::{Actor, ProjectId};
use futures_util::StreamExt as _;
use serde::Deserialize;

use super::caller::Caller;
use super::render::{FormListEntry, MediaFile, form_list, manifest, openrosa_response};
use super::respond::{OrError, accept_content_length, headers, xml};
use crate::App;
use crate::middleware::client_ip::ClientInfo;
use crate::problem::ApiError;
use crate::service::forms::{self, FormView};
use crate::service::intake::{self, Accepted, Target};
use crate::service::{ServiceError, context};

/// The OpenRosa routes.
pub fn routes() -> Router<App> {
    Router::new()
        .route("/v1/projects/{pid}/formList", get(project_form_list))
        .route(
            "/v1/key/{key}/projects/{pid}/formList",
            get(project_form_list),
        )
        .route(
            "/v1/projects/{pid}/submission",
            get(preflight).head(preflight).post(project_submit),
        )
        .route(
            "/v1/key/{key}/projects/{pid}/submission",
            get(preflight).head(preflight).post(project_submit),
        )
        .route(
            "/v1/projects/{pid}/forms/{form}/manifest",
            get(form_manifest),
        )
        .route(
            "/v1/key/{key}/projects/{pid}/forms/{form}/manifest",
            get(form_manifest),
        )
        .route(
            "/v1/key/{key}/projects/{pid}/forms/{form}",
            get(key_form_xml),
        )
        .route(
            "/v1/key/{key}/projects/{pid}/forms/{form}/attachments/{name}",
            get(form_media),
        )
        .route("/formList", get(root_form_list))
        .route(
            "/submission",
            get(preflight).head(preflight).post(root_submit),
        )
        .route("/{username}/formList", get(user_form_list))
        .route(
            "/{username}/submission",
            get(preflight).head(preflight).post(user_submit),
        )
}

/// Path parameters of every OpenRosa route (each route uses a subset).
#[derive(Deserialize)]
pub struct P {
    pid: Option<String>,
    form: Option<String>,
    name: Option<String>,
    username: Option<String>,
}

impl P {
    fn project(&self) -> Result<ProjectId, OrError> {
        self.pid
            .as_deref()
            .and_then(|p| p.parse().ok())
            .map(ProjectId)
            .ok_or(OrError(ApiError::NotFound))
    }
}

/// Query parameters clients add (`deviceID` from Collect, `formID` and `verbose` on formList).
#[derive(Deserialize, Default)]
pub struct Q {
    #[serde(rename = "deviceID")]
    device_id: Option<String>,
    #[serde(rename = "formID")]
    form_id: Option<String>,
    verbose: Option<String>,
}

/// `scheme://host` of this request, for the absolute URLs OpenRosa documents carry.
pub(crate) fn origin(app: &App, headers: &HeaderMap, client: Option<&ClientInfo>) -> String {
    let scheme = if client.is_some_and(|c| c.secure) {
        "https"
    } else {
        "http"
    };
    let host = headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .filter(|h| {
            !h.is_empty()
                && h.chars()
                    .all(|c| c.is_ascii_alphanumeric() || ".-:[]".contains(c))
        })
        .map_or_else(|| app.config.listen.to_string(), str::to_owned);
    format!("{scheme}://{host}")
}

fn project_base(origin: &str, key: Option<&str>, pid: i64) -> String {
    match key {
        Some(k) => format!("{origin}/v1/key/{k}/projects/{pid}"),
        None => format!("{origin}/v1/projects/{pid}"),
    }
}

fn entry(base: &str, v: &FormView) -> FormListEntry {
    let id = &v.form.xml_form_id;
    let enc = urlencode(id);
    FormListEntry {
        form_id: id.clone(),
        name: v.def.title.clone().unwrap_or_else(|| id.clone()),
        version: (!v.def.version.is_empty()).then(|| v.def.version.clone()),
        hash: v.def.md5.clone(),
        download_url: format!("{base}/forms/{enc}.xml"),
        manifest_url: (!v.media.is_empty()).then(|| format!("{base}/forms/{enc}/manifest")),
    }
}

/// Percent-encodes a path segment (form ids may contain characters URLs reserve).
pub fn urlencode(s: &str) -> String {
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

/// Forms that belong in a form list: published and open (`closing` forms stop being listed).
fn listable(views: Vec<FormView>, only: Option<&str>) -> Vec<FormView> {
    views
        .into_iter()
        .filter(|v| v.form.state == "open" && v.def.published_at.is_some())
        .filter(|v| only.is_none_or(|id| v.form.xml_form_id == id))
        .collect()
}

fn form_list_response(entries: &[FormListEntry], q: &Q) -> Response {
    let verbose = q
        .verbose
        .as_deref()
        .is_some_and(|v| v.eq_ignore_ascii_case("true"));
    xml(StatusCode::OK, form_list(entries, verbose))
}

async fn project_form_list(
    State(app): State<App>,
    caller: Caller,
    Path(p): Path<P>,
    Query(q): Query<Q>,
    headers: HeaderMap,
    client: Option<axum::Extension<ClientInfo>>,
) -> Result<Response, OrError> {
    if matches!(caller.actor, Actor::Anonymous) {
        return Err(ServiceError::Unauthenticated.into());
    }
    let pid = p.project()?;
    let views = listable(
        forms::list(&app, &caller.actor, pid).await?,
        q.form_id.as_deref(),
    );
    let base = project_base(
        &origin(&app, &headers, client.as_deref()),
        caller.key.as_deref(),
        pid.0,
    );
    let entries: Vec<_> = views.iter().map(|v| entry(&base, v)).collect();
    Ok(form_list_response(&entries, &q))
}

async fn root_form_list(
    State(app): State<App>,
    caller: Caller,
    Query(q): Query<Q>,
    headers: HeaderMap,
    client: Option<axum::Extension<ClientInfo>>,
) -> Result<Response, OrError> {
    if matches!(caller.actor, Actor::Anonymous) {
        return Err(ServiceError::Unauthenticated.into());
    }
    let origin = origin(&app, &headers, client.as_deref());
    let mut entries = Vec::new();
    for p in app
        .store
        .list_projects()
        .await
        .map_err(ServiceError::from)?
    {
        match forms::list(&app, &caller.actor, p.project_id()).await {
            Ok(views) => {
                let base = project_base(&origin, None, p.id);
                entries.extend(
                    listable(views, q.form_id.as_deref())
                        .iter()
                        .map(|v| entry(&base, v)),
                );
            }
            Err(ServiceError::NotFound) => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(form_list_response(&entries, &q))
}

async fn user_form_list(
    State(app): State<App>,
    caller: Caller,
    Path(p): Path<P>,
    Query(q): Query<Q>,
    headers: HeaderMap,
    client: Option<axum::Extension<ClientInfo>>,
) -> Result<Response, OrError> {
    let username = p.username.unwrap_or_default();
    let owner = app
        .store
        .user_by_username(&username)
        .await
        .map_err(ServiceError::from)?
        .ok_or(OrError(ApiError::NotFound))?;
    let origin = origin(&app, &headers, client.as_deref());
    let mut entries = Vec::new();
    for proj in app
        .store
        .list_projects()
        .await
        .map_err(ServiceError::from)?
    {
        let role = app
            .store
            .project_role(proj.project_id(), owner.user_id())
            .await
            .map_err(ServiceError::from)?;
        if role.as_deref() != Some("manager") {
            continue;
        }
        let views = match forms::list(&app, &caller.actor, proj.project_id()).await {
            Ok(v) => v,
            Err(ServiceError::NotFound) => continue,
            Err(e) => return Err(e.into()),
        };
        let base = project_base(&origin, None, proj.id);
        entries.extend(
            listable(views, q.form_id.as_deref())
                .iter()
                .filter(|v| v.form.anonymous)
                .map(|v| entry(&base, v)),
        );
    }
    Ok(form_list_response(&entries, &q))
}

async fn form_manifest(
    State(app): State<App>,
    caller: Caller,
    Path(p): Path<P>,
    headers: HeaderMap,
    client: Option<axum::Extension<ClientInfo>>,
) -> Result<Response, OrError> {
    let pid = p.project()?;
    let id = p.form.unwrap_or_default();
    let view = forms::get(&app, &caller.actor, pid, &id, false)
        .await
        .map_err(|e| challenge(&caller, e))?;
    let base = project_base(
        &origin(&app, &headers, client.as_deref()),
        caller.key.as_deref(),
        pid.0,
    );
    // Only files actually uploaded are listed (Collect rejects a manifest entry without a hash).
    let files: Vec<MediaFile> = view
        .media
        .iter()
        .filter_map(|m| {
            Some(MediaFile {
                filename: m.name.clone(),
                hash: m.md5.clone()?,
                download_url: format!(
                    "{base}/forms/{}/attachments/{}",
                    urlencode(&id),
                    urlencode(&m.name)
                ),
            })
        })
        .collect();
    Ok(xml(StatusCode::OK, manifest(&files)))
}

/// For an anonymous caller, "not found" or "forbidden" means "sign in first": Collect then
/// prompts for credentials and retries.
fn challenge(caller: &Caller, e: ServiceError) -> OrError {
    match (&caller.actor, e) {
        (Actor::Anonymous, ServiceError::NotFound | ServiceError::Core(_)) => {
            ServiceError::Unauthenticated.into()
        }
        (_, e) => e.into(),
    }
}

async fn key_form_xml(
    State(app): State<App>,
    caller: Caller,
    Path(p): Path<P>,
) -> Result<Response, OrError> {
    let pid = p.project()?;
    let form = p.form.unwrap_or_default();
    let id = form
        .strip_suffix(".xml")
        .ok_or(OrError(ApiError::NotFound))?;
    form_xml_response(&app, &caller, pid, id).await
}

/// The published XForm, byte-identical to the upload (its md5 is what the form list advertised).
pub async fn form_xml_response(
    app: &App,
    caller: &Caller,
    pid: ProjectId,
    id: &str,
) -> Result<Response, OrError> {
    let view = forms::get(app, &caller.actor, pid, id, false)
        .await
        .map_err(|e| challenge(caller, e))?;
    let mut h = headers(None);
    h.insert(
        header::CONTENT_TYPE,
        axum::http::HeaderValue::from_static("application/xml"),
    );
    Ok((StatusCode::OK, h, view.def.xml).into_response())
}

/// A form media file, decrypted as it streams.
pub async fn form_media(
    State(app): State<App>,
    caller: Caller,
    Path(p): Path<P>,
) -> Result<Response, OrError> {
    let pid = p.project()?;
    let (slot, stream) = forms::media(
        &app,
        &caller.actor,
        pid,
        &p.form.unwrap_or_default(),
        &p.name.unwrap_or_default(),
    )
    .await
    .map_err(|e| challenge(&caller, e))?;
    let mut h = headers(None);
    let ct = slot
        .content_type
        .as_deref()
        .unwrap_or("application/octet-stream");
    if let Ok(v) = axum::http::HeaderValue::from_str(ct) {
        h.insert(header::CONTENT_TYPE, v);
    }
    Ok((StatusCode::OK, h, axum::body::Body::from_stream(stream)).into_response())
}

/// `HEAD` (and `GET`) `/submission`: 204 with the size Collect may send, once the caller is
/// known (an anonymous caller is challenged unless submitting to public forms of a user).
async fn preflight(
    State(app): State<App>,
    caller: Caller,
    Path(p): Path<std::collections::HashMap<String, String>>,
) -> Result<Response, OrError> {
    if matches!(caller.actor, Actor::Anonymous) && !p.contains_key("username") {
        return Err(ServiceError::Unauthenticated.into());
    }
    if let Some(pid) = p.get("pid") {
        let pid = pid
            .parse()
            .map(ProjectId)
            .map_err(|_| OrError(ApiError::NotFound))?;
        let (_, actor) = context::project_actor(app.store.as_ref(), &caller.actor, pid).await?;
        // Someone with no role in the project learns nothing about it.
        if fieldvault_core::authorize(
            &actor,
            fieldvault_core::Verb::ProjectRead,
            fieldvault_core::Resource::Project(pid),
        )
        .is_err()
        {
            return Err(ServiceError::NotFound.into());
        }
    }
    let len = accept_content_length(app.config.body_limit_bytes);
    Ok((StatusCode::NO_CONTENT, headers(Some(&len))).into_response())
}

async fn project_submit(
    State(app): State<App>,
    caller: Caller,
    Path(p): Path<P>,
    Query(q): Query<Q>,
    multipart: Multipart,
) -> Result<Response, OrError> {
    let target = Target::Project(p.project()?);
    submit(&app, &caller, target, q.device_id, multipart).await
}

async fn root_submit(
    State(app): State<App>,
    caller: Caller,
    Query(q): Query<Q>,
    multipart: Multipart,
) -> Result<Response, OrError> {
    if matches!(caller.actor, Actor::Anonymous) {
        return Err(ServiceError::Unauthenticated.into());
    }
    submit(&app, &caller, Target::AnyProject, q.device_id, multipart).await
}

async fn user_submit(
    State(app): State<App>,
    caller: Caller,
    Path(p): Path<P>,
    Query(q): Query<Q>,
    multipart: Multipart,
) -> Result<Response, OrError> {
    let target = Target::OwnerAnonymous(p.username.unwrap_or_default());
    submit(&app, &caller, target, q.device_id, multipart).await
}

/// Bytes buffered for files that arrive before `xml_submission_file` (clients send it first).
const MAX_EARLY_BYTES: usize = 1024 * 1024;

/// Streams a multipart submission: the XML is read (bounded) and checked before any attachment
/// is stored; each expected attachment is encrypted into the blob store as it arrives.
async fn submit(
    app: &App,
    caller: &Caller,
    target: Target,
    device_id: Option<String>,
    mut multipart: Multipart,
) -> Result<Response, OrError> {
    let bad = |m: String| OrError(ApiError::bad_request("submission.invalid", m));
    let mut early: Vec<(String, Option<String>, Bytes)> = Vec::new();
    let mut early_bytes = 0usize;
    let mut prepared = None;
    loop {
        let field = match multipart.next_field().await {
            Ok(Some(f)) => f,
            Ok(None) => break,
            Err(e) => {
                if let Some(p) = prepared.take() {
                    intake::Prepared::abandon(p, app).await;
                }
                return Err(multipart_error(e));
            }
        };
        let name = field.name().unwrap_or_default().to_owned();
        let content_type = field.content_type().map(str::to_owned);
        if name == "xml_submission_file" {
            if prepared.is_some() {
                return Err(bad("More than one xml_submission_file part.".into()));
            }
            let xml = read_limited(field, intake::MAX_XML_BYTES).await?;
            let mut p = intake::prepare(app, &caller.actor, target.clone(), xml, device_id.clone())
                .await
                .map_err(|e| challenge(caller, e))?;
            for (n, ct, bytes) in early.drain(..) {
                let s = futures_util::stream::iter([Ok::<_, std::convert::Infallible>(bytes)]);
                p.add_attachment(app, &n, ct.as_deref(), s).await?;
            }
            prepared = Some(p);
            continue;
        }
        if name == "*isIncomplete*" || name.is_empty() {
            continue;
        }
        // Collect names the part after the file; fall back to the filename.
        let file = field
            .file_name()
            .map(str::to_owned)
            .filter(|f| !f.is_empty())
            .unwrap_or(name);
        match prepared.as_mut() {
            Some(p) => {
                if p.expects(&file) {
                    let stream = field.map(|c| c.map_err(|e| e.to_string()));
                    if let Err(e) = p
                        .add_attachment(app, &file, content_type.as_deref(), Box::pin(stream))
                        .await
                    {
                        if let Some(p) = prepared.take() {
                            p.abandon(app).await;
                        }
                        return Err(e.into());
                    }
                }
            }
            None => {
                let bytes =
                    read_limited(field, MAX_EARLY_BYTES.saturating_sub(early_bytes)).await?;
                early_bytes += bytes.len();
                early.push((file, content_type, bytes));
            }
        }
    }
    let Some(p) = prepared else {
        return Err(bad("The request has no xml_submission_file part.".into()));
    };
    let accepted = p.commit(app).await?;
    let message = match accepted {
        Accepted::Created | Accepted::Journaled => "Submission received.",
        Accepted::Edited => "Edited submission received.",
        Accepted::Duplicate { .. } => "Submission already received; attachments updated.",
    };
    let len = accept_content_length(app.config.body_limit_bytes);
    let mut h = headers(Some(&len));
    h.insert(
        header::CONTENT_TYPE,
        axum::http::HeaderValue::from_static(super::render::XML_CONTENT_TYPE),
    );
    Ok((
        StatusCode::CREATED,
        h,
        openrosa_response(message, Some("submit_success")),
    )
        .into_response())
}

async fn read_limited(
    mut field: axum::extract::multipart::Field<'_>,
    limit: usize,
) -> Result<Bytes, OrError> {
    let mut buf = Vec::new();
    while let Some(chunk) = field.chunk().await.map_err(multipart_error)? {
        if buf.len() + chunk.len() > limit {
            return Err(OrError(ApiError::TooLarge {
                message: format!("This part is larger than the {limit}-byte limit."),
            }));
        }
        buf.extend_from_slice(&chunk);
    }
    Ok(Bytes::from(buf))
}

fn multipart_error(e: axum::extract::multipart::MultipartError) -> OrError {
    if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
        return OrError(ApiError::TooLarge {
            message: "The submission is larger than this server accepts.".into(),
        });
    }
    OrError(ApiError::bad_request(
        "submission.invalid",
        format!("Malformed multipart body: {}", e.body_text()),
    ))
}
