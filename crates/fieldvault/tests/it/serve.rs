//! `fieldvault serve`: zero-config start, health, metrics, errors, limits, the access log, graceful
//! shutdown; and the scale-out deployment on PostgreSQL + S3 with two instances.

use futures_util::StreamExt as _;

use crate::harness::{PASSWORD, Server, client, create_user};
use fieldvault_testkit::pg::TestDb;
use fieldvault_testkit::s3::S3Server;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn zero_config_start_health_auth_and_access_log() {
    let dir = tempfile::tempdir().unwrap();
    let srv = Server::start(dir.path(), &[("FIELDVAULT_HTTP_BODY_LIMIT_BYTES", "4096")]);
    assert!(dir.path().join("fieldvault-data/master.key").exists());
    let err = srv.stderr_text();
    assert!(err.contains("No accounts yet"), "{err}");
    assert!(
        err.contains("fieldvault user create admin --superuser --password-stdin"),
        "{err}"
    );
    let c = client();

    let r = c.get(srv.url("/healthz")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let h = r.headers();
    assert!(
        h["content-security-policy"]
            .to_str()
            .unwrap()
            .contains("frame-ancestors 'none'")
    );
    assert_eq!(h["x-content-type-options"], "nosniff");
    assert!(
        h.get("strict-transport-security").is_none(),
        "no HSTS over plain HTTP"
    );
    assert!(h.get("x-request-id").is_some());
    let ready: serde_json::Value = c
        .get(srv.url("/readyz"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(ready["status"], "ok");
    assert_eq!(ready["store"]["backend"], "sqlite");

    // Errors are JSON with a code and a message.
    let r = c.get(srv.url("/no/such/thing")).send().await.unwrap();
    assert_eq!(r.status(), 404);
    let body: serde_json::Value = r.json().await.unwrap();
    assert_eq!(body["code"], "not_found");
    assert!(body["message"].as_str().unwrap().len() > 5);
    // Size limit: 413 in the same shape, before the body is read.
    let r = c
        .post(srv.url("/v1/users/current"))
        .body(vec![b'x'; 10_000])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 413);
    let body: serde_json::Value = r.json().await.unwrap();
    assert_eq!(body["code"], "request.too_large");

    // Accounts made by the CLI while the server runs.
    create_user(dir.path(), &[], "alice", true);
    let r = c.get(srv.url("/v1/users/current")).send().await.unwrap();
    assert_eq!(r.status(), 401);
    assert!(
        r.headers()["www-authenticate"]
            .to_str()
            .unwrap()
            .starts_with("Basic")
    );
    assert_eq!(
        r.json::<serde_json::Value>().await.unwrap()["code"],
        "auth.required"
    );
    let r = c
        .get(srv.url("/v1/users/current"))
        .basic_auth("alice", Some("wrong password!!"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    assert_eq!(
        r.json::<serde_json::Value>().await.unwrap()["code"],
        "auth.failed"
    );
    let r = c
        .get(srv.url("/v1/users/current"))
        .basic_auth("alice", Some(PASSWORD))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let me: serde_json::Value = r.json().await.unwrap();
    assert_eq!(me["displayName"], "alice");
    assert_eq!(me["type"], "user");

    // A token in the path never reaches the log.
    let r = c
        .get(srv.url("/v1/key/SeCrEtToKeN123/projects/1/formList"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403, "an unknown collector token is refused");

    let m = srv.get_text("/metrics").await;
    assert!(m.contains("fieldvault_http_requests_total{method=\"GET\",route=\"/v1/users/current\",status=\"200\"} 1"), "{m}");
    assert!(m.contains("fieldvault_store_up 1"));
    assert!(m.contains("fieldvault_http_request_duration_seconds_bucket"));

    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    let log = srv.access_log();
    let ok_line = log
        .iter()
        .find(|l| l["path"] == "/v1/users/current" && l["status"] == 200)
        .expect("access line for the authenticated request");
    assert_eq!(ok_line["user"], "alice");
    assert_eq!(ok_line["auth"], "basic");
    assert_eq!(ok_line["method"], "GET");
    assert_eq!(ok_line["client_ip"], "127.0.0.1");
    assert!(ok_line["bytes"].as_u64().unwrap() > 10);
    assert!(ok_line["duration_ms"].as_f64().is_some());
    assert!(ok_line["time"].as_str().unwrap().ends_with('Z'));
    assert_eq!(ok_line["request_id"].as_str().unwrap().len(), 16);
    let denied = log
        .iter()
        .find(|l| l["path"] == "/v1/users/current" && l["status"] == 401)
        .unwrap();
    assert_eq!(denied["user"], "-");
    let all = srv.stdout.lock().unwrap().join("\n") + &srv.stderr_text();
    assert!(!all.contains("SeCrEtToKeN123"), "token leaked into logs");
    assert!(!all.contains(PASSWORD), "password leaked into logs");
    assert!(
        log.iter()
            .any(|l| l["path"] == "/v1/key/[redacted]/projects/1/formList")
    );
    assert!(srv.stop(), "clean exit on SIGTERM");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_lets_in_flight_requests_finish() {
    let dir = tempfile::tempdir().unwrap();
    let srv = Server::start(dir.path(), &[]);
    let url = srv.url("/v1/password-strength");
    // A request whose body arrives slowly: the server has it in hand, half read, when the
    // signal comes, and must still answer it.
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let body = futures_util::stream::iter([Ok::<_, std::io::Error>(bytes::Bytes::from_static(
        b"{\"password\":",
    ))])
    .chain(futures_util::stream::once(async move {
        let _ = tx.send(());
        tokio::time::sleep(std::time::Duration::from_millis(700)).await;
        Ok(bytes::Bytes::from_static(b"\"Tamarind-Okapi-Glacier-41\"}"))
    }));
    let req = tokio::spawn(async move {
        client()
            .post(url)
            .header("content-type", "application/json")
            .body(reqwest::Body::wrap_stream(body))
            .send()
            .await
    });
    rx.await.unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    srv.signal("TERM");
    let r = req.await.unwrap().unwrap();
    assert_eq!(r.status(), 200, "the in-flight request completed");
    assert_eq!(
        r.json::<serde_json::Value>().await.unwrap()["acceptable"],
        true
    );
    assert!(srv.stop());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_and_s3_with_two_instances() {
    let Some(db) = TestDb::create().await else {
        return;
    };
    let Some(s3) = S3Server::start().await else {
        return;
    };
    let key = "3q2+7wABAgMEBQYHCAkKCwwNDg8QERITFBUWFxgZGhs=";
    let blob = format!("s3://{}/fv", s3.bucket);
    let env = [
        ("FIELDVAULT_DATABASE_URL", db.url.as_str()),
        ("FIELDVAULT_BLOB_STORE", blob.as_str()),
        ("FIELDVAULT_S3_ENDPOINT", s3.endpoint.as_str()),
        ("FIELDVAULT_S3_ACCESS_KEY_ID", s3.access_key.as_str()),
        ("FIELDVAULT_S3_SECRET_ACCESS_KEY", s3.secret_key.as_str()),
        ("FIELDVAULT_S3_ALLOW_HTTP", "true"),
        ("FIELDVAULT_MASTER_KEY", key),
    ];
    let (d1, d2) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let a = Server::start(d1.path(), &env);
    let b = Server::start(d2.path(), &env);
    create_user(d1.path(), &env, "carol", false);
    let c = client();
    for srv in [&a, &b] {
        let ready: serde_json::Value = c
            .get(srv.url("/readyz"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(ready["status"], "ok", "{ready}");
        assert_eq!(ready["store"]["backend"], "postgres");
        assert_eq!(ready["blobs"]["ok"], true);
        let r = c
            .get(srv.url("/v1/users/current"))
            .basic_auth("carol", Some(PASSWORD))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "both instances serve the shared account");
    }
    // No master key file is written when the key comes from the environment.
    assert!(!d1.path().join("fieldvault-data/master.key").exists());
    // The database goes away: readiness says degraded (still 200: intake continues into the
    // journal), liveness stays up.
    db.drop_db().await;
    let r = c.get(a.url("/readyz")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let ready = r.json::<serde_json::Value>().await.unwrap();
    assert_eq!(ready["status"], "degraded", "{ready}");
    assert_eq!(ready["store"]["ok"], false, "{ready}");
    assert_eq!(ready["intake"]["accepting"], true, "{ready}");
    assert_eq!(c.get(a.url("/healthz")).send().await.unwrap().status(), 200);
    let m = a.get_text("/metrics").await;
    assert!(m.contains("fieldvault_store_up 0"), "{m}");
    assert!(a.stop());
    assert!(b.stop());
}
