//! Point-in-time recovery of the embedded store (issue #8, items 4 and 5): the change journal
//! shipped to a backup target while the server runs; batch A, note the time, batch B (and a
//! deletion), then
//! - the whole database restored to that time into a new data directory → only batch A;
//! - one project restored to that time into the running server while submissions keep arriving
//!   in another → that project holds batch A again, the other lost nothing.

use std::collections::BTreeSet;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant, SystemTime};

use crate::degraded::{photo_bytes, post, project, stored};
use crate::harness::{PASSWORD, Server, client, cmd, create_user, run};

const MASTER: &str = "3q2+7wABAgMEBQYHCAkKCwwNDg8QERITFBUWFxgZGhs=";

fn ids(prefix: &str, n: usize) -> BTreeSet<String> {
    (0..n).map(|i| format!("uuid:{prefix}-{i}")).collect()
}

fn fv(dir: &Path, env: &[(String, String)], args: &[&str], stdin: &str) -> (bool, String, String) {
    let mut c = cmd(dir);
    c.args(args);
    for (k, v) in env {
        c.env(k, v);
    }
    run(c, stdin)
}

/// A server with a directory backup target, its key, the journal shipped every second and an
/// inline master key (so a restore into a new directory opens with it).
struct Setup {
    dir: tempfile::TempDir,
    target: String,
    env: Vec<(String, String)>,
}

fn setup() -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("backup.key");
    let (ok, _, err) = fv(
        dir.path(),
        &[],
        &["backup", "keygen", key.to_str().unwrap()],
        "",
    );
    assert!(ok, "{err}");
    let target = format!("file://{}", dir.path().join("target").display());
    let env = vec![
        ("FIELDVAULT_BACKUP_TARGET".into(), target.clone()),
        (
            "FIELDVAULT_BACKUP_KEY_FILE".into(),
            key.display().to_string(),
        ),
        ("FIELDVAULT_BACKUP_JOURNAL_INTERVAL".into(), "1".into()),
        ("FIELDVAULT_MASTER_KEY".into(), MASTER.into()),
        (
            "FIELDVAULT_LIMITS_COLLECTOR_PER_WINDOW".into(),
            "1000000".into(),
        ),
    ];
    Setup { dir, target, env }
}

impl Setup {
    /// `fieldvault restore --from <target> --to-time <t> --project <pid> --into-live <extra>`.
    fn recover(&self, t: &str, pid: &str, extra: &[&str], stdin: &str) -> (bool, String, String) {
        let mut args = vec![
            "restore",
            "--from",
            &self.target,
            "--to-time",
            t,
            "--project",
            pid,
            "--into-live",
        ];
        args.extend_from_slice(extra);
        fv(self.dir.path(), &self.env, &args, stdin)
    }

    fn env(&self) -> Vec<(&str, &str)> {
        self.env
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect()
    }
}

fn unix_now() -> f64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
}

