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
    let ids: Value = c
        .get(srv.url("/v1/users/current"))
        .basic_auth("bob", Some(PASSWORD))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let bob = ids["id"].as_i64().unwrap();
    let ids: Value = c
        .get(srv.url("/v1/users/current"))
        .basic_auth("carol", Some(PASSWORD))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let carol = ids["id"].as_i64().unwrap();
    let ids: Value = c
        .get(srv.url("/v1/users/current"))
        .basic_auth("erin", Some(PASSWORD))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let erin = ids["id"].as_i64().unwrap();
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
