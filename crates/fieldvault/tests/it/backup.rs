//! Backups end to end (M8): `fieldvault backup` while the server runs, list, verify, a damaged
//! object named by `verify`, content-addressed blobs, and backup → wipe → restore → identical
//! decrypted data. Against a directory target and an S3-compatible one (s3s-fs).

use std::collections::BTreeMap;
use std::path::Path;

use fieldvault_testkit::s3::S3Server;

use crate::degraded::{post, project, stored};
use crate::harness::{PASSWORD, Server, client, cmd, create_user, run};

/// instanceID → SHA-256 of the decrypted XML and of the decrypted photo (if any).
async fn content(base: &str) -> BTreeMap<String, (String, Option<String>)> {
    let c = client();
    let mut out = BTreeMap::new();
    for id in stored(base).await {
        let get = |path: String| {
            c.get(format!("{base}/forms/outage/submissions/{path}"))
                .basic_auth("alice", Some(PASSWORD))
                .send()
        };
        let xml = get(format!("{id}.xml")).await.unwrap();
        assert_eq!(xml.status(), 200);
        let xml = hex(&xml.bytes().await.unwrap());
        let photo = get(format!("{id}/attachments/photo.jpg")).await.unwrap();
        let photo = if photo.status() == 200 {
            Some(hex(&photo.bytes().await.unwrap()))
        } else {
            None
        };
        out.insert(id, (xml, photo));
    }
    out
}

fn hex(b: &[u8]) -> String {
    fieldvault_crypto::random::to_hex(&fieldvault_crypto::mac::sha256(b))
}

fn fv(dir: &Path, env: &[(&str, &str)], args: &[&str]) -> (bool, String, String) {
    let mut c = cmd(dir);
    c.args(args);
    for (k, v) in env {
        c.env(k, v);
    }
    run(c, "")
}

async fn scenario(target: &str, extra: &[(&str, &str)]) {
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("backup.key");
    let (ok, _, err) = fv(
        dir.path(),
        &[],
        &["backup", "keygen", key.to_str().unwrap()],
    );
    assert!(ok, "{err}");
    let key_s = key.display().to_string();
    let mut env: Vec<(&str, &str)> = vec![
        ("FIELDVAULT_BACKUP_TARGET", target),
        ("FIELDVAULT_BACKUP_KEY_FILE", key_s.as_str()),
    ];
    env.extend_from_slice(extra);
    let srv = Server::start(dir.path(), &env);
    let m = srv.get_text("/metrics").await;
    assert!(m.contains("fieldvault_backup_configured 1"), "{m}");
    create_user(dir.path(), &env, "alice", false);
    let base = project(&srv).await;
    for i in 0..12 {
        assert_eq!(post(&base, &format!("uuid:b-{i}")).await, Ok(201));
    }
    let before = content(&base).await;
    assert_eq!(before.len(), 12);

    // A backup while the server runs; a second one copies no blob again.
    let (ok, id1, err) = fv(dir.path(), &env, &["backup"]);
    assert!(ok, "{err}");
    assert!(err.contains("(2 copied"), "two photos are new: {err}");
    let (ok, id2, err) = fv(dir.path(), &env, &["backup", "run"]);
    assert!(ok, "{err}");
    assert!(
        err.contains("(0 copied"),
        "unchanged blobs are not copied again: {err}"
    );
    // Retention keeps the newest backup of a day: the first one is pruned, its blobs stay.
    assert!(err.contains("1 expired backup(s) pruned"), "{err}");
    let (ok, list, err) = fv(dir.path(), &env, &["backup", "list"]);
    assert!(ok, "{err}");
    assert_eq!(list.lines().count(), 1, "{list}");
    assert!(
        list.contains(id2.trim()) && !list.contains(id1.trim()),
        "{list}"
    );
    assert!(list.contains("12 submissions\t2 blobs"), "{list}");
    let (ok, out, err) = fv(dir.path(), &env, &["backup", "verify", id2.trim()]);
    assert!(ok, "{out} {err}");
    assert!(out.contains("row counts match"), "{out}");
    assert!(srv.stop());

    // --to-time picks the newest backup at or before the time; none before the first is an error.
    let (ok, _, err) = fv(
        dir.path(),
        &env,
        &[
            "restore",
            "--from",
            target,
            "--to-time",
            "2000-01-01T00:00Z",
            "--data-dir",
            "tt-none",
        ],
    );
    assert!(
        !ok && err.contains("no backup of the embedded database complete by"),
        "{err}"
    );
    // To a time: the newest backup complete by then, plus the change journal after it (none
    // here: the journal is tested in pitr_embedded.rs). Opening the copy to replay it needs the
    // master key.
    let live_key = dir
        .path()
        .join("fieldvault-data/master.key")
        .display()
        .to_string();
    let mut env_key = env.clone();
    env_key.push(("FIELDVAULT_MASTER_KEY_FILE", live_key.as_str()));
    let (ok, _, err) = fv(
        dir.path(),
        &env_key,
        &[
            "restore",
            "--from",
            target,
            "--to-time",
            "2999-01-01T00:00Z",
            "--data-dir",
            "tt",
        ],
    );
    assert!(ok && err.contains(id2.trim()), "{err}");
    let (ok, _, err) = fv(
        dir.path(),
        &env,
        &[
            "restore",
            "--from",
            target,
            "--to-time",
            "soon",
            "--data-dir",
            "tt-bad",
        ],
    );
    assert!(!ok && err.contains("is not a UTC time"), "{err}");

    // Backup → wipe → restore → identical decrypted content.
    let master = std::fs::read(dir.path().join("fieldvault-data/master.key")).unwrap();
    std::fs::remove_dir_all(dir.path().join("fieldvault-data")).unwrap();
    let (ok, _, err) = fv(
        dir.path(),
        &env,
        &[
            "restore",
            "--from",
            target,
            "--backup",
            id2.trim(),
            "--data-dir",
            "fieldvault-data",
        ],
    );
    assert!(ok, "{err}");
    let (ok, _, err) = fv(
        dir.path(),
        &env,
        &["restore", "--from", target, "--data-dir", "fieldvault-data"],
    );
    assert!(!ok, "a restore never overwrites live data without --force");
    assert!(err.contains("--force"), "{err}");
    // The master key is not in the backup: it comes from its escrow.
    let key_path = dir.path().join("fieldvault-data/master.key");
    std::fs::write(&key_path, master).unwrap();
    std::fs::set_permissions(
        &key_path,
        std::os::unix::fs::PermissionsExt::from_mode(0o600),
    )
    .unwrap();
    let srv = Server::start(dir.path(), &env);
    let base = base.replace(base.split("/v1/").next().unwrap(), srv.base.as_str());
    assert_eq!(content(&base).await, before, "restored data differs");
    assert!(srv.stop());
}

