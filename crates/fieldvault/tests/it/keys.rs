//! `fieldvault keys rotate` end to end: refuses while serving, rotates, data still opens.

use crate::harness::{PASSWORD, Server, client, cmd, create_user, run};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotate_master_key_offline() {
    let dir = tempfile::tempdir().unwrap();
    let srv = Server::start(dir.path(), &[]);
    create_user(dir.path(), &[], "alice", false);
    let (ok, _, err) = run(
        {
            let mut c = cmd(dir.path());
            c.args(["keys", "rotate"]);
            c
        },
        "",
    );
    assert!(!ok && err.contains("stop it first"), "{err}");
    assert!(srv.stop());

    let kf = dir.path().join("fieldvault-data/master.key");
    let old = std::fs::read_to_string(&kf).unwrap();
    let (ok, out, err) = run(
        {
            let mut c = cmd(dir.path());
            c.args(["keys", "rotate"]);
            c
        },
        "",
    );
    assert!(ok, "{err}");
    assert!(err.contains("New master key fingerprint"), "{err}");
    assert!(out.is_empty(), "a key-file rotation prints no key");
    let new = std::fs::read_to_string(&kf).unwrap();
    assert_ne!(old.trim(), new.trim());

    // The old key no longer opens the data; the new one does.
    let e = match Server::try_start(dir.path(), &[("FIELDVAULT_MASTER_KEY", old.trim())]) {
        Ok(_) => panic!("old key still works"),
        Err(e) => e,
    };
    assert!(e.contains("does not open"), "{e}");
    let srv = Server::start(dir.path(), &[]);
    let r = client()
        .get(srv.url("/v1/users/current"))
        .basic_auth("alice", Some(PASSWORD))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert!(srv.stop());

    // From an environment key: the new key is printed for the operator to store.
    let (ok, out, err) = run(
        {
            let mut c = cmd(dir.path());
            c.args(["keys", "rotate"])
                .env("FIELDVAULT_MASTER_KEY", new.trim());
            c
        },
        "",
    );
    assert!(ok, "{err}");
    let printed = out.trim().to_owned();
    assert_eq!(printed.len(), 44, "{out}");
    let srv = Server::start(dir.path(), &[("FIELDVAULT_MASTER_KEY", printed.as_str())]);
    assert!(srv.stop());
}

#[test]
fn passphrase_derived_master_key() {
    let dir = tempfile::tempdir().unwrap();
    let create = |pass: &str, name: &str| {
        let mut c = cmd(dir.path());
        c.args([
            "--master-passphrase-stdin",
            "user",
            "create",
            name,
            "--password-stdin",
        ])
        .env("FIELDVAULT_MASTER_KEY_SOURCE", "passphrase");
        run(c, &format!("{pass}\n{PASSWORD}\n"))
    };
    let (ok, out, err) = create("a long enough passphrase", "dora");
    assert!(ok, "{out} {err}");
    let data = dir.path().join("fieldvault-data");
    assert!(data.join("master.salt").exists());
    assert!(
        !data.join("master.key").exists(),
        "no key file with a passphrase"
    );
    let (ok, _, err) = create("the wrong passphrase!", "eve");
    assert!(!ok && err.contains("does not open"), "{err}");
    let (ok, _, err) = create("short", "eve");
    assert!(!ok && err.contains("at least 12 characters"), "{err}");
    // Without a way to read it, the server refuses to guess.
    let mut c = cmd(dir.path());
    c.args(["config", "show"])
        .env("FIELDVAULT_MASTER_KEY_SOURCE", "passphrase");
    assert!(run(c, "").0, "config show needs no key");
    let e = match Server::try_start(
        dir.path(),
        &[("FIELDVAULT_MASTER_KEY_SOURCE", "passphrase")],
    ) {
        Ok(_) => panic!("started without a passphrase"),
        Err(e) => e,
    };
    assert!(e.contains("--master-passphrase-stdin"), "{e}");
}
