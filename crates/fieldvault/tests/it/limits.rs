//! API budgets over real HTTP: 429 with Retry-After, a collector budget apart from the API
//! budget, per-IP budgets for anonymous callers, automatic restriction after sustained excess
//! (audit event, notices to the owner and administrators, lifting by an administrator), and one
//! budget shared by two instances on one PostgreSQL database.

use std::time::{Duration, Instant};

use fieldvault_testkit::pg::TestDb;
use serde_json::{Value, json};

use crate::harness::{PASSWORD, Server, admin_session, client, create_user};

/// Small budgets and one-second windows, so sustained excess takes seconds, not minutes.
const LIMITS: &[(&str, &str)] = &[
    ("FIELDVAULT_LIMITS_WINDOW_SECS", "1"),
    ("FIELDVAULT_LIMITS_API_PER_WINDOW", "8"),
    ("FIELDVAULT_LIMITS_COLLECTOR_PER_WINDOW", "50"),
    ("FIELDVAULT_LIMITS_ANONYMOUS_PER_WINDOW", "5"),
    ("FIELDVAULT_LIMITS_RESTRICT_FACTOR", "2"),
    ("FIELDVAULT_LIMITS_RESTRICT_WINDOWS", "3"),
    ("FIELDVAULT_LIMITS_RESTRICT_MODE", "read_only"),
];

async fn json_of(r: reqwest::RequestBuilder) -> (u16, Value) {
    let resp = r.send().await.unwrap();
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap_or(Value::Null))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn budgets_refuse_with_429_and_sustained_excess_restricts_until_lifted() {
    let dir = tempfile::tempdir().unwrap();
    let srv = Server::start(dir.path(), LIMITS);
    create_user(dir.path(), &[], "alice", false);
    let admin = admin_session(&srv, dir.path(), &[], "root").await;
    let c = client();
    let (s, t) = json_of(
        c.post(srv.url("/v1/tokens"))
            .basic_auth("alice", Some(PASSWORD))
            .json(&json!({"name": "script", "scopes": ["data:read", "projects:manage"]})),
    )
    .await;
    assert_eq!(s, 200, "{t}");
    let token = t["token"].as_str().unwrap().to_owned();
    let token_id = t["id"].as_i64().unwrap();
    let (s, p) = json_of(
        c.post(srv.url("/v1/projects"))
            .basic_auth("alice", Some(PASSWORD))
            .json(&json!({"name": "Survey"})),
    )
    .await;
    assert_eq!(s, 200, "{p}");
    let pid = p["id"].as_i64().unwrap();

    // Over budget: 429, a machine-readable code, and Retry-After. Nothing else changes.
    let mut refused = None;
    for _ in 0..30 {
        let r = c
            .get(srv.url("/v1/projects"))
            .bearer_auth(&token)
            .send()
            .await
            .unwrap();
        if r.status() == 429 {
            refused = Some(r);
            break;
        }
    }
    let r = refused.expect("a token over its budget gets 429");
    let retry: u64 = r.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=1).contains(&retry), "one-second windows: {retry}");
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["code"], "rate_limited", "{body}");

    // The collector budget is apart: while alice's API budget is spent, her OpenRosa requests
    // still go through.
    for _ in 0..12 {
        let _ = c
            .get(srv.url("/v1/projects"))
            .basic_auth("alice", Some(PASSWORD))
            .send()
            .await
            .unwrap();
    }
    let r = c
        .head(srv.url(&format!("/v1/projects/{pid}/submission")))
        .basic_auth("alice", Some(PASSWORD))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204, "OpenRosa draws on the collector budget");

    // Anonymous callers have a per-IP budget (the password meter is rate limited too).
    let mut anon = Vec::new();
    for _ in 0..12 {
        let r = c
            .post(srv.url("/v1/password-strength"))
            .json(&json!({"password": "x", "username": "u"}))
            .send()
            .await
            .unwrap();
        anon.push(r.status().as_u16());
    }
    assert!(anon.contains(&200) && anon.contains(&429), "{anon:?}");

    // Sustained excess: keep hammering (16+ attempts a window, 2× the budget) for 3+ windows.
    let subject = format!("token:{token_id}");
    let started = Instant::now();
    // Eight clients without pause in the background, so every window gets well over 2× the
    // budget even on a loaded machine (stop-and-go bursts could leave a window short and reset
    // the count of consecutive windows).
    let hammering = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true));
    let mut hammers = tokio::task::JoinSet::new();
    for _ in 0..8 {
        let (c, url, token, on) = (
            c.clone(),
            srv.url("/v1/projects"),
            token.clone(),
            hammering.clone(),
        );
        hammers.spawn(async move {
            while on.load(std::sync::atomic::Ordering::Relaxed) {
                let _ = c.get(&url).bearer_auth(&token).send().await;
            }
        });
    }
    let restriction = loop {
        let (s, list) = json_of(c.get(srv.url("/v1/admin/restrictions")).bearer_auth(&admin)).await;
        assert!(s == 200 || s == 429, "{list}");
        if let Some(r) = list
            .as_array()
            .into_iter()
            .flatten()
            .find(|r| r["subject"] == subject.as_str() && r["active"] == true)
        {
            break r.clone();
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "no restriction after 60 s of sustained excess: {list}"
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    };
    hammering.store(false, std::sync::atomic::Ordering::Relaxed);
    while hammers.join_next().await.is_some() {}
    assert_eq!(restriction["mode"], "read_only");
    // Only the token: the account itself was never over (its counter stops at the token's 429).
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let (_, list) = json_of(c.get(srv.url("/v1/admin/restrictions")).bearer_auth(&admin)).await;
    assert_eq!(list.as_array().unwrap().len(), 1, "{list}");

    // Read-only: reads work, changes get 403 `restricted`.
    let (s, e) = json_of(
        c.post(srv.url("/v1/projects"))
            .bearer_auth(&token)
            .json(&json!({"name": "more"})),
    )
    .await;
    assert_eq!((s, e["code"].as_str()), (403, Some("restricted")), "{e}");
    let (s, _) = json_of(c.get(srv.url("/v1/projects")).bearer_auth(&token)).await;
    assert_eq!(s, 200);
    // The account is not restricted: alice's password still changes things.
    let (s, _) = json_of(
        c.post(srv.url("/v1/projects"))
            .basic_auth("alice", Some(PASSWORD))
            .json(&json!({"name": "by hand"})),
    )
    .await;
    assert_eq!(s, 200);

    // Audit event, and notices to the owner and to the administrator (in a fresh window: the
    // administrator's budget is small here too).
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let (_, audits) = json_of(c.get(srv.url("/v1/audits?limit=1000")).bearer_auth(&admin)).await;
    assert!(
        audits
            .as_array()
            .unwrap()
            .iter()
            .any(|a| a["action"] == "restriction.create" && a["target"] == subject.as_str()),
        "{audits}"
    );
    let (_, mine) = json_of(
        c.get(srv.url("/v1/users/current/notices"))
            .basic_auth("alice", Some(PASSWORD)),
    )
    .await;
    assert!(
        mine[0]["message"].as_str().unwrap().contains(&subject),
        "{mine}"
    );
    assert_eq!(mine[0]["kind"], "restriction.created");
    let (_, theirs) = json_of(
        c.get(srv.url("/v1/users/current/notices"))
            .bearer_auth(&admin),
    )
    .await;
    assert!(theirs[0]["message"].as_str().unwrap().contains(&subject));

    // Only administrators see and lift restrictions; lifting an unknown id is a 404.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let (s, _) = json_of(
        c.get(srv.url("/v1/admin/restrictions"))
            .basic_auth("alice", Some(PASSWORD)),
    )
    .await;
    assert_eq!(s, 403);
    let id = restriction["id"].as_i64().unwrap();
    let (s, _) = json_of(
        c.post(srv.url(&format!("/v1/admin/restrictions/{id}/lift")))
            .basic_auth("alice", Some(PASSWORD)),
    )
    .await;
    assert_eq!(s, 403);
    let (s, _) = json_of(
        c.post(srv.url("/v1/admin/restrictions/999999/lift"))
            .bearer_auth(&admin),
    )
    .await;
    assert_eq!(s, 404);
    let (s, lifted) = json_of(
        c.post(srv.url(&format!("/v1/admin/restrictions/{id}/lift")))
            .bearer_auth(&admin),
    )
    .await;
    assert_eq!(s, 200, "{lifted}");
    assert_eq!(lifted["active"], false);
    assert_eq!(lifted["liftedBy"], "user:root");
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let (s, e) = json_of(
        c.post(srv.url("/v1/projects"))
            .bearer_auth(&token)
            .json(&json!({"name": "after lift"})),
    )
    .await;
    assert_eq!(s, 200, "the lifted token changes things again: {e}");
    let (_, audits) = json_of(c.get(srv.url("/v1/audits?limit=1000")).bearer_auth(&admin)).await;
    assert!(
        audits
            .as_array()
            .unwrap()
            .iter()
            .any(|a| a["action"] == "restriction.lift")
    );
    assert!(srv.stop());
}

