//! Sign-up under each `signup.mode`, invite links (single use, expiring, fixed username), the
//! password policy's feedback, the per-address sign-up throttle, over real HTTP.

use std::time::Duration;

use serde_json::{Value, json};

use crate::accounts_util::{PW, PW2, audit, audited, bearer, try_login};
use crate::harness::{Server, admin_session, client, create_user};

async fn signup(srv: &Server, body: Value) -> (u16, Value) {
    let r = client()
        .post(srv.url("/v1/signup"))
        .json(&body)
        .send()
        .await
        .unwrap();
    (r.status().as_u16(), r.json().await.unwrap_or(Value::Null))
}

async fn invite(srv: &Server, path: &str, token: &str, body: Value) -> (u16, Value) {
    let r = client()
        .post(srv.url(path))
        .bearer_auth(token)
        .json(&body)
        .send()
        .await
        .unwrap();
    (r.status().as_u16(), r.json().await.unwrap_or(Value::Null))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn closed_signup_takes_only_admin_invites() {
    let dir = tempfile::tempdir().unwrap();
    let srv = Server::start(dir.path(), &[]);
    create_user(dir.path(), &[], "alice", false);
    let admin = admin_session(&srv, dir.path(), &[], "admin").await;

    // Closed by default: no invite, no account.
    let (s, b) = signup(&srv, json!({"username": "dora", "password": PW2})).await;
    assert_eq!(
        (s, b["code"].as_str()),
        (403, Some("signup.invite_required"))
    );
    // Only administrators make invites in closed mode.
    let alice = bearer(&srv, "alice", PW).await;
    let (s, _) = invite(&srv, "/v1/invites", &alice, json!({})).await;
    assert_eq!(s, 403);

    // An invite fixed to a username: shown once, single use.
    let (s, inv) = invite(
        &srv,
        "/v1/admin/invites",
        &admin,
        json!({"username": "dora"}),
    )
    .await;
    assert_eq!(s, 200, "{inv}");
    let token = inv["token"].as_str().unwrap().to_owned();
    assert!(token.starts_with("fvi_"));
    let (s, b) = signup(
        &srv,
        json!({"username": "eve", "password": PW2, "invite": token}),
    )
    .await;
    assert_eq!((s, b["code"].as_str()), (400, Some("invalid")), "{b}");
    // The password policy answers with zxcvbn's feedback.
    let (s, b) = signup(
        &srv,
        json!({"username": "dora", "password": "password123", "invite": token}),
    )
    .await;
    assert_eq!(s, 400);
    let msg = b["message"].as_str().unwrap();
    assert!(
        msg.starts_with("password:") && msg.contains("common"),
        "{msg}"
    );
    let (s, b) = signup(
        &srv,
        json!({"username": "dora", "password": PW2, "email": "dora@example.org", "invite": token}),
    )
    .await;
    assert_eq!(s, 201, "{b}");
    assert_eq!(b["displayName"], "dora");
    assert_eq!(try_login(&srv, "dora", PW2).await.0, 200);
    let (s, b) = signup(
        &srv,
        json!({"username": "dora2", "password": PW2, "invite": token}),
    )
    .await;
    assert_eq!(
        (s, b["code"].as_str()),
        (400, Some("signup.invite_invalid")),
        "used once"
    );

    // An expired invite is refused.
    let (_, short) = invite(
        &srv,
        "/v1/admin/invites",
        &admin,
        json!({"expiresInSecs": 1}),
    )
    .await;
    tokio::time::sleep(Duration::from_millis(1300)).await;
    let (s, b) = signup(
        &srv,
        json!({"username": "late", "password": PW2, "invite": short["token"]}),
    )
    .await;
    assert_eq!(
        (s, b["code"].as_str()),
        (400, Some("signup.invite_invalid"))
    );
    let (s, b) = signup(
        &srv,
        json!({"username": "guess", "password": PW2, "invite": "fvi_guess"}),
    )
    .await;
    assert_eq!(
        (s, b["code"].as_str()),
        (400, Some("signup.invite_invalid"))
    );
    assert_eq!(try_login(&srv, "late", PW2).await.0, 401);

    let log = audit(&srv, &admin).await;
    assert!(audited(&log, "user.signup", "user:dora"));
    assert!(
        log.iter()
            .filter(|(a, _)| a == "user.invite.create")
            .count()
            == 2
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invite_mode_lets_members_invite_and_open_mode_anyone() {
    let dir = tempfile::tempdir().unwrap();
    let env = [("FIELDVAULT_SIGNUP_MODE", "invite")];
    let srv = Server::start(dir.path(), &env);
    create_user(dir.path(), &env, "alice", false);
    let alice = bearer(&srv, "alice", PW).await;
    let (s, b) = signup(&srv, json!({"username": "bob", "password": PW2})).await;
    assert_eq!(
        (s, b["code"].as_str()),
        (403, Some("signup.invite_required"))
    );
    let (s, inv) = invite(
        &srv,
        "/v1/invites",
        &alice,
        json!({"email": "bob@example.org"}),
    )
    .await;
    assert_eq!(s, 200, "{inv}");
    // The invite is fixed to an e-mail address.
    let (s, _) = signup(
        &srv,
        json!({"username": "bob", "password": PW2, "invite": inv["token"]}),
    )
    .await;
    assert_eq!(s, 400);
    let (s, _) = signup(
        &srv,
        json!({"username": "bob", "password": PW2, "email": "BOB@example.org", "invite": inv["token"]}),
    )
    .await;
    assert_eq!(s, 201);
    drop(srv);

    let dir = tempfile::tempdir().unwrap();
    let srv = Server::start(dir.path(), &[("FIELDVAULT_SIGNUP_MODE", "open")]);
    let (s, b) = signup(&srv, json!({"username": "carol", "password": PW2})).await;
    assert_eq!(s, 201, "{b}");
    assert_eq!(
        b["email"],
        Value::Null,
        "only a username and a password are asked"
    );
    let (s, b) = signup(&srv, json!({"username": "Carol", "password": PW2})).await;
    assert_eq!((s, b["code"].as_str()), (409, Some("conflict.taken")));
    assert_eq!(try_login(&srv, "carol", PW2).await.0, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signup_is_throttled_per_address() {
    let dir = tempfile::tempdir().unwrap();
    let srv = Server::start(dir.path(), &[("FIELDVAULT_SIGNUP_MODE", "open")]);
    // Every attempt counts, refused or not (weak passwords cost no hashing here).
    for i in 0..10 {
        let (s, _) = signup(
            &srv,
            json!({"username": format!("u{i}"), "password": "short"}),
        )
        .await;
        assert_eq!(s, 400, "attempt {i}");
    }
    let r = client()
        .post(srv.url("/v1/signup"))
        .json(&json!({"username": "late", "password": PW2}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 429);
    let wait: u64 = r.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(wait > 3000, "{wait}");
    assert_eq!(
        r.json::<Value>().await.unwrap()["code"],
        "auth.rate_limited"
    );
}
