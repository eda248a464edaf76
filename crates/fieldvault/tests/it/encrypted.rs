//! End-to-end encrypted project (M3): a client encrypts as Collect does, the server stores what it
//! cannot read, `fieldvault pull` brings the envelopes home with their hashes checked, and the
//! owner's private key (never on the server) recovers identical bytes.

use fieldvault_crypto::odk::{Manifest, OdkPrivateKey, decrypt_submission, encrypt_submission};
use reqwest::multipart::{Form, Part};
use serde_json::{Value, json};

use crate::harness::{PASSWORD, Server, client, cmd, create_user, run};

fn encrypted_xform(public_b64: &str) -> String {
    format!(
        r#"<?xml version="1.0"?><h:html xmlns="http://www.w3.org/2002/xforms" xmlns:h="http://www.w3.org/1999/xhtml"><h:head><h:title>Sensitive</h:title><model><instance><data id="sensitive" version="3"><name/><photo/><meta><instanceID/></meta></data></instance><bind nodeset="/data/name" type="string"/><bind nodeset="/data/photo" type="binary"/><bind nodeset="/data/meta/instanceID" type="string" readonly="true()"/><submission method="post" base64RsaPublicKey="{public_b64}"/></model></h:head><h:body><input ref="/data/name"><label>Name</label></input></h:body></h:html>"#
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn encrypt_submit_pull_decrypt_round_trip() {
    let dir = tempfile::tempdir().unwrap();
    let srv = Server::start(dir.path(), &[]);
    create_user(dir.path(), &[], "owner", false);
    let c = client();
    let key = OdkPrivateKey::generate().unwrap();
    let public = key.public_key().to_base64_spki();

    let p: Value = c
        .post(srv.url("/v1/projects"))
        .basic_auth("owner", Some(PASSWORD))
        .json(&json!({"name": "E2E"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let base = srv.url(&format!("/v1/projects/{}", p["id"]));
    let r = c
        .post(format!("{base}/forms?publish=true"))
        .basic_auth("owner", Some(PASSWORD))
        .body(encrypted_xform(&public))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.json::<Value>().await.unwrap()["encrypted"], true);

    // The client side: exactly what Collect produces.
    let marker = "RESPONDENT-SECRET-4711";
    let instance = "uuid:5a0e7c1b-2222-4333-8444-955566667777";
    let xml = format!(
        "<data id=\"sensitive\" version=\"3\"><name>{marker}</name><photo>photo.jpg</photo><meta><instanceID>{instance}</instanceID></meta></data>"
    );
    let photo: Vec<u8> = (0..70_000u32).map(|i| (i % 251) as u8).collect();
    let enc = encrypt_submission(
        key.public_key(),
        "sensitive",
        Some("3"),
        instance,
        xml.as_bytes(),
        &[("photo.jpg", &photo)],
    )
    .unwrap();
    let mut form = Form::new().part(
        "xml_submission_file",
        Part::bytes(enc.manifest_xml.clone().into_bytes())
            .file_name("submission.xml")
            .mime_str("text/xml")
            .unwrap(),
    );
    for (name, bytes) in &enc.files {
        form = form.part(
            name.clone(),
            Part::bytes(bytes.clone()).file_name(name.clone()),
        );
    }
    let r = c
        .post(format!("{base}/submission"))
        .basic_auth("owner", Some(PASSWORD))
        .multipart(form)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201, "{}", r.text().await.unwrap());

    // The server shows it as encrypted, metadata only.
    let subs: Value = c
        .get(format!("{base}/forms/sensitive/submissions"))
        .basic_auth("owner", Some(PASSWORD))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(subs[0]["encrypted"], true);
    assert_eq!(subs[0]["instanceId"], instance);
    assert_eq!(subs[0]["currentVersion"]["formVersion"], "3");

    // Pull with a read-only token, twice: the second run fetches nothing new.
    let t: Value = c
        .post(srv.url("/v1/tokens"))
        .basic_auth("owner", Some(PASSWORD))
        .json(&json!({"name": "pull", "scopes": ["data:read"]}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let token = t["token"].as_str().unwrap().to_owned();
    let out = dir.path().join("pulled");
    let pull = |out: &std::path::Path| {
        let mut k = cmd(dir.path());
        k.args(["pull", "--server", &srv.base, "--project"])
            .arg(p["id"].to_string())
            .args(["--out"])
            .arg(out)
            .env("FIELDVAULT_PULL_TOKEN", &token);
        run(k, "")
    };
    let (ok, _, err) = pull(&out);
    assert!(ok, "{err}");
    assert!(err.contains("Downloaded 1 submission"), "{err}");
    let (ok, _, err) = pull(&out);
    assert!(
        ok && err.contains("Downloaded 0 submission(s)") && err.contains("1 already present"),
        "{err}"
    );

    // The owner decrypts locally: identical bytes, valid signature.
    let sdir = out
        .join("sensitive")
        .join("uuid_5a0e7c1b-2222-4333-8444-955566667777");
    let manifest =
        Manifest::parse(&std::fs::read_to_string(sdir.join("submission.xml")).unwrap()).unwrap();
    let files: Vec<(String, Vec<u8>)> = ["photo.jpg.enc", "submission.xml.enc"]
        .iter()
        .map(|n| (n.to_string(), std::fs::read(sdir.join(n)).unwrap()))
        .collect();
    let plain = decrypt_submission(&key, &manifest, |n| {
        files
            .iter()
            .find(|(f, _)| f == n)
            .map(|(_, b)| b.as_slice())
    })
    .unwrap();
    assert_eq!(plain.xml, xml.as_bytes());
    assert_eq!(plain.media[0].1.as_deref(), Some(&photo[..]));
    assert_eq!(plain.signature_valid, Some(true));

    // Nothing on the server can read it: no plaintext anywhere in its data directory, and the
    // server holds no private key.
    assert!(srv.stop());
    let data = dir.path().join("fieldvault-data");
    for p in crate::harness::files_under(&data) {
        let b = std::fs::read(&p).unwrap();
        assert!(
            !b.windows(marker.len()).any(|w| w == marker.as_bytes()),
            "plaintext in {}",
            p.display()
        );
        assert!(
            !b.windows(photo.len().min(64)).any(|w| w == &photo[..64]),
            "photo in {}",
            p.display()
        );
    }

    // An interrupted pull (no completion marker) fetches that submission again.
    std::fs::remove_file(sdir.join(".complete")).unwrap();
    let srv = Server::start(dir.path(), &[]);
    let mut k = cmd(dir.path());
    k.args(["pull", "--server", &srv.base, "--project"])
        .arg(p["id"].to_string())
        .args(["--token", &token, "--out"])
        .arg(&out);
    let (ok, _, err) = run(k, "");
    assert!(ok, "re-fetches an incomplete submission: {err}");
    assert!(sdir.join(".complete").exists());
    assert!(srv.stop());
}
