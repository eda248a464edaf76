//! The authorization matrix over HTTP: every kind of caller against the endpoints that matter,
//! with the status each must get. 404 (not 403) where the caller may not know the project exists;
//! 401 for no credentials; 403 for a known caller without the right.

use serde_json::{Value, json};

use crate::harness::{PASSWORD, Server, client, create_user};

#[derive(Clone, Copy, Debug)]
enum Who {
    Anonymous,
    Manager,
    Viewer,
    Collector,
    NoRole,
    Admin,
    ReadToken,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_caller_against_every_endpoint() {
    let dir = tempfile::tempdir().unwrap();
    let srv = Server::start(dir.path(), &[]);
    for u in ["alice", "bob", "carol", "dave", "erin"] {
        create_user(dir.path(), &[], u, false);
    }
    let admin = crate::harness::admin_session(&srv, dir.path(), &[], "admin").await;
    let c = client();
    let p: Value = c
        .post(srv.url("/v1/projects"))
        .basic_auth("alice", Some(PASSWORD))
        .json(&json!({"name": "M"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let pid = p["id"].as_i64().unwrap();
    let bob = crate::accounts_util::id_of(&srv, "bob").await;
    let carol = crate::accounts_util::id_of(&srv, "carol").await;
    let erin = crate::accounts_util::id_of(&srv, "erin").await;
    for (role, uid) in [("viewer", bob), ("formfill", carol), ("editor", erin)] {
        let r = c
            .post(srv.url(&format!("/v1/projects/{pid}/assignments/{role}/{uid}")))
            .basic_auth("alice", Some(PASSWORD))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
    }
    let form = r#"<h:html xmlns="http://www.w3.org/2002/xforms" xmlns:h="http://www.w3.org/1999/xhtml"><h:head><h:title>F</h:title><model><instance><data id="f" version="1"><q/><meta><instanceID/></meta></data></instance><bind nodeset="/data/meta/instanceID" type="string"/></model></h:head><h:body/></h:html>"#;
    let r = c
        .post(srv.url(&format!("/v1/projects/{pid}/forms?publish=true")))
        .basic_auth("alice", Some(PASSWORD))
        .body(form)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let sub = reqwest::multipart::Form::new().part(
        "xml_submission_file",
        reqwest::multipart::Part::bytes(&b"<data id=\"f\" version=\"1\"><q>1</q><meta><instanceID>uuid:m1</instanceID></meta></data>"[..]).file_name("s.xml"),
    );
    let r = c
        .post(srv.url(&format!("/v1/projects/{pid}/submission")))
        .basic_auth("carol", Some(PASSWORD))
        .multipart(sub)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let t: Value = c
        .post(srv.url("/v1/tokens"))
        .basic_auth("alice", Some(PASSWORD))
        .json(&json!({"name": "ro", "scopes": ["data:read"]}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let read_token = t["token"].as_str().unwrap().to_owned();

    let p = format!("/v1/projects/{pid}");
    // (method, path, body) and the expected status for
    // [Anonymous, Manager, Viewer, Collector, NoRole, Admin, ReadToken].
    let table: Vec<(&str, String, Option<Value>, [u16; 7])> = vec![
        ("GET", p.clone(), None, [401, 200, 200, 200, 404, 404, 200]),
        (
            "PATCH",
            p.clone(),
            Some(json!({"description": "d"})),
            [401, 200, 403, 403, 404, 404, 403],
        ),
        (
            "GET",
            format!("{p}/forms"),
            None,
            [401, 200, 200, 200, 404, 404, 200],
        ),
        (
            "POST",
            format!("{p}/forms"),
            Some(json!("not xml")),
            [401, 400, 403, 403, 404, 404, 403],
        ),
        (
            "GET",
            format!("{p}/forms/f.xml"),
            None,
            [401, 200, 200, 200, 404, 404, 200],
        ),
        (
            "GET",
            format!("{p}/forms/f/submissions"),
            None,
            [401, 200, 200, 403, 404, 404, 200],
        ),
        (
            "GET",
            format!("{p}/forms/f/submissions/uuid:m1.xml"),
            None,
            [401, 200, 200, 403, 404, 404, 200],
        ),
        (
            "POST",
            format!("{p}/app-users"),
            Some(json!({"displayName": "x"})),
            [401, 200, 403, 403, 404, 404, 403],
        ),
        (
            "GET",
            format!("{p}/app-users"),
            None,
            [401, 200, 403, 403, 404, 404, 403],
        ),
        (
            "POST",
            "/v1/projects".into(),
            Some(json!({"name": "n"})),
            [401, 200, 200, 200, 200, 200, 403],
        ),
        (
            "GET",
            "/v1/audits".into(),
            None,
            [401, 403, 403, 403, 403, 200, 403],
        ),
        (
            "POST",
            "/v1/users".into(),
            Some(json!({"username": "", "password": "x"})),
            [401, 403, 403, 403, 403, 400, 403],
        ),
        (
            "HEAD",
            format!("{p}/submission"),
            None,
            [401, 204, 204, 204, 404, 404, 204],
        ),
        (
            "GET",
            format!("{p}/formList"),
            None,
            [401, 200, 200, 200, 404, 404, 200],
        ),
        (
            "GET",
            format!("{p}/forms/f/submissions/uuid:m1"),
            None,
            [401, 200, 200, 403, 404, 404, 200],
        ),
        (
            "GET",
            format!("{p}/forms/f/submissions.csv"),
            None,
            [401, 200, 200, 403, 404, 404, 200],
        ),
        (
            "GET",
            format!("{p}/forms/f/submissions.csv.zip"),
            None,
            [401, 200, 200, 403, 404, 404, 200],
        ),
        (
            "GET",
            format!("{p}/forms/f.svc/Submissions"),
            None,
            [401, 200, 200, 403, 404, 404, 200],
        ),
        (
            "GET",
            format!("{p}/forms/f.svc/$metadata"),
            None,
            [401, 200, 200, 403, 404, 404, 200],
        ),
        (
            "PATCH",
            format!("{p}/forms/f/submissions/uuid:m1"),
            Some(json!({"reviewState": "approved"})),
            [401, 200, 403, 403, 404, 404, 403],
        ),
        (
            "POST",
            format!("{p}/forms/f/submissions/uuid:m1/restore"),
            None,
            [401, 404, 403, 403, 404, 404, 403],
        ),
        (
            "GET",
            format!("{p}/forms/f/submissions/uuid:m1/versions"),
            None,
            [401, 200, 200, 403, 404, 404, 200],
        ),
        (
            "GET",
            "/v1/users".into(),
            None,
            [401, 403, 403, 403, 403, 200, 403],
        ),
        (
            "GET",
            format!("{p}/assignments"),
            None,
            [401, 200, 403, 403, 404, 404, 403],
        ),
        (
            "GET",
            format!("{p}/assignments/viewer"),
            None,
            [401, 200, 403, 403, 404, 404, 403],
        ),
        // Last: the manager's delete removes the submission the rows above read.
        (
            "DELETE",
            format!("{p}/forms/f/submissions/uuid:m1"),
            None,
            [401, 200, 403, 403, 404, 404, 403],
        ),
    ];
    let whos = [
        Who::Anonymous,
        Who::Manager,
        Who::Viewer,
        Who::Collector,
        Who::NoRole,
        Who::Admin,
        Who::ReadToken,
    ];
    let mut failures = Vec::new();
    for (method, path, body, expected) in &table {
        for (who, want) in whos.iter().zip(expected) {
            let mut r = c.request(method.parse().unwrap(), srv.url(path));
            r = match who {
                Who::Anonymous => r,
                Who::Manager => r.basic_auth("alice", Some(PASSWORD)),
                Who::Viewer => r.basic_auth("bob", Some(PASSWORD)),
                Who::Collector => r.basic_auth("carol", Some(PASSWORD)),
                Who::NoRole => r.basic_auth("dave", Some(PASSWORD)),
                Who::Admin => r.bearer_auth(&admin),
                Who::ReadToken => r.bearer_auth(&read_token),
            };
            if let Some(b) = body {
                r = match b {
                    Value::String(s) => r.header("content-type", "application/xml").body(s.clone()),
                    other => r.json(other),
                };
            }
            let got = r.send().await.unwrap().status().as_u16();
            if got != *want {
                failures.push(format!(
                    "{method} {path} as {who:?}: got {got}, want {want}"
                ));
            }
        }
    }
    assert!(
        failures.is_empty(),
        "authorization matrix:\n{}",
        failures.join("\n")
    );

    // The editor role, the account's own credentials (never reachable with an API token), and
    // OpenRosa submission (404 to outsiders, 403 to members without the right).
    let submit = |who: &'static str, id: &'static str| {
        let xml = format!(
            "<data id=\"f\" version=\"1\"><q>1</q><meta><instanceID>{id}</instanceID></meta></data>"
        );
        let sub = reqwest::multipart::Form::new().part(
            "xml_submission_file",
            reqwest::multipart::Part::bytes(xml.into_bytes()).file_name("s.xml"),
        );
        c.post(srv.url(&format!("/v1/projects/{pid}/submission")))
            .basic_auth(who, Some(PASSWORD))
            .multipart(sub)
            .send()
    };
    let status = |r: reqwest::Response| r.status().as_u16();
    assert_eq!(status(submit("carol", "uuid:m2").await.unwrap()), 201);
    assert_eq!(status(submit("erin", "uuid:m3").await.unwrap()), 201);
    assert_eq!(status(submit("bob", "uuid:m4").await.unwrap()), 403);
    assert_eq!(status(submit("dave", "uuid:m5").await.unwrap()), 404);
    let sub = format!("{p}/forms/f/submissions/uuid:m2");
    let form = r#"<h:html xmlns="http://www.w3.org/2002/xforms" xmlns:h="http://www.w3.org/1999/xhtml"><h:head><h:title>G</h:title><model><instance><data id="g"><q/></data></instance></model></h:head><h:body/></h:html>"#;
    let editor: Vec<(&str, String, Option<Value>, u16)> = vec![
        ("GET", format!("{p}/forms/f/submissions"), None, 200),
        ("GET", format!("{sub}.xml"), None, 200),
        (
            "PATCH",
            sub.clone(),
            Some(json!({"reviewState": "hasIssues"})),
            200,
        ),
        ("DELETE", sub.clone(), None, 403),
        ("POST", format!("{p}/forms"), Some(json!(form)), 403),
        ("PATCH", p.clone(), Some(json!({"description": "e"})), 403),
        ("GET", format!("{p}/app-users"), None, 403),
    ];
    for (method, path, body, want) in &editor {
        let mut r = c
            .request(method.parse().unwrap(), srv.url(path))
            .basic_auth("erin", Some(PASSWORD));
        if let Some(b) = body {
            r = match b {
                Value::String(s) => r.header("content-type", "application/xml").body(s.clone()),
                other => r.json(other),
            };
        }
        let got = status(r.send().await.unwrap());
        assert_eq!(got, *want, "{method} {path} as editor");
    }
    let own: Vec<(&str, &str, Option<Value>)> = vec![
        ("GET", "/v1/tokens", None),
        (
            "POST",
            "/v1/tokens",
            Some(json!({"name": "more", "scopes": ["data:read"]})),
        ),
        ("POST", "/v1/users/current/2fa", None),
        ("POST", "/v1/sessions/current/logout-all", None),
        ("DELETE", "/v1/sessions/all", None),
        (
            "POST",
            "/v1/users/current/password",
            Some(json!({"password": PASSWORD, "newPassword": "a much longer new passphrase 42"})),
        ),
        (
            "DELETE",
            "/v1/users/current",
            Some(json!({"password": PASSWORD})),
        ),
    ];
    for (method, path, body) in &own {
        let mut r = c
            .request(method.parse().unwrap(), srv.url(path))
            .bearer_auth(&read_token);
        if let Some(b) = body {
            r = r.json(b);
        }
        let resp = r.send().await.unwrap();
        assert_eq!(resp.status(), 403, "{method} {path} with an API token");
        let e: Value = resp.json().await.unwrap();
        assert_eq!(e["code"], "auth.forbidden", "{e}");
    }
    // More kinds of caller against the project's main routes: an editor, a suspended account,
    // a restricted (read-only) token with every scope, a collector of this project and one of
    // another project (both through their `/v1/key/…` URLs), and an administrator without a role.
    create_user(dir.path(), &[], "frank", false);
    let frank = crate::accounts_util::id_of(&srv, "frank").await;
    let r = c
        .post(srv.url(&format!("/v1/projects/{pid}/assignments/viewer/{frank}")))
        .basic_auth("alice", Some(PASSWORD))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let r = c
        .post(srv.url(&format!("/v1/admin/users/{frank}/suspend")))
        .bearer_auth(&admin)
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success(), "{}", r.status());
    let full: Value = c
        .post(srv.url("/v1/tokens"))
        .basic_auth("alice", Some(PASSWORD))
        .json(&json!({"name": "all", "scopes": ["data:read", "data:write", "projects:manage"]}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let restricted = full["token"].as_str().unwrap().to_owned();
    let r = c
        .post(srv.url("/v1/admin/restrictions"))
        .bearer_auth(&admin)
        .json(&json!({"subject": format!("token:{}", full["id"]), "mode": "read_only"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    // Bad input changes nothing.
    for bad in [
        json!({"subject": "token:x", "mode": "read_only"}),
        json!({"subject": "ip:1.2.3.4", "mode": "read_only"}),
        json!({"subject": "token:1", "mode": "banned"}),
    ] {
        let r = c
            .post(srv.url("/v1/admin/restrictions"))
            .bearer_auth(&admin)
            .json(&bad)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 400, "{bad}");
    }
    let collector = |project: i64| {
        let c = c.clone();
        let url = srv.url(&format!("/v1/projects/{project}/app-users"));
        async move {
            let a: Value = c
                .post(url)
                .basic_auth("alice", Some(PASSWORD))
                .json(&json!({"displayName": "phone"}))
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            (
                a["id"].as_i64().unwrap(),
                a["token"].as_str().unwrap().to_owned(),
            )
        }
    };
    let (own_id, own_key) = collector(pid).await;
    let r = c
        .post(srv.url(&format!(
            "/v1/projects/{pid}/forms/f/assignments/app-user/{own_id}"
        )))
        .basic_auth("alice", Some(PASSWORD))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let other: Value = c
        .post(srv.url("/v1/projects"))
        .basic_auth("alice", Some(PASSWORD))
        .json(&json!({"name": "Other"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let (_, other_key) = collector(other["id"].as_i64().unwrap()).await;

    #[derive(Clone, Copy, Debug)]
    enum More {
        Editor,
        Suspended,
        Restricted,
        OwnCollector,
        OtherCollector,
        AdminNoRole,
    }
    let more = [
        More::Editor,
        More::Suspended,
        More::Restricted,
        More::OwnCollector,
        More::OtherCollector,
        More::AdminNoRole,
    ];
    let xml = |id: &str| {
        reqwest::multipart::Form::new().part(
            "xml_submission_file",
            reqwest::multipart::Part::bytes(
                format!("<data id=\"f\" version=\"1\"><q>1</q><meta><instanceID>{id}</instanceID></meta></data>")
                    .into_bytes(),
            )
            .file_name("s.xml"),
        )
    };
    // (method, path below the caller's base, submission id for a POST /submission) → expected for
    // [Editor, Suspended, Restricted, OwnCollector, OtherCollector, AdminNoRole]. Collectors reach
    // only OpenRosa routes (their base is `/v1/key/<token>`); an account's base is empty.
    let table2: Vec<(&str, String, Option<&str>, [u16; 6])> = vec![
        ("GET", p.clone(), None, [200, 401, 200, 404, 404, 404]),
        (
            "GET",
            format!("{p}/forms/f/submissions"),
            None,
            [200, 401, 200, 404, 404, 404],
        ),
        ("PATCH", sub.clone(), None, [200, 401, 403, 404, 404, 404]),
        (
            "GET",
            format!("{p}/app-users"),
            None,
            [403, 401, 200, 404, 404, 404],
        ),
        (
            "GET",
            format!("{p}/formList"),
            None,
            [200, 401, 200, 200, 404, 404],
        ),
        (
            "HEAD",
            format!("{p}/submission"),
            None,
            [204, 401, 204, 204, 404, 404],
        ),
        (
            "POST",
            format!("{p}/submission"),
            Some("uuid:x"),
            [201, 401, 403, 201, 404, 404],
        ),
        (
            "GET",
            "/v1/audits".into(),
            None,
            [403, 401, 403, 404, 404, 200],
        ),
        (
            "GET",
            "/v1/admin/restrictions".into(),
            None,
            [403, 401, 403, 404, 404, 200],
        ),
    ];
    let mut failures = Vec::new();
    for (method, path, submit_id, expected) in &table2 {
        for (who, want) in more.iter().zip(expected) {
            let base = match who {
                More::OwnCollector => srv.url(&format!("/v1/key/{own_key}")),
                More::OtherCollector => srv.url(&format!("/v1/key/{other_key}")),
                _ => srv.url(""),
            };
            let path_here = match who {
                More::OwnCollector | More::OtherCollector => {
                    path.strip_prefix("/v1").unwrap_or(path)
                }
                _ => path.as_str(),
            };
            let mut r = c.request(method.parse().unwrap(), format!("{base}{path_here}"));
            r = match who {
                More::Editor => r.basic_auth("erin", Some(PASSWORD)),
                More::Suspended => r.basic_auth("frank", Some(PASSWORD)),
                More::Restricted => r.bearer_auth(&restricted),
                More::AdminNoRole => r.bearer_auth(&admin),
                More::OwnCollector | More::OtherCollector => r,
            };
            if let Some(id) = submit_id {
                r = r.multipart(xml(&format!("{id}-{who:?}")));
            } else if *method == "PATCH" {
                r = r.json(&json!({"reviewState": "approved"}));
            }
            let resp = r.send().await.unwrap();
            let got = resp.status().as_u16();
            // A suspended account's password keeps failing, so sign-in throttling may answer
            // 429 instead of 401: refused either way.
            let throttled = matches!(who, More::Suspended) && got == 429;
            if got != *want && !throttled {
                failures.push(format!(
                    "{method} {path} as {who:?}: got {got}, want {want}"
                ));
            }
        }
    }
    assert!(
        failures.is_empty(),
        "authorization matrix (2):\n{}",
        failures.join("\n")
    );

    // The same account with its password manages its tokens.
    let r = c
        .get(srv.url("/v1/tokens"))
        .basic_auth("alice", Some(PASSWORD))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert!(srv.stop());
}

/// Every project-scoped and administration route of the server (read from its source, so a new
/// route cannot be forgotten) × every method, as callers who must get nothing: no credentials, a signed-in
/// account without a role (never 403 either: it may not learn the project exists), a read-only
/// token trying to change things, and a collector of another project. Then the manager's view
/// must be exactly as before.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_project_route_refuses_outsiders_and_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let srv = Server::start(dir.path(), &[]);
    for u in ["alice", "dave"] {
        create_user(dir.path(), &[], u, false);
    }
    let c = client();
    let alice = |r: reqwest::RequestBuilder| r.basic_auth("alice", Some(PASSWORD));
    let get = |path: String| {
        let r = alice(c.get(srv.url(&path)));
        async move { r.send().await.unwrap().json::<Value>().await.unwrap() }
    };
    let p: Value = alice(c.post(srv.url("/v1/projects")))
        .json(&json!({"name": "M"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let pid = p["id"].as_i64().unwrap();
    let form = r#"<h:html xmlns="http://www.w3.org/2002/xforms" xmlns:h="http://www.w3.org/1999/xhtml"><h:head><h:title>F</h:title><model><instance><data id="f" version="1"><q/><meta><instanceID/></meta></data></instance><bind nodeset="/data/meta/instanceID" type="string"/></model></h:head><h:body/></h:html>"#;
    let r = alice(c.post(srv.url(&format!("/v1/projects/{pid}/forms?publish=true"))))
        .body(form)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let sub = reqwest::multipart::Form::new().part(
        "xml_submission_file",
        reqwest::multipart::Part::bytes(&b"<data id=\"f\" version=\"1\"><q>1</q><meta><instanceID>uuid:m1</instanceID></meta></data>"[..]).file_name("s.xml"),
    );
    let r = alice(c.post(srv.url(&format!("/v1/projects/{pid}/submission"))))
        .multipart(sub)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let app: Value = alice(c.post(srv.url(&format!("/v1/projects/{pid}/app-users"))))
        .json(&json!({"displayName": "phone"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let app_id = app["id"].as_i64().unwrap();
    let other: Value = alice(c.post(srv.url("/v1/projects")))
        .json(&json!({"name": "Other"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let other_app: Value =
        alice(c.post(srv.url(&format!("/v1/projects/{}/app-users", other["id"]))))
            .json(&json!({"displayName": "other phone"}))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
    let other_key = other_app["token"].as_str().unwrap().to_owned();
    let t: Value = alice(c.post(srv.url("/v1/tokens")))
        .json(&json!({"name": "ro", "scopes": ["data:read"]}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let read_token = t["token"].as_str().unwrap().to_owned();
    let assets: Value = get("/api/v2/assets/".into()).await;
    let uid = assets["results"][0]["uid"].as_str().unwrap().to_owned();
    let snapshot = || async {
        json!([
            get(format!("/v1/projects/{pid}")).await,
            get(format!("/v1/projects/{pid}/forms")).await,
            get(format!("/v1/projects/{pid}/forms/f/submissions")).await,
            get(format!("/v1/projects/{pid}/app-users")).await,
            get(format!("/v1/projects/{pid}/key")).await,
        ])
    };
    let before = snapshot().await;

    // Every route template under a project or a KoboToolbox asset, from the server's source.
    let mut templates = std::collections::BTreeSet::new();
    let src = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../fieldvault-server/src");
    for f in crate::harness::files_under(&src) {
        let text = std::fs::read_to_string(&f).unwrap_or_default();
        for start in [
            "\"/v1/projects/{",
            "\"/api/v2/assets/{",
            "\"/v1/admin/",
            "\"/v1/audits",
        ] {
            for (i, _) in text.match_indices(start) {
                let rest = &text[i + 1..];
                if let Some(end) = rest.find('"') {
                    templates.insert(rest[..end].to_owned());
                }
            }
        }
    }
    assert!(templates.len() >= 35, "{templates:?}");
    let fill = |t: &str| {
        let kobo = t.starts_with("/api/v2/");
        t.replace("{uid}", &uid)
            .replace(
                "{id}",
                &if kobo {
                    "1".to_owned()
                } else {
                    pid.to_string()
                },
            )
            .replace("{pid}", &pid.to_string())
            .replace("{form}", "f")
            .replace("{xmlFormId}", "f")
            .replace("{instance}", "uuid:m1")
            .replace("{actorId}", &app_id.to_string())
            .replace("{roleId}", "viewer")
            .replace("{name}", "x.jpg")
            .replace("{att}", "1")
            .replace("{size}", "small")
            .replace("{euid}", "x")
            .replace("{table}", "x")
    };
    let mut failures = Vec::new();
    let mut tried = 0;
    for t in &templates {
        let path = fill(t);
        for method in ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE"] {
            // Central takes export options (and passphrases) in a POST body too: a read.
            let export = path.ends_with(".csv") || path.ends_with(".csv.zip");
            let read = matches!(method, "GET" | "HEAD") || (export && method == "POST");
            let changes = !read;
            let mut callers: Vec<(&str, reqwest::RequestBuilder)> = vec![
                (
                    "anonymous",
                    c.request(method.parse().unwrap(), srv.url(&path)),
                ),
                (
                    "no role",
                    c.request(method.parse().unwrap(), srv.url(&path))
                        .basic_auth("dave", Some(PASSWORD)),
                ),
            ];
            if changes {
                callers.push((
                    "read-only token",
                    c.request(method.parse().unwrap(), srv.url(&path))
                        .bearer_auth(&read_token),
                ));
            }
            if let Some(rest) = path.strip_prefix("/v1") {
                callers.push((
                    "other project's collector",
                    c.request(
                        method.parse().unwrap(),
                        srv.url(&format!("/v1/key/{other_key}{rest}")),
                    ),
                ));
            }
            for (who, r) in callers {
                tried += 1;
                let r = if changes { r.json(&json!({})) } else { r };
                let got = r.send().await.unwrap().status().as_u16();
                // Site administration may answer 403 to a known account; a project may not.
                let site = path.starts_with("/v1/admin") || path.starts_with("/v1/audits");
                let bad = (200..300).contains(&got) || (who == "no role" && got == 403 && !site);
                if bad {
                    failures.push(format!("{method} {path} as {who}: {got}"));
                }
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {tried}:\n{}",
        failures.len(),
        failures.join("\n")
    );
    assert_eq!(snapshot().await, before, "refused requests changed nothing");
    assert!(srv.stop());
}