/// Two instances on one database enforce one budget: what one admitted, the other counts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_instances_share_one_budget() {
    let Some(db) = TestDb::create().await else {
        return;
    };
    let key = "3q2+7wABAgMEBQYHCAkKCwwNDg8QERITFBUWFxgZGhs=";
    let mut env = vec![
        ("FIELDVAULT_DATABASE_URL", db.url.as_str()),
        ("FIELDVAULT_MASTER_KEY", key),
        // A long window, so the whole test happens inside one.
        ("FIELDVAULT_LIMITS_WINDOW_SECS", "3600"),
        ("FIELDVAULT_LIMITS_API_PER_WINDOW", "20"),
    ];
    let (d1, d2) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let a = Server::start(d1.path(), &env);
    let b = Server::start(d2.path(), &env);
    env.truncate(2);
    create_user(d1.path(), &env, "dana", false);
    let c = client();
    let get = |srv: &Server| {
        c.get(srv.url("/v1/projects"))
            .basic_auth("dana", Some(PASSWORD))
            .send()
    };
    for _ in 0..15 {
        assert_eq!(get(&a).await.unwrap().status(), 200);
    }
    // Instance A adds its counts to the shared counter within a second.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let mut admitted = 0;
    for _ in 0..20 {
        if get(&b).await.unwrap().status() == 200 {
            admitted += 1;
        }
    }
    assert_eq!(
        admitted, 5,
        "instance B admits only what is left of the shared budget"
    );
    drop((a, b));
    db.drop_db().await;
}
