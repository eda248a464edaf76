//! Bad configuration and bad data: one line naming the problem and the fix, a non-zero exit, and
//! nothing modified.

use std::os::unix::fs::PermissionsExt as _;

use crate::harness::{Server, cmd, run};

fn snapshot(dir: &std::path::Path) -> Vec<(String, Vec<u8>)> {
    let mut v = Vec::new();
    if let Ok(rd) = std::fs::read_dir(dir) {
        for e in rd {
            let p = e.unwrap().path();
            if p.is_file() && !p.ends_with("fieldvault.lock") {
                v.push((p.display().to_string(), std::fs::read(&p).unwrap()));
            }
        }
    }
    v.sort();
    v
}

/// Starts `serve` expecting failure; returns the one error line.
fn fails(cwd: &std::path::Path, env: &[(&str, &str)]) -> String {
    let err = match Server::try_start(cwd, env) {
        Ok(_) => panic!("server started but should not have"),
        Err(e) => e,
    };
    let lines: Vec<&str> = err
        .lines()
        .filter(|l| l.starts_with("fieldvault: error"))
        .collect();
    assert_eq!(lines.len(), 1, "exactly one error line, got: {err}");
    lines[0].to_owned()
}

#[test]
fn bad_configuration_is_refused_before_anything_is_created() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("fieldvault.toml"),
        "lisen = \"127.0.0.1:1\"\n",
    )
    .unwrap();
    let e = fails(dir.path(), &[]);
    assert!(e.contains("unknown option \"lisen\""), "{e}");
    assert!(e.contains("docs/configuration.md"), "{e}");
    std::fs::write(
        dir.path().join("fieldvault.toml"),
        "[http]\nbody_limit_bytes = \"lots\"\n",
    )
    .unwrap();
    let e = fails(dir.path(), &[]);
    assert!(
        e.contains("http.body_limit_bytes") && e.contains("not a valid number"),
        "{e}"
    );
    std::fs::remove_file(dir.path().join("fieldvault.toml")).unwrap();
    let e = fails(dir.path(), &[("FIELDVAULT_LISTN", "127.0.0.1:1")]);
    assert!(
        e.contains("unknown environment variable FIELDVAULT_LISTN"),
        "{e}"
    );
    let e = fails(dir.path(), &[("FIELDVAULT_DATABASE_URL", "mysql://x")]);
    assert!(
        e.contains("FIELDVAULT_DATABASE_URL") && e.contains("postgres://"),
        "{e}"
    );
    let e = fails(dir.path(), &[("FIELDVAULT_TLS_CERT", "/tmp/c.pem")]);
    assert!(e.contains("tls.cert and tls.key"), "{e}");
    assert!(
        !dir.path().join("fieldvault-data").exists(),
        "nothing created"
    );
    let e = fails(
        dir.path(),
        &[("FIELDVAULT_DATA_DIR", "/proc/fieldvault-test")],
    );
    assert!(
        e.contains("cannot create data directory /proc/fieldvault-test"),
        "{e}"
    );
}

#[test]
fn wrong_keys_and_damaged_data_are_refused_without_changes() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("fieldvault-data");
    let srv = Server::start(dir.path(), &[]);
    crate::harness::create_user(dir.path(), &[], "alice", false);
    assert!(srv.stop());
    let before = snapshot(&data);

    let e = fails(
        dir.path(),
        &[(
            "FIELDVAULT_MASTER_KEY",
            "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=",
        )],
    );
    assert!(
        e.contains("master key") && e.contains("does not open"),
        "{e}"
    );
    let e = fails(dir.path(), &[("FIELDVAULT_MASTER_KEY", "short")]);
    assert!(e.contains("FIELDVAULT_MASTER_KEY"), "{e}");
    assert_eq!(snapshot(&data), before);

    let kf = data.join("master.key");
    std::fs::set_permissions(&kf, std::fs::Permissions::from_mode(0o640)).unwrap();
    let e = fails(dir.path(), &[]);
    assert!(
        e.contains("readable by other users") && e.contains("chmod 600"),
        "{e}"
    );
    std::fs::set_permissions(&kf, std::fs::Permissions::from_mode(0o600)).unwrap();

    let db = data.join("fieldvault.db");
    let mut bytes = std::fs::read(&db).unwrap();
    for b in bytes.iter_mut().take(2048) {
        *b = !*b;
    }
    std::fs::write(&db, &bytes).unwrap();
    let damaged = snapshot(&data);
    let e = fails(dir.path(), &[]);
    assert!(e.contains("damaged"), "{e}");
    assert_eq!(snapshot(&data), damaged, "nothing modified");
}

#[test]
fn config_show_redacts_secrets_and_names_sources() {
    let dir = tempfile::tempdir().unwrap();
    let mut c = cmd(dir.path());
    c.args(["config", "show"])
        .env(
            "FIELDVAULT_DATABASE_URL",
            "postgres://fv:hunter2-secret@db/fv",
        )
        .env(
            "FIELDVAULT_MASTER_KEY",
            "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=",
        );
    let (ok, out, err) = run(c, "");
    assert!(ok, "{err}");
    assert!(
        !out.contains("hunter2") && !out.contains("AAECAwQF"),
        "{out}"
    );
    assert!(
        out.lines().any(|l| l.starts_with("database_url")
            && l.contains("[redacted]")
            && l.ends_with("# env")),
        "{out}"
    );
    assert!(out.lines().any(|l| l.starts_with("listen")
        && l.contains("127.0.0.1:8080")
        && l.ends_with("# default")));
    let (ok, reference, _) = run(
        {
            let mut c = cmd(dir.path());
            c.args(["config", "reference"]);
            c
        },
        "",
    );
    assert!(ok && reference.contains("FIELDVAULT_DATA_DIR"));
}
