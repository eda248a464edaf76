//! Getting data out, end to end on SQLite and PostgreSQL: submissions sent over OpenRosa to a
//! pyxform-made form (groups, nested repeats, select_multiple, geopoint, a photo, and a field the
//! form does not declare), then read back as flattened JSON, reviewed, exported as CSV and as a
//! ZIP (parsed back and compared field by field), queried over OData, deleted, restored and
//! purged; and pyodk (PyPI) talking to the running server.

use std::io::Read as _;
use std::path::{Path, PathBuf};

use fieldvault_testkit::pg::TestDb;
use reqwest::multipart::{Form, Part};
use serde_json::{Value, json};

use crate::harness::{PASSWORD, Server, client, create_user};

const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures");
/// The pyodk release these tests pin (installed by scripts/test).
const PYODK: &str = "1.3.0";

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

/// A census submission; `legacy` is a field no version of the form declares.
fn census(instance: &str, name: &str, age: u32, members: &[(&str, u32, &[&str])]) -> String {
    let members: String = members
        .iter()
        .map(|(m, a, visits)| {
            let v: String = visits
                .iter()
                .map(|d| format!("<visit_log><vdate>{d}</vdate></visit_log>"))
                .collect();
            format!("<member><mname>{m}</mname><mage>{a}</mage>{v}</member>")
        })
        .collect();
    format!(
        "<data id=\"census\" version=\"3\" xmlns:jr=\"http://openrosa.org/javarosa\">\
         <name>{name}</name><age>{age}</age><income>1200.50</income><visit>2026-11-27</visit>\
         <consent>yes</consent><hh><location>-1.28 36.8 1650 4.5</location>\
         <assets>radio phone</assets>{members}</hh><photo>photo-{age}.jpg</photo><double_age/>\
         <legacy>old-{age}</legacy><meta><instanceID>{instance}</instanceID></meta></data>"
    )
}

struct Env {
    srv: Server,
    dir: tempfile::TempDir,
    env: Vec<(String, String)>,
    pid: i64,
}

impl Env {
    fn url(&self, path: &str) -> String {
        self.srv.url(path)
    }

    fn form(&self, rest: &str) -> String {
        self.url(&format!("/v1/projects/{}/forms/census{rest}", self.pid))
    }
}

async fn get_json(url: &str) -> Value {
    let r = client()
        .get(url)
        .basic_auth("alice", Some(PASSWORD))
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success(), "{url}: {}", r.status());
    r.json().await.unwrap()
}

