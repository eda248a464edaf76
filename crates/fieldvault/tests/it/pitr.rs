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
