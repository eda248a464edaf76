//! Fault tests for intake (M11): submissions keep getting 201 while PostgreSQL is down (they wait
//! in the encrypted intake journal and are stored once it is back, each exactly once), and a
//! `kill -9` of the server loses no acknowledged submission.
//!
//! The PostgreSQL test stops a private cluster (`fieldvault_testkit::pg_cluster`), never the
//! machine's shared server.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use fieldvault_testkit::pg_cluster::PgCluster;
use reqwest::multipart::{Form, Part};
use serde_json::{Value, json};

use crate::harness::{PASSWORD, Server, client, create_user};

const FORM: &str = r#"<h:html xmlns="http://www.w3.org/2002/xforms" xmlns:h="http://www.w3.org/1999/xhtml"><h:head><h:title>Outage</h:title><model><instance><data id="outage" version="1"><name/><photo/><meta><instanceID/></meta></data></instance><bind nodeset="/data/name" type="string"/><bind nodeset="/data/photo" type="binary"/><bind nodeset="/data/meta/instanceID" type="string"/></model></h:head><h:body/></h:html>"#;

fn submission(instance: &str, with_photo: bool) -> Form {
    let photo = if with_photo { "photo.jpg" } else { "" };
    let xml = format!(
        "<data id=\"outage\" version=\"1\"><name>{instance}</name><photo>{photo}</photo>\
         <meta><instanceID>{instance}</instanceID></meta></data>"
    );
    let mut f = Form::new().part(
        "xml_submission_file",
        Part::bytes(xml.into_bytes())
            .file_name("submission.xml")
            .mime_str("text/xml")
            .unwrap(),
    );
    if with_photo {
        f = f.part(
            "photo.jpg",
            Part::bytes(photo_bytes(instance))
                .file_name("photo.jpg")
                .mime_str("image/jpeg")
                .unwrap(),
        );
    }
    f
}

pub fn photo_bytes(instance: &str) -> Vec<u8> {
    format!("jpeg bytes of {instance}").repeat(50).into_bytes()
}

