//! The web console in a real browser: `tests/console/console.test.js` (playwright-core driving
//! Debian's Chromium) signs up with a weak then a strong password, enrols a second factor with a
//! code it computes, creates a project, uploads a form, creates a collector and decodes its QR
//! code, submits over OpenRosa, reads the table, exports and downloads, redacts, deletes, and an
//! administrator suspends the account. On the way it provokes a real rate-limit restriction of an
//! API token (small budget windows), sees the owner's notice and lifts it from the admin page, lists
//! and revokes project roles, lists accounts, and reads a submission's edit history. It writes one
//! screenshot per page to `docs/screenshots/`.
//!
//! Needs `/usr/bin/chromium` and `npm ci` in `tests/console` (scripts/test does both); without
//! them the test is skipped outside CI and fails in CI.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use serde_json::{Value, json};

use super::harness::{self, PASSWORD, Server, client};

const CHROMIUM: &str = "/usr/bin/chromium";

fn console_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/console")
}

fn browser_available() -> bool {
    Path::new(CHROMIUM).exists()
        && console_dir().join("node_modules/playwright-core").is_dir()
        && Command::new("node")
            .arg("--version")
            .output()
            .is_ok_and(|o| o.status.success())
}

/// An administrator with a second factor; returns its id and unused recovery codes.
async fn admin_with_second_factor(srv: &Server, dir: &Path, name: &str) -> (i64, Vec<String>) {
    harness::create_user(dir, &[], name, true);
    let c = client();
    let s: Value = c
        .post(srv.url("/v1/sessions"))
        .json(&json!({"email": name, "password": PASSWORD}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let token = s["token"].as_str().unwrap().to_owned();
    let me: Value = c
        .get(srv.url("/v1/users/current"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let e: Value = c
        .post(srv.url("/v1/users/current/2fa"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let secret = harness::base32_decode(e["secret"].as_str().unwrap());
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let code = fieldvault_crypto::totp::code(&secret, now).unwrap();
    let r: Value = c
        .post(srv.url("/v1/users/current/2fa/confirm"))
        .bearer_auth(&token)
        .json(&json!({"code": code}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let codes = r["recoveryCodes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap().to_owned())
        .collect();
    (me["id"].as_i64().unwrap(), codes)
}

#[tokio::test(flavor = "multi_thread")]
async fn console_in_a_browser() {
    if !browser_available() {
        fieldvault_testkit::unavailable::<()>(
            "Chromium (/usr/bin/chromium) and playwright-core (npm ci in crates/fieldvault/tests/console)",
        );
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    // Four-second budget windows so the test can provoke an automatic restriction in seconds (3
    // windows at twice the budget: 160 attempts every 4 s, which even a loaded machine running a
    // debug build reaches); the budget (80 per 4 s) stays far above what the browser itself needs.
    let srv = Server::start(
        dir.path(),
        &[
            ("FIELDVAULT_SIGNUP_MODE", "open"),
            ("FIELDVAULT_LIMITS_WINDOW_SECS", "4"),
            ("FIELDVAULT_LIMITS_API_PER_WINDOW", "80"),
            ("FIELDVAULT_LIMITS_RESTRICT_FACTOR", "2"),
            ("FIELDVAULT_LIMITS_RESTRICT_WINDOWS", "3"),
            ("FIELDVAULT_LIMITS_RESTRICT_MODE", "suspended"),
        ],
    );
    let (admin_id, codes) = admin_with_second_factor(&srv, dir.path(), "root").await;
    let screenshots = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/screenshots");

    let mut node = tokio::process::Command::new("node");
    node.arg("console.test.js")
        .current_dir(console_dir())
        .env("FV_BASE", &srv.base)
        .env("FV_ADMIN", "root")
        .env("FV_ADMIN_ID", admin_id.to_string())
        .env("FV_PASSWORD", PASSWORD)
        .env("FV_ADMIN_CODES", codes.join(","))
        .env("FV_SCREENSHOTS", &screenshots)
        .env("FV_CHROMIUM", CHROMIUM)
        .kill_on_drop(true);
    let out = tokio::time::timeout(Duration::from_secs(480), node.output())
        .await
        .expect("the browser test took more than 8 minutes")
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "console browser test failed\n--- stdout\n{stdout}\n--- stderr\n{stderr}\n--- server\n{}",
        srv.stderr_text()
    );
    assert!(stdout.contains("all checks passed"), "{stdout}");
    println!("{stdout}");

    // What the browser did is in the audit log, and the suspended account stays refused.
    let log = srv.stdout.lock().unwrap().join("\n");
    assert!(log.contains("/console/admin"), "the admin page was served");
    let r = client()
        .post(srv.url("/v1/sessions"))
        .json(&json!({"email": "alice", "password": "Quokka-tundra-marble-41"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
}

/// The console's HTTP contract, without a browser: sign-in redirects, a strict CSP with no inline
/// script or style in any page, hashed assets cached for a year, the admin page behind the admin
/// allowlist, and no Basic challenge on the console's own API calls.
#[tokio::test(flavor = "multi_thread")]
async fn console_pages_are_strict() {
    let dir = tempfile::tempdir().unwrap();
    let srv = Server::start(dir.path(), &[]);
    let c = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();

    let r = c.get(srv.url("/console/projects")).send().await.unwrap();
    assert_eq!(r.status(), 303);
    assert_eq!(
        r.headers()["location"],
        "/console/login?next=%2Fconsole%2Fprojects"
    );
    let r = c.get(srv.url("/")).send().await.unwrap();
    assert_eq!(r.headers()["location"], "/console/projects");

    let mut assets = Vec::new();
    for page in ["/console/login", "/console/signup", "/console/reset"] {
        let r = c.get(srv.url(page)).send().await.unwrap();
        assert_eq!(r.status(), 200, "{page}");
        let csp = r.headers()["content-security-policy"].to_str().unwrap();
        assert!(csp.contains("script-src 'self'") && !csp.contains("unsafe-inline"));
        assert!(csp.contains("style-src 'self'"));
        let html = r.text().await.unwrap();
        assert!(!html.contains("style="), "{page} has a style attribute");
        let handler = html.match_indices(" on").any(|(i, _)| {
            let rest = &html[i + 3..];
            let word = rest.len()
                - rest
                    .trim_start_matches(|c: char| c.is_ascii_lowercase())
                    .len();
            word > 0 && rest[word..].starts_with('=')
        });
        assert!(!handler, "{page} has an inline event handler");
        for (i, _) in html.match_indices("<script") {
            let tag = &html[i..i + html[i..].find('>').unwrap()];
            assert!(
                tag.contains("src=\"/console/assets/"),
                "{page}: inline script"
            );
        }
        for part in html
            .split('"')
            .filter(|p| p.starts_with("/console/assets/"))
        {
            assets.push(part.to_owned());
        }
        for (i, _) in html.match_indices("<input") {
            let tag = &html[i..i + html[i..].find('>').unwrap()];
            if let Some(id) = tag.split("id=\"").nth(1).and_then(|s| s.split('"').next()) {
                assert!(
                    html.contains(&format!("for=\"{id}\"")) || tag.contains("aria-label"),
                    "{page}: input {id} has no label"
                );
            }
        }
    }
    assets.sort();
    assets.dedup();
    assert_eq!(assets.len(), 2, "{assets:?}");
    for a in &assets {
        let r = c.get(srv.url(a)).send().await.unwrap();
        assert_eq!(r.status(), 200);
        assert_eq!(
            r.headers()["cache-control"],
            "public, max-age=31536000, immutable"
        );
        assert!(r.headers()["content-security-policy"].to_str().is_ok());
    }
    let r = c
        .get(srv.url("/console/assets/console.000000000000.js"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);

    // The console's own calls get no Basic challenge (no browser password dialog); others do.
    let r = c.get(srv.url("/v1/projects")).send().await.unwrap();
    assert_eq!(r.status(), 401);
    assert!(r.headers().contains_key("www-authenticate"));
    let r = c
        .get(srv.url("/v1/projects"))
        .header("x-fieldvault-console", "1")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    assert!(!r.headers().contains_key("www-authenticate"));
    drop(srv);

    // Outside admin.allow_cidrs the admin page does not exist.
    let dir = tempfile::tempdir().unwrap();
    let srv = Server::start(
        dir.path(),
        &[("FIELDVAULT_ADMIN_ALLOW_CIDRS", "192.0.2.0/24")],
    );
    let r = c.get(srv.url("/console/admin")).send().await.unwrap();
    assert_eq!(r.status(), 404);
    let r = c.get(srv.url("/console/login")).send().await.unwrap();
    assert_eq!(r.status(), 200);
}