/// Flips one byte of a blob object on a directory target: `verify` fails and names it.
fn damage_one_blob(root: &Path) -> String {
    let blobs = root.join("blobs");
    let first = std::fs::read_dir(&blobs)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.is_file())
        .unwrap();
    let mut bytes = std::fs::read(&first).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x01;
    std::fs::write(&first, bytes).unwrap();
    format!("blobs/{}", first.file_name().unwrap().to_string_lossy())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backup_verify_wipe_restore_on_a_directory() {
    let target_dir = tempfile::tempdir().unwrap();
    let target = format!("file://{}", target_dir.path().display());
    scenario(&target, &[]).await;

    // One flipped byte: verify fails, naming the damaged object, and says so in the audit log.
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("backup.key");
    let (ok, _, err) = fv(
        dir.path(),
        &[],
        &["backup", "keygen", key.to_str().unwrap()],
    );
    assert!(ok, "{err}");
    let key_s = key.display().to_string();
    let t2 = tempfile::tempdir().unwrap();
    let target2 = format!("file://{}", t2.path().display());
    let env = [
        ("FIELDVAULT_BACKUP_TARGET", target2.as_str()),
        ("FIELDVAULT_BACKUP_KEY_FILE", key_s.as_str()),
    ];
    let srv = Server::start(dir.path(), &env);
    create_user(dir.path(), &env, "alice", false);
    let base = project(&srv).await;
    assert_eq!(post(&base, "uuid:d-0").await, Ok(201));
    assert!(srv.stop());
    let (ok, _, err) = fv(dir.path(), &env, &["backup"]);
    assert!(ok, "{err}");
    let damaged = damage_one_blob(t2.path());
    let (ok, out, err) = fv(dir.path(), &env, &["backup", "verify"]);
    assert!(!ok, "a damaged backup must fail verify: {out}");
    assert!(err.contains(&damaged), "the message names {damaged}: {err}");
    let (ok, out, err) = fv(dir.path(), &env, &["audit", "verify"]);
    assert!(ok, "{out} {err}");
    let actions = audit_actions(dir.path()).await;
    assert!(
        actions
            .iter()
            .any(|(a, d)| a == "backup.verify_failed" && d.contains(&damaged)),
        "{actions:?}"
    );
}