/// Creates alice's project with the outage form; returns the project's OpenRosa base URL.
pub async fn project(srv: &Server) -> String {
    let c = client();
    let p: Value = c
        .post(srv.url("/v1/projects"))
        .basic_auth("alice", Some(PASSWORD))
        .json(&json!({"name": "Outage"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let base = srv.url(&format!("/v1/projects/{}", p["id"]));
    let r = c
        .post(format!("{base}/forms?publish=true"))
        .basic_auth("alice", Some(PASSWORD))
        .body(FORM)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "{:?}", r.text().await);
    base
}

pub async fn post(base: &str, instance: &str) -> Result<u16, String> {
    let with_photo = instance.ends_with('0');
    let r = client()
        .post(format!("{base}/submission?deviceID=collect:outage"))
        .header("X-OpenRosa-Version", "1.0")
        .basic_auth("alice", Some(PASSWORD))
        .multipart(submission(instance, with_photo))
        .send()
        .await
        .map_err(|e| e.to_string())?;
    let status = r.status().as_u16();
    if status != 201 {
        let body = r.text().await.unwrap_or_default();
        return Err(format!("{status}: {body}"));
    }
    Ok(status)
}

/// Concurrent collectors, each sending new submissions until told to stop.
struct Load {
    stop: Arc<AtomicBool>,
    results: Arc<Mutex<BTreeMap<String, Result<u16, String>>>>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Load {
    fn start(base: &str, workers: usize) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let results = Arc::new(Mutex::new(BTreeMap::new()));
        let tasks = (0..workers)
            .map(|w| {
                let (stop, results, base) = (stop.clone(), results.clone(), base.to_owned());
                tokio::spawn(async move {
                    let mut i = 0u32;
                    while !stop.load(Ordering::Relaxed) {
                        let instance = format!("uuid:w{w}-{i}");
                        let r = post(&base, &instance).await;
                        results.lock().unwrap().insert(instance, r);
                        i += 1;
                    }
                })
            })
            .collect();
        Load {
            stop,
            results,
            tasks,
        }
    }

    async fn finish(self) -> BTreeMap<String, Result<u16, String>> {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.tasks {
            let _ = t.await;
        }
        std::mem::take(&mut *self.results.lock().unwrap())
    }
}

/// Every instanceID of the form, as the API lists them (a duplicate would appear twice).
pub async fn stored(base: &str) -> Vec<String> {
    let mut out = Vec::new();
    loop {
        let page: Value = client()
            .get(format!(
                "{base}/forms/outage/submissions?limit=1000&offset={}",
                out.len()
            ))
            .basic_auth("alice", Some(PASSWORD))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let rows = page.as_array().unwrap();
        if rows.is_empty() {
            return out;
        }
        out.extend(
            rows.iter()
                .map(|r| r["instanceId"].as_str().unwrap().to_owned()),
        );
    }
}

/// Checks the stored submissions are exactly `acknowledged`, once each, with their photos.
async fn assert_stored_once(base: &str, acknowledged: &BTreeSet<String>) {
    let ids = stored(base).await;
    let unique: BTreeSet<String> = ids.iter().cloned().collect();
    assert_eq!(ids.len(), unique.len(), "a submission was stored twice");
    let missing: Vec<_> = acknowledged.difference(&unique).collect();
    assert!(
        missing.is_empty(),
        "acknowledged but not stored: {missing:?}"
    );
    for id in acknowledged.iter().filter(|i| i.ends_with('0')) {
        let r = client()
            .get(format!(
                "{base}/forms/outage/submissions/{id}/attachments/photo.jpg"
            ))
            .basic_auth("alice", Some(PASSWORD))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "photo of {id}");
        assert_eq!(r.bytes().await.unwrap().to_vec(), photo_bytes(id), "{id}");
    }
}

/// Fails with a short summary (how many, grouped by answer) when any request did not get 201.
fn assert_all_acknowledged(results: &BTreeMap<String, Result<u16, String>>) {
    let mut by_answer: BTreeMap<String, (usize, &str)> = BTreeMap::new();
    for (id, r) in results {
        if let Err(e) = r {
            let answer: String = e.chars().take(160).collect();
            by_answer.entry(answer).or_insert((0, id)).0 += 1;
        }
    }
    let failed: usize = by_answer.values().map(|(n, _)| n).sum();
    assert!(
        failed == 0,
        "{failed} of {} submissions not acknowledged with 201; by answer (count, first id): {by_answer:?}",
        results.len()
    );
}

fn metric(text: &str, name: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(&format!("{name} ")))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no metric {name} in {text}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn postgres_outage_keeps_intake_open_and_replays_exactly_once() {
    let Some(cluster) = PgCluster::start() else {
        return;
    };
    let url = cluster.create_db("fv_outage");
    let dir = tempfile::tempdir().unwrap();
    // Six clients sending flat out exceed a collector's request budget within seconds on a
    // fast machine; this test is about the outage, not the budget (tests/it/limits.rs).
    let env = [
        ("FIELDVAULT_DATABASE_URL", url.as_str()),
        ("FIELDVAULT_LIMITS_COLLECTOR_PER_WINDOW", "10000000"),
    ];
    let srv = Server::start(dir.path(), &env);
    create_user(dir.path(), &env, "alice", false);
    let base = project(&srv).await;
    // The collector has submitted before (the server knows the form and the credentials).
    assert_eq!(post(&base, "uuid:warm-0").await, Ok(201));

    let load = Load::start(&base, 6);
    tokio::time::sleep(Duration::from_secs(2)).await;
    tokio::task::block_in_place(|| cluster.stop_server());
    let down = Instant::now();
    let c = client();
    let mut saw_degraded = false;
    while down.elapsed() < Duration::from_secs(15) {
        let r: Value = c
            .get(srv.url("/readyz"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        if r["status"] == "degraded" {
            saw_degraded = true;
            assert_eq!(r["store"]["ok"], false, "{r}");
            assert_eq!(r["intake"]["accepting"], true, "{r}");
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    assert!(
        saw_degraded,
        "/readyz never said degraded during the outage"
    );
    let m = srv.get_text("/metrics").await;
    assert_eq!(metric(&m, "fieldvault_intake_degraded"), 1.0, "{m}");
    let journaled = metric(&m, "fieldvault_intake_journaled_total");
    assert!(journaled > 0.0, "nothing was journaled during the outage");
    tokio::task::block_in_place(|| cluster.start_server());
    tokio::time::sleep(Duration::from_secs(3)).await;
    let results = load.finish().await;

    assert_all_acknowledged(&results);
    // The journal drains once the database is back.
    let t = Instant::now();
    loop {
        let m = srv.get_text("/metrics").await;
        if metric(&m, "fieldvault_intake_journal_pending") == 0.0
            && metric(&m, "fieldvault_intake_degraded") == 0.0
        {
            assert_eq!(metric(&m, "fieldvault_intake_replay_failed_total"), 0.0);
            assert!(metric(&m, "fieldvault_intake_replayed_total") >= journaled);
            break;
        }
        assert!(
            t.elapsed() < Duration::from_secs(60),
            "journal not drained: {m}"
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    let mut acknowledged: BTreeSet<String> = results.into_keys().collect();
    acknowledged.insert("uuid:warm-0".into());
    eprintln!(
        "outage test: {} acknowledged, {journaled} through the journal",
        acknowledged.len()
    );
    assert_stored_once(&base, &acknowledged).await;
    assert_csv_has_each_once(&base, &acknowledged).await;
    assert!(srv.stop());
}

/// The streamed CSV export (many pages, many chunks) lists each submission once.
async fn assert_csv_has_each_once(base: &str, acknowledged: &BTreeSet<String>) {
    let body = client()
        .get(format!("{base}/forms/outage/submissions.csv"))
        .basic_auth("alice", Some(PASSWORD))
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    let mut rd = csv::Reader::from_reader(&body[..]);
    let col = rd
        .headers()
        .unwrap()
        .iter()
        .position(|h| h == "KEY")
        .unwrap();
    let keys: Vec<String> = rd.records().map(|r| r.unwrap()[col].to_owned()).collect();
    let unique: BTreeSet<String> = keys.iter().cloned().collect();
    assert_eq!(keys.len(), unique.len(), "a row was exported twice");
    assert_eq!(&unique, acknowledged);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn kill_9_loses_no_acknowledged_submission() {
    let dir = tempfile::tempdir().unwrap();
    let srv = Server::start(dir.path(), &[]);
    create_user(dir.path(), &[], "alice", false);
    let base = project(&srv).await;
    let load = Load::start(&base, 6);
    tokio::time::sleep(Duration::from_secs(3)).await;
    srv.signal("KILL");
    let results = load.finish().await;
    drop(srv);
    let acknowledged: BTreeSet<String> = results
        .iter()
        .filter(|(_, r)| r.is_ok())
        .map(|(k, _)| k.clone())
        .collect();
    assert!(acknowledged.len() > 10, "too little load: {results:?}");
    let srv = Server::start(dir.path(), &[]);
    let base = base.replace(base.split("/v1/").next().unwrap(), srv.base.as_str());
    eprintln!(
        "kill -9 test: {} acknowledged before the kill",
        acknowledged.len()
    );
    assert_stored_once(&base, &acknowledged).await;
    // Clients whose request was cut retry; a retry of a stored submission is a duplicate.
    for id in results.keys() {
        assert_eq!(post(&base, id).await, Ok(201), "{id}");
    }
    let all: BTreeSet<String> = results.into_keys().collect();
    assert_stored_once(&base, &all).await;
    assert!(srv.stop());
}
