//! A real S3-compatible server (`s3s-fs`) on loopback, one per test, killed at drop.

use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A running `s3s-fs` with one bucket.
pub struct S3Server {
    child: Child,
    _dir: tempfile::TempDir,
    /// `http://127.0.0.1:PORT`.
    pub endpoint: String,
    /// Bucket created for the test.
    pub bucket: String,
    /// Access key id.
    pub access_key: String,
    /// Secret key.
    pub secret_key: String,
}

/// The `s3s-fs` binary: `FIELDVAULT_S3S_FS`, else `s3s-fs` on `PATH`.
fn binary() -> Option<String> {
    if let Ok(p) = std::env::var("FIELDVAULT_S3S_FS") {
        return Some(p);
    }
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join("s3s-fs"))
        .find(|p| p.is_file())
        .map(|p| p.display().to_string())
}

impl S3Server {
    /// Starts a server, or `None` (skip) outside CI when `s3s-fs` is not installed.
    pub async fn start() -> Option<S3Server> {
        let Some(bin) = binary() else {
            return crate::unavailable("s3s-fs (cargo install s3s-fs --features binary)");
        };
        let dir = tempfile::tempdir().unwrap();
        let bucket = format!("fv-{}", crate::unique_suffix());
        // s3s-fs maps buckets to directories.
        std::fs::create_dir(dir.path().join(&bucket)).unwrap();
        let (access_key, secret_key) = (
            "fieldvault-test".to_owned(),
            "fieldvault-test-secret".to_owned(),
        );
        for _attempt in 0..5 {
            let port = TcpListener::bind("127.0.0.1:0")
                .unwrap()
                .local_addr()
                .unwrap()
                .port();
            let mut child = Command::new(&bin)
                .args(["--host", "127.0.0.1", "--port", &port.to_string()])
                .args(["--access-key", &access_key, "--secret-key", &secret_key])
                .arg(dir.path())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap_or_else(|e| panic!("cannot start {bin}: {e}"));
            let deadline = Instant::now() + Duration::from_secs(10);
            while Instant::now() < deadline {
                if tokio::net::TcpStream::connect(("127.0.0.1", port))
                    .await
                    .is_ok()
                {
                    return Some(S3Server {
                        child,
                        _dir: dir,
                        endpoint: format!("http://127.0.0.1:{port}"),
                        bucket,
                        access_key,
                        secret_key,
                    });
                }
                if child.try_wait().unwrap().is_some() {
                    break; // port taken between probe and bind: try another
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            let _ = child.kill();
            let _ = child.wait();
        }
        panic!("s3s-fs did not start");
    }
}

impl Drop for S3Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