async fn start(db: Option<&TestDb>) -> Option<Env> {
    let dir = tempfile::tempdir().unwrap();
    let forms = pyxform_forms(&dir.path().join("forms"))?;
    let mut owned: Vec<(String, String)> = vec![
        ("FIELDVAULT_DATA_PURGE_AFTER_DAYS".into(), "0".into()),
        ("FIELDVAULT_DATA_PURGE_INTERVAL_SECS".into(), "6".into()),
    ];
    if let Some(db) = db {
        owned.push(("FIELDVAULT_DATABASE_URL".into(), db.url.clone()));
    }
    let env: Vec<(&str, &str)> = owned
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    let srv = Server::start(dir.path(), &env);
    create_user(dir.path(), &env, "alice", false);
    create_user(dir.path(), &env, "bob", false);
    let c = client();
    let p: Value = c
        .post(srv.url("/v1/projects"))
        .basic_auth("alice", Some(PASSWORD))
        .json(&json!({"name": "Census"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let pid = p["id"].as_i64().unwrap();
    let xml = std::fs::read(forms.join("census.xml")).unwrap();
    let r = c
        .post(srv.url(&format!("/v1/projects/{pid}/forms?publish=true")))
        .basic_auth("alice", Some(PASSWORD))
        .header("content-type", "application/xml")
        .body(xml)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "{:?}", r.text().await);
    Some(Env {
        srv,
        dir,
        env: owned,
        pid,
    })
}

async fn submit(e: &Env, xml: &str, photo: Option<(&str, &[u8])>) {
    let mut form = Form::new().part(
        "xml_submission_file",
        Part::bytes(xml.as_bytes().to_vec())
            .file_name("submission.xml")
            .mime_str("text/xml")
            .unwrap(),
    );
    if let Some((name, bytes)) = photo {
        form = form.part(
            name.to_owned(),
            Part::bytes(bytes.to_vec())
                .file_name(name.to_owned())
                .mime_str("image/jpeg")
                .unwrap(),
        );
    }
    let r = client()
        .post(e.url(&format!("/v1/projects/{}/submission", e.pid)))
        .basic_auth("alice", Some(PASSWORD))
        .header("X-OpenRosa-Version", "1.0")
        .multipart(form)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201, "{:?}", r.text().await);
}

const PHOTO: &[u8] = b"\xff\xd8\xff\xe0 a small jpeg-ish photo";

async fn seed(e: &Env) {
    submit(
        e,
        &census(
            "uuid:c1",
            "Ann &amp; Bo",
            41,
            &[("Ann", 41, &["2026-01-01", "2026-02-01"]), ("Ben", 9, &[])],
        ),
        Some(("photo-41.jpg", PHOTO)),
    )
    .await;
    submit(e, &census("uuid:c2", "Cy, \"the\" second", 30, &[]), None).await;
    submit(
        e,
        &census(
            "uuid:c3",
            "Dee\nline two",
            25,
            &[("Eve", 3, &["2026-03-03"])],
        ),
        None,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn data_api_exports_and_odata_on_sqlite() {
    let Some(e) = start(None).await else { return };
    scenario(&e).await;
    pyodk_against_server(&e).await;
    trash_and_purge(&e).await;
    assert!(e.srv.stop());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn data_api_exports_and_odata_on_postgres() {
    let Some(db) = TestDb::create().await else {
        return;
    };
    let Some(e) = start(Some(&db)).await else {
        return;
    };
    scenario(&e).await;
    trash_and_purge(&e).await;
    assert!(e.srv.stop());
    db.drop_db().await;
}

async fn scenario(e: &Env) {
    seed(e).await;
    let c = client();

    // JSON list: newest first, flattened the KoboToolbox way and typed from the form.
    let list = get_json(&e.form("/submissions")).await;
    let ids: Vec<&str> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["instanceId"].as_str().unwrap())
        .collect();
    assert_eq!(ids, vec!["uuid:c3", "uuid:c2", "uuid:c1"]);
    let one = get_json(&e.form("/submissions/uuid%3Ac1")).await;
    let d = &one["data"];
    assert_eq!(d["name"], json!("Ann & Bo"));
    assert_eq!(d["age"], json!(41));
    assert_eq!(d["income"], json!(1200.5));
    assert_eq!(d["hh/assets"], json!("radio phone"));
    assert_eq!(d["hh/location"], json!("-1.28 36.8 1650 4.5"));
    assert_eq!(d["_geolocation"], json!([-1.28, 36.8]));
    assert_eq!(d["legacy"], json!("old-41"), "undeclared fields are kept");
    assert_eq!(d["hh/member"][0]["hh/member/mname"], json!("Ann"));
    assert_eq!(d["hh/member"][0]["hh/member/mage"], json!(41));
    assert_eq!(
        d["hh/member"][0]["hh/member/visit_log"][1]["hh/member/visit_log/vdate"],
        json!("2026-02-01")
    );
    assert_eq!(one["attachmentsPresent"], json!(1));
    assert_eq!(one["reviewState"], Value::Null);

    // Review states: checked, applied, audited; a viewer may not.
    let patch = |state: Value, who: &'static str| {
        c.patch(e.form("/submissions/uuid:c1"))
            .basic_auth(who, Some(PASSWORD))
            .json(&json!({"reviewState": state}))
            .send()
    };
    let r = patch(json!("approved"), "alice").await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(
        r.json::<Value>().await.unwrap()["reviewState"],
        json!("approved")
    );
    let r = patch(json!("great"), "alice").await.unwrap();
    assert_eq!(r.status(), 400);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["code"], json!("submission.review_state"));
    let bob: Value = c
        .get(e.url("/v1/users/current"))
        .basic_auth("bob", Some(PASSWORD))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let r = c
        .post(e.url(&format!(
            "/v1/projects/{}/assignments/viewer/{}",
            e.pid,
            bob["id"].as_i64().unwrap()
        )))
        .basic_auth("alice", Some(PASSWORD))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(patch(json!("rejected"), "bob").await.unwrap().status(), 403);
    patch(json!("hasIssues"), "alice").await.unwrap();
    patch(json!("approved"), "alice").await.unwrap();

    csv_export(e).await;
    zip_export(e).await;
    odata(e).await;
    fitting_form_export(e).await;
}

/// Two versions of a small form; v2 drops `old` and adds the repeat `kid`.
fn fit_form(version: u32) -> String {
    let (fields, binds) = if version == 1 {
        (
            "<a/><old/><g><b/></g>",
            "<bind nodeset=\"/fit/old\" type=\"string\"/>",
        )
    } else {
        (
            "<a/><g><b/></g><kid jr:template=\"\"><k/></kid>",
            "<bind nodeset=\"/fit/kid/k\" type=\"string\"/>",
        )
    };
    format!(
        "<h:html xmlns=\"http://www.w3.org/2002/xforms\" xmlns:h=\"http://www.w3.org/1999/xhtml\" \
         xmlns:jr=\"http://openrosa.org/javarosa\"><h:head><h:title>Fit</h:title><model><instance>\
         <fit id=\"fit\" version=\"{version}\">{fields}<meta><instanceID/></meta></fit></instance>\
         <bind nodeset=\"/fit/a\" type=\"string\"/><bind nodeset=\"/fit/g/b\" type=\"string\"/>{binds}\
         <bind nodeset=\"/fit/meta/instanceID\" type=\"string\"/></model></h:head><h:body>\
         <repeat nodeset=\"/fit/kid\"/></h:body></h:html>"
    )
}

/// A form whose submissions all fit their versions is exported without the pass that looks for
/// undeclared fields, and the file is the same as with it: every version's columns, the repeat
/// column, the values. A submission that does not fit makes the next export find its field.
async fn fitting_form_export(e: &Env) {
    let c = client();
    let publish = |xml: String, path: String| {
        c.post(e.url(&path))
            .basic_auth("alice", Some(PASSWORD))
            .header("content-type", "application/xml")
            .body(xml)
            .send()
    };
    let r = publish(
        fit_form(1),
        format!("/v1/projects/{}/forms?publish=true", e.pid),
    )
    .await
    .unwrap();
    assert_eq!(r.status(), 200, "{:?}", r.text().await);
    let fit = |v: u32, id: &str, body: &str| {
        format!(
            "<fit id=\"fit\" version=\"{v}\">{body}<meta><instanceID>{id}</instanceID></meta></fit>"
        )
    };
    submit(
        e,
        &fit(1, "uuid:f1", "<a>one</a><old>was</old><g><b>x</b></g>"),
        None,
    )
    .await;
    let r = publish(
        fit_form(2),
        format!("/v1/projects/{}/forms/fit/draft", e.pid),
    )
    .await
    .unwrap();
    assert_eq!(r.status(), 200, "{:?}", r.text().await);
    let r = c
        .post(e.url(&format!("/v1/projects/{}/forms/fit/draft/publish", e.pid)))
        .basic_auth("alice", Some(PASSWORD))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "{:?}", r.text().await);
    submit(
        e,
        &fit(
            2,
            "uuid:f2",
            "<a>two</a><g><b>y</b></g><kid><k>1</k></kid><kid><k>2</k></kid>",
        ),
        None,
    )
    .await;
    let url = e.url(&format!("/v1/projects/{}/forms/fit/submissions.csv", e.pid));
    let (_, body) = download(&url).await;
    let (header, rows) = parse_csv(&body);
    assert_eq!(
        header[..6],
        [
            "SubmissionDate",
            "a",
            "g-b",
            "SET-OF-kid",
            "meta-instanceID",
            "old"
        ],
        "{header:?}"
    );
    assert!(!header.iter().any(|h| h == "extra"));
    assert_eq!(rows.len(), 2);
    assert_eq!(cell(&header, &rows[0], "a"), "two");
    assert_eq!(cell(&header, &rows[0], "SET-OF-kid"), "uuid:f2/kid");
    assert_eq!(cell(&header, &rows[1], "old"), "was");
    assert_eq!(cell(&header, &rows[1], "g-b"), "x");

    // A device sends an element no version declares: the next export has its column.
    submit(
        e,
        &fit(
            2,
            "uuid:f3",
            "<a>three</a><g><b>z</b></g><extra>kept</extra>",
        ),
        None,
    )
    .await;
    let (_, body) = download(&url).await;
    let (header, rows) = parse_csv(&body);
    assert_eq!(rows.len(), 3);
    assert_eq!(cell(&header, &rows[0], "extra"), "kept");
    assert_eq!(cell(&header, &rows[1], "extra"), "");
}