/// The journal's first backup (taken as its timeline starts) is on the target.
async fn wait_for_first_backup(target_dir: &Path) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let found = std::fs::read_dir(target_dir.join("backups"))
            .map(|d| d.flatten().any(|e| e.path().join("manifest").exists()))
            .unwrap_or(false);
        if found {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "no backup appeared on the target"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Waits until `/metrics` says the journal was shipped complete after `after` (Unix seconds).
async fn wait_for_shipment(srv: &Server, after: f64) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let m = srv.get_text("/metrics").await;
        let shipped = m
            .lines()
            .find_map(|l| l.strip_prefix("fieldvault_journal_last_ship_timestamp_seconds "))
            .and_then(|v| v.trim().parse::<f64>().ok())
            .unwrap_or(0.0);
        if shipped > after + 1.0 {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "the journal was not shipped: {m}"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// A time after every mark of what was just written and before anything written next. It waits
/// for a shipment more than a second after now: the server writes a mark just before each
/// shipment, so a mark after the last change is on the target, and the time is taken after it
/// (to the millisecond). No fixed sleep: on a loaded machine a mark can come late.
async fn note_the_time(srv: &Server) -> String {
    wait_for_shipment(srv, unix_now()).await;
    let t = humantime::format_rfc3339_millis(SystemTime::now()).to_string();
    tokio::time::sleep(Duration::from_millis(100)).await;
    t
}

/// Flips one byte of the first journal segment on a directory target; returns its object name.
fn damage_first_segment(target: &Path) -> String {
    let timeline = std::fs::read_dir(target.join("journal"))
        .unwrap()
        .flatten()
        .next()
        .unwrap()
        .path();
    let mut segs: Vec<_> = std::fs::read_dir(&timeline)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .collect();
    segs.sort();
    let seg = &segs[0];
    let mut bytes = std::fs::read(seg).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x01;
    std::fs::write(seg, bytes).unwrap();
    seg.strip_prefix(target).unwrap().display().to_string()
}

/// A client submitting to one project, one submission after another, until stopped.
pub struct Feeder {
    stop: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<(BTreeSet<String>, Vec<String>)>,
}

impl Feeder {
    /// Starts sending `uuid:c-0`, `uuid:c-1`, … to the project at `base`.
    pub fn start(base: &str) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let (flag, base) = (stop.clone(), base.to_owned());
        let task = tokio::spawn(async move {
            let (mut sent, mut failures) = (BTreeSet::new(), Vec::new());
            let mut i = 0;
            while !flag.load(Ordering::Relaxed) {
                let id = format!("uuid:c-{i}");
                match post(&base, &id).await {
                    Ok(201) => {
                        sent.insert(id);
                    }
                    other => failures.push(format!("{id}: {other:?}")),
                }
                i += 1;
            }
            (sent, failures)
        });
        Self { stop, task }
    }

    /// Stops; returns the ids that got a 201, and every other answer.
    pub async fn stop(self) -> (BTreeSet<String>, Vec<String>) {
        self.stop.store(true, Ordering::Relaxed);
        self.task.await.unwrap()
    }
}

async fn delete(base: &str, id: &str) {
    let r = client()
        .delete(format!("{base}/forms/outage/submissions/{id}"))
        .basic_auth("alice", Some(PASSWORD))
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success(), "delete {id}: {}", r.status());
}

