//! The KoboToolbox API v2 subset over real HTTP, driven by a KoboToolbox client from PyPI
//! (`kobo-api-v2`, installed by scripts/test): assets, data with query/limit/start, async exports
//! (CSV and XLSX parsed back and compared field by field), validation statuses, bulk edit and
//! delete, permissions, and redaction verified by decrypting every stored copy.

use std::path::Path;

use fieldvault_crypto::SecretString;
use fieldvault_store::submissions::{attachment_aad, xml_aad};
use fieldvault_store::{MasterKeySource, StorageSettings};
use reqwest::multipart::{Form, Part};
use serde_json::{Value, json};

use crate::harness::{PASSWORD, Server, client, create_user, files_under};

const MARKER: &str = "MARKER-ZQX-7781";

const XFORM: &str = r#"<h:html xmlns="http://www.w3.org/2002/xforms" xmlns:h="http://www.w3.org/1999/xhtml" xmlns:jr="http://openrosa.org/javarosa" xmlns:orx="http://openrosa.org/xforms"><h:head><h:title>Household</h:title><model><instance><data id="hh" version="1"><name/><age/><grp><pet/><langs/><photo/></grp><rep jr:template=""><who/></rep><meta><instanceID/><instanceName/></meta></data></instance><bind nodeset="/data/name" type="string"/><bind nodeset="/data/age" type="int"/><bind nodeset="/data/grp/pet" type="string"/><bind nodeset="/data/grp/langs" type="string"/><bind nodeset="/data/grp/photo" type="binary"/><bind nodeset="/data/rep/who" type="string"/><bind nodeset="/data/meta/instanceID" type="string" readonly="true()" jr:preload="uid"/><bind nodeset="/data/meta/instanceName" type="string" calculate="/data/name"/></model></h:head><h:body><input ref="/data/name"><label>Name</label></input><input ref="/data/age"><label>Age</label></input><group ref="/data/grp"><label>Group</label><select1 ref="/data/grp/pet"><label>Pet</label><item><label>Dog</label><value>dog</value></item><item><label>Cat</label><value>cat</value></item></select1><select ref="/data/grp/langs"><label>Languages</label><item><label>English</label><value>en</value></item><item><label>French</label><value>fr</value></item></select><upload ref="/data/grp/photo" mediatype="image/*"><label>Photo</label></upload></group><group ref="/data/rep"><label>People</label><repeat nodeset="/data/rep"><input ref="/data/rep/who"><label>Who</label></input></repeat></group></h:body></h:html>"#;

/// (name, age, pet, langs, photo, people)
/// One submission's answers.
type Row = (
    &'static str,
    &'static str,
    &'static str,
    &'static str,
    Option<&'static str>,
    &'static [&'static str],
);

const ROWS: [Row; 3] = [
    (
        "MARKER-ZQX-7781 Ana",
        "30",
        "dog",
        "en fr",
        Some("p1.jpg"),
        &["x1", "x2"],
    ),
    ("Bo", "41", "cat", "fr", None, &[]),
    ("Cy", "25", "dog", "en", None, &["y1"]),
];

fn instance(i: usize) -> String {
    let (name, age, pet, langs, photo, people) = ROWS[i];
    let reps: String = people
        .iter()
        .map(|w| format!("<rep><who>{w}</who></rep>"))
        .collect();
    format!(
        r#"<data xmlns:orx="http://openrosa.org/xforms" id="hh" version="1"><name>{name}</name><age>{age}</age><grp><pet>{pet}</pet><langs>{langs}</langs><photo>{}</photo></grp>{reps}<orx:meta><orx:instanceID>uuid:kobo-{i}</orx:instanceID><orx:instanceName>{name}</orx:instanceName></orx:meta></data>"#,
        photo.unwrap_or("")
    )
}

