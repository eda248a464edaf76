//! A private PostgreSQL cluster for tests that stop and start the database server (fault tests).
//! The machine's shared server is never touched: this one lives in a temporary directory, on a
//! free port, with trust authentication, and is stopped and deleted at drop.
//!
//! `initdb` refuses to run as root; when the test runs as root, the cluster runs as the
//! `postgres` system user (via `runuser`), which owns the temporary directory.

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

/// A running private cluster.
pub struct PgCluster {
    dir: tempfile::TempDir,
    port: u16,
    as_postgres: bool,
    /// `postgres://postgres@127.0.0.1:<port>` (no database).
    pub server_url: String,
}

impl PgCluster {
    /// Creates and starts a cluster, or `None` (skip; a failure in CI) when the binaries are
    /// missing.
    pub fn start() -> Option<PgCluster> {
        if !bin_dir().join("initdb").exists() {
            return crate::unavailable("PostgreSQL server binaries (initdb, pg_ctl)");
        }
        let dir = tempfile::Builder::new()
            .prefix("fv-pgcluster-")
            .tempdir()
            .unwrap();
        let as_postgres = is_root();
        if as_postgres {
            let ok = Command::new("chown")
                .args(["-R", "postgres:postgres"])
                .arg(dir.path())
                .status()
                .is_ok_and(|s| s.success());
            assert!(ok, "cannot hand the cluster directory to the postgres user");
        }
        let port = free_port();
        let c = PgCluster {
            server_url: format!("postgres://postgres@127.0.0.1:{port}"),
            dir,
            port,
            as_postgres,
        };
        let data = c.data_dir();
        let out = c
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
            .arg(&data)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "initdb failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        c.start_server();
        Some(c)
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
        let exe = bin_dir().join(name);
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
            .args(["-w", "-t", "60", "-o", &opts, "-l"])
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
