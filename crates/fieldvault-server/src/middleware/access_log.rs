//! One JSON line per request on standard output (M7), plus request ids, client resolution,
//! security headers, uniform limit errors and metrics — everything that must see both the request
//! and its response.
//!
//! The line names the authenticated user: extractors record who they authenticated in the
//! [`AuthSlot`] this middleware puts in the request, so the log never re-parses credentials.
//! Paths are logged with tokens redacted (`/v1/key/[redacted]/…`) and without query strings that
//! carry secrets.

use std::io::Write as _;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Instant, SystemTime};

use axum::extract::{ConnectInfo, MatchedPath, Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::Response;
use serde_json::json;

use crate::App;
use crate::middleware::{client_ip, security_headers};
use crate::problem::{InternalCause, REQUEST_ID, error_response};

/// Who a request authenticated as, filled in by the extractor that checked the credentials.
#[derive(Clone, Default)]
pub struct AuthSlot(Arc<Mutex<Option<(String, &'static str)>>>);

impl AuthSlot {
    /// Records the user name and the method (`basic`, `bearer`, `token`, `cookie`, `app-user`).
    pub fn record(&self, user: &str, method: &'static str) {
        if let Ok(mut s) = self.0.lock() {
            *s = Some((user.to_owned(), method));
        }
    }

    fn take(&self) -> Option<(String, &'static str)> {
        self.0.lock().ok().and_then(|mut s| s.take())
    }
}

/// The middleware function.
pub async fn layer(
    State(app): State<App>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    mut req: Request,
    next: Next,
) -> Response {
    let start = Instant::now();
    let request_id = fieldvault_crypto::random::hex(8).unwrap_or_else(|_| "-".into());
    let client = client_ip::resolve(
        peer,
        req.headers(),
        &app.config.trusted_proxies,
        app.config.tls_enabled(),
    );
    let slot = AuthSlot::default();
    req.extensions_mut().insert(client);
    req.extensions_mut().insert(slot.clone());
    let method = req.method().as_str().to_owned();
    let path = redact_path(req.uri().path(), req.uri().query());
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_owned(), |m| m.as_str().to_owned());

    let mut resp = match address_gate(&app, &client, &path) {
        Some(refusal) => refusal,
        None => REQUEST_ID.scope(request_id.clone(), next.run(req)).await,
    };

    // Limits enforced by tower layers answer with plain text; give them the API's error shape.
    let status = resp.status();
    // Our own errors are JSON or (OpenRosa) XML; tower's limit layers answer in plain text.
    let ours = resp.headers().get(header::CONTENT_TYPE).is_some_and(|v| {
        v.as_bytes().starts_with(b"application/json") || v.as_bytes().starts_with(b"text/xml")
    });
    if !ours && (status == StatusCode::PAYLOAD_TOO_LARGE || status == StatusCode::REQUEST_TIMEOUT) {
        let (code, msg) = if status == StatusCode::PAYLOAD_TOO_LARGE {
            (
                "request.too_large",
                format!(
                    "The request body exceeds the limit of {} bytes.",
                    app.config.body_limit_bytes
                ),
            )
        } else {
            ("request.timeout", "The request took too long.".to_owned())
        };
        resp = if path
            .split('?')
            .next()
            .is_some_and(|p| p.ends_with("/submission"))
        {
            // OpenRosa clients show the message of an OpenRosaResponse, not JSON.
            crate::openrosa::respond::xml(
                status,
                crate::openrosa::render::openrosa_response(&msg, Some("error")),
            )
        } else {
            REQUEST_ID
                .scope(request_id.clone(), async {
                    error_response(status, code, &msg)
                })
                .await
        };
    }

    let hsts = client
        .secure
        .then(|| {
            HeaderValue::from_str(&format!(
                "max-age={}; includeSubDomains",
                app.config.hsts_max_age_secs
            ))
            .ok()
        })
        .flatten();
    security_headers::apply(&mut resp, hsts.as_ref());
    if let Ok(v) = HeaderValue::from_str(&request_id) {
        resp.headers_mut().insert("x-request-id", v);
    }

    let elapsed = start.elapsed();
    let status = resp.status().as_u16();
    app.metrics.observe(&method, &route, status, elapsed);
    if let Some(cause) = resp.extensions().get::<InternalCause>() {
        tracing::error!(request_id = %request_id, route = %route, cause = %cause.0, "request failed");
    }
    let (user, auth) = slot.take().unwrap_or_else(|| ("-".to_owned(), "-"));
    let bytes = http_body::Body::size_hint(resp.body()).exact().or_else(|| {
        resp.headers()
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok())
    });
    let line = json!({
        "time": humantime::format_rfc3339_millis(SystemTime::now()).to_string(),
        "type": "access",
        "request_id": request_id,
        "method": method,
        "path": path,
        "route": route,
        "status": status,
        "bytes": bytes,
        "duration_ms": (elapsed.as_secs_f64() * 1000.0 * 1000.0).round() / 1000.0,
        "client_ip": client.ip.to_string(),
        "user": user,
        "auth": auth,
    });
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{line}");
    resp
}

/// The address rules (M5): `http.allow_cidrs` for the whole server (403), and
/// `admin.allow_cidrs` for the admin surface (`/v1/admin…`, `/v1/audits…`, account management at
/// `/v1/users`, the console's `/console/admin` page), which answers 404 elsewhere so it cannot even be
/// found from outside.
fn address_gate(app: &App, client: &client_ip::ClientInfo, path: &str) -> Option<Response> {
    let allowed = |list: &[ipnet::IpNet]| list.iter().any(|n| n.contains(&client.ip));
    if !app.config.allow_cidrs.is_empty() && !allowed(&app.config.allow_cidrs) {
        return Some(error_response(
            StatusCode::FORBIDDEN,
            "request.address_not_allowed",
            "This server does not accept requests from your address.",
        ));
    }
    let bare = path.split('?').next().unwrap_or(path);
    let admin = bare.starts_with("/v1/admin")
        || bare.starts_with("/v1/audits")
        || bare == "/v1/users"
        || bare.starts_with("/console/admin");
    if admin && !allowed(&app.config.admin_allow_cidrs) {
        return Some(error_response(
            StatusCode::NOT_FOUND,
            "not_found",
            "Could not find the resource you were looking for.",
        ));
    }
    None
}

/// Query parameters that carry credentials in some clients (Central's `st`, generic `token`).
const SECRET_PARAMS: &[&str] = &["st", "token", "key", "access_token", "password"];

/// The path with tokens replaced by `[redacted]`: the segment after `key` (app-user URLs),
/// after `sessions` (session tokens, except `current` and `restore`), and secret query values.
pub fn redact_path(path: &str, query: Option<&str>) -> String {
    let mut out = String::with_capacity(path.len());
    let mut redact_next = false;
    for (i, seg) in path.split('/').enumerate() {
        if i > 0 {
            out.push('/');
        }
        if redact_next && !seg.is_empty() && seg != "current" && seg != "restore" {
            out.push_str("[redacted]");
        } else {
            out.push_str(seg);
        }
        redact_next = seg == "key" || seg == "sessions";
    }
    if let Some(q) = query {
        out.push('?');
        let parts: Vec<String> = q
            .split('&')
            .map(|kv| match kv.split_once('=') {
                Some((k, _)) if SECRET_PARAMS.contains(&k.to_ascii_lowercase().as_str()) => {
                    format!("{k}=[redacted]")
                }
                _ => kv.to_owned(),
            })
            .collect();
        out.push_str(&parts.join("&"));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_redacted() {
        assert_eq!(
            redact_path("/v1/key/AbC123tok/projects/1/formList", None),
            "/v1/key/[redacted]/projects/1/formList"
        );
        assert_eq!(
            redact_path("/v1/sessions/abcdef", None),
            "/v1/sessions/[redacted]"
        );
        assert_eq!(
            redact_path("/v1/sessions/current", None),
            "/v1/sessions/current"
        );
        assert_eq!(
            redact_path("/v1/projects/1/forms/x.svc", Some("st=secret&$top=5")),
            "/v1/projects/1/forms/x.svc?st=[redacted]&$top=5"
        );
        assert_eq!(redact_path("/healthz", None), "/healthz");
    }
}