async fn trash_and_purge(e: &Env) {
    let c = client();
    // Delete to the trash, list it, restore it, delete again; the purge task then destroys it.
    let del = c
        .delete(e.form("/submissions/uuid:c2"))
        .basic_auth("alice", Some(PASSWORD))
        .send()
        .await
        .unwrap();
    assert_eq!(del.status(), 200);
    assert_eq!(
        get_json(&e.form("/submissions"))
            .await
            .as_array()
            .unwrap()
            .len(),
        2
    );
    let trash = get_json(&e.form("/submissions?deleted=true")).await;
    assert_eq!(trash[0]["instanceId"], json!("uuid:c2"));
    assert!(trash[0]["deletedAt"].is_string());
    let r = c
        .get(e.form("/submissions/uuid:c2"))
        .basic_auth("alice", Some(PASSWORD))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    let r = c
        .post(e.form("/submissions/uuid:c2/restore"))
        .basic_auth("alice", Some(PASSWORD))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(
        get_json(&e.form("/submissions"))
            .await
            .as_array()
            .unwrap()
            .len(),
        3
    );
    let r = c
        .delete(e.form("/submissions/uuid:c2"))
        .basic_auth("bob", Some(PASSWORD))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403, "a viewer cannot delete");
    c.delete(e.form("/submissions/uuid:c2"))
        .basic_auth("alice", Some(PASSWORD))
        .send()
        .await
        .unwrap();
    // purge_after_days = 0 and a 6 s interval: gone within a few runs, for good. (A 1 s interval
    // could purge the first deletion before the restore above, on a loaded machine.)
    let mut purged = false;
    for _ in 0..200 {
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        if get_json(&e.form("/submissions?deleted=true"))
            .await
            .as_array()
            .unwrap()
            .is_empty()
        {
            purged = true;
            break;
        }
    }
    assert!(purged, "the purge task did not run");
    let r = c
        .post(e.form("/submissions/uuid:c2/restore"))
        .basic_auth("alice", Some(PASSWORD))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404, "a purged submission cannot be restored");

    // Audited: review, delete, restore, export, purge.
    let log = audit_actions(e).await;
    for action in [
        "submission.update",
        "submission.delete",
        "submission.restore",
        "form.submission.export",
        "submission.purge",
    ] {
        assert!(
            log.iter().any(|a| a == action),
            "{action} not audited: {log:?}"
        );
    }
}

