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
        + 1500;
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
    tokio::time::sleep(std::time::Duration::from_millis(1700)).await;
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
