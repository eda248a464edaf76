//! Project encryption over HTTP: `POST /v1/projects/{id}/key` gives every form the project's
//! public key under a new version (so Collect re-downloads it), media stay attached, drafts and
//! later uploads take the key, forms with their own key keep it, and turning encryption off
//! re-versions again. Every change is audited.

use fieldvault_crypto::odk::{OdkPrivateKey, encrypt_submission};
use reqwest::multipart::{Form, Part};
use serde_json::{Value, json};

use crate::harness::{PASSWORD, Server, client, create_user};

fn plain_form(id: &str, version: &str, media: bool) -> String {
    let media_ref = if media {
        r#"<label><output value="jr://images/logo.png"/>Name</label><hint>x</hint>"#
    } else {
        "<label>Name</label>"
    };
    format!(
        r#"<?xml version="1.0"?>
<h:html xmlns="http://www.w3.org/2002/xforms" xmlns:h="http://www.w3.org/1999/xhtml">
  <h:head><h:title>Form {id}</h:title>
    <model>
      <instance><data id="{id}" version="{version}"><name/><meta><instanceID/></meta></data></instance>
      <bind nodeset="/data/name" type="string"/>
      <bind nodeset="/data/meta/instanceID" type="string" readonly="true()"/>
    </model>
  </h:head>
  <h:body><input ref="/data/name">{media_ref}</input></h:body>
</h:html>"#
    )
}

fn own_key_form(public: &str) -> String {
    plain_form("ownkey", "1", false).replace(
        "<instance>",
        &format!("<submission base64RsaPublicKey=\"{public}\"/><instance>"),
    )
}

struct Ctx {
    srv: Server,
    c: reqwest::Client,
    base: String,
}

