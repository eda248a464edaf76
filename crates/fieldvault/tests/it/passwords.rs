//! Password change, admin-issued reset links and forced resets (including KoboToolbox imports
//! whose hashes cannot be checked), over real HTTP.

use std::time::Duration;

use serde_json::{Value, json};

use crate::accounts_util::{PW, PW2, audit, audited, bearer, my_id, try_login};
use crate::harness::{Server, admin_session, client, cmd, create_user, run};

async fn post(srv: &Server, path: &str, token: Option<&str>, body: Value) -> (u16, Value) {
    let mut req = client().post(srv.url(path)).json(&body);
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    let r = req.send().await.unwrap();
    (r.status().as_u16(), r.json().await.unwrap_or(Value::Null))
}

async fn alive(srv: &Server, token: &str) -> bool {
    client()
        .get(srv.url("/v1/users/current"))
        .bearer_auth(token)
        .send()
        .await
        .unwrap()
        .status()
        == 200
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn change_password_ends_other_sessions() {
    let dir = tempfile::tempdir().unwrap();
    let srv = Server::start(dir.path(), &[]);
    create_user(dir.path(), &[], "alice", false);
    let here = bearer(&srv, "alice", PW).await;
    let elsewhere = bearer(&srv, "alice", PW).await;

    let (s, b) = post(
        &srv,
        "/v1/users/current/password",
        Some(&here),
        json!({"password": "wrong password!", "newPassword": PW2}),
    )
    .await;
    assert_eq!((s, b["code"].as_str()), (401, Some("auth.failed")));
    let (s, b) = post(
        &srv,
        "/v1/users/current/password",
        Some(&here),
        json!({"password": PW, "newPassword": "alice12345"}),
    )
    .await;
    assert_eq!(s, 400, "{b}");
    let (s, b) = post(
        &srv,
        "/v1/users/current/password",
        Some(&here),
        json!({"password": PW, "newPassword": PW2}),
    )
    .await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(b["sessionsEnded"], 1);
    assert!(alive(&srv, &here).await, "the caller's own session stays");
    assert!(!alive(&srv, &elsewhere).await);
    assert_eq!(try_login(&srv, "alice", PW).await.0, 401);
    assert_eq!(try_login(&srv, "alice", PW2).await.0, 200);
    // Nobody signed in and no username: nothing to change.
    let (s, _) = post(
        &srv,
        "/v1/users/current/password",
        None,
        json!({"password": PW2, "newPassword": PW}),
    )
    .await;
    assert_eq!(s, 401);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reset_links_and_forced_resets() {
    let dir = tempfile::tempdir().unwrap();
    let srv = Server::start(dir.path(), &[]);
    create_user(dir.path(), &[], "alice", false);
    let admin = admin_session(&srv, dir.path(), &[], "admin").await;
    let alice = bearer(&srv, "alice", PW).await;
    let alice_id = my_id(&srv, &alice).await;

    // Only administrators issue reset links; the token is shown once and single use.
    let (s, _) = post(
        &srv,
        &format!("/v1/admin/users/{alice_id}/password-reset"),
        Some(&alice),
        json!({}),
    )
    .await;
    assert_eq!(s, 403);
    let (s, link) = post(
        &srv,
        &format!("/v1/admin/users/{alice_id}/password-reset"),
        Some(&admin),
        json!({}),
    )
    .await;
    assert_eq!(s, 200, "{link}");
    let token = link["token"].as_str().unwrap().to_owned();
    assert!(token.starts_with("fvr_"));
    let (s, b) = post(
        &srv,
        "/v1/password-reset",
        None,
        json!({"token": token, "password": "short"}),
    )
    .await;
    assert_eq!(
        (s, b["code"].as_str()),
        (400, Some("invalid")),
        "policy first; the link stays usable"
    );
    let (s, b) = post(
        &srv,
        "/v1/password-reset",
        None,
        json!({"token": token, "password": PW2}),
    )
    .await;
    assert_eq!(s, 200, "{b}");
    assert!(!alive(&srv, &alice).await, "a reset ends every session");
    assert_eq!(try_login(&srv, "alice", PW2).await.0, 200);
    let (s, b) = post(
        &srv,
        "/v1/password-reset",
        None,
        json!({"token": token, "password": PW}),
    )
    .await;
    assert_eq!(
        (s, b["code"].as_str()),
        (400, Some("reset.invalid")),
        "reused link"
    );
    // An expired link is refused.
    let (_, short) = post(
        &srv,
        &format!("/v1/admin/users/{alice_id}/password-reset?expiresInSecs=1"),
        Some(&admin),
        json!({}),
    )
    .await;
    tokio::time::sleep(Duration::from_millis(1300)).await;
    let (s, b) = post(
        &srv,
        "/v1/password-reset",
        None,
        json!({"token": short["token"], "password": PW}),
    )
    .await;
    assert_eq!((s, b["code"].as_str()), (400, Some("reset.invalid")));

    // Forced reset: sessions end and sign-in answers a distinct code until the password changes.
    let alice = bearer(&srv, "alice", PW2).await;
    let r = client()
        .post(srv.url(&format!("/v1/admin/users/{alice_id}/force-password-reset")))
        .bearer_auth(&admin)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.json::<Value>().await.unwrap()["mustResetPassword"], true);
    assert!(!alive(&srv, &alice).await);
    assert_eq!(
        try_login(&srv, "alice", PW2).await,
        (403, "auth.password_reset_required".into())
    );
    assert_eq!(
        try_login(&srv, "alice", "wrong password!").await.0,
        401,
        "a wrong password learns nothing"
    );
    let r = client()
        .get(srv.url("/v1/users/current"))
        .basic_auth("alice", Some(PW2))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403, "Basic is refused the same way");
    // The change route takes the username when nobody can sign in.
    let (s, b) = post(
        &srv,
        "/v1/users/current/password",
        None,
        json!({"username": "alice", "password": PW2, "newPassword": PW}),
    )
    .await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(try_login(&srv, "alice", PW).await.0, 200);

    let log = audit(&srv, &admin).await;
    for action in [
        "user.password.reset_link",
        "user.password.reset",
        "user.password.force_reset",
        "user.password.change",
    ] {
        assert!(audited(&log, action, "user:alice"), "{action}: {log:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn imported_accounts_with_foreign_hashes_must_reset() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("kobo.csv");
    std::fs::write(
        &file,
        "username,email,password,is_superuser,is_active,date_joined\n\
         root,root@example.org,bcrypt_sha256$$2b$12$abcdefghijklmnopqrstuu,f,t,2019-05-01 10:00:00+00\n",
    )
    .unwrap();
    let mut c = cmd(dir.path());
    c.args(["user", "import-kobo"]).arg(&file);
    let (ok, out, err) = run(c, "");
    assert!(ok, "{out} {err}");
    let srv = Server::start(dir.path(), &[]);
    // No password can match a hash we cannot check: the answer says what to do.
    assert_eq!(
        try_login(&srv, "root", "anything at all").await,
        (403, "auth.password_reset_required".into())
    );
    let admin = admin_session(&srv, dir.path(), &[], "admin").await;
    // The imported account is the first one in this store.
    let root_id = 1;
    let (s, link) = post(
        &srv,
        &format!("/v1/admin/users/{root_id}/password-reset"),
        Some(&admin),
        json!({}),
    )
    .await;
    assert_eq!(s, 200);
    let (s, b) = post(
        &srv,
        "/v1/password-reset",
        None,
        json!({"token": link["token"], "password": PW2}),
    )
    .await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(b["displayName"], "root");
    assert_eq!(try_login(&srv, "root", PW2).await.0, 200);
}
