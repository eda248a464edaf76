//! Browser sessions over real HTTP: the cookie and its attributes, rotation at sign-in, CSRF on
//! cookie-authenticated changes (and not on header credentials), idle and absolute timeouts,
//! "log out everywhere".

use std::time::Duration;

use reqwest::header::{COOKIE, SET_COOKIE};
use serde_json::{Value, json};

use crate::accounts_util::{PW, bearer};
use crate::harness::{Server, client, create_user};

/// Signs in for a browser session; returns (cookie pair `name=value`, full Set-Cookie, CSRF).
async fn browser_login(
    srv: &Server,
    name: &str,
    old_cookie: Option<&str>,
) -> (String, String, String) {
    let mut req = client()
        .post(srv.url("/v1/sessions"))
        .json(&json!({"email": name, "password": PW, "cookie": true}));
    if let Some(c) = old_cookie {
        req = req.header(COOKIE, c);
    }
    let r = req.send().await.unwrap();
    assert_eq!(r.status(), 200);
    let set = r.headers()[SET_COOKIE].to_str().unwrap().to_owned();
    let body: Value = r.json().await.unwrap();
    assert!(
        body.get("token").is_none(),
        "the session token never reaches the page"
    );
    let pair = set.split(';').next().unwrap().trim().to_owned();
    (pair, set, body["csrfToken"].as_str().unwrap().to_owned())
}

async fn status_get(srv: &Server, path: &str, cookie: &str) -> (u16, Value) {
    let r = client()
        .get(srv.url(path))
        .header(COOKIE, cookie)
        .send()
        .await
        .unwrap();
    (r.status().as_u16(), r.json().await.unwrap_or(Value::Null))
}