/// Audit actions, as an administrator reads them (`GET /v1/audits`).
async fn audit_actions(e: &Env) -> Vec<String> {
    let env: Vec<(&str, &str)> = e
        .env
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    let admin = crate::harness::admin_session(&e.srv, e.dir.path(), &env, "admin").await;
    let v: Value = client()
        .get(e.url("/v1/audits?limit=1000"))
        .bearer_auth(&admin)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    v.as_array()
        .unwrap()
        .iter()
        .filter_map(|a| a["action"].as_str().map(str::to_owned))
        .collect()
}

async fn download(url: &str) -> (reqwest::header::HeaderMap, Vec<u8>) {
    let r = client()
        .get(url)
        .basic_auth("alice", Some(PASSWORD))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "{url}");
    let h = r.headers().clone();
    (h, r.bytes().await.unwrap().to_vec())
}

fn parse_csv(bytes: &[u8]) -> (Vec<String>, Vec<Vec<String>>) {
    let mut r = csv::Reader::from_reader(bytes);
    let header = r.headers().unwrap().iter().map(str::to_owned).collect();
    let rows = r
        .records()
        .map(|rec| rec.unwrap().iter().map(str::to_owned).collect())
        .collect();
    (header, rows)
}

fn cell<'a>(header: &[String], row: &'a [String], name: &str) -> &'a str {
    let i = header
        .iter()
        .position(|h| h == name)
        .unwrap_or_else(|| panic!("no column {name} in {header:?}"));
    &row[i]
}

