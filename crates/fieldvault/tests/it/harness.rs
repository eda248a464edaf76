//! Runs the real `fieldvault` binary as a child process and talks to it over HTTP.

use std::io::{BufRead as _, BufReader, Write as _};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex, mpsc};
use std::time::Duration;

pub const BIN: &str = env!("CARGO_BIN_EXE_fieldvault");
pub const PASSWORD: &str = "correct horse battery staple";

/// A command in a working directory, with a clean `FIELDVAULT_*` environment.
pub fn cmd(cwd: &Path) -> Command {
    let mut c = Command::new(BIN);
    c.current_dir(cwd);
    for (k, _) in std::env::vars() {
        if k.starts_with("FIELDVAULT_") {
            c.env_remove(k);
        }
    }
    c
}

/// Runs a command to completion with `stdin` fed in; returns (status ok, stdout, stderr).
pub fn run(mut c: Command, stdin: &str) -> (bool, String, String) {
    c.stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = c.spawn().unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(stdin.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Creates a user through the CLI.
pub fn create_user(cwd: &Path, extra_env: &[(&str, &str)], name: &str, superuser: bool) {
    let mut c = cmd(cwd);
    c.args(["user", "create", name, "--password-stdin"]);
    if superuser {
        c.arg("--superuser");
    }
    for (k, v) in extra_env {
        c.env(k, v);
    }
    let (ok, out, err) = run(c, &format!("{PASSWORD}\n"));
    assert!(ok, "user create failed: {out} {err}");
}

/// A running `fieldvault serve`.
pub struct Server {
    pub child: Child,
    pub base: String,
    pub stdout: Arc<Mutex<Vec<String>>>,
    pub stderr: Arc<Mutex<Vec<String>>>,
}

impl Server {
    /// Starts `fieldvault serve --listen 127.0.0.1:0` in `cwd` and waits until it listens.
    pub fn start(cwd: &Path, env: &[(&str, &str)]) -> Server {
        Self::try_start(cwd, env).unwrap_or_else(|e| panic!("server did not start: {e}"))
    }

    /// Like [`start`](Self::start), but returns the stderr text if the process exits instead.
    pub fn try_start(cwd: &Path, env: &[(&str, &str)]) -> Result<Server, String> {
        let mut c = cmd(cwd);
        c.args(["serve", "--listen", "127.0.0.1:0"]);
        for (k, v) in env {
            c.env(k, v);
        }
        c.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = c.spawn().unwrap();
        let stdout = Arc::new(Mutex::new(Vec::new()));
        let stderr = Arc::new(Mutex::new(Vec::new()));
        let (tx, rx) = mpsc::channel();
        {
            let out = BufReader::new(child.stdout.take().unwrap());
            let sink = stdout.clone();
            std::thread::spawn(move || {
                for line in out.lines().map_while(Result::ok) {
                    sink.lock().unwrap().push(line);
                }
            });
            let err = BufReader::new(child.stderr.take().unwrap());
            let sink = stderr.clone();
            std::thread::spawn(move || {
                for line in err.lines().map_while(Result::ok) {
                    if let Some(url) = line.split("listening on ").nth(1) {
                        let _ = tx.send(url.trim().to_owned());
                    }
                    sink.lock().unwrap().push(line);
                }
            });
        }
        match rx.recv_timeout(Duration::from_secs(60)) {
            Ok(base) => Ok(Server {
                child,
                base,
                stdout,
                stderr,
            }),
            Err(_) => {
                let _ = child.kill();
                let _ = child.wait();
                std::thread::sleep(Duration::from_millis(100));
                Err(stderr.lock().unwrap().join("\n"))
            }
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// The body of an unauthenticated GET, as text.
    pub async fn get_text(&self, path: &str) -> String {
        client()
            .get(self.url(path))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    }

    /// Access-log lines (JSON) printed so far.
    pub fn access_log(&self) -> Vec<serde_json::Value> {
        self.stdout
            .lock()
            .unwrap()
            .iter()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .filter(|v| v["type"] == "access")
            .collect()
    }

    pub fn stderr_text(&self) -> String {
        self.stderr.lock().unwrap().join("\n")
    }

    /// Sends a signal to the server process.
    pub fn signal(&self, sig: &str) {
        let ok = Command::new("kill")
            .args([&format!("-{sig}"), &self.child.id().to_string()])
            .status()
            .unwrap()
            .success();
        assert!(ok);
    }

    /// SIGTERM and wait; returns whether it exited successfully (printing its stderr if not).
    pub fn stop(mut self) -> bool {
        self.signal("TERM");
        // Up to 60 s: on a loaded 2-core CI machine a clean shutdown can be slow; a hang still fails.
        for _ in 0..1200 {
            if let Some(status) = self.child.try_wait().unwrap() {
                if !status.success() {
                    eprintln!(
                        "server exited with {status}; its stderr:\n{}",
                        self.stderr_tail()
                    );
                }
                return status.success();
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        eprintln!(
            "server did not stop within 60 s of SIGTERM; its stderr:\n{}",
            self.stderr_tail()
        );
        let _ = self.child.kill();
        false
    }

    /// The last lines the server wrote to stderr (for a failing test's output).
    fn stderr_tail(&self) -> String {
        let lines = self.stderr.lock().unwrap();
        lines[lines.len().saturating_sub(30)..].join("\n")
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(60))
        .build()
        .unwrap()
}

pub fn base32_decode(s: &str) -> Vec<u8> {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
    let (mut bits, mut value, mut out) = (0u32, 0u32, Vec::new());
    for c in s.trim_end_matches('=').bytes() {
        let v = ALPHABET.iter().position(|a| *a == c).unwrap() as u32;
        value = (value << 5) | v;
        bits += 5;
        if bits >= 8 {
            bits -= 8;
            out.push((value >> bits) as u8);
        }
    }
    out
}

/// Creates an administrator with two-factor sign-in (what site administration requires) and
/// returns a session token for it.
pub async fn admin_session(srv: &Server, dir: &Path, env: &[(&str, &str)], name: &str) -> String {
    use serde_json::{Value, json};
    create_user(dir, env, name, true);
    let c = client();
    let login = |code: Option<String>| {
        let mut body = json!({"email": name, "password": PASSWORD});
        if let Some(code) = code {
            body["code"] = json!(code);
        }
        c.post(srv.url("/v1/sessions")).json(&body).send()
    };
    let s: Value = login(None).await.unwrap().json().await.unwrap();
    let first = s["token"].as_str().unwrap().to_owned();
    let e: Value = c
        .post(srv.url("/v1/users/current/2fa"))
        .bearer_auth(&first)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let secret = base32_decode(e["secret"].as_str().unwrap());
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let code = fieldvault_crypto::totp::code(&secret, now).unwrap();
    let r: Value = c
        .post(srv.url("/v1/users/current/2fa/confirm"))
        .bearer_auth(&first)
        .json(&json!({"code": code}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let recovery = r["recoveryCodes"][0].as_str().unwrap().to_owned();
    let s: Value = login(Some(recovery)).await.unwrap().json().await.unwrap();
    s["token"].as_str().unwrap().to_owned()
}

/// Every file under `dir`, recursively (for "no plaintext on disk" checks).
pub fn files_under(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).unwrap() {
            let p = entry.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else {
                out.push(p);
            }
        }
    }
    out
}
