//! OpenRosa end to end: a client that behaves like ODK Collect (deviceID, 401 challenge then
//! Basic, HEAD pre-flight, multipart with `xml_submission_file`, split uploads, edits) and one
//! like Enketo (collector-token URL, no HEAD), against forms made by pyxform, over real HTTP, on
//! SQLite and on PostgreSQL. Every refusal is checked to leave the store unchanged.

use std::path::{Path, PathBuf};

use fieldvault_crypto::SecretString;
use fieldvault_store::{Counts, MasterKeySource, StorageSettings};
use fieldvault_testkit::pg::TestDb;
use reqwest::StatusCode;
use reqwest::multipart::{Form, Part};
use serde_json::{Value, json};

use crate::harness::{PASSWORD, Server, client, create_user};

/// Optional Basic credentials.
type Credentials<'a> = Option<(&'a str, &'a str)>;

const DEVICE: &str = "collect:Fv7TestDevice";
const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures");

/// Converts the test XLSForms with pyxform; `None` (skip) outside CI when pyxform is missing.
fn pyxform_forms(out: &Path) -> Option<PathBuf> {
    let ok = std::process::Command::new("python3")
        .arg(format!("{FIXTURES}/make_forms.py"))
        .arg(out)
        .output()
        .is_ok_and(|o| o.status.success());
    if ok {
        Some(out.to_path_buf())
    } else {
        fieldvault_testkit::unavailable("pyxform (pip install pyxform)")
    }
}

struct Env {
    srv: Server,
    dir: tempfile::TempDir,
    env: Vec<(String, String)>,
    forms: PathBuf,
}

impl Env {
    fn envs(&self) -> Vec<(&str, &str)> {
        self.env
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect()
    }

    fn url(&self, path: &str) -> String {
        self.srv.url(path)
    }

    /// Row counts read straight from the store (a second process, as an operator would).
    async fn counts(&self) -> Counts {
        let url = self
            .env
            .iter()
            .find(|(k, _)| k == "FIELDVAULT_DATABASE_URL")
            .map(|(_, v)| v.clone());
        let data = self.dir.path().join("fieldvault-data");
        let settings = StorageSettings {
            data_dir: data.clone(),
            database_url: url.map(SecretString::new),
            blobs: None,
            master_key: MasterKeySource::File(data.join("master.key")),
            max_connections: 1,
        };
        let opened = fieldvault_store::open(&settings, false).await.unwrap();
        let c = opened.store.counts().await.unwrap();
        opened.store.close().await;
        c
    }
}

async fn start(db: Option<&TestDb>, extra: &[(&str, &str)]) -> Option<Env> {
    let dir = tempfile::tempdir().unwrap();
    let forms = pyxform_forms(&dir.path().join("forms"))?;
    let mut env = vec![(
        "FIELDVAULT_HTTP_BODY_LIMIT_BYTES".to_owned(),
        "3000000".to_owned(),
    )];
    if let Some(db) = db {
        env.push(("FIELDVAULT_DATABASE_URL".into(), db.url.clone()));
    }
    env.extend(
        extra
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned())),
    );
    let pairs: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let srv = Server::start(dir.path(), &pairs);
    create_user(dir.path(), &pairs, "alice", false);
    create_user(dir.path(), &pairs, "bob", false);
    Some(Env {
        srv,
        dir,
        env,
        forms,
    })
}

fn xml_part(xml: &str) -> Part {
    Part::bytes(xml.as_bytes().to_vec())
        .file_name("submission.xml")
        .mime_str("text/xml")
        .unwrap()
}

fn file_part(name: &str, bytes: &[u8]) -> Part {
    Part::bytes(bytes.to_vec())
        .file_name(name.to_owned())
        .mime_str("image/jpeg")
        .unwrap()
}

fn household(instance: &str, name: &str, extra_meta: &str) -> String {
    format!(
        "<?xml version='1.0' ?><data id=\"household\" version=\"2026112701\" \
         xmlns:jr=\"http://openrosa.org/javarosa\" xmlns:orx=\"http://openrosa.org/xforms\">\
         <name>{name}</name><age>42</age><home><location>1.5 2.5 10 5</location><assets>radio phone</assets></home>\
         <member><member_name>Kid</member_name><member_photo>kid.jpg</member_photo></member>\
         <photo>photo.jpg</photo><voice/><age_next>43</age_next>\
         <meta><instanceID>{instance}</instanceID>{extra_meta}</meta></data>"
    )
}

