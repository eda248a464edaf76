//! Fieldvault's own start-up numbers, measured on the real release binary as a child process,
//! exactly as an operator would run it (no in-process shortcuts that would hide start-up cost).

use std::io::{BufRead as _, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex, mpsc};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use serde::Serialize;

/// How long a start may take before the benchmark gives up.
const START_TIMEOUT: Duration = Duration::from_secs(60);
/// How long the server may take to stop after SIGTERM before it is killed.
const STOP_TIMEOUT: Duration = Duration::from_secs(15);
/// Settling time before reading the idle RSS, so start-up allocations have finished.
const IDLE_SETTLE: Duration = Duration::from_millis(500);

/// One start of the server.
#[derive(Debug, Serialize)]
pub struct ServerRun {
    /// "first" (empty data dir: creates the store and master key) or "second" (same dir).
    pub label: String,
    /// Spawn to the first 200 from `GET /healthz`, in milliseconds.
    pub cold_start_ms: f64,
    /// VmRSS shortly after start, before any load, in MiB.
    pub idle_rss_mib: f64,
    /// VmRSS after the `/healthz` requests, in MiB.
    pub rss_after_healthz_mib: f64,
    /// Number of sequential `GET /healthz` requests timed.
    pub healthz_requests: usize,
    /// Median latency of one `GET /healthz`, in microseconds.
    pub healthz_p50_us: f64,
    /// 99th-percentile latency of one `GET /healthz`, in microseconds.
    pub healthz_p99_us: f64,
    /// SIGTERM to process exit, in milliseconds.
    pub shutdown_ms: f64,
    /// Whether the process exited successfully after SIGTERM.
    pub clean_exit: bool,
}

/// Finds the `fieldvault` binary, with a clear message if it has not been built.
pub fn resolve_bin(requested: &Path) -> anyhow::Result<PathBuf> {
    if requested.is_file() {
        // Absolute, because the server runs with its cwd in a scratch directory.
        return std::fs::canonicalize(requested)
            .with_context(|| format!("cannot resolve {}", requested.display()));
    }
    // Run from elsewhere than the workspace root: try the binary next to this one.
    if let Some(sibling) = std::env::current_exe()
        .ok()
        .and_then(|exe| exe.parent().map(|d| d.join("fieldvault")))
        .filter(|p| p.is_file())
        && requested == Path::new("target/release/fieldvault")
    {
        return Ok(sibling);
    }
    bail!(
        "the fieldvault binary was not found at {}: run `cargo build --release -p fieldvault` \
         first (or pass --fieldvault-bin PATH)",
        requested.display()
    )
}

/// Starts the server twice on one fresh data directory (first start, then a restart).
pub fn measure(
    bin: &Path,
    scratch_parent: &Path,
    requests: usize,
) -> anyhow::Result<Vec<ServerRun>> {
    let dir = tempfile::Builder::new()
        .prefix(".fieldvault-bench-data-")
        .tempdir_in(scratch_parent)
        .with_context(|| {
            format!(
                "cannot create a data directory in {}",
                scratch_parent.display()
            )
        })?;
    let data_dir = dir.path().join("data");
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    let client = reqwest::Client::builder()
        .no_proxy()
        .build()
        .context("cannot build the HTTP client")?;
    let mut runs = Vec::new();
    for label in ["first", "second"] {
        let run = runtime.block_on(one_run(
            bin,
            dir.path(),
            &data_dir,
            &client,
            requests,
            label,
        ))?;
        runs.push(run);
    }
    Ok(runs)
}

/// A running server; killed on drop if the benchmark bails out half-way.
pub struct Running {
    child: Child,
    stderr: Arc<Mutex<Vec<String>>>,
    /// `http://127.0.0.1:PORT`, from the server's "listening on" line.
    pub base: String,
}