/// (action, details) of every audit entry, read from the store as an operator would.
async fn audit_actions(dir: &Path) -> Vec<(String, String)> {
    let data = dir.join("fieldvault-data");
    let settings = fieldvault_store::StorageSettings {
        data_dir: data.clone(),
        database_url: None,
        blobs: None,
        master_key: fieldvault_store::MasterKeySource::File(data.join("master.key")),
        max_connections: 1,
    };
    let opened = fieldvault_store::open(&settings, false).await.unwrap();
    let rows = opened.store.audit_entries(0, 1000).await.unwrap();
    opened.store.close().await;
    rows.into_iter().map(|r| (r.action, r.details)).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backup_to_an_s3_compatible_target() {
    let Some(s3) = S3Server::start().await else {
        return;
    };
    let target = format!("s3://{}/backups", s3.bucket);
    let env = [
        ("FIELDVAULT_S3_ENDPOINT", s3.endpoint.as_str()),
        ("FIELDVAULT_S3_ACCESS_KEY_ID", s3.access_key.as_str()),
        ("FIELDVAULT_S3_SECRET_ACCESS_KEY", s3.secret_key.as_str()),
        ("FIELDVAULT_S3_ALLOW_HTTP", "true"),
    ];
    scenario(&target, &env).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_backup_restores_into_a_new_database() {
    use fieldvault_testkit::pg::TestDb;
    let Some(db) = TestDb::create().await else {
        return;
    };
    let Some(fresh) = TestDb::create().await else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("backup.key");
    let (ok, _, err) = fv(
        dir.path(),
        &[],
        &["backup", "keygen", key.to_str().unwrap()],
    );
    assert!(ok, "{err}");
    let key_s = key.display().to_string();
    let t = tempfile::tempdir().unwrap();
    let target = format!("file://{}", t.path().display());
    let master = "3q2+7wABAgMEBQYHCAkKCwwNDg8QERITFBUWFxgZGhs=";
    let env = [
        ("FIELDVAULT_DATABASE_URL", db.url.as_str()),
        ("FIELDVAULT_MASTER_KEY", master),
        ("FIELDVAULT_BACKUP_TARGET", target.as_str()),
        ("FIELDVAULT_BACKUP_KEY_FILE", key_s.as_str()),
    ];
    let srv = Server::start(dir.path(), &env);
    create_user(dir.path(), &env, "alice", false);
    let base = project(&srv).await;
    for i in 0..5 {
        assert_eq!(post(&base, &format!("uuid:pg-{i}")).await, Ok(201));
    }
    let before = content(&base).await;
    let (ok, _, err) = fv(dir.path(), &env, &["backup"]);
    assert!(ok, "{err}");
    let (ok, out, err) = fv(dir.path(), &env, &["backup", "verify"]);
    assert!(ok, "{out} {err}");
    assert!(srv.stop());

    // A new host: another database, another data directory (for the blobs), the same keys.
    let dir2 = tempfile::tempdir().unwrap();
    let env2 = [
        ("FIELDVAULT_DATABASE_URL", fresh.url.as_str()),
        ("FIELDVAULT_MASTER_KEY", master),
        ("FIELDVAULT_BACKUP_TARGET", target.as_str()),
        ("FIELDVAULT_BACKUP_KEY_FILE", key_s.as_str()),
    ];
    let (ok, _, err) = fv(
        dir2.path(),
        &env2,
        &[
            "restore",
            "--from",
            &target,
            "--into-database-url",
            &fresh.url,
        ],
    );
    assert!(ok, "{err}");
    let (ok, _, err) = fv(
        dir2.path(),
        &env2,
        &[
            "restore",
            "--from",
            &target,
            "--into-database-url",
            &fresh.url,
        ],
    );
    assert!(
        !ok,
        "a second restore into a database that holds data needs --force"
    );
    assert!(err.contains("--force"), "{err}");
    let srv = Server::start(dir2.path(), &env2);
    let base = base.replace(base.split("/v1/").next().unwrap(), srv.base.as_str());
    assert_eq!(content(&base).await, before, "restored data differs");
    assert!(srv.stop());
    db.drop_db().await;
    fresh.drop_db().await;
}

/// Two instances on one PostgreSQL database with one backup target: exactly one runs the daily
/// schedule (the holder of the scheduler's advisory lock), so one backup is taken, not two.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_scheduler_among_instances() {
    use fieldvault_testkit::pg::TestDb;
    let Some(db) = TestDb::create().await else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("backup.key");
    let (ok, _, err) = fv(
        dir.path(),
        &[],
        &["backup", "keygen", key.to_str().unwrap()],
    );
    assert!(ok, "{err}");
    let key_s = key.display().to_string();
    let t = tempfile::tempdir().unwrap();
    let target = format!("file://{}", t.path().display());
    let env = [
        ("FIELDVAULT_DATABASE_URL", db.url.as_str()),
        (
            "FIELDVAULT_MASTER_KEY",
            "3q2+7wABAgMEBQYHCAkKCwwNDg8QERITFBUWFxgZGhs=",
        ),
        ("FIELDVAULT_BACKUP_TARGET", target.as_str()),
        ("FIELDVAULT_BACKUP_KEY_FILE", key_s.as_str()),
    ];
    let (d1, d2) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let a = Server::start(d1.path(), &env);
    let b = Server::start(d2.path(), &env);
    let list = || {
        let (ok, out, err) = fv(dir.path(), &env, &["backup", "list"]);
        assert!(ok, "{err}");
        out.lines().filter(|l| l.contains('Z')).count()
    };
    let started = std::time::Instant::now();
    while list() == 0 {
        assert!(started.elapsed().as_secs() < 90, "no scheduled backup");
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    }
    // Give the other instance every chance to take a second one.
    tokio::time::sleep(std::time::Duration::from_secs(3)).await;
    assert_eq!(list(), 1, "exactly one instance ran the schedule");
    let out = std::process::Command::new("psql")
        .arg(&db.url)
        .args([
            "-qtA",
            "-c",
            // This database only: other tests' servers run beside this one.
            "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND granted \
             AND database = (SELECT oid FROM pg_database WHERE datname = current_database())",
        ])
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "1");
    drop((a, b));
    db.drop_db().await;
}