/// What ODK Collect does for one submission attempt: HEAD pre-flight (answering a challenge
/// with Basic), then POST the parts.
async fn collect_post(
    base: &str,
    auth: Option<(&str, &str)>,
    form: Form,
    preflight: bool,
) -> (StatusCode, String) {
    let c = client();
    let url = format!("{base}/submission?deviceID={DEVICE}");
    if preflight {
        let r = c
            .head(&url)
            .header("X-OpenRosa-Version", "1.0")
            .send()
            .await
            .unwrap();
        let r = if r.status() == 401 {
            assert!(
                r.headers()["www-authenticate"]
                    .to_str()
                    .unwrap()
                    .starts_with("Basic")
            );
            let (u, p) = auth.expect("challenged without credentials");
            c.head(&url)
                .header("X-OpenRosa-Version", "1.0")
                .basic_auth(u, Some(p))
                .send()
                .await
                .unwrap()
        } else {
            r
        };
        assert_eq!(r.status(), 204, "HEAD must answer 204");
        assert_eq!(r.headers()["x-openrosa-version"], "1.0");
        assert!(
            r.headers()["x-openrosa-accept-content-length"]
                .to_str()
                .unwrap()
                .parse::<u64>()
                .unwrap()
                > 1000
        );
    }
    let mut req = c
        .post(&url)
        .header("X-OpenRosa-Version", "1.0")
        .multipart(form);
    if let Some((u, p)) = auth {
        req = req.basic_auth(u, Some(p));
    }
    let r = req.send().await.unwrap();
    let status = r.status();
    assert!(
        r.headers()["content-type"]
            .to_str()
            .unwrap()
            .contains("text/xml")
    );
    let body = r.text().await.unwrap();
    assert!(body.contains("OpenRosaResponse"), "{body}");
    (status, body)
}

fn tag<'a>(doc: &'a str, name: &str) -> Vec<&'a str> {
    let open = format!("<{name}>");
    let close = format!("</{name}>");
    doc.split(&open)
        .skip(1)
        .filter_map(|s| s.split(&close).next())
        .collect()
}

fn md5_hex(b: &[u8]) -> String {
    use md5::Digest as _;
    fieldvault_crypto::random::to_hex(&md5::Md5::digest(b))
}

async fn json_req(r: reqwest::RequestBuilder) -> Value {
    let r = r.basic_auth("alice", Some(PASSWORD)).send().await.unwrap();
    assert!(
        r.status().is_success(),
        "{} {:?}",
        r.status(),
        r.text().await
    );
    r.json().await.unwrap()
}