impl Running {
    /// The server's stderr so far, for error messages.
    pub fn stderr_text(&self) -> String {
        self.stderr.lock().map(|l| l.join("\n")).unwrap_or_default()
    }

    /// The server's process id, for `/proc` readings.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends SIGTERM and waits for the exit; returns the time taken and whether it was clean.
    pub async fn stop(&mut self, label: &str) -> anyhow::Result<(Duration, bool)> {
        let pid = self.pid();
        let stopping = Instant::now();
        let status = Command::new("kill")
            .args(["-TERM", &pid.to_string()])
            .status()
            .context("cannot run kill -TERM")?;
        if !status.success() {
            bail!("kill -TERM {pid} failed");
        }
        loop {
            if let Some(exit) = self.child.try_wait().context("waiting for fieldvault")? {
                return Ok((stopping.elapsed(), exit.success()));
            }
            if stopping.elapsed() > STOP_TIMEOUT {
                bail!("{label}: fieldvault did not stop within {STOP_TIMEOUT:?} of SIGTERM");
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// A `fieldvault` command with a clean `FIELDVAULT_*` environment plus `env`, run in `cwd`
/// (which has no fieldvault.toml), so only the defaults and what the benchmark sets apply.
pub fn command(bin: &Path, cwd: &Path, data_dir: &Path, env: &[(&str, &str)]) -> Command {
    let mut cmd = Command::new(bin);
    cmd.current_dir(cwd);
    for (k, _) in std::env::vars_os() {
        if k.to_string_lossy().starts_with("FIELDVAULT_") {
            cmd.env_remove(k);
        }
    }
    // One collector token carries the whole load here (thousands a second, far past what a field
    // team sends); the benchmark measures intake, not the collector budget, so that is lifted.
    cmd.env("FIELDVAULT_LIMITS_COLLECTOR_PER_WINDOW", "10000000");
    cmd.envs(env.iter().copied());
    cmd.arg("--data-dir").arg(data_dir);
    cmd
}

/// Starts `fieldvault serve --listen 127.0.0.1:0` and waits for its "listening on" line.
/// Blocking: call it before any load is running.
pub fn spawn(
    bin: &Path,
    cwd: &Path,
    data_dir: &Path,
    env: &[(&str, &str)],
    label: &str,
) -> anyhow::Result<Running> {
    let mut cmd = command(bin, cwd, data_dir, env);
    cmd.args(["serve", "--listen", "127.0.0.1:0"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd
        .spawn()
        .with_context(|| format!("cannot start {}", bin.display()))?;
    let stdout = child.stdout.take();
    let stderr_pipe = child.stderr.take();
    let stderr = Arc::new(Mutex::new(Vec::new()));
    let mut server = Running {
        child,
        stderr: stderr.clone(),
        base: String::new(),
    };
    // Drain stdout (the access log) so a full pipe can never stall the server.
    if let Some(mut out) = stdout {
        std::thread::spawn(move || std::io::copy(&mut out, &mut std::io::sink()));
    }
    let (tx, rx) = mpsc::channel();
    if let Some(err) = stderr_pipe {
        std::thread::spawn(move || {
            for line in BufReader::new(err).lines().map_while(Result::ok) {
                if let Some(url) = line.split("Fieldvault listening on ").nth(1) {
                    let _ = tx.send(url.trim().to_owned());
                }
                if let Ok(mut lines) = stderr.lock() {
                    lines.push(line);
                }
            }
        });
    }
    let base = match rx.recv_timeout(START_TIMEOUT) {
        Ok(base) => base,
        Err(_) => bail!(
            "{label}: fieldvault did not print its address:\n{}",
            server.stderr_text()
        ),
    };
    if !base.starts_with("http://127.0.0.1:") {
        bail!("{label}: unexpected listen address {base}");
    }
    server.base = base;
    Ok(server)
}

/// Polls `GET /healthz` until it answers 200 (or [`START_TIMEOUT`] after `since`).
pub async fn wait_healthy(
    client: &reqwest::Client,
    server: &Running,
    since: Instant,
    label: &str,
) -> anyhow::Result<()> {
    let healthz = format!("{}/healthz", server.base);
    loop {
        if let Ok(r) = client.get(&healthz).send().await
            && r.status() == reqwest::StatusCode::OK
        {
            return Ok(());
        }
        if since.elapsed() > START_TIMEOUT {
            bail!(
                "{label}: /healthz never returned 200:\n{}",
                server.stderr_text()
            );
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

async fn one_run(
    bin: &Path,
    cwd: &Path,
    data_dir: &Path,
    client: &reqwest::Client,
    requests: usize,
    label: &str,
) -> anyhow::Result<ServerRun> {
    let spawned = Instant::now();
    let mut server = spawn(bin, cwd, data_dir, &[], &format!("{label} start"))?;
    let base = server.base.clone();
    let healthz = format!("{base}/healthz");

    // Cold start ends at the first successful health check, not at the log line.
    wait_healthy(client, &server, spawned, &format!("{label} start")).await?;
    let cold_start_ms = spawned.elapsed().as_secs_f64() * 1e3;

    tokio::time::sleep(IDLE_SETTLE).await;
    let pid = server.pid();
    let idle_rss_mib = rss_mib(pid)?;

    let mut latencies = Vec::with_capacity(requests);
    for _ in 0..requests {
        let t = Instant::now();
        let r = client
            .get(&healthz)
            .send()
            .await
            .context("GET /healthz failed")?;
        let status = r.status();
        r.bytes().await.context("reading /healthz failed")?;
        latencies.push(t.elapsed());
        if status != reqwest::StatusCode::OK {
            bail!("GET /healthz returned {status}");
        }
    }
    latencies.sort_unstable();
    let rss_after_healthz_mib = rss_mib(pid)?;

    let (shutdown, clean_exit) = server.stop(&format!("{label} start")).await?;
    let shutdown_ms = shutdown.as_secs_f64() * 1e3;

    Ok(ServerRun {
        label: label.to_owned(),
        cold_start_ms,
        idle_rss_mib,
        rss_after_healthz_mib,
        healthz_requests: requests,
        healthz_p50_us: percentile_us(&latencies, 0.50),
        healthz_p99_us: percentile_us(&latencies, 0.99),
        shutdown_ms,
        clean_exit,
    })
}

/// Resident set size of a process in MiB, from `/proc/<pid>/status` (Linux only).
pub fn rss_mib(pid: u32) -> anyhow::Result<f64> {
    status_mib(pid, "VmRSS:")
}

/// Peak resident set size since the process started (`VmHWM`), in MiB: catches short spikes
/// that periodic `VmRSS` sampling would miss.
pub fn peak_rss_mib(pid: u32) -> anyhow::Result<f64> {
    status_mib(pid, "VmHWM:")
}

/// One `kB` line of `/proc/<pid>/status`, in MiB.
fn status_mib(pid: u32, field: &str) -> anyhow::Result<f64> {
    let path = format!("/proc/{pid}/status");
    let status = std::fs::read_to_string(&path).with_context(|| format!("cannot read {path}"))?;
    let kib: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .with_context(|| format!("no {field} line in {path}"))?;
    Ok(kib / 1024.0)
}

/// Nearest-rank percentile of sorted durations, in microseconds (0 for an empty list).
pub fn percentile_us(sorted: &[Duration], q: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted.get(rank - 1).map_or(0.0, |d| d.as_secs_f64() * 1e6)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_use_nearest_rank() {
        let v: Vec<Duration> = (1..=100).map(Duration::from_micros).collect();
        assert_eq!(percentile_us(&v, 0.5), 50.0);
        assert_eq!(percentile_us(&v, 0.99), 99.0);
        assert_eq!(percentile_us(&[], 0.5), 0.0);
    }
}
