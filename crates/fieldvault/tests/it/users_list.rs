//! `GET /v1/users` over real HTTP: administrators with a second factor list accounts (Central's
//! User shape plus the state an administrator acts on), filter with `?q=`, page with
//! `limit`/`offset`; everyone else is refused, and bad parameters are a 400 naming them.

use serde_json::{Value, json};

use crate::harness::{PASSWORD, Server, admin_session, client, create_user};

async fn get(srv: &Server, auth: (&str, Option<&str>), path: &str) -> (u16, Value) {
    let c = client().get(srv.url(path));
    let c = match auth {
        (token, None) => c.bearer_auth(token),
        (user, Some(pw)) => c.basic_auth(user, Some(pw)),
    };
    let r = c.send().await.unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

fn names(list: &Value) -> Vec<&str> {
    list.as_array()
        .unwrap()
        .iter()
        .map(|u| u["displayName"].as_str().unwrap())
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn administrators_list_and_search_accounts() {
    let dir = tempfile::tempdir().unwrap();
    create_user(dir.path(), &[], "alice", false);
    create_user(dir.path(), &[], "bob_smith", false);
    let srv = Server::start(dir.path(), &[]);
    let admin = admin_session(&srv, dir.path(), &[], "root").await;
    let c = client();
    let r = c
        .post(srv.url("/v1/users"))
        .bearer_auth(&admin)
        .json(&json!({"username": "carol", "email": "Carol@Example.org", "password": "Quokka-tundra-marble-41"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let r = c
        .post(srv.url("/v1/admin/users/1/suspend"))
        .bearer_auth(&admin)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "alice suspended");

    let (s, list) = get(&srv, (&admin, None), "/v1/users").await;
    assert_eq!(s, 200, "{list}");
    assert_eq!(names(&list), ["alice", "bob_smith", "root", "carol"]);
    let alice = &list[0];
    for key in [
        "id",
        "type",
        "displayName",
        "email",
        "createdAt",
        "updatedAt",
        "deletedAt",
        "lastLoginAt",
    ] {
        assert!(
            alice.get(key).is_some(),
            "Central's User has {key}: {alice}"
        );
    }
    assert_eq!(alice["type"], "user");
    assert_eq!(alice["active"], false);
    assert_eq!(list[2]["superuser"], true);
    assert_eq!(list[2]["require2fa"], false);
    assert_eq!(list[1]["mustResetPassword"], false);
    assert!(
        !list.to_string().contains("pbkdf2"),
        "no password hash in the list"
    );

    // q: a case-insensitive substring of the username or the e-mail; wildcards are literal.
    let (_, l) = get(&srv, (&admin, None), "/v1/users?q=BOB").await;
    assert_eq!(names(&l), ["bob_smith"]);
    let (_, l) = get(&srv, (&admin, None), "/v1/users?q=example.ORG").await;
    assert_eq!(names(&l), ["carol"]);
    let (_, l) = get(&srv, (&admin, None), "/v1/users?q=%25").await;
    assert_eq!(names(&l), Vec::<&str>::new());
    let (_, l) = get(&srv, (&admin, None), "/v1/users?q=+").await;
    assert_eq!(l.as_array().unwrap().len(), 4, "a blank q lists everyone");
    let (_, l) = get(&srv, (&admin, None), "/v1/users?limit=2&offset=1").await;
    assert_eq!(names(&l), ["bob_smith", "root"]);

    // Bad parameters: 400 with the parameter named.
    for (path, field) in [
        ("/v1/users?limit=0", "limit"),
        ("/v1/users?limit=1001", "limit"),
        ("/v1/users?limit=ten", "limit"),
        ("/v1/users?offset=-1", "offset"),
    ] {
        let (s, e) = get(&srv, (&admin, None), path).await;
        assert_eq!(
            (s, e["code"].as_str()),
            (400, Some("invalid")),
            "{path}: {e}"
        );
        assert!(e["message"].as_str().unwrap().contains(field), "{e}");
    }
    let long = "x".repeat(321);
    let (s, e) = get(&srv, (&admin, None), &format!("/v1/users?q={long}")).await;
    assert_eq!(s, 400, "{e}");

    // Not for ordinary accounts, nor for an administrator without a second factor, nor for an
    // API token without the admin scope.
    let (s, e) = get(&srv, ("bob_smith", Some(PASSWORD)), "/v1/users").await;
    assert_eq!(
        (s, e["code"].as_str()),
        (403, Some("auth.forbidden")),
        "{e}"
    );
    create_user(dir.path(), &[], "root2", true);
    let (s, e) = get(&srv, ("root2", Some(PASSWORD)), "/v1/users").await;
    assert_eq!(s, 403, "{e}");
    let r: Value = c
        .post(srv.url("/v1/tokens"))
        .bearer_auth(&admin)
        .json(&json!({"name": "read", "scopes": ["data:read"]}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let (s, _) = get(&srv, (r["token"].as_str().unwrap(), None), "/v1/users").await;
    assert_eq!(s, 403);
    let r = c.get(srv.url("/v1/users")).send().await.unwrap();
    assert_eq!(r.status(), 401);
}

/// Outside `admin.allow_cidrs` the listing does not exist.
#[tokio::test(flavor = "multi_thread")]
async fn the_user_list_is_behind_the_admin_allowlist() {
    let dir = tempfile::tempdir().unwrap();
    let srv = Server::start(
        dir.path(),
        &[("FIELDVAULT_ADMIN_ALLOW_CIDRS", "192.0.2.0/24")],
    );
    let r = client().get(srv.url("/v1/users")).send().await.unwrap();
    assert_eq!(r.status(), 404);
}
