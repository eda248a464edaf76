//! The web console (issue #7, docs/console.md): server-rendered pages (askama, auto-escaped) and
//! one small plain script that calls the JSON API with the browser session cookie and its CSRF
//! token. The pages only lay out what the API answers, so every rule (authorization, the password
//! policy, audit) stays where the API already applies it. Every asset is embedded; the
//! Content-Security-Policy of `middleware/security_headers.rs` (no inline script or style, nothing
//! from elsewhere) applies unchanged.

mod assets;
pub mod collect;

use askama::Template;
use axum::extract::{FromRequestParts, Path, Query, Request, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, header};
use axum::middleware::Next;
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use fieldvault_core::ProjectId;
use serde::Deserialize;
use serde_json::json;

use crate::App;
use crate::api::json::{AppJson, iso, iso_opt};
use crate::extract::AuthUser;
use crate::middleware::client_ip::ClientInfo;
use crate::problem::ApiError;
use crate::service;

/// Header the console's script sends with every API call; answers to it carry no
/// `WWW-Authenticate`, so a 401 does not make the browser pop up its own password dialog.
pub const CONSOLE_HEADER: &str = "x-fieldvault-console";

/// The console's routes, all under `/console` (plus `/` leading there).
pub fn router() -> Router<App> {
    Router::new()
        .route("/", get(|| async { Redirect::to("/console/projects") }))
        .route(
            "/console",
            get(|| async { Redirect::to("/console/projects") }),
        )
        .route(
            "/console/",
            get(|| async { Redirect::to("/console/projects") }),
        )
        .route("/console/assets/{name}", get(assets::serve))
        .route("/console/login", get(login))
        .route("/console/signup", get(signup))
        .route("/console/reset", get(reset))
        .route("/console/account", get(account))
        .route("/console/projects", get(projects))
        .route("/console/projects/{pid}", get(project))
        .route("/console/projects/{pid}/forms/{form}", get(form_data))
        .route(
            "/console/projects/{pid}/forms/{form}/submissions/{instance}",
            get(submission),
        )
        .route("/console/admin", get(admin))
        .route(
            "/console/api/projects/{pid}/collectors",
            post(create_collector),
        )
}

/// Middleware: drops `WWW-Authenticate` from answers to the console's own API calls.
pub async fn quiet_challenge(req: Request, next: Next) -> Response {
    let console = req.headers().contains_key(CONSOLE_HEADER);
    let mut resp = next.run(req).await;
    if console {
        resp.headers_mut().remove(header::WWW_AUTHENTICATE);
    }
    resp
}

/// What every page's frame needs.
pub struct Layout {
    title: String,
    page: &'static str,
    signed_in: bool,
    username: String,
    user_id: i64,
    superuser: bool,
    csrf: String,
    css: String,
    js: String,
}

impl Layout {
    fn new(title: impl Into<String>, page: &'static str, viewer: Option<&Viewer>) -> Self {
        Self {
            title: title.into(),
            page,
            signed_in: viewer.is_some(),
            username: viewer
                .map(|v| v.who.user.username.clone())
                .unwrap_or_default(),
            user_id: viewer.map_or(0, |v| v.who.user.id),
            superuser: viewer.is_some_and(|v| v.who.user.superuser),
            csrf: viewer.map(|v| v.csrf.clone()).unwrap_or_default(),
            css: assets::CSS.path(),
            js: assets::JS.path(),
        }
    }
}

/// A signed-in browser (session cookie). Pages without one send the browser to the log-in page;
/// other refusals become an error page.
pub struct Viewer {
    who: AuthUser,
    csrf: String,
}

impl FromRequestParts<App> for Viewer {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, app: &App) -> Result<Self, Self::Rejection> {
        let login = || {
            let next = parts
                .uri
                .path_and_query()
                .map(|p| p.as_str().to_owned())
                .unwrap_or_default();
            let q = serde_urlencoded::to_string([("next", next)]).unwrap_or_default();
            Redirect::to(&format!("/console/login?{q}")).into_response()
        };
        match crate::extract::authenticate(parts, app).await {
            Ok(Some(who)) if who.cookie => {
                let token = crate::extract::session_cookie(&parts.headers).unwrap_or_default();
                let csrf = service::sessions::csrf_token(app, &token)
                    .await
                    .map_err(|e| error_page(e.into()))?;
                Ok(Viewer { who, csrf })
            }
            Ok(_) | Err(ApiError::Unauthenticated { .. }) => Err(login()),
            Err(e) => Err(error_page(e)),
        }
    }
}

#[derive(Template)]
#[template(path = "console/error.html")]
struct ErrorPage {
    layout: Layout,
    status: u16,
    code: String,
    message: String,
}

/// An API error as a page (status, code and message, as the JSON would carry them).
fn error_page(e: ApiError) -> Response {
    let (status, code, message) = e.parts();
    let page = ErrorPage {
        layout: Layout::new("Error", "error", None),
        status: status.as_u16(),
        code: code.to_owned(),
        message,
    };
    let mut resp = render(&page);
    *resp.status_mut() = status;
    resp
}

