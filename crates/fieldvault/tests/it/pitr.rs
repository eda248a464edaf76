//! Point-in-time recovery of a PostgreSQL deployment through pgBackRest (issue #8, item 5):
//! batch A, note the time, batch B, restore the database to that time → only batch A, over the
//! API, with the same master key and the same blob store.
//!
//! The database is a private cluster with WAL archived to an encrypted pgBackRest repository
//! (`fieldvault_testkit::pg_cluster::PgCluster::start_archived`); the procedure is the one in
//! docs/operations/backup-and-restore.md ("Point-in-time recovery: PostgreSQL").

use std::collections::BTreeSet;
use std::time::Duration;

use fieldvault_testkit::pg_cluster::PgCluster;

use crate::degraded::{photo_bytes, post, project, stored};
use crate::harness::{PASSWORD, Server, client, create_user};

const MASTER: &str = "3q2+7wABAgMEBQYHCAkKCwwNDg8QERITFBUWFxgZGhs=";

fn ids(prefix: &str, n: usize) -> BTreeSet<String> {
    (0..n).map(|i| format!("uuid:{prefix}-{i}")).collect()
}

/// The database's clock, truncated to the second, as a recovery target (`… +00`).
fn db_now_second(cluster: &PgCluster) -> String {
    cluster.query(
        "postgres",
        "SELECT to_char(date_trunc('second', clock_timestamp()) AT TIME ZONE 'UTC', \
         'YYYY-MM-DD HH24:MI:SS') || '+00'",
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_point_in_time_recovery_keeps_only_the_earlier_batch() {
    let Some(cluster) = tokio::task::block_in_place(PgCluster::start_archived) else {
        return;
    };
    let url = cluster.create_db("fv_pitr");
    // One data directory for both servers: blobs (`<data_dir>/blobs`) are not in the database,
    // so the restored server reads them from the same store, as after a real PITR.
    let dir = tempfile::tempdir().unwrap();
    let env = [
        ("FIELDVAULT_DATABASE_URL", url.as_str()),
        ("FIELDVAULT_MASTER_KEY", MASTER),
    ];
    let srv = Server::start(dir.path(), &env);
    create_user(dir.path(), &env, "alice", false);
    let base = project(&srv).await;
    // A differential backup after the setup: the restore starts from it (the newest backup
    // before the target) and replays WAL from there.
    tokio::task::block_in_place(|| cluster.backup("diff"));

    let (a, b) = (ids("a", 6), ids("b", 6));
    for id in &a {
        assert_eq!(post(&base, id).await, Ok(201), "{id}");
    }
    // The target: a second that begins after every commit of batch A and ends before batch B.
    tokio::task::block_in_place(|| cluster.query("postgres", "SELECT pg_switch_wal()"));
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let target = tokio::task::block_in_place(|| db_now_second(&cluster));
    tokio::time::sleep(Duration::from_millis(1500)).await;
    for id in &b {
        assert_eq!(post(&base, id).await, Ok(201), "{id}");
    }
    let all: BTreeSet<String> = stored(&base).await.into_iter().collect();
    assert_eq!(all, a.union(&b).cloned().collect(), "before the restore");
    // Batch B's WAL must be in the repository: recovery stops at the first commit after the
    // target, and fails if the archive ends before the target was reached.
    tokio::task::block_in_place(|| cluster.archive_now());
    assert!(srv.stop());
    tokio::task::block_in_place(|| cluster.stop_server());

    let restored = tokio::task::block_in_place(|| cluster.restore_to_time(&target));
    let log = restored.log();
    assert!(
        log.contains("recovery stopping before"),
        "recovery did not stop at a transaction after the target {target}: {log}"
    );
    let url2 = format!("{}/fv_pitr", restored.server_url);
    let env2 = [
        ("FIELDVAULT_DATABASE_URL", url2.as_str()),
        ("FIELDVAULT_MASTER_KEY", MASTER),
    ];
    let srv = Server::start(dir.path(), &env2);
    let base = base.replace(base.split("/v1/").next().unwrap(), srv.base.as_str());
    let ids: Vec<String> = stored(&base).await;
    let got: BTreeSet<String> = ids.iter().cloned().collect();
    assert_eq!(ids.len(), got.len(), "a submission is listed twice");
    assert_eq!(got, a, "restored to {target}: exactly batch A");
    // Batch A's data opens with the same master key, attachments included (content-addressed
    // blobs outside the database).
    let c = client();
    for id in &a {
        let r = c
            .get(format!("{base}/forms/outage/submissions/{id}.xml"))
            .basic_auth("alice", Some(PASSWORD))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "{id}");
        assert!(r.text().await.unwrap().contains(id.as_str()), "{id}");
    }
    let r = c
        .get(format!(
            "{base}/forms/outage/submissions/uuid:a-0/attachments/photo.jpg"
        ))
        .basic_auth("alice", Some(PASSWORD))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.bytes().await.unwrap().to_vec(), photo_bytes("uuid:a-0"));
    // The restored database accepts new submissions (it was promoted, not left read-only).
    assert_eq!(post(&base, "uuid:after-restore-1").await, Ok(201));
    assert!(srv.stop());
}