/// The `kobo-api-v2` client run as a script: prints one JSON object.
const CLIENT: &str = r#"
import json, sys
from kobo.client import KoboClient
base, token, uid, outdir = sys.argv[1:5]
c = KoboClient(token, base_url=base)
res = {}
res["surveys"] = c.get_surveys()
detail = c.get_survey(uid)
res["xpaths"] = [r.get("$xpath") for r in detail["content"]["survey"]]
res["choices"] = [[r["list_name"], r["name"]] for r in detail["content"]["choices"]]
res["content_kind"] = c.get_survey_content(uid)["kind"]
res["query_page"] = c._get(f"/api/v2/assets/{uid}/data/", query=json.dumps({"grp/pet": "dog"}), limit=1, start=1)
res["sorted"] = c._get(f"/api/v2/assets/{uid}/data.json", limit=2, start=0,
                       sort=json.dumps({"_id": -1}), fields=json.dumps(["name", "age"]))
e1 = c.trigger_export(uid, type="csv", lang="_xml", multiple_select="both", hierarchy_in_labels=True, group_sep="/")
p1 = c.download_export(uid, e1, outdir + "/export.csv", poll_interval=0.2, timeout=60)
e2 = c.trigger_export(uid, type="xls", lang="_default", multiple_select="summary")
p2 = c.download_export(uid, e2, outdir + "/export.xlsx", poll_interval=0.2, timeout=60)
res["exports"] = [str(p1), str(p2)]
print(json.dumps(res))
"#;

fn kobo_client_available() -> bool {
    let ok = std::process::Command::new("python3")
        .args(["-c", "import kobo.client"])
        .output()
        .is_ok_and(|o| o.status.success());
    ok || fieldvault_testkit::unavailable::<()>("kobo-api-v2 (pip install kobo-api-v2==0.1.0)")
        .is_some()
}

async fn json_of(r: reqwest::Response) -> (u16, Value) {
    let s = r.status().as_u16();
    let t = r.text().await.unwrap();
    (s, serde_json::from_str(&t).unwrap_or(Value::String(t)))
}

