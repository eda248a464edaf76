//! A private PostgreSQL cluster for tests that stop and start the database server (fault tests).
//! The machine's shared server is never touched: this one lives in a temporary directory, on a
//! free port, with trust authentication, and is stopped and deleted at drop.
//!
//! `initdb` refuses to run as root; when the test runs as root, the cluster runs as the
//! `postgres` system user (via `runuser`), which owns the temporary directory.
//!
//! [`PgCluster::start_archived`] adds point-in-time recovery through pgBackRest: WAL archived to
//! an encrypted repository in the same temporary directory, a stanza and a full backup, and
//! [`PgCluster::restore_to_time`] restores into a new cluster. Its configuration file lives in the
//! temporary directory too (`pgbackrest --config=FILE`), so nothing under `/etc` is read or
//! written, and pgBackRest runs as the same OS user as the cluster (it must own the data and
//! repository files).

use std::path::{Path, PathBuf};
use std::process::Command;

/// Where the PostgreSQL binaries live (`FIELDVAULT_TEST_PG_BIN`, else Debian's PostgreSQL 15).
fn bin_dir() -> PathBuf {
    std::env::var("FIELDVAULT_TEST_PG_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|_| PathBuf::from("/usr/lib/postgresql/15/bin"))
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
}

/// The pgBackRest stanza every archived test cluster uses.
const STANZA: &str = "fv";

/// A running private cluster.
pub struct PgCluster {
    dir: tempfile::TempDir,
    port: u16,
    as_postgres: bool,
    /// The pgBackRest configuration file, when WAL is archived ([`PgCluster::start_archived`]).
    backrest_config: Option<PathBuf>,
    /// `postgres://postgres@127.0.0.1:<port>` (no database).
    pub server_url: String,
}

/// A temporary directory the cluster's OS user can write (see the module comment).
fn cluster_dir(prefix: &str) -> (tempfile::TempDir, bool) {
    let dir = tempfile::Builder::new().prefix(prefix).tempdir().unwrap();
    (dir, is_root())
}

/// Hands `dir` (recursively) to the postgres user when the cluster runs as it.
fn give_to_postgres(dir: &Path, as_postgres: bool) {
    if !as_postgres {
        return;
    }
    let ok = Command::new("chown")
        .args(["-R", "postgres:postgres"])
        .arg(dir)
        .status()
        .is_ok_and(|s| s.success());
    assert!(ok, "cannot hand {} to the postgres user", dir.display());
}

fn pgbackrest_available() -> bool {
    Command::new("pgbackrest")
        .arg("version")
        .output()
        .is_ok_and(|o| o.status.success())
}

impl PgCluster {
    /// Creates and starts a cluster, or `None` (skip; a failure in CI) when the binaries are
    /// missing.
    pub fn start() -> Option<PgCluster> {
        if !bin_dir().join("initdb").exists() {
            return crate::unavailable("PostgreSQL server binaries (initdb, pg_ctl)");
        }
        let (dir, as_postgres) = cluster_dir("fv-pgcluster-");
        give_to_postgres(dir.path(), as_postgres);
        let c = PgCluster::new(dir, as_postgres);
        c.initdb();
        c.start_server();
        Some(c)
    }

    /// Like [`start`](Self::start), with WAL archived by pgBackRest to a repository encrypted
    /// with AES-256-CBC (`repo1-cipher-type`, a random `repo1-cipher-pass`) in the cluster's
    /// temporary directory; the stanza is created and a full backup taken before it returns.
    /// `None` (skip; a failure in CI) when the PostgreSQL binaries or `pgbackrest` are missing.
    pub fn start_archived() -> Option<PgCluster> {
        if !bin_dir().join("initdb").exists() {
            return crate::unavailable("PostgreSQL server binaries (initdb, pg_ctl)");
        }
        if !pgbackrest_available() {
            return crate::unavailable("pgBackRest (Debian package pgbackrest)");
        }
        let (dir, as_postgres) = cluster_dir("fv-pgarchived-");
        let mut c = PgCluster::new(dir, as_postgres);
        let root = c.dir.path().to_path_buf();
        for sub in ["repo", "lock", "pgbackrest-log"] {
            std::fs::create_dir(root.join(sub)).unwrap();
        }
        let mut pass = [0u8; 32];
        getrandom::getrandom(&mut pass).unwrap();
        let pass: String = pass.iter().map(|b| format!("{b:02x}")).collect();
        let config = root.join("pgbackrest.conf");
        // archive-timeout is generous: a loaded CI machine can take a while to push a segment.
        std::fs::write(
            &config,
            format!(
                "[global]\n\
                 repo1-path={repo}\n\
                 repo1-cipher-type=aes-256-cbc\n\
                 repo1-cipher-pass={pass}\n\
                 repo1-retention-full=2\n\
                 lock-path={lock}\n\
                 log-path={log}\n\
                 log-level-console=warn\n\
                 log-level-file=detail\n\
                 start-fast=y\n\
                 archive-timeout=180\n\
                 \n\
                 [{STANZA}]\n\
                 pg1-path={data}\n\
                 pg1-port={port}\n\
                 pg1-socket-path={root}\n",
                repo = root.join("repo").display(),
                lock = root.join("lock").display(),
                log = root.join("pgbackrest-log").display(),
                data = c.data_dir().display(),
                port = c.port,
                root = root.display(),
            ),
        )
        .unwrap();
        give_to_postgres(&root, as_postgres);
        c.initdb();
        let mut conf = std::fs::OpenOptions::new()
            .append(true)
            .open(c.data_dir().join("postgresql.conf"))
            .unwrap();
        use std::io::Write as _;
        writeln!(
            conf,
            "\n# WAL archiving to pgBackRest (fieldvault-testkit)\n\
             wal_level = replica\n\
             archive_mode = on\n\
             archive_command = 'pgbackrest --config={} --stanza={STANZA} archive-push %p'",
            config.display()
        )
        .unwrap();
        drop(conf);
        c.backrest_config = Some(config);
        c.start_server();
        c.pgbackrest(&["stanza-create"]);
        c.pgbackrest(&["check"]);
        c.backup("full");
        Some(c)
    }

    fn new(dir: tempfile::TempDir, as_postgres: bool) -> PgCluster {
        let port = free_port();
        PgCluster {
            server_url: format!("postgres://postgres@127.0.0.1:{port}"),
            dir,
            port,
            as_postgres,
            backrest_config: None,
        }
    }

    fn initdb(&self) {
        let out = self
            .pg_command("initdb")
            .args([
                "-A",
                "trust",
                "-U",
                "postgres",
                "--no-sync",
                "-E",
                "UTF8",
                "-D",
            ])
            .arg(self.data_dir())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "initdb failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// Runs `pgbackrest --config=<this cluster's file> --stanza=fv <args>` as the cluster's OS
    /// user and returns its standard output; panics with pgBackRest's output when it fails.
    pub fn pgbackrest(&self, args: &[&str]) -> String {
        let config = self
            .backrest_config
            .as_ref()
            .expect("pgbackrest needs a cluster from start_archived()");
        let mut c = self.as_cluster_user(Path::new("pgbackrest"));
        c.arg(format!("--config={}", config.display()))
            .arg(format!("--stanza={STANZA}"))
            .args(args);
        let out = c.output().unwrap();
        assert!(
            out.status.success(),
            "pgbackrest {args:?} failed: {} {}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Takes a pgBackRest backup: `full`, `diff` or `incr`.
    pub fn backup(&self, kind: &str) {
        self.pgbackrest(&["backup", &format!("--type={kind}")]);
    }

    /// Forces a WAL segment switch and waits until pgBackRest has archived it (`pgbackrest check`
    /// does both), so everything committed so far can be replayed from the repository.
    pub fn archive_now(&self) {
        self.pgbackrest(&["check"]);
    }

    /// Restores this cluster's repository into a NEW cluster (new temporary directory, new port),
    /// recovered to `target` (a PostgreSQL timestamp such as `2026-11-28 09:41:00+00`) and
    /// promoted, then starts it and waits until recovery has ended. WAL archiving is off in the
    /// restored cluster (`--archive-mode=off`): it must not push a second timeline into the
    /// repository it was restored from while the test's original cluster still uses it.
    ///
    /// The original cluster may be running or stopped, but must outlive the restored one (the
    /// repository is in its directory).
    pub fn restore_to_time(&self, target: &str) -> PgCluster {
        let (dir, as_postgres) = cluster_dir("fv-pgrestored-");
        let c = PgCluster::new(dir, as_postgres);
        std::fs::create_dir(c.data_dir()).unwrap();
        {
            use std::os::unix::fs::PermissionsExt as _;
            std::fs::set_permissions(c.data_dir(), std::fs::Permissions::from_mode(0o700)).unwrap();
        }
        give_to_postgres(c.dir.path(), as_postgres);
        self.pgbackrest(&[
            &format!("--pg1-path={}", c.data_dir().display()),
            "--type=time",
            &format!("--target={target}"),
            "--target-action=promote",
            "--archive-mode=off",
            "restore",
        ]);
        c.start_server();
        let t = std::time::Instant::now();
        while c.query("postgres", "SELECT pg_is_in_recovery()") != "f" {
            assert!(
                t.elapsed() < std::time::Duration::from_secs(180),
                "the restored cluster did not finish recovery: {}",
                std::fs::read_to_string(c.dir.path().join("log")).unwrap_or_default()
            );
            std::thread::sleep(std::time::Duration::from_millis(200));
        }
        c
    }

    /// Runs one SQL statement with `psql` and returns its unaligned, tuples-only output.
    pub fn query(&self, db: &str, sql: &str) -> String {
        let out = Command::new(bin_dir().join("psql"))
            .args(["-h", "127.0.0.1", "-p", &self.port.to_string()])
            .args(["-U", "postgres", "-d", db, "-X", "-A", "-t", "-v"])
            .arg("ON_ERROR_STOP=1")
            .arg("-c")
            .arg(sql)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "psql {sql:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    }

    /// The server's log (startup, recovery and archiving messages), for assertion messages.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("log")).unwrap_or_default()
    }

    fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// The cluster's directory (data, socket and log).
    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// The port it listens on (127.0.0.1).
    pub fn port(&self) -> u16 {
        self.port
    }

    fn pg_command(&self, name: &str) -> Command {
        self.as_cluster_user(&bin_dir().join(name))
    }

    /// A command run as the OS user that owns the cluster's files.
    fn as_cluster_user(&self, exe: &Path) -> Command {
        if self.as_postgres {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(exe);
            c
        } else {
            Command::new(exe)
        }
    }

    /// Starts the server and waits until it accepts connections.
    pub fn start_server(&self) {
        let opts = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1 -c fsync=off",
            self.port,
            self.dir.path().display()
        );
        let out = self
            .pg_command("pg_ctl")
            .args(["-w", "-t", "180", "-o", &opts, "-l"])
            .arg(self.dir.path().join("log"))
            .arg("-D")
            .arg(self.data_dir())
            .arg("start")
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "pg_ctl start failed: {} {}",
            String::from_utf8_lossy(&out.stdout),
            std::fs::read_to_string(self.dir.path().join("log")).unwrap_or_default()
        );
    }

    /// Stops the server (fast mode: open connections are cut, as in an outage).
    pub fn stop_server(&self) {
        let out = self
            .pg_command("pg_ctl")
            .args(["-w", "-m", "fast", "-D"])
            .arg(self.data_dir())
            .arg("stop")
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "pg_ctl stop failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// Creates a database and returns its URL.
    pub fn create_db(&self, name: &str) -> String {
        let out = Command::new(bin_dir().join("createdb"))
            .args([
                "-h",
                "127.0.0.1",
                "-p",
                &self.port.to_string(),
                "-U",
                "postgres",
                name,
            ])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "createdb failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        format!("{}/{name}", self.server_url)
    }
}

impl Drop for PgCluster {
    fn drop(&mut self) {
        let _ = self
            .pg_command("pg_ctl")
            .args(["-w", "-m", "immediate", "-D"])
            .arg(self.data_dir())
            .arg("stop")
            .output();
    }
}

/// A port nothing listens on right now (bound and released; good enough for a test).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap()
}

#[cfg(test)]
mod tests {
    use super::PgCluster;

    /// The PITR machinery on its own, in SQL: rows committed after the target time are gone
    /// from the restored cluster, rows before it are there.
    #[test]
    fn restore_to_time_keeps_only_what_was_committed_before() {
        let Some(c) = PgCluster::start_archived() else {
            return;
        };
        c.query("postgres", "CREATE TABLE t (v text)");
        c.query("postgres", "INSERT INTO t VALUES ('a')");
        std::thread::sleep(std::time::Duration::from_millis(1100));
        let target = c.query(
            "postgres",
            "SELECT to_char(date_trunc('second', clock_timestamp()) AT TIME ZONE 'UTC', \
             'YYYY-MM-DD HH24:MI:SS') || '+00'",
        );
        std::thread::sleep(std::time::Duration::from_millis(1500));
        c.query("postgres", "INSERT INTO t VALUES ('b')");
        c.archive_now();
        let r = c.restore_to_time(&target);
        assert_eq!(r.query("postgres", "SELECT string_agg(v, ',') FROM t"), "a");
    }
}