async fn photo(base: &str, id: &str) -> Vec<u8> {
    let r = client()
        .get(format!(
            "{base}/forms/outage/submissions/{id}/attachments/photo.jpg"
        ))
        .basic_auth("alice", Some(PASSWORD))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "{id}");
    r.bytes().await.unwrap().to_vec()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embedded_point_in_time_recovery_keeps_only_the_earlier_batch() {
    let s = setup();
    let srv = Server::start(s.dir.path(), &s.env());
    wait_for_first_backup(&s.dir.path().join("target")).await;
    create_user(s.dir.path(), &s.env(), "alice", false);
    let base = project(&srv).await;
    let (a, b) = (ids("a", 6), ids("b", 6));
    for id in &a {
        assert_eq!(post(&base, id).await, Ok(201), "{id}");
    }
    let t = note_the_time(&srv).await;
    for id in &b {
        assert_eq!(post(&base, id).await, Ok(201), "{id}");
    }
    delete(&base, "uuid:a-1").await;
    wait_for_shipment(&srv, unix_now()).await;

    // Restored while the server keeps running, into a new data directory.
    let restored = s.dir.path().join("restored");
    let restored_s = restored.display().to_string();
    let (ok, _, err) = fv(
        s.dir.path(),
        &s.env,
        &[
            "restore",
            "--from",
            &s.target,
            "--to-time",
            &t,
            "--data-dir",
            &restored_s,
        ],
        "",
    );
    assert!(ok, "{err}");
    assert!(err.contains("change(s) from"), "{err}");
    // Refuses to overwrite what it has just restored.
    let (ok, _, err) = fv(
        s.dir.path(),
        &s.env,
        &[
            "restore",
            "--from",
            &s.target,
            "--to-time",
            &t,
            "--data-dir",
            &restored_s,
        ],
        "",
    );
    assert!(
        !ok && err.contains("already holds a Fieldvault database"),
        "{err}"
    );
    // `verify` reads the journal too; one flipped byte in a segment fails it, naming the
    // segment, and a restore that needs the segment fails the same way.
    let (ok, out, err) = fv(s.dir.path(), &s.env, &["backup", "verify"], "");
    assert!(ok && out.contains("Change journal:"), "{out} {err}");
    let damaged = damage_first_segment(&s.dir.path().join("target"));
    let (ok, out, err) = fv(s.dir.path(), &s.env, &["backup", "verify"], "");
    assert!(!ok && err.contains(&damaged), "{damaged}: {out} {err}");
    let other = s.dir.path().join("restored-2").display().to_string();
    let (ok, _, err) = fv(
        s.dir.path(),
        &s.env,
        &[
            "restore",
            "--from",
            &s.target,
            "--to-time",
            &t,
            "--data-dir",
            &other,
        ],
        "",
    );
    assert!(!ok && err.contains(&damaged), "{damaged}: {err}");
    assert!(srv.stop());

    let mut env2 = s.env.clone();
    env2.push(("FIELDVAULT_DATA_DIR".into(), restored_s.clone()));
    let env2: Vec<(&str, &str)> = env2.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let srv = Server::start(s.dir.path(), &env2);
    let base = base.replace(base.split("/v1/").next().unwrap(), srv.base.as_str());
    let got: Vec<String> = stored(&base).await;
    let set: BTreeSet<String> = got.iter().cloned().collect();
    assert_eq!(got.len(), set.len(), "a submission is listed twice");
    assert_eq!(
        set, a,
        "restored to {t}: exactly batch A, a-1 not yet deleted"
    );
    assert_eq!(photo(&base, "uuid:a-0").await, photo_bytes("uuid:a-0"));
    // The restored server takes submissions (and starts a journal timeline of its own).
    assert_eq!(post(&base, "uuid:after-restore-1").await, Ok(201));
    assert!(srv.stop());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_project_is_recovered_into_the_live_server_while_submissions_arrive() {
    let s = setup();
    let srv = Server::start(s.dir.path(), &s.env());
    wait_for_first_backup(&s.dir.path().join("target")).await;
    create_user(s.dir.path(), &s.env(), "alice", false);
    let damaged = project(&srv).await;
    let busy = project(&srv).await;
    let pid = damaged.rsplit('/').next().unwrap().to_owned();
    let a = ids("a", 6);
    for id in &a {
        assert_eq!(post(&damaged, id).await, Ok(201), "{id}");
    }
    let t = note_the_time(&srv).await;
    // The damage: two of batch A deleted, batch B arrives.
    let b = ids("b", 4);
    for id in &b {
        assert_eq!(post(&damaged, id).await, Ok(201), "{id}");
    }
    delete(&damaged, "uuid:a-1").await;
    delete(&damaged, "uuid:a-2").await;
    wait_for_shipment(&srv, unix_now()).await;

    // Without --yes and without the typed confirmation, nothing changes.
    let (ok, _, err) = s.recover(&t, &pid, &[], "no\n");
    assert!(!ok && err.contains("not confirmed"), "{err}");
    assert!(
        err.contains("removes 4 submission(s) received since"),
        "{err}"
    );
    assert_eq!(stored(&damaged).await.len(), 8);

    // The project's attachment blobs are lost from the live store too (as after a purge): the
    // recovery brings back the one batch A needs from the backup target.
    let lost = s.dir.path().join(format!("fieldvault-data/blobs/p{pid}"));
    let mut removed = 0;
    for form_dir in std::fs::read_dir(&lost).unwrap().flatten() {
        if form_dir.file_name().to_string_lossy().starts_with('f') {
            for f in std::fs::read_dir(form_dir.path()).unwrap().flatten() {
                std::fs::remove_file(f.path()).unwrap();
                removed += 1;
            }
        }
    }
    assert_eq!(removed, 2, "the photos of a-0 and b-0");

    // Submissions keep arriving in the other project during the recovery.
    let feeder = Feeder::start(&busy);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (ok, out, err) = s.recover(&t, &pid, &["--yes"], "");
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (sent, failures) = feeder.stop().await;
    assert!(ok, "{out} {err}");
    assert!(
        err.contains("4 removed, 2 brought back, 1 blob(s) copied"),
        "{err}"
    );
    assert!(
        failures.is_empty(),
        "intake failed during the recovery: {failures:?}"
    );
    assert!(sent.len() >= 5, "intake went on: {}", sent.len());
    let busy_now: BTreeSet<String> = stored(&busy).await.into_iter().collect();
    assert_eq!(busy_now, sent, "the other project lost or doubled nothing");

    let got: BTreeSet<String> = stored(&damaged).await.into_iter().collect();
    assert_eq!(
        got, a,
        "the project is back at {t}: batch A, deletions undone"
    );
    assert_eq!(photo(&damaged, "uuid:a-0").await, photo_bytes("uuid:a-0"));
    for id in ["uuid:a-3", "uuid:a-1"] {
        let r = client()
            .get(format!("{damaged}/forms/outage/submissions/{id}.xml"))
            .basic_auth("alice", Some(PASSWORD))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "{id}");
        assert!(r.text().await.unwrap().contains(id), "{id}");
    }
    // The recovered project takes new submissions.
    assert_eq!(post(&damaged, "uuid:after-1").await, Ok(201));

    // The same time again, as a new project beside it: same content, re-encrypted under the new
    // project's own key and ids; the current project is untouched.
    let (ok, out, err) = s.recover(&t, &pid, &["--as-new"], "");
    assert!(ok, "{out} {err}");
    let new_pid = out.trim();
    assert_ne!(new_pid, pid);
    let copy = damaged.replace(
        &format!("/v1/projects/{pid}"),
        &format!("/v1/projects/{new_pid}"),
    );
    let got: BTreeSet<String> = stored(&copy).await.into_iter().collect();
    assert_eq!(got, a, "the new project holds batch A as it was at {t}");
    assert_eq!(photo(&copy, "uuid:a-0").await, photo_bytes("uuid:a-0"));
    let r = client()
        .get(format!("{copy}/forms/outage/submissions/uuid:a-4.xml"))
        .basic_auth("alice", Some(PASSWORD))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert!(r.text().await.unwrap().contains("uuid:a-4"));
    let mut now = a.clone();
    now.insert("uuid:after-1".into());
    let current: BTreeSet<String> = stored(&damaged).await.into_iter().collect();
    assert_eq!(current, now, "the current project is unchanged");
    assert_eq!(post(&copy, "uuid:in-copy-1").await, Ok(201));

    // The recoveries are in the audit log.
    let m = srv.get_text("/metrics").await;
    assert!(
        m.contains("fieldvault_journal_ship_failures_total 0"),
        "{m}"
    );
    let admin = crate::harness::admin_session(&srv, s.dir.path(), &s.env(), "admin").await;
    let log: serde_json::Value = client()
        .get(srv.url("/v1/audits"))
        .bearer_auth(&admin)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let recovered: Vec<&serde_json::Value> = log
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["action"] == "project.recovered")
        .collect();
    assert_eq!(recovered.len(), 2, "{log}");
    assert!(
        recovered
            .iter()
            .any(|e| e["details"]["removed_submissions"] == 4 && e["target"] == pid.as_str()),
        "{log}"
    );
    assert!(
        recovered
            .iter()
            .any(|e| e["details"]["as_new"] == true && e["target"] == new_pid),
        "{log}"
    );
    assert!(srv.stop());
}
