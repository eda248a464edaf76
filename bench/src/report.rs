//! The machine description and the two outputs: `latest.json` for tools and history,
//! `latest.md` for people. Numbers are shown next to the limit they are bounded by, because a
//! raw figure means little without knowing what this hardware could do at best.

use std::fmt::Write as _;
use std::path::Path;
use std::process::Command;

use anyhow::Context as _;
use serde::Serialize;

use crate::limits::Limits;
use crate::server::ServerRun;

/// Project target for the idle resident set size, in MB (treated as MiB here).
pub const IDLE_RSS_TARGET_MIB: f64 = 40.0;
/// DESIGN's physical limits on the development machine, for comparison.
pub const DESIGN_FSYNC_PER_SEC: f64 = 700.0;
/// DESIGN: sequential write on the development machine, MB/s.
pub const DESIGN_SEQ_WRITE_MB_PER_SEC: f64 = 190.0;
/// DESIGN: AES-256-GCM per core on the development machine, MB/s.
pub const DESIGN_AES_MB_PER_SEC: f64 = 2000.0;

/// Where the numbers were taken.
#[derive(Debug, Serialize)]
pub struct Machine {
    /// Logical CPUs (`nproc`).
    pub nproc: usize,
    /// Kernel release (`uname -r`).
    pub kernel: String,
    /// CPU model from `/proc/cpuinfo`.
    pub cpu_model: String,
    /// Short git commit of the working tree (`git rev-parse --short HEAD`).
    pub git_commit: String,
    /// UTC date and time of the run.
    pub date: String,
}

impl Machine {
    /// Collects the machine description; unknown parts become "unknown" rather than errors,
    /// because a missing `git` must not cost a benchmark run.
    pub fn detect() -> Self {
        let nproc = std::thread::available_parallelism().map_or(0, |n| n.get());
        let cpu_model = std::fs::read_to_string("/proc/cpuinfo")
            .ok()
            .and_then(|s| {
                s.lines()
                    .find(|l| l.starts_with("model name"))
                    .and_then(|l| l.split_once(':'))
                    .map(|(_, v)| v.trim().to_owned())
            })
            .unwrap_or_else(|| "unknown".to_owned());
        Machine {
            nproc,
            kernel: command_line("uname", &["-r"]),
            cpu_model,
            git_commit: command_line("git", &["rev-parse", "--short", "HEAD"]),
            date: command_line("date", &["-u", "+%Y-%m-%dT%H:%M:%SZ"]),
        }
    }
}

/// First line of a command's stdout, or "unknown".
fn command_line(program: &str, args: &[&str]) -> String {
    Command::new(program)
        .args(args)
        .output()
        .ok()
        .filter(|o| o.status.success())
        .and_then(|o| {
            String::from_utf8_lossy(&o.stdout)
                .lines()
                .next()
                .map(|l| l.trim().to_owned())
        })
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "unknown".to_owned())
}

/// Everything one benchmark run produced.
#[derive(Debug, Serialize)]
pub struct Report {
    /// Where it ran.
    pub machine: Machine,
    /// The machine's physical limits.
    pub limits: Limits,
    /// One entry per server start.
    pub server: Vec<ServerRun>,
}

impl Report {
    /// Assembles a report, detecting the machine now.
    pub fn new(limits: Limits, server: Vec<ServerRun>) -> Self {
        Report {
            machine: Machine::detect(),
            limits,
            server,
        }
    }