async fn create_project(srv: &Server, cookie: &str, csrf: Option<&str>) -> (u16, Value) {
    let mut req = client()
        .post(srv.url("/v1/projects"))
        .header(COOKIE, cookie)
        .json(&json!({"name": "From the browser"}));
    if let Some(t) = csrf {
        req = req.header("X-CSRF-Token", t);
    }
    let r = req.send().await.unwrap();
    (r.status().as_u16(), r.json().await.unwrap_or(Value::Null))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cookie_sessions_csrf_rotation_and_logout_everywhere() {
    let dir = tempfile::tempdir().unwrap();
    let srv = Server::start(dir.path(), &[]);
    create_user(dir.path(), &[], "alice", false);
    let c = client();

    let (cookie, set, csrf) = browser_login(&srv, "alice", None).await;
    // Plain HTTP (loopback): no __Host- prefix and no Secure, but HttpOnly, SameSite=Strict, Path=/.
    assert!(cookie.starts_with("fv_session=fvs_"), "{set}");
    for attr in ["HttpOnly", "SameSite=Strict", "Path=/", "Max-Age=43200"] {
        assert!(set.contains(attr), "{attr} in {set}");
    }
    assert!(!set.contains("Secure"), "{set}");

    // Reads need no CSRF token; changes do, and only the right one passes.
    let (s, me) = status_get(&srv, "/v1/users/current", &cookie).await;
    assert_eq!((s, me["displayName"].as_str()), (200, Some("alice")));
    let (s, body) = create_project(&srv, &cookie, None).await;
    assert_eq!((s, body["code"].as_str()), (403, Some("csrf")));
    let mut wrong = csrf.clone();
    wrong.replace_range(0..1, if csrf.starts_with('A') { "B" } else { "A" });
    let (s, body) = create_project(&srv, &cookie, Some(&wrong)).await;
    assert_eq!((s, body["code"].as_str()), (403, Some("csrf")));
    let (s, _) = create_project(&srv, &cookie, Some(&csrf)).await;
    assert_eq!(s, 200);
    // The page can fetch its CSRF token again after a reload.
    let (s, cur) = status_get(&srv, "/v1/sessions/current", &cookie).await;
    assert_eq!((s, cur["csrfToken"].as_str()), (200, Some(csrf.as_str())));

    // Header credentials are not subject to CSRF, and a bearer token is no cookie (nor the
    // reverse: the browser session's token is refused as a bearer token).
    let token = bearer(&srv, "alice", PW).await;
    let r = c
        .post(srv.url("/v1/projects"))
        .bearer_auth(&token)
        .json(&json!({"name": "From a script"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let (s, _) = status_get(&srv, "/v1/users/current", &format!("fv_session={token}")).await;
    assert_eq!(s, 401);
    let raw = cookie.split_once('=').unwrap().1;
    let r = c
        .get(srv.url("/v1/users/current"))
        .bearer_auth(raw)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);

    // Rotation: a new sign-in from the same browser gets a new id and ends the old session.
    let (cookie2, _, csrf2) = browser_login(&srv, "alice", Some(&cookie)).await;
    assert_ne!(cookie2, cookie);
    assert_ne!(csrf2, csrf, "the CSRF token is bound to the session");
    let (s, body) = status_get(&srv, "/v1/users/current", &cookie).await;
    assert_eq!(
        (s, body["code"].as_str()),
        (401, Some("auth.session_expired"))
    );
    let (s, _) = create_project(&srv, &cookie2, Some(&csrf)).await;
    assert_eq!(
        s, 403,
        "an old session's CSRF token is no good for the new one"
    );

    // Log out everywhere: needs CSRF too, ends the browser session and every bearer session.
    let other = bearer(&srv, "alice", PW).await;
    let r = c
        .post(srv.url("/v1/sessions/current/logout-all"))
        .header(COOKIE, &cookie2)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    let r = c
        .post(srv.url("/v1/sessions/current/logout-all"))
        .header(COOKIE, &cookie2)
        .header("X-CSRF-Token", &csrf2)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let cleared = r.headers()[SET_COOKIE].to_str().unwrap().to_owned();
    assert!(
        cleared.starts_with("fv_session=;") && cleared.contains("Max-Age=0"),
        "{cleared}"
    );
    assert_eq!(r.json::<Value>().await.unwrap()["ended"], 3);
    for t in [&token, &other] {
        let r = c
            .get(srv.url("/v1/users/current"))
            .bearer_auth(t)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 401);
    }
    let (s, _) = status_get(&srv, "/v1/users/current", &cookie2).await;
    assert_eq!(s, 401);

    // Signing out one browser session clears its cookie.
    let (cookie3, _, csrf3) = browser_login(&srv, "alice", None).await;
    let r = c
        .delete(srv.url("/v1/sessions/current"))
        .header(COOKIE, &cookie3)
        .header("X-CSRF-Token", &csrf3)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert!(
        r.headers()[SET_COOKIE]
            .to_str()
            .unwrap()
            .contains("Max-Age=0")
    );
    let (s, _) = status_get(&srv, "/v1/users/current", &cookie3).await;
    assert_eq!(s, 401);

    // Audited: browser sign-ins and the log-out-everywhere.
    let admin = crate::harness::admin_session(&srv, dir.path(), &[], "admin").await;
    let log = crate::accounts_util::audit(&srv, &admin).await;
    assert!(log.iter().any(|(a, _)| a == "user.session.end_all"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cookie_sessions_time_out_when_idle_and_absolutely() {
    let dir = tempfile::tempdir().unwrap();
    let env = [
        ("FIELDVAULT_SESSION_IDLE_TIMEOUT_SECS", "1"),
        ("FIELDVAULT_SESSION_ABSOLUTE_TIMEOUT_SECS", "3"),
    ];
    let srv = Server::start(dir.path(), &env);
    create_user(dir.path(), &[], "alice", false);

    // Idle: one quiet period longer than the idle timeout ends the session.
    let (idle, set, _) = browser_login(&srv, "alice", None).await;
    assert!(set.contains("Max-Age=3"), "{set}");
    assert_eq!(status_get(&srv, "/v1/users/current", &idle).await.0, 200);
    tokio::time::sleep(Duration::from_millis(1600)).await;
    let (s, body) = status_get(&srv, "/v1/users/current", &idle).await;
    assert_eq!(
        (s, body["code"].as_str()),
        (401, Some("auth.session_expired"))
    );

    // Absolute: a session kept busy still ends at the absolute timeout.
    let (busy, _, _) = browser_login(&srv, "alice", None).await;
    let started = std::time::Instant::now();
    let mut last_ok = Duration::ZERO;
    loop {
        let (s, _) = status_get(&srv, "/v1/users/current", &busy).await;
        if s != 200 {
            assert_eq!(s, 401);
            break;
        }
        last_ok = started.elapsed();
        assert!(last_ok < Duration::from_secs(10), "the session never ended");
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    assert!(
        last_ok >= Duration::from_millis(1500),
        "activity kept the session alive past the idle timeout ({last_ok:?})"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cookie_over_https_is_host_prefixed_and_secure() {
    let dir = tempfile::tempdir().unwrap();
    let cert = dir.path().join("c.pem");
    let key = dir.path().join("c.key");
    let (ok, _, err) = crate::harness::run(
        {
            let mut c = crate::harness::cmd(dir.path());
            c.args(["tls", "self-signed", "--cert"])
                .arg(&cert)
                .arg("--key")
                .arg(&key)
                .args(["--name", "fv.test"]);
            c
        },
        "",
    );
    assert!(ok, "{err}");
    let env = [
        ("FIELDVAULT_TLS_CERT", cert.to_str().unwrap()),
        ("FIELDVAULT_TLS_KEY", key.to_str().unwrap()),
    ];
    let srv = Server::start(dir.path(), &env);
    create_user(dir.path(), &[], "alice", false);
    let port = srv
        .base
        .rsplit(':')
        .next()
        .unwrap()
        .trim_end_matches('/')
        .to_owned();
    let ca = reqwest::Certificate::from_pem(&std::fs::read(&cert).unwrap()).unwrap();
    let c = reqwest::Client::builder()
        .tls_certs_only([ca])
        .resolve("fv.test", format!("127.0.0.1:{port}").parse().unwrap())
        .build()
        .unwrap();
    let r = c
        .post(format!("https://fv.test:{port}/v1/sessions"))
        .json(&json!({"email": "alice", "password": PW, "cookie": true}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let set = r.headers()[SET_COOKIE].to_str().unwrap().to_owned();
    assert!(set.starts_with("__Host-fv_session=fvs_"), "{set}");
    for attr in ["Secure", "HttpOnly", "SameSite=Strict", "Path=/"] {
        assert!(set.contains(attr), "{attr} in {set}");
    }
    assert!(!set.contains("Domain"), "{set}");
    let pair = set.split(';').next().unwrap().to_owned();
    let r = c
        .get(format!("https://fv.test:{port}/v1/users/current"))
        .header(COOKIE, pair)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
}

/// An account lists its own sessions (the one in use marked) and ends one by id; another
/// account's session id is "not found", and an API token cannot see or end sessions.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_account_lists_and_ends_its_sessions() {
    use crate::harness::{PASSWORD, Server, client, create_user};
    use serde_json::{Value, json};
    let dir = tempfile::tempdir().unwrap();
    let srv = Server::start(dir.path(), &[]);
    create_user(dir.path(), &[], "sam", false);
    create_user(dir.path(), &[], "tess", false);
    let c = client();
    let login = |who: &'static str| {
        let r = c
            .post(srv.url("/v1/sessions"))
            .json(&json!({"email": who, "password": PASSWORD}));
        async move {
            let v: Value = r.send().await.unwrap().json().await.unwrap();
            v["token"].as_str().unwrap().to_owned()
        }
    };
    let (a, b, t) = (login("sam").await, login("sam").await, login("tess").await);
    let list = |tok: String| {
        let r = c
            .get(srv.url("/v1/users/current/sessions"))
            .bearer_auth(tok);
        async move { r.send().await.unwrap() }
    };
    let l: Value = list(a.clone()).await.json().await.unwrap();
    let l = l.as_array().unwrap().clone();
    assert_eq!(l.len(), 2, "{l:?}");
    assert_eq!(l.iter().filter(|s| s["current"] == true).count(), 1);
    let other = l.iter().find(|s| s["current"] == false).unwrap()["id"]
        .as_i64()
        .unwrap();
    let tess: Value = list(t.clone()).await.json().await.unwrap();
    let tess_id = tess[0]["id"].as_i64().unwrap();
    let end = |tok: String, id: i64| {
        let r = c
            .delete(srv.url(&format!("/v1/users/current/sessions/{id}")))
            .bearer_auth(tok);
        async move { r.send().await.unwrap().status().as_u16() }
    };
    assert_eq!(
        end(a.clone(), tess_id).await,
        404,
        "another account's session"
    );
    assert_eq!(end(a.clone(), other).await, 200);
    let r = c
        .get(srv.url("/v1/users/current"))
        .bearer_auth(&b)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401, "the ended session no longer works");
    let r = c
        .get(srv.url("/v1/users/current"))
        .bearer_auth(&t)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "tess is untouched");
    assert_eq!(end(a.clone(), other).await, 404);
    // An API token sees no sessions.
    let tok: Value = c
        .post(srv.url("/v1/tokens"))
        .basic_auth("sam", Some(PASSWORD))
        .json(&json!({"name": "t", "scopes": ["data:read"]}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let tok = tok["token"].as_str().unwrap().to_owned();
    assert_eq!(list(tok.clone()).await.status(), 403);
    assert_eq!(end(tok, 1).await, 403);
    assert!(srv.stop());
}