async fn csv_export(e: &Env) {
    let (h, body) = download(&e.form("/submissions.csv")).await;
    assert!(h["content-type"].to_str().unwrap().starts_with("text/csv"));
    let (header, rows) = parse_csv(&body);
    assert_eq!(header.first().map(String::as_str), Some("SubmissionDate"));
    assert_eq!(header.last().map(String::as_str), Some("KEY"));
    assert_eq!(rows.len(), 3);
    let by_key = |k: &str| rows.iter().find(|r| cell(&header, r, "KEY") == k).unwrap();
    let c1 = by_key("uuid:c1");
    assert_eq!(cell(&header, c1, "name"), "Ann & Bo");
    assert_eq!(cell(&header, c1, "age"), "41");
    assert_eq!(cell(&header, c1, "income"), "1200.50");
    assert_eq!(cell(&header, c1, "hh-location-Latitude"), "-1.28");
    assert_eq!(cell(&header, c1, "hh-location-Longitude"), "36.8");
    assert_eq!(cell(&header, c1, "hh-location-Altitude"), "1650");
    assert_eq!(cell(&header, c1, "hh-location-Accuracy"), "4.5");
    assert_eq!(cell(&header, c1, "hh-assets"), "radio phone");
    assert_eq!(cell(&header, c1, "SET-OF-member"), "uuid:c1/hh/member");
    assert_eq!(cell(&header, c1, "meta-instanceID"), "uuid:c1");
    assert_eq!(cell(&header, c1, "legacy"), "old-41");
    assert_eq!(cell(&header, c1, "ReviewState"), "approved");
    assert_eq!(cell(&header, c1, "AttachmentsPresent"), "1");
    assert_eq!(cell(&header, c1, "AttachmentsExpected"), "1");
    assert_eq!(cell(&header, c1, "SubmitterName"), "alice");
    assert_eq!(cell(&header, c1, "FormVersion"), "3");
    assert_eq!(cell(&header, c1, "Edits"), "0");
    assert_eq!(
        cell(&header, by_key("uuid:c2"), "name"),
        "Cy, \"the\" second"
    );
    assert_eq!(cell(&header, by_key("uuid:c3"), "name"), "Dee\nline two");
    assert_eq!(cell(&header, by_key("uuid:c2"), "SET-OF-member"), "");
    // A $filter narrows the export.
    let (_, body) = download(&format!(
        "{}?%24filter=__system%2FreviewState%20eq%20%27approved%27",
        e.form("/submissions.csv")
    ))
    .await;
    assert_eq!(parse_csv(&body).1.len(), 1);
    // Central's options: bare names, select-multiples split into 0/1 columns, declared fields only.
    let (_, body) = download(&format!(
        "{}?groupPaths=false&splitSelectMultiples=true&deletedFields=false",
        e.form("/submissions.csv")
    ))
    .await;
    let (header, rows) = parse_csv(&body);
    let c1 = rows
        .iter()
        .find(|r| cell(&header, r, "KEY") == "uuid:c1")
        .unwrap();
    assert_eq!(cell(&header, c1, "assets"), "radio phone");
    assert_eq!(cell(&header, c1, "assets/radio"), "1");
    assert_eq!(cell(&header, c1, "assets/phone"), "1");
    assert_eq!(cell(&header, c1, "location-Latitude"), "-1.28");
    assert!(
        !header.iter().any(|h| h == "legacy" || h == "hh-assets"),
        "{header:?}"
    );
    let r = client()
        .get(format!("{}?groupPaths=maybe", e.form("/submissions.csv")))
        .basic_auth("alice", Some(PASSWORD))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let r = client()
        .get(format!(
            "{}?%24filter=name%20eq%20%27x%27",
            e.form("/submissions.csv")
        ))
        .basic_auth("alice", Some(PASSWORD))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
}