async fn scenario(e: Env) {
    let c = client();
    let alice = Some(("alice", PASSWORD));
    let p = json_req(
        c.post(e.url("/v1/projects"))
            .json(&json!({"name": "Households"})),
    )
    .await;
    let pid = p["id"].as_i64().unwrap();
    let base = e.url(&format!("/v1/projects/{pid}"));

    // Forms made by pyxform: upload, publish, media.
    let household_xml = std::fs::read(e.forms.join("household.xml")).unwrap();
    let encrypted_xml = std::fs::read(e.forms.join("encrypted.xml")).unwrap();
    for bytes in [&household_xml, &encrypted_xml] {
        json_req(
            c.post(format!("{base}/forms?publish=true"))
                .header("content-type", "application/xml")
                .body(bytes.clone()),
        )
        .await;
    }
    let logo = b"\x89PNG fake logo bytes".to_vec();
    json_req(
        c.post(format!("{base}/forms/household/draft/attachments/logo.png"))
            .body(logo.clone()),
    )
    .await;
    // An .xlsx upload gets a clear 415.
    let xlsx = std::fs::read(e.forms.join("household.xlsx")).unwrap();
    let r = c
        .post(format!("{base}/forms"))
        .basic_auth("alice", Some(PASSWORD))
        .body(xlsx)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 415);
    assert!(r.text().await.unwrap().contains("pyxform"));

    // Collect: the form list challenges, then lists both forms with their md5 hashes.
    let list_url = format!("{base}/formList?deviceID={DEVICE}");
    let r = c
        .get(&list_url)
        .header("X-OpenRosa-Version", "1.0")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    let r = c
        .get(&list_url)
        .basic_auth("alice", Some(PASSWORD))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["x-openrosa-version"], "1.0");
    assert!(
        r.headers()["content-type"]
            .to_str()
            .unwrap()
            .contains("text/xml")
    );
    let list = r.text().await.unwrap();
    assert_eq!(tag(&list, "formID"), vec!["encrypted", "household"]);
    for ((url, hash), bytes) in tag(&list, "downloadUrl")
        .into_iter()
        .zip(tag(&list, "hash"))
        .zip([&encrypted_xml, &household_xml])
    {
        let got = c
            .get(format!("{url}?deviceID={DEVICE}"))
            .basic_auth("alice", Some(PASSWORD))
            .send()
            .await
            .unwrap();
        assert_eq!(got.status(), 200);
        let got = got.bytes().await.unwrap();
        assert_eq!(&got[..], &bytes[..], "downloaded byte-identical");
        assert_eq!(
            hash,
            format!("md5:{}", md5_hex(&got)),
            "advertised hash matches"
        );
    }
    let manifest_url = tag(&list, "manifestUrl");
    assert_eq!(
        manifest_url.len(),
        1,
        "only the form with media has a manifest"
    );
    let m = c
        .get(manifest_url[0])
        .basic_auth("alice", Some(PASSWORD))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert_eq!(tag(&m, "filename"), vec!["logo.png"]);
    assert_eq!(tag(&m, "hash"), vec![format!("md5:{}", md5_hex(&logo))]);
    let media = c
        .get(tag(&m, "downloadUrl")[0])
        .basic_auth("alice", Some(PASSWORD))
        .send()
        .await
        .unwrap();
    assert_eq!(media.bytes().await.unwrap().to_vec(), logo);

    // Collect: a submission split over two POSTs, then a full resend.
    let inst = "uuid:6f1c2e0a-1111-4222-8333-944455556666";
    let xml = household(inst, "Zoe", "<instanceName>Zoe-42</instanceName>");
    let photo = vec![7u8; 50_000];
    let first = Form::new()
        .part("xml_submission_file", xml_part(&xml))
        .part("photo.jpg", file_part("photo.jpg", &photo))
        .text("*isIncomplete*", "yes");
    assert_eq!(collect_post(&base, alice, first, true).await.0, 201);
    let second = Form::new()
        .part("xml_submission_file", xml_part(&xml))
        .part("kid.jpg", file_part("kid.jpg", b"kid photo"))
        .part(
            "unreferenced.txt",
            file_part("unreferenced.txt", b"ignored"),
        );
    assert_eq!(collect_post(&base, alice, second, true).await.0, 201);
    let resend = Form::new()
        .part("xml_submission_file", xml_part(&xml))
        .part("photo.jpg", file_part("photo.jpg", &photo))
        .part("kid.jpg", file_part("kid.jpg", b"kid photo"));
    assert_eq!(
        collect_post(&base, alice, resend, true).await.0,
        201,
        "a retry is absorbed"
    );
    let sub_base = format!("{base}/forms/household/submissions/{inst}");
    let atts = json_req(c.get(format!("{sub_base}/attachments"))).await;
    assert_eq!(atts[0]["name"], "kid.jpg");
    assert_eq!(atts[1]["name"], "photo.jpg");
    assert_eq!(
        (atts[0]["exists"].as_bool(), atts[1]["size"].as_i64()),
        (Some(true), Some(50000))
    );
    assert_eq!(
        atts[1]["sha256"],
        fieldvault_crypto::random::to_hex(&fieldvault_crypto::mac::sha256(&photo))
    );
    let got = c
        .get(format!("{sub_base}/attachments/photo.jpg"))
        .basic_auth("alice", Some(PASSWORD))
        .send()
        .await
        .unwrap();
    assert_eq!(got.bytes().await.unwrap().to_vec(), photo);
    let stored = c
        .get(format!("{sub_base}.xml"))
        .basic_auth("alice", Some(PASSWORD))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert_eq!(stored, xml);
    let subs = json_req(c.get(format!("{base}/forms/household/submissions"))).await;
    assert_eq!(subs[0]["deviceId"], DEVICE);
    assert_eq!(subs[0]["currentVersion"]["instanceName"], "Zoe-42");

    // Refusals change nothing.
    let before = e.counts().await;
    let cases: Vec<(Form, Credentials, u16, &str)> = vec![
        (Form::new().part("xml_submission_file", xml_part(&household(inst, "Changed", ""))), alice, 409, "different content"),
        (Form::new().part("xml_submission_file", xml_part("<data id=\"household\"><unclosed></data>")), alice, 400, "well-formed"),
        (Form::new().part("xml_submission_file", xml_part("<data id=\"household\" version=\"2026112701\"><meta/></data>")), alice, 400, "instanceID"),
        (Form::new().part("xml_submission_file", xml_part(&household(inst, "Zoe", "").replace("2026112701", "1999"))), alice, 404, "version"),
        (Form::new().part("xml_submission_file", xml_part(&household("uuid:n1", "Zoe", "").replace("\"household\"", "\"nope\""))), alice, 404, "No form"),
        (Form::new().part("xml_submission_file", xml_part("<!DOCTYPE x [<!ENTITY e SYSTEM \"file:///etc/passwd\">]><data id=\"household\">&e;</data>")), alice, 400, "DOCTYPE"),
        (Form::new().part("photo.jpg", file_part("photo.jpg", b"x")), alice, 400, "xml_submission_file"),
        (Form::new().part("xml_submission_file", xml_part(&household("uuid:n2", "Zoe", ""))), Some(("bob", PASSWORD)), 404, ""),
        (Form::new().part("xml_submission_file", xml_part(&household("uuid:n3", "Zoe", ""))), None, 401, ""),
        (Form::new().part("xml_submission_file", xml_part(&household("uuid:n4", "Zoe", "<deprecatedID>uuid:none</deprecatedID>"))), alice, 404, "deprecatedID"),
        (
            Form::new().part(
                "xml_submission_file",
                xml_part("<data id=\"encrypted\" version=\"1\"><secret>x</secret><meta><instanceID>uuid:p1</instanceID></meta></data>"),
            ),
            alice,
            400,
            "encrypted",
        ),
    ];
    for (i, (form, auth, status, needle)) in cases.into_iter().enumerate() {
        let (got, body) = collect_post(&base, auth, form, false).await;
        assert_eq!(got.as_u16(), status, "case {i}: {body}");
        assert!(body.contains(needle), "case {i}: {body}");
    }
    // Too large: refused from the declared length, before the body is read (a raw request, since
    // an HTTP client would still be writing the body when the answer arrives).
    let head = too_large_request(&e.srv.base, &format!("/v1/projects/{pid}/submission")).await;
    assert!(head.starts_with("HTTP/1.1 413"), "{head}");
    assert!(head.contains("OpenRosaResponse"), "{head}");
    assert_eq!(e.counts().await, before, "refusals changed nothing");

    // An edit (deprecatedID) makes a new version and keeps the files it does not re-send.
    let edit = household(
        "uuid:edit-2",
        "Zoe Edited",
        &format!("<deprecatedID>{inst}</deprecatedID>"),
    );
    let (s, _) = collect_post(
        &base,
        alice,
        Form::new().part("xml_submission_file", xml_part(&edit)),
        true,
    )
    .await;
    assert_eq!(s, 201);
    let stored = c
        .get(format!("{sub_base}.xml"))
        .basic_auth("alice", Some(PASSWORD))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert_eq!(stored, edit);
    let got = c
        .get(format!("{sub_base}/attachments/photo.jpg"))
        .basic_auth("alice", Some(PASSWORD))
        .send()
        .await
        .unwrap();
    assert_eq!(
        got.bytes().await.unwrap().to_vec(),
        photo,
        "carried forward"
    );
    let subs = json_req(c.get(format!("{base}/forms/household/submissions"))).await;
    assert_eq!(subs.as_array().unwrap().len(), 1);
    assert_eq!(subs[0]["reviewState"], "edited");
    // Its versions, newest first, in Central's SubmissionVersion shape.
    let versions = json_req(c.get(format!("{sub_base}/versions"))).await;
    let v = versions.as_array().unwrap();
    assert_eq!(v.len(), 2, "{versions}");
    assert_eq!(v[0]["instanceId"], "uuid:edit-2");
    assert_eq!(v[0]["current"], true);
    assert_eq!(v[0]["deprecatedId"], inst);
    assert_eq!(v[1]["instanceId"], inst);
    assert_eq!(v[1]["current"], false);
    assert_eq!(v[1]["deprecatedId"], Value::Null);
    assert_eq!(v[1]["instanceName"], "Zoe-42");
    assert_eq!(v[1]["deviceId"], DEVICE);
    for x in v {
        assert_eq!(x["submitterName"], "alice", "{x}");
        assert!(x["submitterId"].is_i64() && x["createdAt"].is_string());
        assert!(x["formVersion"].is_string(), "{x}");
    }
    // Unknown submissions and outsiders: 404; nobody: 401.
    let r = c
        .get(format!(
            "{base}/forms/household/submissions/uuid:nope/versions"
        ))
        .basic_auth("alice", Some(PASSWORD))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    let r = c
        .get(format!("{sub_base}/versions"))
        .basic_auth("bob", Some(PASSWORD))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    let r = c.get(format!("{sub_base}/versions")).send().await.unwrap();
    assert_eq!(r.status(), 401);

    // Concurrent posts of one instanceID: all succeed, one row.
    let race = household("uuid:race", "R", "");
    let mut tasks = Vec::new();
    for _ in 0..8 {
        let (b, x) = (base.clone(), race.clone());
        tasks.push(tokio::spawn(async move {
            collect_post(
                &b,
                Some(("alice", PASSWORD)),
                Form::new().part("xml_submission_file", xml_part(&x)),
                false,
            )
            .await
            .0
        }));
    }
    for t in tasks {
        assert_eq!(t.await.unwrap(), 201);
    }
    let subs = json_req(c.get(format!("{base}/forms/household/submissions"))).await;
    assert_eq!(subs.as_array().unwrap().len(), 2);

    // Enketo: a collector token URL, no HEAD; only assigned forms are listed.
    let au = json_req(
        c.post(format!("{base}/app-users"))
            .json(&json!({"displayName": "Enumerator 1"})),
    )
    .await;
    let token = au["token"].as_str().unwrap().to_owned();
    json_req(c.post(format!(
        "{base}/forms/household/assignments/app-user/{}",
        au["id"]
    )))
    .await;
    let kbase = e.url(&format!("/v1/key/{token}/projects/{pid}"));
    let list = c
        .get(format!("{kbase}/formList"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert_eq!(tag(&list, "formID"), vec!["household"], "{list}");
    assert!(tag(&list, "downloadUrl")[0].starts_with(&kbase));
    let dl = c
        .get(tag(&list, "downloadUrl")[0])
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    assert_eq!(&dl[..], &household_xml[..]);
    let enketo = Form::new().part(
        "xml_submission_file",
        xml_part(&household("uuid:enketo-1", "Via Enketo", "")).file_name("xml_submission_file"),
    );
    assert_eq!(collect_post(&kbase, None, enketo, false).await.0, 201);
    let enc_form = Form::new().part("xml_submission_file", xml_part("<data id=\"encrypted\" version=\"1\"><meta><instanceID>uuid:x</instanceID></meta></data>"));
    assert_eq!(
        collect_post(&kbase, None, enc_form, false).await.0,
        403,
        "form not assigned"
    );
    let bad = e.url(&format!("/v1/key/not-a-token/projects/{pid}/formList"));
    assert_eq!(c.get(bad).send().await.unwrap().status(), 403);

    // KoboCollect set up with the server root, username and password.
    let root = e.url("");
    let list = c
        .get(format!("{root}/formList"))
        .basic_auth("alice", Some(PASSWORD))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert_eq!(tag(&list, "formID"), vec!["encrypted", "household"]);
    let kobo = Form::new().part(
        "xml_submission_file",
        xml_part(&household("uuid:kobo-1", "Via Kobo", "")),
    );
    assert_eq!(collect_post(&root, alice, kobo, true).await.0, 201);
    // Public collection: /{username}/… for forms that allow anonymous submission.
    let r = c
        .patch(format!("{base}/forms/household"))
        .basic_auth("alice", Some(PASSWORD))
        .json(&json!({"anonymous": true}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let ubase = e.url("/alice");
    let list = c
        .get(format!("{ubase}/formList"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert_eq!(tag(&list, "formID"), vec!["household"]);
    let anon = Form::new().part(
        "xml_submission_file",
        xml_part(&household("uuid:anon-1", "Anonymous", "")),
    );
    assert_eq!(collect_post(&ubase, None, anon, false).await.0, 201);

    // A closed form takes nothing.
    let r = c
        .patch(format!("{base}/forms/household"))
        .basic_auth("alice", Some(PASSWORD))
        .json(&json!({"state": "closed"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let closed = Form::new().part(
        "xml_submission_file",
        xml_part(&household("uuid:late", "Late", "")),
    );
    let (s, body) = collect_post(&base, alice, closed, false).await;
    assert_eq!(s, 409, "{body}");
    let list = c
        .get(format!("{base}/formList"))
        .basic_auth("alice", Some(PASSWORD))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert_eq!(
        tag(&list, "formID"),
        vec!["encrypted"],
        "closed forms are not listed"
    );

    // ODK-encrypted envelope (real Collect 1.22.4 output): stored opaque.
    let p2 = json_req(
        c.post(e.url("/v1/projects"))
            .json(&json!({"name": "Encrypted"})),
    )
    .await;
    let base2 = e.url(&format!("/v1/projects/{}", p2["id"]));
    let form = std::fs::read(format!("{FIXTURES}/encrypted-form.xml")).unwrap();
    json_req(c.post(format!("{base2}/forms?publish=true")).body(form)).await;
    let manifest =
        std::fs::read_to_string(format!("{FIXTURES}/collect-1.22.4-manifest.xml")).unwrap();
    let enc = std::fs::read(format!("{FIXTURES}/collect-1.22.4-submission.xml.enc")).unwrap();
    let envelope = Form::new()
        .part("xml_submission_file", xml_part(&manifest))
        .part("submission.xml.enc", file_part("submission.xml.enc", &enc))
        .part(
            "1561432532482.jpg.enc",
            file_part("1561432532482.jpg.enc", b"opaque media ciphertext"),
        );
    assert_eq!(collect_post(&base2, alice, envelope, true).await.0, 201);
    let subs = json_req(c.get(format!("{base2}/forms/encrypted/submissions"))).await;
    assert_eq!(subs[0]["encrypted"], true);
    let atts = json_req(c.get(format!(
        "{base2}/forms/encrypted/submissions/uuid:99b303d9-6494-477b-a30d-d8aae8867335/attachments"
    )))
    .await;
    assert_eq!(atts.as_array().unwrap().len(), 2);
    let got = c
        .get(format!("{base2}/forms/encrypted/submissions/uuid:99b303d9-6494-477b-a30d-d8aae8867335/attachments/submission.xml.enc"))
        .basic_auth("alice", Some(PASSWORD))
        .send()
        .await
        .unwrap();
    assert_eq!(
        got.bytes().await.unwrap().to_vec(),
        enc,
        "ciphertext kept byte for byte"
    );

    // Nothing of the respondents' data is readable on disk (embedded store).
    if !e.env.iter().any(|(k, _)| k == "FIELDVAULT_DATABASE_URL") {
        let _ = e.envs();
        for f in crate::harness::files_under(&e.dir.path().join("fieldvault-data")) {
            // The server is running: a temporary file may be renamed away between listing and reading.
            let Ok(bytes) = std::fs::read(&f) else {
                continue;
            };
            for marker in [&b"Zoe Edited"[..], b"Via Enketo", b"kid photo"] {
                assert!(
                    !bytes.windows(marker.len()).any(|w| w == marker),
                    "{} holds plaintext",
                    f.display()
                );
            }
        }
    }
    let _ = e.srv.stop();
}

async fn too_large_request(base: &str, path: &str) -> String {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let addr = base.trim_start_matches("http://");
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    let req = format!(
        "POST {path} HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Basic {}\r\n\
         Content-Type: multipart/form-data; boundary=b\r\nContent-Length: 3500000\r\n\r\n",
        base64_basic("alice", PASSWORD)
    );
    s.write_all(req.as_bytes()).await.unwrap();
    let mut buf = vec![0u8; 4096];
    let mut got = Vec::new();
    while let Ok(n) = s.read(&mut buf).await {
        if n == 0 {
            break;
        }
        got.extend_from_slice(&buf[..n]);
        if got.windows(19).any(|w| w == b"</OpenRosaResponse>") {
            break;
        }
    }
    String::from_utf8_lossy(&got).into_owned()
}

/// Sends only the headers of a POST declaring `len` bytes, and returns what the server answers
/// within a few seconds.
async fn raw_post_head(base: &str, path: &str, len: usize) -> String {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let addr = base.trim_start_matches("http://");
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    let req = format!(
        "POST {path} HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Basic {}\r\n\
         Content-Type: application/json\r\nContent-Length: {len}\r\n\r\n",
        base64_basic("alice", PASSWORD)
    );
    s.write_all(req.as_bytes()).await.unwrap();
    let mut got = Vec::new();
    let mut buf = vec![0u8; 4096];
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(5);
    while let Ok(Ok(n)) = tokio::time::timeout_at(deadline, s.read(&mut buf)).await {
        if n == 0 {
            break;
        }
        got.extend_from_slice(&buf[..n]);
        if got.windows(4).any(|w| w == b"\r\n\r\n") && got.ends_with(b"}") {
            break;
        }
    }
    String::from_utf8_lossy(&got).into_owned()
}

fn base64_basic(u: &str, p: &str) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(format!("{u}:{p}"))
}

/// Form uploads the server refuses, each with a message a form author understands, and none of
/// them changing anything.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn form_upload_refusals_change_nothing() {
    let Some(e) = start(None, &[]).await else {
        return;
    };
    let c = client();
    let p = json_req(
        c.post(e.url("/v1/projects"))
            .json(&json!({"name": "Forms"})),
    )
    .await;
    let base = e.url(&format!("/v1/projects/{}", p["id"]));
    let household = std::fs::read_to_string(e.forms.join("household.xml")).unwrap();
    json_req(c.post(format!("{base}/forms")).body(household.clone())).await;
    let before = e.counts().await;
    let no_meta = household.replace("<meta><instanceID/></meta>", "").replace(
        "<bind nodeset=\"/data/meta/instanceID\"",
        "<bind nodeset=\"/data/x\"",
    );
    let cases: Vec<(String, String, Credentials, u16, &str)> = vec![
        (
            format!("{base}/forms"),
            "<h:html><unclosed></h:html>".into(),
            Some(("alice", PASSWORD)),
            400,
            "well-formed",
        ),
        (
            format!("{base}/forms"),
            format!("<!DOCTYPE h [<!ENTITY x SYSTEM \"file:///etc/passwd\">]>{household}"),
            Some(("alice", PASSWORD)),
            400,
            "DOCTYPE",
        ),
        (
            format!("{base}/forms"),
            household.replace("id=\"household\"", ""),
            Some(("alice", PASSWORD)),
            400,
            "id",
        ),
        (
            format!("{base}/forms"),
            no_meta,
            Some(("alice", PASSWORD)),
            400,
            "instanceID",
        ),
        (
            format!("{base}/forms"),
            household.clone(),
            Some(("alice", PASSWORD)),
            409,
            "already exists",
        ),
        (
            format!("{base}/forms"),
            household.clone(),
            Some(("bob", PASSWORD)),
            404,
            "",
        ),
        (format!("{base}/forms"), household.clone(), None, 401, ""),
        (
            format!("{base}/forms/household/draft"),
            household.replace("id=\"household\"", "id=\"other\""),
            Some(("alice", PASSWORD)),
            400,
            "other",
        ),
        (
            format!("{base}/forms/household/draft/attachments/evil.png"),
            "x".into(),
            Some(("alice", PASSWORD)),
            400,
            "logo.png",
        ),
    ];
    for (i, (url, body, auth, status, needle)) in cases.into_iter().enumerate() {
        let mut r = c
            .post(&url)
            .header("content-type", "application/xml")
            .body(body);
        if let Some((u, p)) = auth {
            r = r.basic_auth(u, Some(p));
        }
        let r = r.send().await.unwrap();
        assert_eq!(r.status().as_u16(), status, "case {i}");
        let text = r.text().await.unwrap();
        assert!(text.contains(needle), "case {i}: {text}");
        let v: Value = serde_json::from_str(&text).unwrap();
        assert!(
            v["code"].is_string() && v["message"].is_string(),
            "case {i}: {text}"
        );
    }
    // Publishing a draft whose version is already published is refused; a new version works.
    json_req(c.post(format!("{base}/forms/household/draft/publish"))).await;
    json_req(
        c.post(format!("{base}/forms/household/draft"))
            .body(household.clone()),
    )
    .await;
    let r = c
        .post(format!("{base}/forms/household/draft/publish"))
        .basic_auth("alice", Some(PASSWORD))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 409);
    assert!(r.text().await.unwrap().contains("already published"));
    json_req(
        c.post(format!("{base}/forms/household/draft"))
            .body(household.replace("2026112701", "2026112702")),
    )
    .await;
    json_req(c.post(format!(
        "{base}/forms/household/draft/publish?version=2026112702"
    )))
    .await;
    let f = json_req(c.get(format!("{base}/forms/household"))).await;
    assert_eq!(f["version"], "2026112702");
    let after = e.counts().await;
    assert_eq!(
        (after.forms, after.submissions),
        (before.forms, before.submissions)
    );
    // JSON bodies have their own, small limit (checked from the declared length, before reading).
    let head = raw_post_head(&e.srv.base, "/v1/projects", 2_000_000).await;
    assert!(head.starts_with("HTTP/1.1 413"), "{head}");
    assert!(head.contains("request.too_large"), "{head}");
    // Deleting a form frees its id.
    json_req(c.delete(format!("{base}/forms/household"))).await;
    assert_eq!(
        c.get(format!("{base}/forms/household"))
            .basic_auth("alice", Some(PASSWORD))
            .send()
            .await
            .unwrap()
            .status(),
        404
    );
    json_req(c.post(format!("{base}/forms")).body(household)).await;
    let _ = e.srv.stop();
}

/// The intake settings: a per-file size limit, and (off by default) plaintext to encrypted forms.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn intake_settings() {
    let settings = [
        ("FIELDVAULT_INTAKE_MAX_ATTACHMENT_BYTES", "20000"),
        (
            "FIELDVAULT_INTAKE_ALLOW_PLAINTEXT_TO_ENCRYPTED_FORMS",
            "true",
        ),
    ];
    let Some(e) = start(None, &settings).await else {
        return;
    };
    let c = client();
    let p = json_req(
        c.post(e.url("/v1/projects"))
            .json(&json!({"name": "Settings"})),
    )
    .await;
    let base = e.url(&format!("/v1/projects/{}", p["id"]));
    for f in ["household.xml", "encrypted.xml"] {
        let body = std::fs::read(e.forms.join(f)).unwrap();
        json_req(c.post(format!("{base}/forms?publish=true")).body(body)).await;
    }
    let alice = Some(("alice", PASSWORD));
    let plain = "<data id=\"encrypted\" version=\"1\"><secret>x</secret><meta><instanceID>uuid:p1</instanceID></meta></data>";
    let (s, _) = collect_post(
        &base,
        alice,
        Form::new().part("xml_submission_file", xml_part(plain)),
        false,
    )
    .await;
    assert_eq!(s, 201, "allowed by the setting");
    let before = e.counts().await;
    let big = Form::new()
        .part(
            "xml_submission_file",
            xml_part(&household("uuid:big", "B", "")),
        )
        .part("photo.jpg", file_part("photo.jpg", &vec![1u8; 50_000]));
    let (s, body) = collect_post(&base, alice, big, false).await;
    assert_eq!(s, 413, "{body}");
    assert!(body.contains("photo.jpg"), "{body}");
    assert_eq!(
        e.counts().await,
        before,
        "nothing kept of a refused submission"
    );
    let small = Form::new()
        .part(
            "xml_submission_file",
            xml_part(&household("uuid:big", "B", "")),
        )
        .part("photo.jpg", file_part("photo.jpg", &[1u8; 1000]));
    assert_eq!(collect_post(&base, alice, small, false).await.0, 201);
    let _ = e.srv.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn collect_enketo_and_kobocollect_on_sqlite() {
    let Some(e) = start(None, &[]).await else {
        return;
    };
    scenario(e).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn collect_enketo_and_kobocollect_on_postgres() {
    let Some(db) = TestDb::create().await else {
        return;
    };
    let Some(e) = start(Some(&db), &[]).await else {
        return;
    };
    scenario(e).await;
    db.drop_db().await;
}