    /// The markdown table: measure, value, unit, fraction of the relevant limit, reference.
    pub fn markdown(&self) -> String {
        let m = &self.machine;
        let l = &self.limits;
        let mut s = String::new();
        let _ = writeln!(s, "# Fieldvault benchmark\n");
        let _ = writeln!(
            s,
            "Commit `{}`, {} — {} × {}, Linux {}.\n",
            m.git_commit, m.date, m.nproc, m.cpu_model, m.kernel
        );
        let _ = writeln!(s, "| Measure | Value | Unit | Fraction | Relative to |");
        let _ = writeln!(s, "|---|---:|---|---:|---|");
        let mut row = |measure: &str, value: f64, unit: &str, fraction: Option<f64>, of: &str| {
            let frac = fraction.map_or_else(|| "—".to_owned(), |f| format!("{:.2}", f));
            let _ = writeln!(s, "| {measure} | {} | {unit} | {frac} | {of} |", fmt(value));
        };
        row(
            "fsync, one stream (1 KiB append + sync_data)",
            l.fsync_per_sec,
            "fsync/s",
            Some(l.fsync_per_sec / DESIGN_FSYNC_PER_SEC),
            "DESIGN dev machine ~700/s",
        );
        row(
            "sequential write, 1 MiB blocks incl. sync_all",
            l.seq_write_mb_per_sec,
            "MB/s",
            Some(l.seq_write_mb_per_sec / DESIGN_SEQ_WRITE_MB_PER_SEC),
            "DESIGN dev machine ~190 MB/s",
        );
        row(
            "AES-256-GCM envelope::seal, 1 MiB, one core",
            l.aes_gcm_envelope_mb_per_sec,
            "MB/s",
            Some(l.aes_gcm_envelope_mb_per_sec / DESIGN_AES_MB_PER_SEC),
            "DESIGN dev machine ~2 GB/s",
        );
        row(
            "AES-256-GCM stream::seal_all, 1 MiB, one core",
            l.aes_gcm_stream_mb_per_sec,
            "MB/s",
            Some(l.aes_gcm_stream_mb_per_sec / DESIGN_AES_MB_PER_SEC),
            "DESIGN dev machine ~2 GB/s",
        );
        row(
            &format!("PBKDF2-SHA256 hash, {} iterations", l.pbkdf2_iterations),
            l.pbkdf2_ms,
            "ms",
            None,
            "",
        );
        for r in &self.server {
            let who = format!("{} start", r.label);
            row(
                &format!("{who}: cold start (spawn → 200 /healthz)"),
                r.cold_start_ms,
                "ms",
                None,
                "",
            );
            row(
                &format!("{who}: idle RSS"),
                r.idle_rss_mib,
                "MiB",
                Some(r.idle_rss_mib / IDLE_RSS_TARGET_MIB),
                "target < 40 MB",
            );
            row(
                &format!("{who}: RSS after {} × /healthz", r.healthz_requests),
                r.rss_after_healthz_mib,
                "MiB",
                Some(r.rss_after_healthz_mib / IDLE_RSS_TARGET_MIB),
                "target < 40 MB",
            );
            row(
                &format!("{who}: GET /healthz p50"),
                r.healthz_p50_us,
                "µs",
                None,
                "",
            );
            row(
                &format!("{who}: GET /healthz p99"),
                r.healthz_p99_us,
                "µs",
                None,
                "",
            );
            row(
                &format!(
                    "{who}: shutdown after SIGTERM ({})",
                    if r.clean_exit {
                        "clean exit"
                    } else {
                        "FAILED exit"
                    }
                ),
                r.shutdown_ms,
                "ms",
                None,
                "",
            );
        }
        s
    }

    /// Writes `latest.json` and `latest.md` into `dir`, creating it if needed.
    pub fn write(&self, dir: &Path, markdown: &str) -> anyhow::Result<()> {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
        let json = serde_json::to_string_pretty(self).context("cannot serialise the report")?;
        let json_path = dir.join("latest.json");
        std::fs::write(&json_path, json + "\n")
            .with_context(|| format!("cannot write {}", json_path.display()))?;
        let md_path = dir.join("latest.md");
        std::fs::write(&md_path, markdown)
            .with_context(|| format!("cannot write {}", md_path.display()))?;
        Ok(())
    }
}

/// Three significant-ish digits: enough to compare runs, not so many they look precise.
fn fmt(v: f64) -> String {
    if v >= 100.0 {
        format!("{v:.0}")
    } else if v >= 10.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.2}")
    }
}