async fn zip_export(e: &Env) {
    let (h, body) = download(&e.form("/submissions.csv.zip")).await;
    assert_eq!(h["content-type"], "application/zip");
    let mut z = zip::ZipArchive::new(std::io::Cursor::new(body)).unwrap();
    let mut names: Vec<String> = z.file_names().map(|n| n.unwrap().into_owned()).collect();
    names.sort();
    assert_eq!(
        names,
        vec![
            "census-member.csv",
            "census-visit_log.csv",
            "census.csv",
            "media/photo-41.jpg"
        ]
    );
    let mut read = |name: &str| {
        let mut f = z.by_name(name).unwrap();
        let mut buf = Vec::new();
        f.read_to_end(&mut buf).unwrap();
        buf
    };
    assert_eq!(read("media/photo-41.jpg"), PHOTO);
    let (main_h, main) = parse_csv(&read("census.csv"));
    let (csv_h, csv_rows) = {
        let (_, body) = download(&e.form("/submissions.csv")).await;
        parse_csv(&body)
    };
    assert_eq!(main_h, csv_h, "the ZIP's main table is the CSV export");
    assert_eq!(main, csv_rows);
    let (mh, members) = parse_csv(&read("census-member.csv"));
    assert_eq!(
        mh,
        vec!["mname", "mage", "SET-OF-visit_log", "PARENT_KEY", "KEY"]
    );
    let keys: Vec<(&str, &str, &str)> = members
        .iter()
        .map(|r| (r[0].as_str(), r[3].as_str(), r[4].as_str()))
        .collect();
    assert_eq!(
        keys,
        vec![
            ("Eve", "uuid:c3", "uuid:c3/hh/member[1]"),
            ("Ann", "uuid:c1", "uuid:c1/hh/member[1]"),
            ("Ben", "uuid:c1", "uuid:c1/hh/member[2]"),
        ]
    );
    let (vh, visits) = parse_csv(&read("census-visit_log.csv"));
    assert_eq!(vh, vec!["vdate", "PARENT_KEY", "KEY"]);
    assert_eq!(
        visits,
        vec![
            vec![
                "2026-03-03",
                "uuid:c3/hh/member[1]",
                "uuid:c3/hh/member[1]/visit_log[1]"
            ],
            vec![
                "2026-01-01",
                "uuid:c1/hh/member[1]",
                "uuid:c1/hh/member[1]/visit_log[1]"
            ],
            vec![
                "2026-02-01",
                "uuid:c1/hh/member[1]",
                "uuid:c1/hh/member[1]/visit_log[2]"
            ],
        ]
    );
    let (_, body) = download(&format!(
        "{}?attachments=false",
        e.form("/submissions.csv.zip")
    ))
    .await;
    let z = zip::ZipArchive::new(std::io::Cursor::new(body)).unwrap();
    assert!(z.file_names().all(|n| !n.unwrap().starts_with("media/")));
}