fn render(t: &impl Template) -> Response {
    match t.render() {
        Ok(html) => Html(html).into_response(),
        Err(e) => ApiError::Internal(format!("template: {e}")).into_response(),
    }
}

fn fail(e: impl Into<ApiError>) -> Response {
    error_page(e.into())
}

#[derive(Template)]
#[template(path = "console/login.html")]
struct LoginPage {
    layout: Layout,
}

async fn login(State(app): State<App>, req: Request) -> Response {
    let (parts, _) = req.into_parts();
    // Already signed in with a live browser session: straight to the projects.
    let signed_in = crate::extract::session_cookie(&parts.headers).is_some()
        && matches!(crate::extract::authenticate(&parts, &app).await, Ok(Some(w)) if w.cookie);
    if signed_in {
        return Redirect::to("/console/projects").into_response();
    }
    render(&LoginPage {
        layout: Layout::new("Log in", "login", None),
    })
}

#[derive(Template)]
#[template(path = "console/signup.html")]
struct SignupPage {
    layout: Layout,
    mode: &'static str,
}

async fn signup(State(app): State<App>) -> Response {
    let mode = match app.config.signup_mode {
        crate::config::SignupMode::Open => "open",
        crate::config::SignupMode::Invite => "invite",
        crate::config::SignupMode::Closed => "closed",
    };
    render(&SignupPage {
        layout: Layout::new("Sign up", "signup", None),
        mode,
    })
}

#[derive(Template)]
#[template(path = "console/reset.html")]
struct ResetPage {
    layout: Layout,
}

async fn reset() -> Response {
    render(&ResetPage {
        layout: Layout::new("Set a new password", "reset", None),
    })
}

#[derive(Template)]
#[template(path = "console/account.html")]
struct AccountPage {
    layout: Layout,
    email: String,
    created: String,
    second_factor: bool,
    require_2fa: bool,
}

async fn account(State(app): State<App>, v: Viewer) -> Response {
    let second_factor = match service::two_factor::enabled(&app, &v.who.user).await {
        Ok(b) => b,
        Err(e) => return fail(e),
    };
    render(&AccountPage {
        email: v.who.user.email.clone().unwrap_or_default(),
        created: iso(v.who.user.created_at),
        second_factor,
        require_2fa: v.who.user.require_2fa,
        layout: Layout::new("Account", "account", Some(&v)),
    })
}

#[derive(Template)]
#[template(path = "console/projects.html")]
struct ProjectsPage {
    layout: Layout,
}

async fn projects(v: Viewer) -> Response {
    render(&ProjectsPage {
        layout: Layout::new("Projects", "projects", Some(&v)),
    })
}

fn project_id(s: &str) -> Option<ProjectId> {
    s.parse().ok().map(ProjectId)
}

#[derive(Template)]
#[template(path = "console/project.html")]
struct ProjectPage {
    layout: Layout,
    project_id: i64,
    name: String,
    description: String,
}

async fn project(State(app): State<App>, v: Viewer, Path(pid): Path<String>) -> Response {
    let Some(pid) = project_id(&pid) else {
        return error_page(ApiError::NotFound);
    };
    let row = match service::projects::get(app.store.as_ref(), &v.who.actor, pid).await {
        Ok(r) => r,
        Err(e) => return fail(e),
    };
    render(&ProjectPage {
        project_id: row.id,
        description: row.description.clone().unwrap_or_default(),
        layout: Layout::new(row.name.clone(), "project", Some(&v)),
        name: row.name,
    })
}

#[derive(Template)]
#[template(path = "console/form.html")]
struct FormPage {
    layout: Layout,
    project_id: i64,
    project_name: String,
    xml_form_id: String,
    title: String,
    asset_uid: String,
    encrypted: bool,
}

async fn form_data(
    State(app): State<App>,
    v: Viewer,
    Path((pid, form)): Path<(String, String)>,
) -> Response {
    let Some(pid) = project_id(&pid) else {
        return error_page(ApiError::NotFound);
    };
    let project = match service::projects::get(app.store.as_ref(), &v.who.actor, pid).await {
        Ok(r) => r,
        Err(e) => return fail(e),
    };
    let view = match service::forms::get(&app, &v.who.actor, pid, &form, false).await {
        Ok(f) => f,
        Err(e) => return fail(e),
    };
    let title = form_title(&view);
    render(&FormPage {
        project_id: pid.0,
        project_name: project.name,
        xml_form_id: view.form.xml_form_id.clone(),
        asset_uid: service::kobo::asset_uid(view.form.id),
        encrypted: view.def.public_key.is_some(),
        layout: Layout::new(format!("Data: {title}"), "form", Some(&v)),
        title,
    })
}

/// A form's title, or its id when the XForm has none.
fn form_title(view: &service::forms::FormView) -> String {
    view.def
        .title
        .clone()
        .unwrap_or_else(|| view.form.xml_form_id.clone())
}

