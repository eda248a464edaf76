//! HTTPS served directly: self-signed pair, HSTS, reload on SIGHUP.

use crate::harness::{Server, cmd, run};

fn self_signed(dir: &std::path::Path, stem: &str, name: &str) -> reqwest::Certificate {
    let cert = dir.join(format!("{stem}.pem"));
    let key = dir.join(format!("{stem}.key"));
    let (ok, _, err) = run(
        {
            let mut c = cmd(dir);
            c.args(["tls", "self-signed", "--cert"])
                .arg(&cert)
                .arg("--key")
                .arg(&key)
                .args(["--name", name]);
            c
        },
        "",
    );
    assert!(ok, "{err}");
    reqwest::Certificate::from_pem(&std::fs::read(&cert).unwrap()).unwrap()
}

fn client_trusting(cert: reqwest::Certificate) -> reqwest::Client {
    reqwest::Client::builder()
        .tls_certs_only([cert])
        .resolve("fv.test", "127.0.0.1:0".parse().unwrap())
        .resolve("fv2.test", "127.0.0.1:0".parse().unwrap())
        .build()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_with_hsts_and_reload_on_sighup() {
    let dir = tempfile::tempdir().unwrap();
    let first = self_signed(dir.path(), "one", "fv.test");
    let second = self_signed(dir.path(), "two", "fv2.test");
    use std::os::unix::fs::PermissionsExt as _;
    let mode = std::fs::metadata(dir.path().join("one.key"))
        .unwrap()
        .permissions()
        .mode()
        & 0o777;
    assert_eq!(mode, 0o600);
    let (cert, key) = (dir.path().join("live.pem"), dir.path().join("live.key"));
    std::fs::copy(dir.path().join("one.pem"), &cert).unwrap();
    std::fs::copy(dir.path().join("one.key"), &key).unwrap();
    let srv = Server::start(
        dir.path(),
        &[
            ("FIELDVAULT_TLS_CERT", cert.to_str().unwrap()),
            ("FIELDVAULT_TLS_KEY", key.to_str().unwrap()),
        ],
    );
    assert!(srv.base.starts_with("https://"), "{}", srv.base);
    let port = srv.base.rsplit(':').next().unwrap().to_owned();

    let r = client_trusting(first.clone())
        .get(format!("https://fv.test:{port}/healthz"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert!(
        r.headers()["strict-transport-security"]
            .to_str()
            .unwrap()
            .starts_with("max-age=31536000")
    );

    // Replace the files and send SIGHUP: new connections get the new certificate.
    std::fs::copy(dir.path().join("two.pem"), &cert).unwrap();
    std::fs::copy(dir.path().join("two.key"), &key).unwrap();
    srv.signal("HUP");
    let mut switched = false;
    for _ in 0..50 {
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        let new_ok = client_trusting(second.clone())
            .get(format!("https://fv2.test:{port}/healthz"))
            .send()
            .await
            .is_ok();
        if new_ok {
            switched = true;
            break;
        }
    }
    assert!(switched, "certificate reloaded");
    assert!(
        client_trusting(first)
            .get(format!("https://fv.test:{port}/healthz"))
            .send()
            .await
            .is_err(),
        "old certificate no longer served"
    );
    assert!(srv.stop());
}
