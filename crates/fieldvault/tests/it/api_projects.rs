//! `/v1/projects…` and `/v1/projects/{id}/app-users…` over real HTTP against the real binary:
//! visibility by role, 403 vs 404, PATCH, validation that changes nothing, and app-user tokens
//! that are shown once.

use reqwest::{Method, Response};
use serde_json::{Value, json};

use crate::harness::{PASSWORD, Server, client, create_user};

/// A server with two ordinary accounts, `alice` and `bob`.
fn start() -> (tempfile::TempDir, Server) {
    let dir = tempfile::tempdir().unwrap();
    create_user(dir.path(), &[], "alice", false);
    create_user(dir.path(), &[], "bob", false);
    let srv = Server::start(dir.path(), &[]);
    (dir, srv)
}

async fn call(
    srv: &Server,
    who: Option<&str>,
    method: Method,
    path: &str,
    body: Option<Value>,
) -> Response {
    let mut req = client().request(method, srv.url(path));
    if let Some(user) = who {
        req = req.basic_auth(user, Some(PASSWORD));
    }
    if let Some(b) = body {
        req = req.json(&b);
    }
    req.send().await.unwrap()
}

/// Sends a request and returns (status, JSON body).
async fn send(
    srv: &Server,
    who: Option<&str>,
    method: Method,
    path: &str,
    body: Option<Value>,
) -> (u16, Value) {
    let r = call(srv, who, method, path, body).await;
    let status = r.status().as_u16();
    let text = r.text().await.unwrap();
    (status, serde_json::from_str(&text).unwrap_or(Value::Null))
}

fn assert_problem(got: &(u16, Value), status: u16, code: &str) {
    assert_eq!(got.0, status, "{}", got.1);
    assert_eq!(got.1["code"], code, "{}", got.1);
    assert!(got.1["message"].as_str().unwrap().len() > 3, "{}", got.1);
}