async fn odata(e: &Env) {
    let svc = e.form(".svc");
    let doc = get_json(&svc).await;
    let names: Vec<&str> = doc["value"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        vec![
            "Submissions",
            "Submissions.hh.member",
            "Submissions.hh.member.visit_log"
        ]
    );
    assert!(
        doc["@odata.context"]
            .as_str()
            .unwrap()
            .ends_with("census.svc/$metadata")
    );
    let (h, meta) = download(&format!("{svc}/$metadata")).await;
    assert_eq!(h["odata-version"], "4.0");
    let meta = String::from_utf8(meta).unwrap();
    for needle in [
        "<EntityType Name=\"Submissions\">",
        "<EntityType Name=\"Submissions.hh.member\">",
        "<Property Name=\"__Submissions-hh-member-id\" Type=\"Edm.String\"/>",
        "<Property Name=\"age\" Type=\"Edm.Int64\"/>",
        "<Property Name=\"location\" Type=\"Edm.GeographyPoint\"/>",
        "<NavigationProperty Name=\"member\"",
    ] {
        assert!(meta.contains(needle), "{needle} missing from $metadata");
    }

    // Paging: $top + $count, then follow @odata.nextLink to the end.
    let page = get_json(&format!("{svc}/Submissions?$top=2&$count=true")).await;
    assert_eq!(page["@odata.count"], json!(3));
    assert_eq!(page["value"].as_array().unwrap().len(), 2);
    let first = &page["value"][0];
    assert_eq!(first["__id"], json!("uuid:c3"));
    assert_eq!(first["age"], json!(25));
    assert_eq!(first["__system"]["submitterName"], json!("alice"));
    assert_eq!(
        first["hh"]["location"],
        json!({"type": "Point", "coordinates": [36.8, -1.28, 1650.0], "properties": {"accuracy": 4.5}})
    );
    let keys: Vec<&String> = page.as_object().unwrap().keys().collect();
    assert_eq!(
        keys,
        vec!["value", "@odata.context", "@odata.nextLink", "@odata.count"]
    );
    let next = page["@odata.nextLink"].as_str().unwrap();
    assert!(next.contains("%24skiptoken=01"), "{next}");
    let rest = get_json(next).await;
    let ids: Vec<&str> = rest["value"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["__id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, vec!["uuid:c1"]);
    assert!(rest.get("@odata.nextLink").is_none());
    let skipped = get_json(&format!("{svc}/Submissions?$skip=1&$top=1")).await;
    assert_eq!(skipped["value"][0]["__id"], json!("uuid:c2"));
    // Skipped rows are counted after the filter (they are passed over without decryption).
    let filtered = get_json(&format!(
        "{svc}/Submissions?$skip=1&$filter=not (__id eq 'uuid:c2')&$count=true"
    ))
    .await;
    let ids: Vec<&str> = filtered["value"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["__id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, vec!["uuid:c1"], "{filtered}");
    assert_eq!(filtered["@odata.count"], json!(2));
    let past = get_json(&format!("{svc}/Submissions?$skip=3&$count=true")).await;
    assert_eq!(past["value"], json!([]));
    assert_eq!(past["@odata.count"], json!(3));

    // $filter on system fields, $select, $wkt.
    let approved = get_json(&format!(
        "{svc}/Submissions?$filter=__system/reviewState eq 'approved'&$select=name,hh/location,__system/reviewState&$wkt=true"
    ))
    .await;
    assert_eq!(
        approved["value"],
        json!([{"__id": "uuid:c1", "__system": {"reviewState": "approved"}, "name": "Ann & Bo",
                "hh": {"location": "POINT (36.8 -1.28 1650)"}}])
    );
    let none = get_json(&format!(
        "{svc}/Submissions?$filter=__system/submissionDate lt 2020-01-01 and not (__id eq 'x')&$count=true"
    ))
    .await;
    assert_eq!(none["@odata.count"], json!(0));
    for (bad, status) in [
        ("$filter=name eq 'x'", 400),
        ("$filter=__id eq", 400),
        ("$select=nope", 400),
        ("$select=hh/member/mname", 400),
        ("$top=-1", 400),
        ("$orderby=__id", 501),
    ] {
        let r = client()
            .get(format!("{svc}/Submissions?{bad}"))
            .basic_auth("alice", Some(PASSWORD))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), status, "{bad}");
        let body: Value = r.json().await.unwrap();
        assert!(
            body["message"].as_str().is_some_and(|m| !m.is_empty()),
            "{bad}"
        );
    }

    // Repeat tables with their join keys; nested repeats reference their parent row.
    let members = get_json(&format!("{svc}/Submissions.hh.member?$count=true")).await;
    assert_eq!(members["@odata.count"], json!(3));
    let rows = members["value"].as_array().unwrap();
    let ann = rows.iter().find(|r| r["mname"] == json!("Ann")).unwrap();
    assert_eq!(ann["__Submissions-id"], json!("uuid:c1"));
    assert_eq!(ann["mage"], json!(41));
    let visits = get_json(&format!(
        "{svc}/Submissions.hh.member.visit_log?$filter=$root/Submissions/__id eq 'uuid:c1'"
    ))
    .await;
    let v = visits["value"].as_array().unwrap();
    assert_eq!(v.len(), 2);
    assert!(
        v.iter()
            .all(|r| r["__Submissions-hh-member-id"] == ann["__id"])
    );
    let page = get_json(&format!("{svc}/Submissions.hh.member?$top=1")).await;
    let next = page["@odata.nextLink"].as_str().unwrap();
    let page2 = get_json(next).await;
    assert_eq!(page2["value"].as_array().unwrap().len(), 1);
    assert_ne!(page2["value"][0]["__id"], page["value"][0]["__id"]);
    let r = client()
        .get(format!("{svc}/Submissions"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
}

/// pyodk from PyPI, configured with a user and password, against the running server.
async fn pyodk_against_server(e: &Env) {
    let have = std::process::Command::new("python3")
        .args([
            "-c",
            "import importlib.metadata as m, sys; sys.stdout.write(m.version('pyodk'))",
        ])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned());
    if have.as_deref() != Some(PYODK) {
        fieldvault_testkit::unavailable::<()>(&format!(
            "pyodk {PYODK} (pip install pyodk=={PYODK})"
        ));
        return;
    }
    let conf = e.dir.path().join("pyodk_config.toml");
    std::fs::write(
        &conf,
        format!(
            "[central]\nbase_url = \"{}\"\nusername = \"alice\"\npassword = \"{PASSWORD}\"\ndefault_project_id = {}\n",
            e.srv.base, e.pid
        ),
    )
    .unwrap();
    let script = r#"
import json, sys
from pyodk.client import Client
with Client(config_path=sys.argv[1], cache_path=sys.argv[2]) as client:
    forms = [f.xmlFormId for f in client.forms.list()]
    table = client.submissions.get_table(form_id="census", count=True, top=2)
    repeat = client.submissions.get_table(form_id="census", table_name="Submissions.hh.member")
    one = client.submissions.get(form_id="census", instance_id="uuid:c1")
    subs = client.submissions.list(form_id="census")
    print(json.dumps({
        "forms": forms,
        "count": table["@odata.count"],
        "first": table["value"][0],
        "members": len(repeat["value"]),
        "one": {"instanceId": one.instanceId, "submitterId": one.submitterId,
                "reviewState": one.reviewState},
        "listed": sorted(s.instanceId for s in subs),
    }))
"#;
    let out = std::process::Command::new("python3")
        .arg("-c")
        .arg(script)
        .arg(&conf)
        .arg(e.dir.path().join("pyodk_cache.toml"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "pyodk failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    // `fit` is the small form of `fitting_form_export`.
    assert_eq!(v["forms"], json!(["census", "fit"]));
    assert_eq!(v["count"], json!(3));
    assert_eq!(v["first"]["__id"], json!("uuid:c3"));
    assert_eq!(v["first"]["name"], json!("Dee\nline two"));
    assert_eq!(v["members"], json!(3));
    assert_eq!(v["one"]["instanceId"], json!("uuid:c1"));
    assert_eq!(v["one"]["reviewState"], json!("approved"));
    assert!(v["one"]["submitterId"].is_i64());
    assert_eq!(v["listed"], json!(["uuid:c1", "uuid:c2", "uuid:c3"]));
}
