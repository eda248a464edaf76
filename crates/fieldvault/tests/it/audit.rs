//! The audit log end to end: actions leave entries, administrators read them, `fieldvault audit
//! verify` passes on an intact log and names the entry someone edited or removed (PostgreSQL lets
//! the test play the attacker with psql; the embedded database is encrypted, so there the chain
//! is exercised by the store suite).

use serde_json::{Value, json};

use crate::harness::{PASSWORD, Server, client, cmd, create_user, run};
use fieldvault_testkit::pg::TestDb;

async fn activity(srv: &Server) {
    let c = client();
    let r = c
        .post(srv.url("/v1/sessions"))
        .json(&json!({"email": "carol", "password": "not the password"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    let p: Value = c
        .post(srv.url("/v1/projects"))
        .basic_auth("carol", Some(PASSWORD))
        .json(&json!({"name": "Audited"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let r = c
        .post(srv.url(&format!("/v1/projects/{}/app-users", p["id"])))
        .basic_auth("carol", Some(PASSWORD))
        .json(&json!({"displayName": "E1"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
}

fn verify(dir: &std::path::Path, env: &[(&str, &str)]) -> (bool, String, String) {
    let mut c = cmd(dir);
    c.args(["audit", "verify"]);
    for (k, v) in env {
        c.env(k, v);
    }
    run(c, "")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn audit_trail_and_verification() {
    let dir = tempfile::tempdir().unwrap();
    let srv = Server::start(dir.path(), &[]);
    create_user(dir.path(), &[], "carol", false);
    create_user(dir.path(), &[], "bob", false);
    activity(&srv).await;
    // Site administration needs a second factor: a Basic administrator without one is refused.
    create_user(dir.path(), &[], "plainadmin", true);
    let c = client();
    let r = c
        .get(srv.url("/v1/audits"))
        .basic_auth("plainadmin", Some(PASSWORD))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403, "no 2FA, no admin surface");
    let admin = crate::harness::admin_session(&srv, dir.path(), &[], "admin").await;
    let log: Value = c
        .get(srv.url("/v1/audits"))
        .bearer_auth(&admin)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let actions: Vec<&str> = log
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["action"].as_str().unwrap())
        .collect();
    assert_eq!(
        actions,
        vec![
            "user.create",
            "user.create",
            "user.session.fail",
            "project.create",
            "app_user.create",
            "user.create",
            "user.create",
            "user.session.create",
            "user.2fa.enable",
            "user.2fa.recovery_code",
            "user.session.create",
        ]
    );
    assert!(
        log[0]["actor"].as_str().unwrap().starts_with("cli:"),
        "CLI actions name the OS user"
    );
    assert_eq!(log[1]["target"], "user:bob");
    let r = c
        .get(srv.url("/v1/audits"))
        .basic_auth("bob", Some(PASSWORD))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403, "only administrators read the audit log");
    let v: Value = c
        .get(srv.url("/v1/audits/verify"))
        .bearer_auth(&admin)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(v, json!({"intact": true, "entries": 11}));
    let (ok, out, err) = verify(dir.path(), &[]);
    assert!(ok, "{err}");
    assert!(out.contains("intact: 11 entries"), "{out}");
    assert!(srv.stop());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tampering_is_found() {
    let Some(db) = TestDb::create().await else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let env = [("FIELDVAULT_DATABASE_URL", db.url.as_str())];
    let srv = Server::start(dir.path(), &env);
    create_user(dir.path(), &env, "carol", false);
    activity(&srv).await;
    assert!(srv.stop());
    assert!(verify(dir.path(), &env).0);
    let psql = |sql: &str| {
        let out = std::process::Command::new("psql")
            .arg(&db.url)
            .args(["-q", "-c", sql])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    // Cut from the end: the chain head still counts the missing entry.
    psql("DELETE FROM audit_log WHERE seq = (SELECT max(seq) FROM audit_log)");
    let (ok, _, err) = verify(dir.path(), &env);
    assert!(!ok && err.contains("removed from the end"), "{err}");
    // Edited.
    psql("UPDATE audit_log SET details = '{\"name\":\"Innocent\"}' WHERE seq = 3");
    let (ok, _, err) = verify(dir.path(), &env);
    assert!(
        !ok && err.contains("entry 3") && err.contains("changed"),
        "{err}"
    );
    // Removed from the middle.
    psql("DELETE FROM audit_log WHERE seq = 2");
    let (ok, _, err) = verify(dir.path(), &env);
    assert!(
        !ok && err.contains("entry 2") && err.contains("missing"),
        "{err}"
    );
    // Reordered (two entries swap places).
    psql(
        "UPDATE audit_log SET seq = CASE seq WHEN 1 THEN 2 ELSE 1 END WHERE seq IN (1); INSERT INTO audit_log (seq, at, actor, action, target, details, prev_hash, hash) SELECT 1, at, actor, action, target, details, prev_hash, hash FROM audit_log WHERE seq = 3",
    );
    let (ok, _, _) = verify(dir.path(), &env);
    assert!(!ok);
    db.drop_db().await;
}

/// The admin surface answers only from `admin.allow_cidrs` (404 elsewhere, so it cannot be found);
/// `http.allow_cidrs` closes the whole server to other addresses.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_surface_only_from_the_allowlist() {
    let dir = tempfile::tempdir().unwrap();
    let env = [
        ("FIELDVAULT_HTTP_TRUSTED_PROXIES", "127.0.0.1/32"),
        ("FIELDVAULT_ADMIN_ALLOW_CIDRS", "10.0.0.0/8"),
    ];
    let srv = Server::start(dir.path(), &env);
    let admin = crate::harness::admin_session(&srv, dir.path(), &[], "admin").await;
    let c = client();
    let from = |ip: &'static str| {
        c.get(srv.url("/v1/audits"))
            .header("X-Forwarded-For", ip)
            .header("X-Forwarded-Proto", "https")
            .bearer_auth(&admin)
    };
    assert_eq!(
        from("203.0.113.9").send().await.unwrap().status(),
        404,
        "hidden from outside"
    );
    let r = from("10.4.5.6").send().await.unwrap();
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
    // Without X-Forwarded-For the client is loopback, which this configuration does not allow.
    let r = c
        .get(srv.url("/v1/audits/verify"))
        .bearer_auth(&admin)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    // Everything else is reachable from anywhere.
    let r = c
        .get(srv.url("/healthz"))
        .header("X-Forwarded-For", "203.0.113.9")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert!(srv.stop());

    let srv = Server::start(
        dir.path(),
        &[
            ("FIELDVAULT_HTTP_TRUSTED_PROXIES", "127.0.0.1/32"),
            ("FIELDVAULT_HTTP_ALLOW_CIDRS", "10.0.0.0/8"),
        ],
    );
    let r = c
        .get(srv.url("/healthz"))
        .header("X-Forwarded-For", "203.0.113.9")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    assert_eq!(
        r.json::<Value>().await.unwrap()["code"],
        "request.address_not_allowed"
    );
    assert_eq!(
        c.get(srv.url("/healthz"))
            .header("X-Forwarded-For", "10.0.0.7")
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    assert!(srv.stop());
}

/// Retention deletes old entries but the rest stays verifiable from the anchor, the deletion is
/// itself audited, and tampering with what is kept (or with the anchor) is still found.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retention_keeps_the_rest_verifiable() {
    let Some(db) = TestDb::create().await else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let env = [("FIELDVAULT_DATABASE_URL", db.url.as_str())];
    let srv = Server::start(dir.path(), &env);
    create_user(dir.path(), &env, "carol", false);
    activity(&srv).await;
    assert!(srv.stop());
    let (ok, before, _) = verify(dir.path(), &env);
    assert!(ok);
    let mut prune = cmd(dir.path());
    prune.args(["audit", "prune", "--older-than-days", "0"]);
    for (k, v) in env {
        prune.env(k, v);
    }
    let (ok, out, err) = run(prune, "");
    assert!(ok, "{out} {err}");
    let deleted: u64 = out
        .split_whitespace()
        .nth(1)
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("{out}"));
    assert!(deleted >= 3, "{out}");
    // Kept: the newest entry before the prune and the prune's own entry.
    let (ok, after, err) = verify(dir.path(), &env);
    assert!(ok, "{err}");
    assert!(after.contains("2 entries"), "{before} → {after}");
    let psql = |sql: &str| {
        let out = std::process::Command::new("psql")
            .arg(&db.url)
            .args(["-qtA", "-c", sql])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    };
    assert_eq!(
        psql("SELECT action FROM audit_log ORDER BY seq DESC LIMIT 1"),
        "audit.prune"
    );
    // A forged anchor (to hide a deleted kept entry) breaks the chain.
    psql("UPDATE audit_head SET anchor_hash = sha256('forged'::bytea)");
    let (ok, _, err) = verify(dir.path(), &env);
    assert!(!ok && err.contains("does not follow"), "{err}");
    db.drop_db().await;
}

/// A project's managers read its history; others (an administrator without a role included)
/// get 404, a viewer 403.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn project_history_for_managers() {
    let dir = tempfile::tempdir().unwrap();
    let srv = Server::start(dir.path(), &[]);
    for u in ["mia", "vic", "nora"] {
        create_user(dir.path(), &[], u, false);
    }
    let admin = crate::harness::admin_session(&srv, dir.path(), &[], "root").await;
    let c = client();
    let as_ = |u: &'static str, r: reqwest::RequestBuilder| r.basic_auth(u, Some(PASSWORD));
    let mk = |name: &'static str| {
        as_("mia", c.post(srv.url("/v1/projects")))
            .json(&json!({"name": name}))
            .send()
    };
    let p: Value = mk("Mine").await.unwrap().json().await.unwrap();
    let other: Value = mk("Other").await.unwrap().json().await.unwrap();
    let pid = p["id"].as_i64().unwrap();
    let r = as_("mia", c.patch(srv.url(&format!("/v1/projects/{pid}"))))
        .json(&json!({"description": "d"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let vic: Value = as_("vic", c.get(srv.url("/v1/users/current")))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let r = as_(
        "mia",
        c.post(srv.url(&format!(
            "/v1/projects/{pid}/assignments/viewer/{}",
            vic["id"]
        ))),
    )
    .send()
    .await
    .unwrap();
    assert_eq!(r.status(), 200);
    let h: Value = as_("mia", c.get(srv.url(&format!("/v1/projects/{pid}/audits"))))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let entries = h.as_array().unwrap();
    assert!(entries.len() >= 3, "{h}");
    assert!(
        entries
            .windows(2)
            .all(|w| w[0]["seq"].as_i64() > w[1]["seq"].as_i64())
    );
    let target = format!("project:{pid}");
    assert!(entries.iter().all(|e| {
        let t = e["target"].as_str().unwrap_or_default();
        t == target || t.starts_with(&format!("{target}/"))
    }));
    assert!(entries.iter().any(|e| e["action"] == "project.update"));
    // Nothing of the other project.
    let other_target = format!("project:{}", other["id"]);
    assert!(!entries.iter().any(|e| e["target"] == other_target.as_str()));
    let status = |r: reqwest::RequestBuilder| async move { r.send().await.unwrap().status() };
    let url = srv.url(&format!("/v1/projects/{pid}/audits"));
    assert_eq!(status(as_("vic", c.get(&url))).await, 403);
    assert_eq!(status(as_("nora", c.get(&url))).await, 404);
    assert_eq!(status(c.get(&url).bearer_auth(&admin)).await, 404);
    assert_eq!(status(c.get(&url)).await, 401);
    assert_eq!(
        status(as_("mia", c.get(srv.url("/v1/projects/x/audits")))).await,
        404
    );
    assert!(srv.stop());
}
