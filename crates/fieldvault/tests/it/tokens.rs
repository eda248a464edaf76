//! Sessions (`POST /v1/sessions`, what pyodk does) and scoped API tokens, over real HTTP.

use serde_json::{Value, json};

use crate::harness::{PASSWORD, Server, client, create_user};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_and_scoped_api_tokens() {
    let dir = tempfile::tempdir().unwrap();
    let srv = Server::start(dir.path(), &[]);
    create_user(dir.path(), &[], "alice", false);
    let c = client();

    // Sign in like pyodk: email (here the username) and password → a bearer token.
    let r = c
        .post(srv.url("/v1/sessions"))
        .json(&json!({"email": "alice", "password": "wrong password!"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    assert_eq!(r.json::<Value>().await.unwrap()["code"], "auth.failed");
    let r = c
        .post(srv.url("/v1/sessions"))
        .json(&json!({"email": "", "password": ""}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let s: Value = c
        .post(srv.url("/v1/sessions"))
        .json(&json!({"email": "alice", "password": PASSWORD}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let session = s["token"].as_str().unwrap().to_owned();
    assert!(session.starts_with("fvs_") && s["expiresAt"].is_string());
    let me: Value = c
        .get(srv.url("/v1/users/current"))
        .bearer_auth(&session)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(me["displayName"], "alice");
    let p: Value = c
        .post(srv.url("/v1/projects"))
        .bearer_auth(&session)
        .json(&json!({"name": "Tokens"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let pid = p["id"].as_i64().unwrap();

    // A read-only API token: reads work, writes are refused, both as Bearer and as Token.
    let t: Value = c
        .post(srv.url("/v1/tokens"))
        .bearer_auth(&session)
        .json(&json!({"name": "analysis script", "scopes": ["data:read"]}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let token = t["token"].as_str().unwrap().to_owned();
    assert!(token.starts_with("fvt_"));
    assert_eq!(t["scopes"], json!(["data:read"]));
    let r = c
        .get(srv.url(&format!("/v1/projects/{pid}")))
        .header("Authorization", format!("Token {token}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let r = c
        .get(srv.url(&format!("/v1/projects/{pid}/forms")))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let r = c
        .post(srv.url("/v1/projects"))
        .bearer_auth(&token)
        .json(&json!({"name": "x"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403, "data:read cannot create projects");
    let r = c
        .patch(srv.url(&format!("/v1/projects/{pid}")))
        .bearer_auth(&token)
        .json(&json!({"name": "renamed"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    // A read-only token cannot mint a stronger one; nobody but an admin gets the admin scope.
    let r = c
        .post(srv.url("/v1/tokens"))
        .bearer_auth(&token)
        .json(&json!({"name": "up", "scopes": ["projects:manage"]}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    let r = c
        .post(srv.url("/v1/tokens"))
        .bearer_auth(&session)
        .json(&json!({"name": "adm", "scopes": ["admin"]}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    for bad in [
        json!({"name": "", "scopes": ["data:read"]}),
        json!({"name": "x", "scopes": ["root"]}),
        json!({"name": "x", "scopes": []}),
        json!({"name": "x", "scopes": ["data:read"], "expiresAt": 1}),
    ] {
        let r = c
            .post(srv.url("/v1/tokens"))
            .bearer_auth(&session)
            .json(&bad)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 400, "{bad}");
    }
    // Listing never shows a token; use is recorded.
    let list: Value = c
        .get(srv.url("/v1/tokens"))
        .bearer_auth(&session)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(list.as_array().unwrap().len(), 1);
    assert!(list[0]["token"].is_null());
    assert_eq!(list[0]["lastUsedIp"], "127.0.0.1");
    assert!(!list.to_string().contains(&token[4..]));

    // Revoked and unknown tokens, and unknown schemes, are 401 — never treated as anonymous.
    let id = t["id"].as_i64().unwrap();
    assert_eq!(
        c.delete(srv.url(&format!("/v1/tokens/{id}")))
            .bearer_auth(&session)
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    assert_eq!(
        c.delete(srv.url(&format!("/v1/tokens/{id}")))
            .bearer_auth(&session)
            .send()
            .await
            .unwrap()
            .status(),
        404
    );
    for auth in [
        format!("Bearer {token}"),
        "Bearer fvt_nope".into(),
        "Token fvs_nope".into(),
        "Negotiate abc".into(),
    ] {
        let r = c
            .get(srv.url("/v1/users/current"))
            .header("Authorization", auth.clone())
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 401, "{auth}");
    }
    // An expiring token works until it expires.
    let soon = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
        + 4000;
    let t2: Value = c
        .post(srv.url("/v1/tokens"))
        .bearer_auth(&session)
        .json(&json!({"name": "short", "scopes": ["data:read"], "expiresAt": soon}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let short = t2["token"].as_str().unwrap().to_owned();
    assert_eq!(
        c.get(srv.url("/v1/users/current"))
            .bearer_auth(&short)
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    tokio::time::sleep(std::time::Duration::from_millis(4300)).await;
    assert_eq!(
        c.get(srv.url("/v1/users/current"))
            .bearer_auth(&short)
            .send()
            .await
            .unwrap()
            .status(),
        401
    );

    // Sign out: the session stops working; someone else's token cannot be ended by guessing.
    assert_eq!(
        c.delete(srv.url("/v1/sessions/fvs_someone_else"))
            .bearer_auth(&session)
            .send()
            .await
            .unwrap()
            .status(),
        403
    );
    assert_eq!(
        c.delete(srv.url("/v1/sessions/current"))
            .bearer_auth(&session)
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    assert_eq!(
        c.get(srv.url("/v1/users/current"))
            .bearer_auth(&session)
            .send()
            .await
            .unwrap()
            .status(),
        401
    );
    // The access log names the user and the method, never the token.
    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    let log = srv.access_log();
    assert!(
        log.iter()
            .any(|l| l["auth"] == "api-token" && l["user"] == "alice")
    );
    assert!(
        log.iter()
            .any(|l| l["auth"] == "session" && l["user"] == "alice")
    );
    let all = srv.stdout.lock().unwrap().join("\n") + &srv.stderr_text();
    assert!(!all.contains(&token[4..]) && !all.contains(&session[4..]));
    assert!(srv.stop());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn password_policy_and_strength_meter() {
    let dir = tempfile::tempdir().unwrap();
    let srv = Server::start(dir.path(), &[]);
    let c = client();
    let weak: Value = c
        .post(srv.url("/v1/password-strength"))
        .json(&json!({"password": "password123", "username": "alice"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(weak["acceptable"], false);
    assert!(weak["score"].as_u64().unwrap() < 3);
    assert!(weak["warning"].is_string() || !weak["suggestions"].as_array().unwrap().is_empty());
    let strong: Value = c
        .post(srv.url("/v1/password-strength"))
        .json(&json!({"password": "Tamarind-Okapi-Glacier-41", "username": "alice"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(strong["acceptable"], true);
    let same: Value = c
        .post(srv.url("/v1/password-strength"))
        .json(&json!({"password": "alice.smith@example.org", "username": "alice", "email": "alice.smith@example.org"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(same["acceptable"], false);
    // The server is the judge: the CLI refuses the weak password with zxcvbn's feedback.
    let mut cmd = crate::harness::cmd(dir.path());
    cmd.args(["user", "create", "carol", "--password-stdin"]);
    let (ok, _, err) = crate::harness::run(cmd, "password123\n");
    assert!(!ok, "weak password accepted");
    assert!(err.contains("password"), "{err}");
    // The candidate never reaches the logs.
    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    let all = srv.stdout.lock().unwrap().join("\n") + &srv.stderr_text();
    assert!(!all.contains("Tamarind-Okapi"));
    assert!(srv.stop());
}

/// Login throttling: brute force of one account from one address, of one account from many
/// addresses, and of many accounts from one address; the victim is never locked out of their own
/// address. Addresses come from X-Forwarded-For through a trusted proxy (here: loopback).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn login_throttling() {
    let dir = tempfile::tempdir().unwrap();
    let srv = Server::start(
        dir.path(),
        &[("FIELDVAULT_HTTP_TRUSTED_PROXIES", "127.0.0.1/32")],
    );
    create_user(dir.path(), &[], "alice", false);
    create_user(dir.path(), &[], "bob", false);
    let c = client();
    let attempt = |user: &'static str, pass: &'static str, ip: &'static str| {
        let c = c.clone();
        let url = srv.url("/v1/sessions");
        async move {
            c.post(url)
                .header("X-Forwarded-For", ip)
                .json(&json!({"email": user, "password": pass}))
                .send()
                .await
                .unwrap()
        }
    };
    // One account from one address: five failures lock that pair for a minute.
    for _ in 0..5 {
        assert_eq!(
            attempt("alice", "guess-guess-guess", "198.51.100.1")
                .await
                .status(),
            401
        );
    }
    let r = attempt("alice", PASSWORD, "198.51.100.1").await;
    assert_eq!(r.status(), 429, "even the right password waits");
    let wait: u64 = r.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=60).contains(&wait), "{wait}");
    assert_eq!(
        r.json::<Value>().await.unwrap()["code"],
        "auth.rate_limited"
    );
    // The owner, from their own address, is not locked out.
    assert_eq!(
        attempt("alice", PASSWORD, "203.0.113.50").await.status(),
        200
    );
    // One account from many addresses: each address gets its own small budget; the account stays usable.
    for i in 0..12 {
        let ip: &'static str = Box::leak(format!("192.0.2.{}", 10 + i).into_boxed_str());
        assert_eq!(
            attempt("alice", "guess-guess-guess", ip).await.status(),
            401
        );
    }
    assert_eq!(
        attempt("alice", PASSWORD, "203.0.113.50").await.status(),
        200
    );
    // Many accounts from one address: the address is locked across accounts.
    let mut locked = false;
    for i in 0..40 {
        let user: &'static str = Box::leak(format!("user{i}").into_boxed_str());
        if attempt(user, "guess-guess-guess", "198.51.100.99")
            .await
            .status()
            == 429
        {
            locked = true;
            break;
        }
    }
    assert!(locked, "a spraying address is locked");
    assert_eq!(
        attempt("bob", PASSWORD, "198.51.100.99").await.status(),
        429
    );
    assert_eq!(attempt("bob", PASSWORD, "203.0.113.51").await.status(), 200);
    assert!(srv.stop());
}

/// TOTP second factor: enrolment with a confirming code, sign-in needs the code, a code or
/// recovery code is accepted once, a password alone (Basic) no longer signs the account in.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_factor_sign_in() {
    let dir = tempfile::tempdir().unwrap();
    let srv = Server::start(dir.path(), &[]);
    create_user(dir.path(), &[], "alice", false);
    let c = client();
    let login = |code: Option<String>| {
        let c = c.clone();
        let url = srv.url("/v1/sessions");
        async move {
            let mut body = json!({"email": "alice", "password": PASSWORD});
            if let Some(code) = code {
                body["code"] = json!(code);
            }
            c.post(url).json(&body).send().await.unwrap()
        }
    };
    let s: Value = login(None).await.json().await.unwrap();
    let session = s["token"].as_str().unwrap().to_owned();
    let e: Value = c
        .post(srv.url("/v1/users/current/2fa"))
        .bearer_auth(&session)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(
        e["otpauthUrl"]
            .as_str()
            .unwrap()
            .starts_with("otpauth://totp/Fieldvault:alice")
    );
    let secret = crate::harness::base32_decode(e["secret"].as_str().unwrap());
    assert_eq!(secret.len(), 20);
    let now = || {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs()
    };
    let r = c
        .post(srv.url("/v1/users/current/2fa/confirm"))
        .bearer_auth(&session)
        .json(&json!({"code": "000000"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    let code = fieldvault_crypto::totp::code(&secret, now()).unwrap();
    let r: Value = c
        .post(srv.url("/v1/users/current/2fa/confirm"))
        .bearer_auth(&session)
        .json(&json!({"code": code}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let recovery: Vec<String> = r["recoveryCodes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c.as_str().unwrap().to_owned())
        .collect();
    assert_eq!(recovery.len(), 10);

    // Sign-in now needs the second factor; the code just used is not accepted again.
    let r = login(None).await;
    assert_eq!(r.status(), 401);
    assert_eq!(
        r.json::<Value>().await.unwrap()["code"],
        "auth.second_factor_required"
    );
    let r = login(Some(code.clone())).await;
    assert_eq!(
        r.json::<Value>().await.unwrap()["code"],
        "auth.second_factor_failed",
        "replayed code"
    );
    assert_eq!(
        login(Some(recovery[0].clone())).await.status(),
        200,
        "recovery code"
    );
    assert_eq!(
        login(Some(recovery[0].clone())).await.status(),
        401,
        "recovery codes are single-use"
    );
    // A password alone no longer signs in.
    let r = c
        .get(srv.url("/v1/users/current"))
        .basic_auth("alice", Some(PASSWORD))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    // Turning it off needs a code; afterwards the password works alone again.
    let r = c
        .post(srv.url("/v1/users/current/2fa/disable"))
        .bearer_auth(&session)
        .json(&json!({"code": "bogus"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    let r = c
        .post(srv.url("/v1/users/current/2fa/disable"))
        .bearer_auth(&session)
        .json(&json!({"code": recovery[1]}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(
        c.get(srv.url("/v1/users/current"))
            .basic_auth("alice", Some(PASSWORD))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    assert!(!srv.stdout.lock().unwrap().join("\n").contains(&recovery[2]));
    assert!(srv.stop());
}

/// `POST /v1/users` (Central's shape): administrators with two-factor sign-in create accounts; the
/// password policy applies; nobody else may.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn administrators_create_users() {
    let dir = tempfile::tempdir().unwrap();
    let srv = Server::start(dir.path(), &[]);
    let admin = crate::harness::admin_session(&srv, dir.path(), &[], "admin").await;
    create_user(dir.path(), &[], "bob", false);
    let c = client();
    let r = c
        .post(srv.url("/v1/users"))
        .bearer_auth(&admin)
        .json(&json!({"email": "dana@example.org", "password": "Tamarind-Okapi-Glacier-41"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let u: Value = r.json().await.unwrap();
    assert_eq!(
        (u["displayName"].as_str(), u["email"].as_str()),
        (Some("dana@example.org"), Some("dana@example.org"))
    );
    let r = c
        .get(srv.url("/v1/users/current"))
        .basic_auth("dana@example.org", Some("Tamarind-Okapi-Glacier-41"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "the new account signs in");
    let weak = c
        .post(srv.url("/v1/users"))
        .bearer_auth(&admin)
        .json(&json!({"username": "eve", "password": "password123"}))
        .send()
        .await
        .unwrap();
    assert_eq!(weak.status(), 400);
    let taken = c
        .post(srv.url("/v1/users"))
        .bearer_auth(&admin)
        .json(&json!({"username": "BOB", "password": "Tamarind-Okapi-Glacier-41"}))
        .send()
        .await
        .unwrap();
    assert_eq!(taken.status(), 409);
    let r = c
        .post(srv.url("/v1/users"))
        .basic_auth("bob", Some(PASSWORD))
        .json(&json!({"username": "x1", "password": "Tamarind-Okapi-Glacier-41"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    assert!(srv.stop());
}

/// An administrator suspends an account: its session, API token and password stop working at
/// once (including a password the server had just verified and cached); reactivation restores it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn administrators_suspend_and_reactivate_accounts() {
    let dir = tempfile::tempdir().unwrap();
    let srv = Server::start(dir.path(), &[]);
    let admin = crate::harness::admin_session(&srv, dir.path(), &[], "admin").await;
    create_user(dir.path(), &[], "bob", false);
    let c = client();
    let me: Value = c
        .get(srv.url("/v1/users/current"))
        .basic_auth("bob", Some(PASSWORD))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let bob = me["id"].as_i64().unwrap();
    let s: Value = c
        .post(srv.url("/v1/sessions"))
        .json(&json!({"email": "bob", "password": PASSWORD}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let session = s["token"].as_str().unwrap().to_owned();
    let t: Value = c
        .post(srv.url("/v1/tokens"))
        .bearer_auth(&session)
        .json(&json!({"name": "t", "scopes": ["data:read"]}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let token = t["token"].as_str().unwrap().to_owned();

    let r = c
        .post(srv.url(&format!("/v1/admin/users/{bob}/suspend")))
        .bearer_auth(&session)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403, "only administrators");
    let r = c
        .post(srv.url(&format!("/v1/admin/users/{bob}/suspend")))
        .bearer_auth(&admin)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.json::<Value>().await.unwrap()["active"], false);
    let status = |auth: &'static str| {
        let c = c.clone();
        let url = srv.url("/v1/users/current");
        let (session, token) = (session.clone(), token.clone());
        async move {
            let r = c.get(url);
            let r = match auth {
                "basic" => r.basic_auth("bob", Some(PASSWORD)),
                "session" => r.bearer_auth(session),
                _ => r.bearer_auth(token),
            };
            r.send().await.unwrap().status().as_u16()
        }
    };
    for how in ["basic", "session", "token"] {
        assert_eq!(status(how).await, 401, "{how} after suspension");
    }
    let r = c
        .post(srv.url(&format!("/v1/admin/users/{bob}/activate")))
        .bearer_auth(&admin)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(status("basic").await, 200);
    assert_eq!(status("token").await, 200);
    assert_eq!(
        status("session").await,
        401,
        "suspension ended the session for good"
    );
    let r = c
        .post(srv.url("/v1/admin/users/999/suspend"))
        .bearer_auth(&admin)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    assert!(srv.stop());
}