impl Ctx {
    async fn send(&self, r: reqwest::RequestBuilder) -> (u16, Value) {
        let r = r.basic_auth("owner", Some(PASSWORD)).send().await.unwrap();
        let status = r.status().as_u16();
        let text = r.text().await.unwrap();
        (
            status,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
        )
    }
    async fn get(&self, path: &str) -> (u16, Value) {
        self.send(self.c.get(format!("{}{path}", self.base))).await
    }
    async fn text(&self, path: &str) -> String {
        self.c
            .get(format!("{}{path}", self.base))
            .basic_auth("owner", Some(PASSWORD))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    }
    async fn post_key(&self, body: Value) -> (u16, Value) {
        self.send(self.c.post(format!("{}/key", self.base)).json(&body))
            .await
    }
    async fn submit(&self, manifest: String, files: &[(String, Vec<u8>)]) -> u16 {
        let mut form = Form::new().part(
            "xml_submission_file",
            Part::bytes(manifest.into_bytes())
                .file_name("submission.xml")
                .mime_str("text/xml")
                .unwrap(),
        );
        for (name, bytes) in files {
            form = form.part(
                name.clone(),
                Part::bytes(bytes.clone()).file_name(name.clone()),
            );
        }
        self.c
            .post(format!("{}/submission", self.base))
            .basic_auth("owner", Some(PASSWORD))
            .multipart(form)
            .send()
            .await
            .unwrap()
            .status()
            .as_u16()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn project_key_reversions_forms_and_is_audited() {
    let dir = tempfile::tempdir().unwrap();
    let srv = Server::start(dir.path(), &[]);
    create_user(dir.path(), &[], "owner", false);
    create_user(dir.path(), &[], "stranger", false);
    let c = client();
    let p: Value = c
        .post(srv.url("/v1/projects"))
        .basic_auth("owner", Some(PASSWORD))
        .json(&json!({"name": "Protection"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let base = srv.url(&format!("/v1/projects/{}", p["id"]));
    let ctx = Ctx { srv, c, base };

    // A published form with media, a form with only a draft, and a form with its own key.
    let other = OdkPrivateKey::generate().unwrap();
    let other_public = other.public_key().to_base64_spki();
    for (path, body) in [
        ("/forms?publish=true", plain_form("household", "2024", true)),
        ("/forms", plain_form("drafty", "7", false)),
        ("/forms?publish=true", own_key_form(&other_public)),
    ] {
        let (s, v) = ctx
            .send(ctx.c.post(format!("{}{path}", ctx.base)).body(body))
            .await;
        assert_eq!(s, 200, "{v}");
    }
    let logo = b"\x89PNG fake logo bytes".to_vec();
    let (s, v) = ctx
        .send(
            ctx.c
                .post(format!(
                    "{}/forms/household/draft/attachments/logo.png",
                    ctx.base
                ))
                .body(logo.clone()),
        )
        .await;
    assert_eq!(s, 200, "{v}");
    let (_, before) = ctx.get("/forms/household").await;
    assert_eq!(before["encrypted"], false);

    // Refusals change nothing.
    let (s, v) = ctx
        .post_key(json!({"passphrase": "a long passphrase"}))
        .await;
    assert_eq!(
        (s, v["code"].as_str()),
        (400, Some("project.key.public_key_required")),
        "{v}"
    );
    assert!(v["message"].as_str().unwrap().contains("fieldvault keygen"));
    let (s, v) = ctx
        .post_key(json!({"publicKey": "not base64 at all!"}))
        .await;
    assert_eq!(
        (s, v["code"].as_str()),
        (400, Some("project.key.invalid")),
        "{v}"
    );
    let pem = other.public_key().to_base64_spki();
    let (s, v) = ctx
        .post_key(json!({"publicKey": format!("-----BEGIN PUBLIC KEY-----\n{pem}\n-----END PUBLIC KEY-----")}))
        .await;
    assert_eq!(
        (s, v["code"].as_str()),
        (400, Some("project.key.invalid")),
        "{v}"
    );
    let stranger = ctx
        .c
        .post(format!("{}/key", ctx.base))
        .basic_auth("stranger", Some(PASSWORD))
        .json(&json!({"publicKey": pem}))
        .send()
        .await
        .unwrap();
    assert_eq!(
        stranger.status(),
        404,
        "a stranger does not learn the project exists"
    );
    let (_, unchanged) = ctx.get("/forms/household").await;
    assert_eq!(unchanged["version"], before["version"]);
    let (s, v) = ctx.get("/key").await;
    assert_eq!((s, &v["encrypted"]), (200, &json!(false)));

    // Encryption on.
    let key = OdkPrivateKey::generate().unwrap();
    let public = key.public_key().to_base64_spki();
    let (s, v) = ctx.post_key(json!({"publicKey": public})).await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["encrypted"], true);
    assert_eq!(v["current"]["public"], public);
    assert_eq!(v["current"]["managed"], false);
    let reversioned = v["reversionedForms"].as_array().unwrap();
    assert_eq!(
        reversioned.len(),
        1,
        "only the published form without its own key: {v}"
    );
    assert_eq!(reversioned[0]["xmlFormId"], "household");

    let (_, after) = ctx.get("/forms/household").await;
    let version = after["version"].as_str().unwrap().to_owned();
    assert!(version.starts_with("2024[encrypted:"), "{version}");
    assert_eq!(after["encrypted"], true);
    assert_ne!(
        after["hash"], before["hash"],
        "collectors must see a new hash"
    );
    let xml = ctx.text("/forms/household.xml").await;
    assert!(
        xml.contains(&format!("base64RsaPublicKey=\"{public}\"")),
        "{xml}"
    );
    assert!(xml.contains(&format!("version=\"{version}\"")));
    // The formList advertises the new hash, and the media file is still served.
    let list = ctx.text("/formList").await;
    assert!(list.contains(after["hash"].as_str().unwrap()), "{list}");
    assert!(list.contains(&version));
    let r = ctx
        .c
        .get(format!("{}/forms/household/attachments/logo.png", ctx.base))
        .basic_auth("owner", Some(PASSWORD))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.bytes().await.unwrap().as_ref(), &logo[..]);

    // The draft took the key without a new version; the own-key form kept its key and version.
    let (_, draft) = ctx.get("/forms/drafty/draft").await;
    assert_eq!(
        (draft["version"].as_str(), &draft["encrypted"]),
        (Some("7"), &json!(true))
    );
    let own = ctx.text("/forms/ownkey.xml").await;
    assert!(own.contains(&other_public) && !own.contains(&public));
    let (_, own_meta) = ctx.get("/forms/ownkey").await;
    assert_eq!(own_meta["version"], "1");

    // A form uploaded now is encrypted with the project key, keeping the author's version.
    let (s, v) = ctx
        .send(
            ctx.c
                .post(format!("{}/forms?publish=true", ctx.base))
                .body(plain_form("later", "5", false)),
        )
        .await;
    assert_eq!(
        (s, &v["encrypted"], &v["version"]),
        (200, &json!(true), &json!("5")),
        "{v}"
    );

    // Setting the same key again changes nothing.
    let (s, v) = ctx.post_key(json!({"publicKey": public})).await;
    assert_eq!(s, 200);
    assert_eq!(v["reversionedForms"], json!([]));
    let (_, same) = ctx.get("/forms/household").await;
    assert_eq!(same["version"].as_str(), Some(version.as_str()));

    // Collect-style encrypted data is accepted under the new version; plaintext is refused.
    let instance = "uuid:0b7d63c8-1111-4222-8333-944455556666";
    let plain = format!(
        "<data id=\"household\" version=\"{version}\"><name>x</name><meta><instanceID>{instance}</instanceID></meta></data>"
    );
    let status = ctx.submit(plain.clone(), &[]).await;
    assert_eq!(status, 400, "plaintext to an encrypted form is refused");
    let enc = encrypt_submission(
        key.public_key(),
        "household",
        Some(&version),
        instance,
        plain.as_bytes(),
        &[],
    )
    .unwrap();
    assert_eq!(ctx.submit(enc.manifest_xml, &enc.files).await, 201);

    // Encryption off: the forms following the project key get another version without a key.
    let r = ctx
        .c
        .delete(format!("{}/key", ctx.base))
        .basic_auth("owner", Some(PASSWORD))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["encrypted"], false);
    assert_eq!(v["keys"].as_array().unwrap().len(), 1);
    assert!(v["keys"][0]["retiredAt"].is_string());
    let (_, off) = ctx.get("/forms/household").await;
    assert!(
        off["version"]
            .as_str()
            .unwrap()
            .starts_with("2024[unencrypted:"),
        "{off}"
    );
    assert_eq!(off["encrypted"], false);
    let (_, own_meta) = ctx.get("/forms/ownkey").await;
    assert_eq!(
        (&own_meta["version"], &own_meta["encrypted"]),
        (&json!("1"), &json!(true))
    );

    // Both changes are in the audit log, with fingerprints, never the key itself.
    drop(ctx.c);
    assert!(ctx.srv.stop());
    let mut k = crate::harness::cmd(dir.path());
    k.args(["audit", "verify"]);
    let (ok, out, err) = crate::harness::run(k, "");
    assert!(ok, "{out}{err}");
    let srv = Server::start(dir.path(), &[]);
    let admin = crate::harness::admin_session(&srv, dir.path(), &[], "root").await;
    let audits: Value = client()
        .get(srv.url("/v1/audits"))
        .bearer_auth(&admin)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let actions: Vec<&str> = audits
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|a| a["action"].as_str())
        .collect();
    assert!(actions.contains(&"project.key.set"), "{actions:?}");
    assert!(actions.contains(&"project.key.remove"), "{actions:?}");
    assert!(
        !audits.to_string().contains(&public),
        "the key itself is not logged"
    );
    assert!(srv.stop());
}