async fn token(srv: &Server, user: &str) -> String {
    let r = client()
        .get(srv.url("/token/?format=json"))
        .basic_auth(user, Some(PASSWORD))
        .send()
        .await
        .unwrap();
    let (s, v) = json_of(r).await;
    assert_eq!(s, 200, "{v}");
    let t = v["token"].as_str().unwrap().to_owned();
    assert!(
        t.len() == 40
            && t.bytes()
                .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
    );
    t
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kobotoolbox_client_reads_filters_exports_and_redaction_leaves_no_trace() {
    if !kobo_client_available() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let srv = Server::start(dir.path(), &[]);
    create_user(dir.path(), &[], "alice", false);
    create_user(dir.path(), &[], "bob", false);
    let c = client();
    let (_, p) = json_of(
        c.post(srv.url("/v1/projects"))
            .basic_auth("alice", Some(PASSWORD))
            .json(&json!({"name": "Kobo"}))
            .send()
            .await
            .unwrap(),
    )
    .await;
    let pid = p["id"].as_i64().unwrap();
    let (_, bob) = json_of(
        c.get(srv.url("/v1/users/current"))
            .basic_auth("bob", Some(PASSWORD))
            .send()
            .await
            .unwrap(),
    )
    .await;
    let r = c
        .post(srv.url(&format!(
            "/v1/projects/{pid}/assignments/viewer/{}",
            bob["id"]
        )))
        .basic_auth("alice", Some(PASSWORD))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let r = c
        .post(srv.url(&format!("/v1/projects/{pid}/forms?publish=true")))
        .basic_auth("alice", Some(PASSWORD))
        .body(XFORM)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
    for (i, answers) in ROWS.iter().enumerate() {
        let mut form = Form::new().part(
            "xml_submission_file",
            Part::bytes(instance(i).into_bytes()).file_name("submission.xml"),
        );
        if let Some(photo) = answers.4 {
            form = form.part(
                "p1",
                Part::bytes(format!("JPEG {MARKER} pixels").into_bytes()).file_name(photo),
            );
        }
        let r = c
            .post(srv.url(&format!("/v1/projects/{pid}/submission")))
            .header("X-OpenRosa-Version", "1.0")
            .basic_auth("alice", Some(PASSWORD))
            .multipart(form)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 201, "{}", r.text().await.unwrap());
    }

    // /token/ with Basic: a KoboToolbox-shaped key that works as `Token`.
    let alice = token(&srv, "alice").await;
    let bobt = token(&srv, "bob").await;
    let r = c.get(srv.url("/token/")).send().await.unwrap();
    assert_eq!(r.status(), 401);
    let (s, assets) = json_of(
        c.get(srv.url("/api/v2/assets.json"))
            .header("Authorization", format!("Token {alice}"))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(s, 200, "{assets}");
    assert_eq!(assets["count"], 1);
    let uid = assets["results"][0]["uid"].as_str().unwrap().to_owned();
    assert!(uid.starts_with('a') && uid.len() == 22);
    let base = srv.url("");
    let base = base.trim_end_matches('/');
    let data = |path: &str| format!("{base}/api/v2/assets/{uid}{path}");

    // The PyPI client: assets, content, data with query/limit/start/sort/fields, two exports.
    let out = tempfile::tempdir().unwrap();
    let run = std::process::Command::new("python3")
        .args([
            "-c",
            CLIENT,
            base,
            &alice,
            &uid,
            out.path().to_str().unwrap(),
        ])
        .output()
        .unwrap();
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    let res: Value = serde_json::from_slice(&run.stdout).unwrap();
    let surveys = res["surveys"].as_array().unwrap();
    assert_eq!(surveys.len(), 1);
    assert_eq!(surveys[0]["uid"], uid.as_str());
    assert_eq!(surveys[0]["name"], "Household");
    assert_eq!(surveys[0]["asset_type"], "survey");
    assert_eq!(surveys[0]["deployment__active"], true);
    assert_eq!(surveys[0]["deployment__submission_count"], 3);
    assert_eq!(surveys[0]["deployment__encrypted"], false);
    assert_eq!(surveys[0]["data"], data("/data/").as_str());
    assert_eq!(
        res["xpaths"],
        json!([
            "name",
            "age",
            "grp",
            "grp/pet",
            "grp/langs",
            "grp/photo",
            null,
            "rep",
            "rep/who",
            null
        ])
    );
    assert_eq!(
        res["choices"],
        json!([
            ["pet", "dog"],
            ["pet", "cat"],
            ["langs", "en"],
            ["langs", "fr"]
        ])
    );
    assert_eq!(res["content_kind"], "asset.content");
    let qp = &res["query_page"];
    assert_eq!(qp["count"], 2, "{qp}");
    assert_eq!(qp["results"].as_array().unwrap().len(), 1);
    assert_eq!(qp["results"][0]["name"], "Cy");
    assert_eq!(qp["results"][0]["rep"], json!([{"rep/who": "y1"}]));
    assert_eq!(qp["results"][0]["_submitted_by"], "alice");
    assert!(qp["next"].is_null());
    assert!(qp["previous"].as_str().unwrap().contains("start=0"));
    let sorted = res["sorted"]["results"].as_array().unwrap();
    assert_eq!(sorted.len(), 2);
    assert_eq!(sorted[0]["name"], "Cy");
    assert_eq!(sorted[1]["name"], "Bo");
    let keys: Vec<&str> = sorted[0]
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(
        keys,
        [
            "name",
            "age",
            "_id",
            "_uuid",
            "meta/rootUuid",
            "_validation_status"
        ]
    );
    assert!(res["sorted"]["next"].as_str().unwrap().contains("start=2"));

    // The full records, for comparing exports.
    let (_, all) = json_of(
        c.get(data("/data/"))
            .header("Authorization", format!("Token {alice}"))
            .send()
            .await
            .unwrap(),
    )
    .await;
    let recs = all["results"].as_array().unwrap().clone();
    assert_eq!(recs.len(), 3);
    assert_eq!(recs[0]["grp/langs"], "en fr");
    assert_eq!(recs[0]["_attachments"][0]["media_file_basename"], "p1.jpg");
    assert_eq!(recs[0]["meta/instanceID"], "uuid:kobo-0");
    assert_eq!(recs[0]["_uuid"], "kobo-0");
    assert!(
        recs[1].get("grp/photo").is_none(),
        "empty leaves are left out"
    );
    // Every way of reading a page gives the same records: by position (no query), by scanning
    // (a query that matches everything), a query on attachments (read before matching), sorted.
    let page = |params: Vec<(&'static str, String)>| {
        let url = reqwest::Url::parse_with_params(&data("/data/"), &params).unwrap();
        let r = c.get(url).header("Authorization", format!("Token {alice}"));
        async move { json_of(r.send().await.unwrap()).await.1 }
    };
    let exists = r#"{"_id":{"$exists":true}}"#.to_owned();
    let by_position = page(vec![("start", "1".into()), ("limit", "2".into())]).await;
    let scanned = page(vec![
        ("start", "1".into()),
        ("limit", "2".into()),
        ("query", exists),
    ])
    .await;
    for p in [&by_position, &scanned] {
        assert_eq!(p["count"], 3, "{p}");
        assert_eq!(p["results"], json!(recs[1..3]), "{p}");
    }
    let past_end = page(vec![("start", "3".into())]).await;
    assert_eq!(
        (past_end["count"].clone(), past_end["results"].clone()),
        (json!(3), json!([]))
    );
    let with_photo = page(vec![(
        "query",
        r#"{"_attachments":{"$elemMatch":{"media_file_basename":"p1.jpg"}}}"#.into(),
    )])
    .await;
    assert_eq!(with_photo["count"], 1, "{with_photo}");
    assert_eq!(with_photo["results"], json!(recs[..1]));
    let last_sorted = page(vec![
        ("sort", r#"{"_id":-1}"#.into()),
        ("start", "2".into()),
        ("limit", "1".into()),
    ])
    .await;
    assert_eq!(last_sorted["results"], json!(recs[..1]), "{last_sorted}");

    let file = c
        .get(recs[0]["_attachments"][0]["download_url"].as_str().unwrap())
        .header("Authorization", format!("Token {alice}"))
        .send()
        .await
        .unwrap();
    assert_eq!(file.status(), 200);
    assert_eq!(file.text().await.unwrap(), format!("JPEG {MARKER} pixels"));
    let ids: Vec<i64> = recs.iter().map(|r| r["_id"].as_i64().unwrap()).collect();

    // CSV: `;`-separated, paths with the group separator, select_multiple split.
    let mut rd = csv::ReaderBuilder::new()
        .delimiter(b';')
        .from_path(out.path().join("export.csv"))
        .unwrap();
    let header: Vec<String> = rd.headers().unwrap().iter().map(str::to_owned).collect();
    assert_eq!(
        header,
        [
            "name",
            "age",
            "grp/pet",
            "grp/langs",
            "grp/langs/en",
            "grp/langs/fr",
            "grp/photo",
            "_id",
            "_uuid",
            "_submission_time",
            "_validation_status",
            "_notes",
            "_status",
            "_submitted_by",
            "__version__",
            "_tags",
            "_index"
        ]
    );
    let rows: Vec<Vec<String>> = rd
        .records()
        .map(|r| r.unwrap().iter().map(str::to_owned).collect())
        .collect();
    assert_eq!(rows.len(), 3);
    for (i, row) in rows.iter().enumerate() {
        let (name, age, pet, langs, photo, _) = ROWS[i];
        let split = |l: &str| {
            if langs.split(' ').any(|x| x == l) {
                "1"
            } else {
                "0"
            }
        };
        assert_eq!(
            row[..7],
            [
                name,
                age,
                pet,
                langs,
                split("en"),
                split("fr"),
                photo.unwrap_or("")
            ]
        );
        assert_eq!(row[7], ids[i].to_string());
        assert_eq!(row[8], format!("kobo-{i}"));
        assert_eq!(row[9], recs[i]["_submission_time"].as_str().unwrap());
        assert_eq!(row[13], "alice");
        assert_eq!(row[14], "1");
        assert_eq!(row[16], (i + 1).to_string());
    }

    // XLSX: labels (default language), select answers as labels, one summary column.
    {
        use calamine::{Data, Reader as _, Xlsx, open_workbook};
        let mut wb: Xlsx<_> = open_workbook(out.path().join("export.xlsx")).unwrap();
        let mut sheet = |name: &str| -> Vec<Vec<String>> {
            wb.worksheet_range(name)
                .unwrap()
                .rows()
                .map(|r| {
                    r.iter()
                        .map(|c| match c {
                            Data::Empty => String::new(),
                            other => other.to_string(),
                        })
                        .collect()
                })
                .collect()
        };
        let cells = sheet("Data");
        assert_eq!(cells[0][..5], ["Name", "Age", "Pet", "Languages", "Photo"]);
        assert_eq!(cells[0][5], "_id");
        assert_eq!(cells.len(), 4);
        fn label(v: &str) -> &str {
            match v {
                "dog" => "Dog",
                "cat" => "Cat",
                "en" => "English",
                "fr" => "French",
                other => other,
            }
        }
        for (i, row) in cells[1..].iter().enumerate() {
            let (name, age, pet, langs, photo, _) = ROWS[i];
            let langs: Vec<&str> = langs.split(' ').map(label).collect();
            assert_eq!(
                row[..5],
                [name, age, label(pet), &langs.join(" "), photo.unwrap_or("")]
            );
            assert_eq!(row[5], ids[i].to_string());
        }
        // The repeat group has a sheet of its own, each row pointing at its submission's row.
        let reps = sheet("rep");
        assert_eq!(
            reps[0][..5],
            [
                "Who",
                "_index",
                "_parent_table_name",
                "_parent_index",
                "_submission__id"
            ]
        );
        let mut want = Vec::new();
        for (i, row) in ROWS.iter().enumerate() {
            for who in row.5 {
                want.push(vec![
                    (*who).to_owned(),
                    (want.len() + 1).to_string(),
                    "Data".to_owned(),
                    (i + 1).to_string(),
                    ids[i].to_string(),
                ]);
            }
        }
        let got: Vec<Vec<String>> = reps[1..].iter().map(|r| r[..5].to_vec()).collect();
        assert_eq!(got, want);
    }

    // Saved export settings and their synchronous files (Excel / Power BI URLs).
    {
        let as_alice =
            |r: reqwest::RequestBuilder| r.header("Authorization", format!("Token {alice}"));
        let settings = json!({"fields_from_all_versions": true, "group_sep": "/",
            "hierarchy_in_labels": true, "lang": "_xml", "multiple_select": "summary",
            "type": "csv"});
        let (s, es) = json_of(
            as_alice(c.post(data("/export-settings/")))
                .json(&json!({"name": "Weekly", "export_settings": settings}))
                .send()
                .await
                .unwrap(),
        )
        .await;
        assert_eq!(s, 201, "{es}");
        let es_uid = es["uid"].as_str().unwrap().to_owned();
        assert!(es_uid.starts_with("es"), "{es}");
        assert_eq!(es["export_settings"]["multiple_select"], "summary");
        // A second setting of the same name, one without export_settings, and a viewer's: refused.
        let (s, v) = json_of(
            as_alice(c.post(data("/export-settings/")))
                .json(&json!({"name": "Weekly", "export_settings": settings}))
                .send()
                .await
                .unwrap(),
        )
        .await;
        assert_eq!(s, 409, "{v}");
        let (s, v) = json_of(
            as_alice(c.post(data("/export-settings/")))
                .json(&json!({"name": "Other"}))
                .send()
                .await
                .unwrap(),
        )
        .await;
        assert_eq!(s, 400, "{v}");
        // A viewer may save a setting of their own, but not change or delete someone else's.
        let as_viewer =
            |r: reqwest::RequestBuilder| r.header("Authorization", format!("Token {bobt}"));
        let (s, mine) = json_of(
            as_viewer(c.post(data("/export-settings/")))
                .json(&json!({"name": "Mine", "export_settings": settings}))
                .send()
                .await
                .unwrap(),
        )
        .await;
        assert_eq!(s, 201, "{mine}");
        let r = as_viewer(c.delete(data(&format!("/export-settings/{es_uid}/"))))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 403);
        let r = as_viewer(c.delete(data(&format!(
            "/export-settings/{}/",
            mine["uid"].as_str().unwrap()
        ))))
        .send()
        .await
        .unwrap();
        assert_eq!(r.status(), 204);
        // The viewer may list and download.
        let (s, list) = json_of(
            as_viewer(c.get(data("/export-settings/")))
                .send()
                .await
                .unwrap(),
        )
        .await;
        assert_eq!((s, list["count"].as_u64()), (200, Some(1)), "{list}");
        let csv_url = list["results"][0]["data_url_csv"]
            .as_str()
            .unwrap()
            .to_owned();
        let r = as_viewer(c.get(&csv_url)).send().await.unwrap();
        assert_eq!(r.status(), 200);
        assert!(
            r.headers()[reqwest::header::CONTENT_TYPE]
                .to_str()
                .unwrap()
                .starts_with("text/csv")
        );
        let text = r.text().await.unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 4, "{text}");
        assert!(
            lines[0].starts_with("name;age;grp/pet;grp/langs;grp/photo;_id"),
            "{}",
            lines[0]
        );
        assert!(lines[1].starts_with(ROWS[0].0), "{}", lines[1]);
        // Within five minutes the same file is served again: no second task.
        let r = as_viewer(c.get(&csv_url)).send().await.unwrap();
        assert_eq!(r.text().await.unwrap(), text);
        let (_, tasks) = json_of(as_viewer(c.get(data("/exports/"))).send().await.unwrap()).await;
        assert_eq!(tasks["count"], 1, "{tasks}");
        // XLSX from the same setting, with the repeat sheet.
        let r = as_alice(c.get(list["results"][0]["data_url_xlsx"].as_str().unwrap()))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        let bytes = r.bytes().await.unwrap();
        {
            use calamine::{Reader as _, Xlsx};
            let mut wb: Xlsx<_> = Xlsx::new(std::io::Cursor::new(bytes.to_vec())).unwrap();
            assert_eq!(wb.sheet_names(), ["Data", "rep"]);
            assert_eq!(wb.worksheet_range("Data").unwrap().rows().count(), 4);
        }
        // Renamed, then deleted.
        let (s, v) = json_of(
            as_alice(c.patch(data(&format!("/export-settings/{es_uid}/"))))
                .json(&json!({"name": "Daily"}))
                .send()
                .await
                .unwrap(),
        )
        .await;
        assert_eq!((s, v["name"].as_str()), (200, Some("Daily")), "{v}");
        assert_eq!(v["export_settings"]["type"], "csv");
        let r = as_alice(c.delete(data(&format!("/export-settings/{es_uid}/"))))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 204);
        let r = as_viewer(c.get(&csv_url)).send().await.unwrap();
        assert_eq!(r.status(), 404);
    }

    // Errors in KoboToolbox's shape.
    let (s, v) = json_of(
        c.get(data("/data/?query=%7Bnope"))
            .header("Authorization", format!("Token {alice}"))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(
        (s, v["query"].as_str()),
        (400, Some("Value must be valid JSON."))
    );
    let (s, v) = json_of(
        c.get(data("/data/?query=%7B%22a%22%3A%7B%22%24eq%22%3A1%7D%7D"))
            .header("Authorization", format!("Token {alice}"))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(s, 400, "{v}");
    let (s, v) = json_of(
        c.get(data("/data/?limit=0"))
            .header("Authorization", format!("Token {alice}"))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(
        (s, v["limit"].as_str()),
        (400, Some("A positive integer is required"))
    );
    let r = c
        .get(srv.url("/api/v2/assets/aAAAAAAAAAAAAAAAAAAAAA/"))
        .header("Authorization", format!("Token {alice}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    let r = c
        .get(srv.url("/api/v2/assets/"))
        .header(
            "Authorization",
            "Token 0000000000000000000000000000000000000000",
        )
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);

    // The viewer reads but cannot delete, edit, validate or redact (403, nothing changes).
    let as_bob = |r: reqwest::RequestBuilder| r.header("Authorization", format!("Token {bobt}"));
    let (s, v) = json_of(as_bob(c.get(data("/data/"))).send().await.unwrap()).await;
    assert_eq!((s, v["count"].as_i64()), (200, Some(3)));
    let sel = json!({"payload": {"submission_ids": [ids[2]]}});
    let r = as_bob(c.delete(data("/data/bulk/")))
        .json(&sel)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    let r = as_bob(c.delete(data(&format!("/data/{}/", ids[2]))))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    let r = as_bob(c.patch(data("/data/bulk/")))
        .json(&json!({"payload": {"submission_ids": [ids[2]], "data": {"age": "1"}}}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    let r = as_bob(c.patch(data(&format!("/data/{}/validation_status/", ids[2]))))
        .json(&json!({"validation_status.uid": "validation_status_approved"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    let r = c
        .post(srv.url(&format!("/v1/projects/{pid}/forms/hh/redactions")))
        .basic_auth("bob", Some(PASSWORD))
        .json(&json!({"fields": ["name"], "scope": {"all": true}}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);

    let as_alice = |r: reqwest::RequestBuilder| r.header("Authorization", format!("Token {alice}"));
    // Validation statuses.
    let (s, v) = json_of(
        as_alice(c.patch(data(&format!("/data/{}/validation_status/", ids[1]))))
            .json(&json!({"validation_status.uid": "validation_status_approved"}))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(
        (
            v["uid"].as_str(),
            v["label"].as_str(),
            v["by_whom"].as_str()
        ),
        (
            Some("validation_status_approved"),
            Some("Approved"),
            Some("alice")
        )
    );
    let r = as_alice(c.patch(data(&format!("/data/{}/validation_status/", ids[1]))))
        .json(&json!({"validation_status.uid": "nope"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let q = urlencode(r#"{"_validation_status.uid":"validation_status_approved"}"#);
    let (_, v) = json_of(
        as_alice(c.get(data(&format!("/data/?query={q}"))))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(v["count"], 1);
    assert_eq!(v["results"][0]["_id"], ids[1]);

    // Bulk edit: a new version, same _id, the old instanceID as deprecatedID.
    let (s, v) = json_of(
        as_alice(c.patch(data("/data/bulk/")))
            .json(&json!({"payload": {"submission_ids": [ids[0]], "data": {"age": "31"}}}))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(
        (v["successes"].as_i64(), v["failures"].as_i64()),
        (Some(1), Some(0))
    );
    assert_eq!(v["results"][0]["root_uuid"], "kobo-0");
    let (_, one) = json_of(
        as_alice(c.get(data(&format!("/data/{}.json", ids[0]))))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(one["age"], "31");
    assert_eq!(one["meta/deprecatedID"], "uuid:kobo-0");
    assert_eq!(one["meta/rootUuid"], "uuid:kobo-0");
    assert_eq!(one["_uuid"], v["results"][0]["uuid"]);
    assert_eq!(one["_attachments"][0]["media_file_basename"], "p1.jpg");

    // Redaction: a dry run counts; the bulk PATCH redacts every version with a keyed hash.
    let (s, dry) = json_of(
        c.post(srv.url(&format!("/v1/projects/{pid}/forms/hh/redactions")))
            .basic_auth("alice", Some(PASSWORD))
            .json(
                &json!({"fields": ["name", "grp/photo"], "scope": {"query": {"grp/pet": "dog"}},
                          "replacement": "hash", "dryRun": true}),
            )
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(s, 200, "{dry}");
    assert_eq!(dry["count"], 2);
    assert_eq!(
        dry["versions"], 3,
        "two versions of the first, one of the third"
    );
    assert_eq!(dry["values"], 5);
    let (_, still) = json_of(
        as_alice(c.get(data(&format!("/data/{}/", ids[0]))))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(still["name"], ROWS[0].0, "a dry run changes nothing");
    let (s, done) = json_of(
        as_alice(c.patch(data("/data/bulk/")))
            .json(&json!({"payload": {"submission_ids": [ids[0]],
                          "redact": {"fields": ["name", "grp/photo"], "replacement": "hash"}}}))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(s, 200, "{done}");
    assert_eq!(
        (done["versions"].as_i64(), done["values"].as_i64()),
        (Some(2), Some(4))
    );
    assert_eq!(done["attachments"], 1);
    // The client's two exports, and the two files the saved setting's URLs produced.
    assert_eq!(done["exportsDeleted"], 4);
    let (_, red) = json_of(
        as_alice(c.get(data(&format!("/data/{}/", ids[0]))))
            .send()
            .await
            .unwrap(),
    )
    .await;
    let hashed = red["name"].as_str().unwrap();
    assert!(
        hashed.len() == 64 && hashed.bytes().all(|b| b.is_ascii_hexdigit()),
        "{red}"
    );
    assert_eq!(red["age"], "31");
    assert_eq!(red["_attachments"], json!([]));
    // Linkable: the same value hashes the same way in another submission.
    let (_, other) = json_of(
        c.post(srv.url(&format!("/v1/projects/{pid}/forms/hh/redactions")))
            .basic_auth("alice", Some(PASSWORD))
            .json(&json!({"fields": ["grp/pet"], "scope": {"all": true}, "replacement": "hash"}))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(other["count"], 3);
    let (_, v) = json_of(as_alice(c.get(data("/data/"))).send().await.unwrap()).await;
    let pets: Vec<&str> = v["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["grp/pet"].as_str().unwrap())
        .collect();
    assert_eq!(pets[0], pets[2]);
    assert_ne!(pets[0], pets[1]);
    assert_ne!(pets[0], "dog");

    // Bulk delete: all or nothing, then gone.
    let r = as_alice(c.delete(data("/data/bulk/")))
        .json(&json!({"payload": {"submission_ids": [ids[2], 999_999]}}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let r = as_alice(c.delete(data("/data/bulk/")))
        .json(&json!({"payload": {}}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let (s, v) = json_of(
        as_alice(c.delete(data("/data/bulk/")))
            .json(&json!({"payload": {"submission_ids": [ids[2]]}}))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(
        (s, v["detail"].as_str()),
        (200, Some("1 submissions have been deleted"))
    );
    let (_, v) = json_of(
        as_alice(c.get(data("/data/?limit=1")))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(v["count"], 2);
    let r = as_alice(c.delete(data(&format!("/data/{}/", ids[1]))))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    let r = as_alice(c.get(data(&format!("/data/{}/", ids[1]))))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);

    assert!(srv.stop());
    verify_no_trace(&dir.path().join("fieldvault-data"), pid).await;
}

fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

/// Decrypts every stored version and attachment of the project and finds no marker; no file of
/// the data directory holds it in plaintext; the actions are in the audit log.
async fn verify_no_trace(data: &Path, pid: i64) {
    let settings = StorageSettings {
        data_dir: data.to_path_buf(),
        database_url: None::<SecretString>,
        blobs: None,
        master_key: MasterKeySource::File(data.join("master.key")),
        max_connections: 1,
    };
    let opened = fieldvault_store::open(&settings, false).await.unwrap();
    let store = opened.store.clone();
    let project = store
        .project(fieldvault_core::ProjectId(pid))
        .await
        .unwrap()
        .unwrap();
    let key = opened
        .keyring
        .data_key(project.data_key_id.as_deref().unwrap())
        .await
        .unwrap();
    let form = store
        .form(project.project_id(), "hh")
        .await
        .unwrap()
        .unwrap();
    let mut versions = 0;
    let mut files = 0;
    // Every submission, deleted ones included (their rows stay until a purge).
    for i in 0..ROWS.len() {
        let s = store
            .submission(form.id, &format!("uuid:kobo-{i}"))
            .await
            .unwrap()
            .unwrap();
        for v in store.submission_versions(s.id).await.unwrap() {
            versions += 1;
            let xml = fieldvault_crypto::envelope::open(
                &key,
                &xml_aad(pid, form.id, &v.instance_id),
                &v.xml_sealed,
            )
            .unwrap();
            let text = String::from_utf8(xml).unwrap();
            assert!(
                !text.contains(MARKER),
                "version {} still holds the marker",
                v.instance_id
            );
            assert!(!v.instance_name.unwrap_or_default().contains(MARKER));
            for a in store.submission_attachments(v.id).await.unwrap() {
                if let Some(blob) = &a.blob_name {
                    files += 1;
                    let bytes = opened
                        .blobs
                        .get_bytes(
                            &key,
                            blob,
                            &attachment_aad(pid, form.id, &v.instance_id, &a.name),
                        )
                        .await
                        .unwrap();
                    assert!(!String::from_utf8_lossy(&bytes).contains(MARKER));
                }
            }
        }
    }
    // Three submissions, the first with two versions; no attachment left.
    assert_eq!((versions, files), (4, 0));
    let actions: Vec<String> = store
        .audit_entries(0, 1000)
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.action)
        .collect();
    for a in [
        "token.create",
        "export.create",
        "export.download",
        "submission.validation",
        "submission.update",
        "submission.redact",
        "submission.delete",
    ] {
        assert!(
            actions.iter().any(|x| x == a),
            "{a} not audited: {actions:?}"
        );
    }
    store.close().await;
    for f in files_under(data) {
        let bytes = std::fs::read(&f).unwrap_or_default();
        assert!(
            !bytes.windows(MARKER.len()).any(|w| w == MARKER.as_bytes()),
            "{} holds the marker in plaintext",
            f.display()
        );
    }
}