/// Live partial recovery on PostgreSQL (issue #8, item 4): one project's damage (two deletions,
/// four submissions too many) undone from a database pgBackRest recovered to a second before it,
/// into the running server while submissions keep arriving in another project; then the same
/// project brought back beside itself as a new one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_project_is_recovered_into_the_live_server() {
    let Some(cluster) = tokio::task::block_in_place(PgCluster::start_archived) else {
        return;
    };
    let url = cluster.create_db("fv_live");
    let dir = tempfile::tempdir().unwrap();
    let env = [
        ("FIELDVAULT_DATABASE_URL", url.as_str()),
        ("FIELDVAULT_MASTER_KEY", MASTER),
        ("FIELDVAULT_LIMITS_COLLECTOR_PER_WINDOW", "1000000"),
    ];
    let srv = Server::start(dir.path(), &env);
    create_user(dir.path(), &env, "alice", false);
    let damaged = project(&srv).await;
    let busy = project(&srv).await;
    let pid = damaged.rsplit('/').next().unwrap().to_owned();
    tokio::task::block_in_place(|| cluster.backup("diff"));
    let a = ids("a", 6);
    for id in &a {
        assert_eq!(post(&damaged, id).await, Ok(201), "{id}");
    }
    tokio::task::block_in_place(|| cluster.query("postgres", "SELECT pg_switch_wal()"));
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let target = tokio::task::block_in_place(|| db_now_second(&cluster));
    tokio::time::sleep(Duration::from_millis(1500)).await;
    for id in &ids("b", 4) {
        assert_eq!(post(&damaged, id).await, Ok(201), "{id}");
    }
    for id in ["uuid:a-1", "uuid:a-2"] {
        let r = client()
            .delete(format!("{damaged}/forms/outage/submissions/{id}"))
            .basic_auth("alice", Some(PASSWORD))
            .send()
            .await
            .unwrap();
        assert!(r.status().is_success(), "{id}");
    }
    tokio::task::block_in_place(|| cluster.archive_now());
    // The database as it was, in a scratch cluster, while the server keeps running.
    let restored = tokio::task::block_in_place(|| cluster.restore_to_time(&target));
    let source = format!("{}/fv_live", restored.server_url);

    let feeder = crate::pitr_embedded::Feeder::start(&busy);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let fv = |args: &[&str]| {
        let mut c = crate::harness::cmd(dir.path());
        c.args(args);
        for (k, v) in env {
            c.env(k, v);
        }
        crate::harness::run(c, "")
    };
    let (ok, out, err) = tokio::task::block_in_place(|| {
        fv(&[
            "restore",
            "--project",
            &pid,
            "--into-live",
            "--from-database-url",
            &source,
            "--yes",
        ])
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (sent, failures) = feeder.stop().await;
    assert!(ok, "{out} {err}");
    assert!(err.contains("4 removed, 2 brought back"), "{err}");
    assert!(
        failures.is_empty(),
        "intake failed during the recovery: {failures:?}"
    );
    let busy_now: BTreeSet<String> = stored(&busy).await.into_iter().collect();
    assert_eq!(busy_now, sent, "the other project lost or doubled nothing");
    let got: BTreeSet<String> = stored(&damaged).await.into_iter().collect();
    assert_eq!(got, a, "the project is back at {target}");
    let photo = |base: String| async move {
        let r = client()
            .get(format!(
                "{base}/forms/outage/submissions/uuid:a-0/attachments/photo.jpg"
            ))
            .basic_auth("alice", Some(PASSWORD))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        r.bytes().await.unwrap().to_vec()
    };
    assert_eq!(photo(damaged.clone()).await, photo_bytes("uuid:a-0"));
    assert_eq!(post(&damaged, "uuid:after-1").await, Ok(201));

    // As a new project: batch A again, re-encrypted; the current project is untouched.
    let (ok, out, err) = tokio::task::block_in_place(|| {
        fv(&[
            "restore",
            "--project",
            &pid,
            "--into-live",
            "--from-database-url",
            &source,
            "--as-new",
        ])
    });
    assert!(ok, "{out} {err}");
    let copy = damaged.replace(
        &format!("/v1/projects/{pid}"),
        &format!("/v1/projects/{}", out.trim()),
    );
    let got: BTreeSet<String> = stored(&copy).await.into_iter().collect();
    assert_eq!(got, a);
    assert_eq!(photo(copy.clone()).await, photo_bytes("uuid:a-0"));
    let mut now = a.clone();
    now.insert("uuid:after-1".into());
    let current: BTreeSet<String> = stored(&damaged).await.into_iter().collect();
    assert_eq!(current, now);
    assert_eq!(post(&copy, "uuid:in-copy-1").await, Ok(201));
    assert!(srv.stop());
}