async fn user_id(srv: &Server, who: &str) -> i64 {
    let (s, me) = send(srv, Some(who), Method::GET, "/v1/users/current", None).await;
    assert_eq!(s, 200);
    me["id"].as_i64().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn projects_visibility_roles_patch_and_validation() {
    let (_dir, srv) = start();
    let alice = Some("alice");
    let bob = Some("bob");

    // Unauthenticated: 401 everywhere, before anything else.
    assert_problem(
        &send(&srv, None, Method::GET, "/v1/projects", None).await,
        401,
        "auth.required",
    );
    assert_problem(
        &send(
            &srv,
            None,
            Method::POST,
            "/v1/projects",
            Some(json!({"name": "x"})),
        )
        .await,
        401,
        "auth.required",
    );

    // Alice creates a project and becomes its manager.
    let (s, p) = send(
        &srv,
        alice,
        Method::POST,
        "/v1/projects",
        Some(json!({"name": "  Household survey  ", "description": "Round one"})),
    )
    .await;
    assert_eq!(s, 200, "{p}");
    let id = p["id"].as_i64().unwrap();
    assert_eq!(p["name"], "Household survey", "trimmed");
    assert_eq!(p["description"], "Round one");
    assert_eq!(p["archived"], false);
    for key in ["keyId", "updatedAt", "deletedAt"] {
        assert!(
            p.as_object().unwrap().contains_key(key) && p[key].is_null(),
            "{key}: {p}"
        );
    }
    assert!(p["createdAt"].as_str().unwrap().ends_with('Z'));
    let path = format!("/v1/projects/{id}");

    let (s, list) = send(&srv, alice, Method::GET, "/v1/projects", None).await;
    assert_eq!(s, 200);
    assert_eq!(list, json!([p.clone()]));
    let (s, got) = send(&srv, alice, Method::GET, &path, None).await;
    assert_eq!((s, &got), (200, &p));

    // Bob has no role: the project does not exist for him.
    let (s, list) = send(&srv, bob, Method::GET, "/v1/projects", None).await;
    assert_eq!((s, list), (200, json!([])));
    assert_problem(
        &send(&srv, bob, Method::GET, &path, None).await,
        404,
        "not_found",
    );
    assert_problem(
        &send(
            &srv,
            bob,
            Method::PATCH,
            &path,
            Some(json!({"name": "mine"})),
        )
        .await,
        404,
        "not_found",
    );
    let bob_id = user_id(&srv, "bob").await;
    assert_problem(
        &send(
            &srv,
            bob,
            Method::POST,
            &format!("{path}/assignments/manager/{bob_id}"),
            None,
        )
        .await,
        404,
        "not_found",
    );

    // Ids that are not integers, and unknown ids, are 404.
    assert_problem(
        &send(&srv, alice, Method::GET, "/v1/projects/abc", None).await,
        404,
        "not_found",
    );
    assert_problem(
        &send(&srv, alice, Method::GET, "/v1/projects/99999", None).await,
        404,
        "not_found",
    );

    // Granting roles: unknown role 400, unknown user 404; then bob becomes a viewer.
    assert_problem(
        &send(
            &srv,
            alice,
            Method::POST,
            &format!("{path}/assignments/owner/{bob_id}"),
            None,
        )
        .await,
        400,
        "invalid",
    );
    assert_problem(
        &send(
            &srv,
            alice,
            Method::POST,
            &format!("{path}/assignments/viewer/99999"),
            None,
        )
        .await,
        404,
        "not_found",
    );
    let (s, ok) = send(
        &srv,
        alice,
        Method::POST,
        &format!("{path}/assignments/viewer/{bob_id}"),
        None,
    )
    .await;
    assert_eq!((s, ok), (200, json!({"success": true})));

    // A viewer reads but may not change the project or manage app users.
    let (s, got) = send(&srv, bob, Method::GET, &path, None).await;
    assert_eq!((s, &got), (200, &p));
    let (s, list) = send(&srv, bob, Method::GET, "/v1/projects", None).await;
    assert_eq!((s, list), (200, json!([p.clone()])));
    assert_problem(
        &send(
            &srv,
            bob,
            Method::PATCH,
            &path,
            Some(json!({"name": "mine"})),
        )
        .await,
        403,
        "auth.forbidden",
    );
    assert_problem(
        &send(
            &srv,
            bob,
            Method::POST,
            &format!("{path}/app-users"),
            Some(json!({"displayName": "T"})),
        )
        .await,
        403,
        "auth.forbidden",
    );
    assert_problem(
        &send(&srv, bob, Method::GET, &format!("{path}/app-users"), None).await,
        403,
        "auth.forbidden",
    );
    assert_problem(
        &send(
            &srv,
            bob,
            Method::POST,
            &format!("{path}/assignments/manager/{bob_id}"),
            None,
        )
        .await,
        403,
        "auth.forbidden",
    );

    // Bad input is refused with a code and changes nothing.
    assert_problem(
        &send(
            &srv,
            alice,
            Method::PATCH,
            &path,
            Some(json!({"name": "   "})),
        )
        .await,
        400,
        "invalid",
    );
    assert_problem(
        &send(
            &srv,
            alice,
            Method::PATCH,
            &path,
            Some(json!({"name": "x".repeat(201)})),
        )
        .await,
        400,
        "invalid",
    );
    assert_problem(
        &send(
            &srv,
            alice,
            Method::PATCH,
            &path,
            Some(json!({"description": "d".repeat(2001)})),
        )
        .await,
        400,
        "invalid",
    );
    assert_problem(
        &send(
            &srv,
            alice,
            Method::PATCH,
            &path,
            Some(json!({"archived": "yes"})),
        )
        .await,
        400,
        "request.invalid_json",
    );
    let r = client()
        .patch(srv.url(&path))
        .basic_auth("alice", Some(PASSWORD))
        .header("content-type", "application/json")
        .body("{\"name\": ")
        .send()
        .await
        .unwrap();
    let got = (r.status().as_u16(), r.json::<Value>().await.unwrap());
    assert_problem(&got, 400, "request.invalid_json");
    assert_problem(
        &send(
            &srv,
            alice,
            Method::POST,
            "/v1/projects",
            Some(json!({"name": ""})),
        )
        .await,
        400,
        "invalid",
    );
    assert_problem(
        &send(&srv, alice, Method::POST, "/v1/projects", Some(json!({}))).await,
        400,
        "invalid",
    );
    let r = client()
        .post(srv.url("/v1/projects"))
        .basic_auth("alice", Some(PASSWORD))
        .header("content-type", "application/json")
        .body("not json")
        .send()
        .await
        .unwrap();
    let got = (r.status().as_u16(), r.json::<Value>().await.unwrap());
    assert_problem(&got, 400, "request.invalid_json");
    let (_, unchanged) = send(&srv, alice, Method::GET, &path, None).await;
    assert_eq!(unchanged, p, "refused requests changed nothing");
    let (_, list) = send(&srv, alice, Method::GET, "/v1/projects", None).await;
    assert_eq!(
        list.as_array().unwrap().len(),
        1,
        "refused creates made nothing"
    );

    // PATCH renames, keeps what is not sent, and archives.
    let (s, renamed) = send(
        &srv,
        alice,
        Method::PATCH,
        &path,
        Some(json!({"name": "Households 2026"})),
    )
    .await;
    assert_eq!(s, 200, "{renamed}");
    assert_eq!(renamed["name"], "Households 2026");
    assert_eq!(renamed["description"], "Round one");
    assert_eq!(renamed["archived"], false);
    assert!(renamed["updatedAt"].is_string());
    let (s, archived) = send(
        &srv,
        alice,
        Method::PATCH,
        &path,
        Some(json!({"description": null, "archived": true})),
    )
    .await;
    assert_eq!(s, 200);
    assert_eq!(archived["name"], "Households 2026");
    assert!(archived["description"].is_null());
    assert_eq!(archived["archived"], true);
    let (_, seen_by_bob) = send(&srv, bob, Method::GET, &path, None).await;
    assert_eq!(seen_by_bob, archived);

    // Bob's own project is invisible to alice.
    let (s, mine) = send(
        &srv,
        bob,
        Method::POST,
        "/v1/projects",
        Some(json!({"name": "Bob's"})),
    )
    .await;
    assert_eq!(s, 200);
    let (_, list) = send(&srv, alice, Method::GET, "/v1/projects", None).await;
    assert_eq!(list.as_array().unwrap().len(), 1);
    let (_, list) = send(&srv, bob, Method::GET, "/v1/projects", None).await;
    assert_eq!(list.as_array().unwrap().len(), 2);
    assert_problem(
        &send(
            &srv,
            alice,
            Method::GET,
            &format!("/v1/projects/{}", mine["id"]),
            None,
        )
        .await,
        404,
        "not_found",
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn app_users_token_once_revoke_and_assignments() {
    let (_dir, srv) = start();
    let alice = Some("alice");
    let (_, p) = send(
        &srv,
        alice,
        Method::POST,
        "/v1/projects",
        Some(json!({"name": "Field"})),
    )
    .await;
    let path = format!("/v1/projects/{}", p["id"]);
    let (_, other) = send(
        &srv,
        alice,
        Method::POST,
        "/v1/projects",
        Some(json!({"name": "Other"})),
    )
    .await;
    let other_path = format!("/v1/projects/{}", other["id"]);

    assert_problem(
        &send(&srv, None, Method::GET, &format!("{path}/app-users"), None).await,
        401,
        "auth.required",
    );
    let (s, empty) = send(&srv, alice, Method::GET, &format!("{path}/app-users"), None).await;
    assert_eq!((s, empty), (200, json!([])));

    // Validation: nothing is created.
    assert_problem(
        &send(
            &srv,
            alice,
            Method::POST,
            &format!("{path}/app-users"),
            Some(json!({"displayName": " "})),
        )
        .await,
        400,
        "invalid",
    );
    assert_problem(
        &send(
            &srv,
            alice,
            Method::POST,
            &format!("{path}/app-users"),
            Some(json!({"displayName": "x".repeat(201)})),
        )
        .await,
        400,
        "invalid",
    );
    assert_problem(
        &send(
            &srv,
            alice,
            Method::POST,
            &format!("{path}/app-users"),
            Some(json!({"displayName": 5})),
        )
        .await,
        400,
        "request.invalid_json",
    );
    let (_, empty) = send(&srv, alice, Method::GET, &format!("{path}/app-users"), None).await;
    assert_eq!(empty, json!([]));

    // The token is returned once, recognisable by its prefix, and never listed.
    let (s, made) = send(
        &srv,
        alice,
        Method::POST,
        &format!("{path}/app-users"),
        Some(json!({"displayName": "Tablet 1"})),
    )
    .await;
    assert_eq!(s, 200, "{made}");
    let token = made["token"].as_str().unwrap().to_owned();
    assert!(token.starts_with("fvc_") && token.len() > 60, "{token}");
    assert_eq!(made["type"], "field_key");
    assert_eq!(made["displayName"], "Tablet 1");
    assert_eq!(made["projectId"], p["id"]);
    assert!(made["updatedAt"].is_null() && made["deletedAt"].is_null());
    let au = made["id"].as_i64().unwrap();
    let (_, second) = send(
        &srv,
        alice,
        Method::POST,
        &format!("{path}/app-users"),
        Some(json!({"displayName": "Tablet 2"})),
    )
    .await;
    assert_ne!(second["token"], made["token"]);

    let r = call(&srv, alice, Method::GET, &format!("{path}/app-users"), None).await;
    assert_eq!(r.status(), 200);
    let text = r.text().await.unwrap();
    assert!(!text.contains(&token), "tokens are never listed");
    let list: Value = serde_json::from_str(&text).unwrap();
    let list = list.as_array().unwrap();
    assert_eq!(list.len(), 2);
    assert_eq!(list[0]["displayName"], "Tablet 2", "newest first");
    for u in list {
        let o = u.as_object().unwrap();
        for key in [
            "id",
            "type",
            "displayName",
            "createdAt",
            "updatedAt",
            "deletedAt",
            "token",
        ] {
            assert!(o.contains_key(key), "{key}: {u}");
        }
        assert!(u["token"].is_null());
    }
    // Another project's list does not show them.
    let (_, none) = send(
        &srv,
        alice,
        Method::GET,
        &format!("{other_path}/app-users"),
        None,
    )
    .await;
    assert_eq!(none, json!([]));

    // Form assignments: unknown form, app user of another project, non-numeric id → 404.
    assert_problem(
        &send(
            &srv,
            alice,
            Method::POST,
            &format!("{path}/forms/nope/assignments/app-user/{au}"),
            None,
        )
        .await,
        404,
        "not_found",
    );
    assert_problem(
        &send(
            &srv,
            alice,
            Method::DELETE,
            &format!("{path}/forms/nope/assignments/app-user/{au}"),
            None,
        )
        .await,
        404,
        "not_found",
    );
    assert_problem(
        &send(
            &srv,
            alice,
            Method::POST,
            &format!("{other_path}/forms/nope/assignments/app-user/{au}"),
            None,
        )
        .await,
        404,
        "not_found",
    );
    assert_problem(
        &send(
            &srv,
            alice,
            Method::POST,
            &format!("{path}/forms/nope/assignments/app-user/x"),
            None,
        )
        .await,
        404,
        "not_found",
    );

    // Revoking: not from another project, then once, then 404.
    assert_problem(
        &send(
            &srv,
            alice,
            Method::DELETE,
            &format!("{other_path}/app-users/{au}"),
            None,
        )
        .await,
        404,
        "not_found",
    );
    assert_problem(
        &send(
            &srv,
            Some("bob"),
            Method::DELETE,
            &format!("{path}/app-users/{au}"),
            None,
        )
        .await,
        404,
        "not_found",
    );
    let (s, ok) = send(
        &srv,
        alice,
        Method::DELETE,
        &format!("{path}/app-users/{au}"),
        None,
    )
    .await;
    assert_eq!((s, ok), (200, json!({"success": true})));
    assert_problem(
        &send(
            &srv,
            alice,
            Method::DELETE,
            &format!("{path}/app-users/{au}"),
            None,
        )
        .await,
        404,
        "not_found",
    );
    assert_problem(
        &send(
            &srv,
            alice,
            Method::DELETE,
            &format!("{path}/app-users/abc"),
            None,
        )
        .await,
        404,
        "not_found",
    );
    let (_, list) = send(&srv, alice, Method::GET, &format!("{path}/app-users"), None).await;
    let list = list.as_array().unwrap();
    assert_eq!(list.len(), 2, "revoked app users stay listed");
    assert_eq!(list[0]["displayName"], "Tablet 2", "active ones first");
    assert_eq!(list[1]["id"], au);
    assert!(list[1]["deletedAt"].as_str().unwrap().ends_with('Z'));
    assert!(list[0]["deletedAt"].is_null());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delete_project_managers_only() {
    let dir = tempfile::tempdir().unwrap();
    let srv = crate::harness::Server::start(dir.path(), &[]);
    crate::harness::create_user(dir.path(), &[], "alice", false);
    crate::harness::create_user(dir.path(), &[], "bob", false);
    let pw = crate::harness::PASSWORD;
    let c = crate::harness::client();
    let p: serde_json::Value = c
        .post(srv.url("/v1/projects"))
        .basic_auth("alice", Some(pw))
        .json(&serde_json::json!({"name": "Temporary"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let url = srv.url(&format!("/v1/projects/{}", p["id"]));
    c.post(srv.url(&format!("/v1/projects/{}/assignments/viewer/2", p["id"])))
        .basic_auth("alice", Some(pw))
        .send()
        .await
        .unwrap();
    assert_eq!(
        c.delete(&url)
            .basic_auth("bob", Some(pw))
            .send()
            .await
            .unwrap()
            .status(),
        403
    );
    assert_eq!(c.delete(&url).send().await.unwrap().status(), 401);
    assert_eq!(
        c.delete(&url)
            .basic_auth("alice", Some(pw))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    assert_eq!(
        c.get(&url)
            .basic_auth("alice", Some(pw))
            .send()
            .await
            .unwrap()
            .status(),
        404
    );
    assert_eq!(
        c.delete(&url)
            .basic_auth("alice", Some(pw))
            .send()
            .await
            .unwrap()
            .status(),
        404
    );
    let list: serde_json::Value = c
        .get(srv.url("/v1/projects"))
        .basic_auth("alice", Some(pw))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(list, serde_json::json!([]));
    assert!(srv.stop());
}

/// Listing and revoking project roles: Central's `[{actorId, roleId}]` and Actor[] shapes,
/// managers only (403 for other members, 404 for outsiders), a bad role is a 400, revoking a role
/// not held is a 404, and the last manager stays.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn project_roles_are_listed_and_revoked_by_managers() {
    let (dir, srv) = start();
    create_user(dir.path(), &[], "carol", false);
    let (s, p) = send(
        &srv,
        Some("alice"),
        Method::POST,
        "/v1/projects",
        Some(json!({"name": "Roles"})),
    )
    .await;
    assert_eq!(s, 200, "{p}");
    let path = format!("/v1/projects/{}", p["id"]);
    let alice_id = user_id(&srv, "alice").await;
    let bob_id = user_id(&srv, "bob").await;
    let carol_id = user_id(&srv, "carol").await;
    for (role, id) in [("viewer", bob_id), ("editor", carol_id)] {
        let (s, b) = send(
            &srv,
            Some("alice"),
            Method::POST,
            &format!("{path}/assignments/{role}/{id}"),
            None,
        )
        .await;
        assert_eq!(s, 200, "{b}");
    }

    let (s, list) = send(
        &srv,
        Some("alice"),
        Method::GET,
        &format!("{path}/assignments"),
        None,
    )
    .await;
    assert_eq!(s, 200, "{list}");
    assert_eq!(
        list,
        json!([
            {"actorId": alice_id, "roleId": 3, "role": "manager"},
            {"actorId": bob_id, "roleId": 4, "role": "viewer"},
            {"actorId": carol_id, "roleId": "editor", "role": "editor"},
        ])
    );
    // By system name or Central's numeric id: Actor[].
    for role in ["viewer", "4"] {
        let (s, actors) = send(
            &srv,
            Some("alice"),
            Method::GET,
            &format!("{path}/assignments/{role}"),
            None,
        )
        .await;
        assert_eq!(s, 200, "{actors}");
        let a = actors.as_array().unwrap();
        assert_eq!(a.len(), 1, "{actors}");
        assert_eq!(a[0]["id"], bob_id);
        assert_eq!(a[0]["type"], "user");
        assert_eq!(a[0]["displayName"], "bob");
        assert!(a[0]["createdAt"].is_string() && a[0]["deletedAt"].is_null());
    }
    let (s, none) = send(
        &srv,
        Some("alice"),
        Method::GET,
        &format!("{path}/assignments/formfill"),
        None,
    )
    .await;
    assert_eq!((s, none), (200, json!([])));
    let bad = send(
        &srv,
        Some("alice"),
        Method::GET,
        &format!("{path}/assignments/owner"),
        None,
    )
    .await;
    assert_problem(&bad, 400, "invalid");

    // Other members: 403; outsiders and unknown projects: 404; nobody: 401.
    create_user(dir.path(), &[], "dave", false);
    for (who, status) in [(Some("bob"), 403), (Some("dave"), 404), (None, 401)] {
        for sub in ["/assignments", "/assignments/viewer"] {
            let r = call(&srv, who, Method::GET, &format!("{path}{sub}"), None).await;
            assert_eq!(r.status().as_u16(), status, "{who:?} {sub}");
        }
        let r = call(
            &srv,
            who,
            Method::DELETE,
            &format!("{path}/assignments/viewer/{bob_id}"),
            None,
        )
        .await;
        assert_eq!(r.status().as_u16(), status, "{who:?} DELETE");
    }
    let r = call(
        &srv,
        Some("alice"),
        Method::GET,
        "/v1/projects/99999/assignments",
        None,
    )
    .await;
    assert_eq!(r.status(), 404);

    // Revoking: the role must be the one held (404 otherwise, nothing changes); a bad role 400.
    let wrong = send(
        &srv,
        Some("alice"),
        Method::DELETE,
        &format!("{path}/assignments/manager/{bob_id}"),
        None,
    )
    .await;
    assert_problem(&wrong, 404, "not_found");
    let bad = send(
        &srv,
        Some("alice"),
        Method::DELETE,
        &format!("{path}/assignments/owner/{bob_id}"),
        None,
    )
    .await;
    assert_problem(&bad, 400, "invalid");
    let (s, b) = send(
        &srv,
        Some("alice"),
        Method::DELETE,
        &format!("{path}/assignments/viewer/{bob_id}"),
        None,
    )
    .await;
    assert_eq!((s, b), (200, json!({"success": true})));
    let r = call(&srv, Some("bob"), Method::GET, &path, None).await;
    assert_eq!(r.status(), 404, "bob no longer sees the project");
    let again = send(
        &srv,
        Some("alice"),
        Method::DELETE,
        &format!("{path}/assignments/viewer/{bob_id}"),
        None,
    )
    .await;
    assert_problem(&again, 404, "not_found");

    // The last manager stays; with a second manager, one may go.
    let last = send(
        &srv,
        Some("alice"),
        Method::DELETE,
        &format!("{path}/assignments/manager/{alice_id}"),
        None,
    )
    .await;
    assert_problem(&last, 400, "invalid");
    assert!(last.1["message"].as_str().unwrap().contains("only manager"));
    let (s, _) = send(
        &srv,
        Some("alice"),
        Method::POST,
        &format!("{path}/assignments/manager/{carol_id}"),
        None,
    )
    .await;
    assert_eq!(s, 200);
    let (s, _) = send(
        &srv,
        Some("carol"),
        Method::DELETE,
        &format!("{path}/assignments/manager/{alice_id}"),
        None,
    )
    .await;
    assert_eq!(s, 200);
    let (_, list) = send(
        &srv,
        Some("carol"),
        Method::GET,
        &format!("{path}/assignments"),
        None,
    )
    .await;
    assert_eq!(
        list,
        json!([{"actorId": carol_id, "roleId": 3, "role": "manager"}])
    );

    // Each revocation is audited.
    let admin = crate::harness::admin_session(&srv, dir.path(), &[], "root").await;
    let entries: Value = client()
        .get(srv.url("/v1/audits?limit=1000"))
        .bearer_auth(&admin)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let revokes: Vec<&Value> = entries
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["action"] == "project.role.revoke")
        .collect();
    assert_eq!(revokes.len(), 2, "{entries}");
    assert_eq!(revokes[0]["details"]["user"], "bob");
    assert_eq!(revokes[0]["details"]["role"], "viewer");
}