#[derive(Template)]
#[template(path = "console/submission.html")]
struct SubmissionPage {
    layout: Layout,
    project_id: i64,
    project_name: String,
    xml_form_id: String,
    title: String,
    instance_id: String,
}

async fn submission(
    State(app): State<App>,
    v: Viewer,
    Path((pid, form, instance)): Path<(String, String, String)>,
) -> Response {
    let Some(pid) = project_id(&pid) else {
        return error_page(ApiError::NotFound);
    };
    let project = match service::projects::get(app.store.as_ref(), &v.who.actor, pid).await {
        Ok(r) => r,
        Err(e) => return fail(e),
    };
    let view = match service::forms::get(&app, &v.who.actor, pid, &form, false).await {
        Ok(f) => f,
        Err(e) => return fail(e),
    };
    render(&SubmissionPage {
        project_id: pid.0,
        project_name: project.name,
        xml_form_id: view.form.xml_form_id.clone(),
        title: form_title(&view),
        layout: Layout::new(format!("Submission {instance}"), "submission", Some(&v)),
        instance_id: instance,
    })
}

#[derive(Deserialize)]
struct AdminQuery {
    user: Option<String>,
}

/// One account on the admin page.
struct AccountCard {
    id: i64,
    username: String,
    email: String,
    superuser: bool,
    active: bool,
    second_factor: bool,
    require_2fa: bool,
    must_reset: bool,
    created: String,
}

#[derive(Template)]
#[template(path = "console/admin.html")]
struct AdminPage {
    layout: Layout,
    query: String,
    searched: bool,
    found: Option<AccountCard>,
    backup_configured: bool,
    last_backup: String,
    last_backup_failure: String,
    last_check: String,
}

fn unix_secs(s: Option<i64>) -> String {
    iso_opt(s.map(|s| s.saturating_mul(1000))).unwrap_or_else(|| "none since start".into())
}

async fn admin(State(app): State<App>, v: Viewer, Query(q): Query<AdminQuery>) -> Response {
    let backup = match service::console::backup_overview(&app, &v.who.actor) {
        Ok(b) => b,
        Err(e) => return fail(e),
    };
    let query = q.user.unwrap_or_default();
    let found = if query.trim().is_empty() {
        None
    } else {
        match service::console::find_account(&app, &v.who.actor, &query).await {
            Ok(f) => f.map(|a| AccountCard {
                id: a.user.id,
                username: a.user.username.clone(),
                email: a.user.email.clone().unwrap_or_default(),
                superuser: a.user.superuser,
                active: a.user.active,
                second_factor: a.second_factor,
                require_2fa: a.user.require_2fa,
                must_reset: a.user.must_reset_password,
                created: iso(a.user.created_at),
            }),
            Err(e) => return fail(e),
        }
    };
    render(&AdminPage {
        searched: !query.trim().is_empty(),
        query,
        found,
        backup_configured: backup.configured,
        last_backup: unix_secs(backup.last_success),
        last_backup_failure: unix_secs(backup.last_failure),
        last_check: match backup.last_check_ok {
            Some(true) => "passed".into(),
            Some(false) => "FAILED".into(),
            None => "not checked since start".into(),
        },
        layout: Layout::new("Administration", "admin", Some(&v)),
    })
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct NewCollector {
    #[serde(default)]
    display_name: String,
    /// Forms (xmlFormIds) the collector may fill.
    #[serde(default)]
    forms: Vec<String>,
}

/// `POST /console/api/projects/{pid}/collectors`: creates an app user (the existing service),
/// assigns it the chosen forms, and answers its token once with the Collect settings QR code.
async fn create_collector(
    State(app): State<App>,
    who: AuthUser,
    client: Option<axum::Extension<ClientInfo>>,
    headers: HeaderMap,
    Path(pid): Path<String>,
    AppJson(body): AppJson<NewCollector>,
) -> Result<Response, ApiError> {
    let pid = ProjectId(pid.parse().map_err(|_| ApiError::NotFound)?);
    if body.forms.len() > 1000 {
        return Err(ApiError::bad_request("invalid", "forms: at most 1000"));
    }
    let project = service::projects::get(app.store.as_ref(), &who.actor, pid).await?;
    let made =
        service::app_users::create(app.store.as_ref(), &who.actor, pid, &body.display_name).await?;
    for form in &body.forms {
        service::app_users::assign_form(app.store.as_ref(), &who.actor, pid, form, made.row.id)
            .await?;
    }
    let origin = crate::openrosa::routes::origin(&app, &headers, client.as_deref());
    let server_url = format!("{origin}/v1/key/{}/projects/{}", made.token, pid.0);
    let settings = collect::settings(&server_url, &project.name);
    let payload = collect::payload(&settings)?;
    let svg = collect::qr_svg(&payload)?;
    let mut resp = Json(json!({
        "id": made.row.id,
        "displayName": made.row.display_name,
        "createdAt": iso(made.row.created_at),
        "token": made.token,
        "serverUrl": server_url,
        "settings": settings,
        "qrPayload": payload,
        "qrSvg": svg,
    }))
    .into_response();
    resp.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(resp)
}
