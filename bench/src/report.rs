//! The machine description and the two outputs: `latest.json` for tools and history,
//! `latest.md` for people. Numbers are shown next to the limit they are bounded by, because a
//! raw figure means little without knowing what this hardware could do at best.

use std::fmt::Write as _;
use std::path::Path;
use std::process::Command;

use anyhow::Context as _;
use serde::Serialize;

use crate::data::BigData;
use crate::intake::{Auth, Intake, IntakeRun};
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
/// Issue target: app-user token intake at concurrency 16, submissions/s.
pub const TOKEN_C16_TARGET: f64 = 3000.0;
/// Issue target: p99 latency of token intake at concurrency 16, ms.
pub const TOKEN_C16_P99_TARGET_MS: f64 = 20.0;
/// Issue target: token intake at concurrency 1, submissions/s.
pub const TOKEN_C1_TARGET: f64 = 1000.0;
/// Issue target: Basic-auth intake (taken at concurrency 16), submissions/s.
pub const BASIC_TARGET: f64 = 1500.0;
/// Issue target: attachment intake as a fraction of the measured sequential write rate.
pub const ATTACHMENT_SEQ_WRITE_TARGET: f64 = 0.70;
/// Issue target: peak RSS at concurrency 64, MB (treated as MiB here).
pub const RSS_C64_TARGET_MIB: f64 = 200.0;
/// Issue target: Central-shaped data API page of 1000 rows at 1 M submissions, p50 ms.
pub const PAGE_P50_TARGET_MS: f64 = 100.0;
/// Issue target: CSV export of 1 M rows, rows/s.
pub const CSV_ROWS_TARGET: f64 = 250_000.0;
/// Issue target: peak RSS during the 1 M-row CSV export, MB (treated as MiB here).
pub const CSV_RSS_TARGET_MIB: f64 = 100.0;
/// ODK Central on this machine kind, concurrency 1, submissions/s.
pub const CENTRAL_C1: f64 = 35.9;
/// ODK Central on this machine kind, concurrency 16, submissions/s.
pub const CENTRAL_C16: f64 = 74.0;
/// The issue's headline: intake 40× faster than ODK Central.
pub const CENTRAL_FACTOR_TARGET: f64 = 40.0;

/// Where the numbers were taken.
#[derive(Debug, Serialize)]
pub struct Machine {
    /// Logical CPUs (`nproc`).
    pub nproc: usize,
    /// Kernel release (`uname -r`).
    pub kernel: String,
    /// CPU model from `/proc/cpuinfo`.
    pub cpu_model: String,
    /// Short git commit of the working tree, `-dirty` if it has uncommitted changes.
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
            // `-dirty` when the tree has uncommitted changes: the binary measured was then
            // built from more than the commit says.
            git_commit: command_line("git", &["describe", "--always", "--dirty", "--abbrev=7"]),
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
    /// Intake runs.
    pub intake: Intake,
    /// The large store (data API, exports, backup), when measured.
    pub big: Option<BigData>,
    /// `fieldvault decrypt` throughput, when measured.
    pub decrypt: Option<crate::decrypt::DecryptRun>,
    /// `/proc/loadavg` before the intake runs and at the end: other work on the machine.
    pub load_average: [String; 2],
}

/// The first three fields of `/proc/loadavg` (1, 5 and 15 minutes), or "unknown".
pub fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|| "unknown".to_owned())
}

impl Report {
    /// Assembles a report, detecting the machine now.
    pub fn new(
        limits: Limits,
        server: Vec<ServerRun>,
        intake: Intake,
        big: Option<BigData>,
        decrypt: Option<crate::decrypt::DecryptRun>,
        load_average: [String; 2],
    ) -> Self {
        Report {
            machine: Machine::detect(),
            limits,
            server,
            intake,
            big,
            decrypt,
            load_average,
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
            "Commit `{}`, {} — {} × {}, Linux {}. Load average (1/5/15 min) before the \
             intake runs: {}; at the end: {}.\n",
            m.git_commit,
            m.date,
            m.nproc,
            m.cpu_model,
            m.kernel,
            self.load_average[0],
            self.load_average[1]
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
            &format!(
                "durable new {} KiB files, {} streams (create, write, sync_all, rename, dir fsync)",
                crate::limits::SMALL_FILE_BYTES / 1024,
                l.small_file_streams
            ),
            l.small_files_per_sec,
            "files/s",
            None,
            &format!(
                "= {} MB/s, {:.2} of seq write",
                fmt(small_file_mb_per_sec(l)),
                small_file_mb_per_sec(l) / l.seq_write_mb_per_sec.max(1e-9)
            ),
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
        if !self.intake.runs.is_empty() {
            self.intake_markdown(&mut s);
        }
        if let Some(b) = &self.big {
            self.big_markdown(&mut s, b);
        }
        if let Some(d) = &self.decrypt {
            let cores = self.machine.nproc.max(1) as f64;
            let bound = self.limits.aes_gcm_stream_mb_per_sec * cores;
            let _ = writeln!(s, "\n## fieldvault decrypt\n");
            let _ = writeln!(
                s,
                "{} ODK-encrypted submissions with a {} KiB attachment each ({} MB of ciphertext), made as Collect makes them: \
                 **{} MB/s** in {} s = {} of AES-256-GCM per core × {} cores ({} MB/s; the files are AES-CFB, plus one RSA-3072 OAEP unwrap per submission).",
                d.submissions,
                d.attachment_bytes / 1024,
                fmt(d.ciphertext_mb),
                fmt(d.mb_per_sec),
                fmt(d.secs),
                fmt(d.mb_per_sec / bound),
                self.machine.nproc,
                fmt(bound)
            );
        }
        s
    }

    /// The intake tables: one row per run, then the issue's targets side by side.
    fn intake_markdown(&self, s: &mut String) {
        let seq = self.limits.seq_write_mb_per_sec;
        let _ = writeln!(s, "\n## Intake\n");
        let _ = writeln!(
            s,
            "{} submissions per run (time cap applies), server restarted per run; each row is \
             the median of {} runs by throughput (range in brackets). Latency is per request \
             over all requests of that run; *Server cores*, *Client cores* and *Other cores* \
             (everything else: PostgreSQL, or anything competing) are CPU seconds ÷ wall \
             seconds on this {}-CPU machine.\n",
            self.intake.runs.first().map_or(0, |r| r.requested),
            self.intake.runs.first().map_or(0, |r| r.repeats),
            self.machine.nproc
        );
        let _ = writeln!(
            s,
            "| Backend | Auth | Payload | c | 201 / sent | Errors (all runs) | Subs/s (min–max) | p50 ms | p99 ms | \
             p99.9 ms | Peak RSS MiB | Server CPU s | Server CPU ms/sub | Server cores | \
             Client cores | Other cores | × Central | Bound |"
        );
        let _ = writeln!(
            s,
            "|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|"
        );
        for r in &self.intake.runs {
            let payload = if r.encrypted {
                "ODK-encrypted ~1 KB".to_owned()
            } else if r.attachment_bytes > 0 {
                format!("XML + {} KiB", r.attachment_bytes / 1024)
            } else {
                "XML ~1 KB".to_owned()
            };
            let central =
                central_for(r).map_or_else(|| "—".to_owned(), |c| format!("{:.0}×", r.per_sec / c));
            let rate = format!(
                "{} ({}–{})",
                fmt(r.per_sec),
                fmt(r.per_sec_min),
                fmt(r.per_sec_max)
            );
            // Encrypted envelopes: the same XML, so the plaintext run at the same concurrency
            // is the natural bound (the server stores ciphertext it cannot parse).
            let plain = self.intake.runs.iter().find(|p| {
                p.backend == r.backend
                    && p.auth == r.auth
                    && !p.encrypted
                    && p.attachment_bytes == 0
                    && p.concurrency == r.concurrency
            });
            let bound = if r.encrypted {
                plain.map_or_else(
                    || "—".to_owned(),
                    |p| format!("{:.2} of plaintext rate", r.per_sec / p.per_sec.max(1e-9)),
                )
            } else if r.attachment_bytes > 0 {
                format!(
                    "{} MB/s = {:.2} of seq write, {:.2} of durable new files",
                    fmt(r.attachment_mb_per_sec),
                    r.attachment_mb_per_sec / seq,
                    r.attachment_mb_per_sec / small_file_mb_per_sec(&self.limits).max(1e-9)
                )
            } else {
                "—".to_owned()
            };
            let _ = writeln!(
                s,
                "| {} | {:?} | {payload} | {} | {} / {} | {} | {} | {} | {} | {} | {} | {} | {} \
                 | {:.2} | {:.2} | {:.2} | {central} | {bound} |",
                r.backend,
                r.auth,
                r.concurrency,
                r.created,
                r.sent,
                r.errors_all_repeats,
                rate,
                fmt(r.p50_ms),
                fmt(r.p99_ms),
                fmt(r.p999_ms),
                fmt(r.peak_rss_mib),
                fmt(r.server_cpu_s),
                fmt(r.cpu_ms_per_submission()),
                r.server_cpu_s / r.elapsed_s.max(1e-9),
                r.client_cpu_s / r.elapsed_s.max(1e-9),
                r.other_cpu_s / r.elapsed_s.max(1e-9),
            );
        }

        let _ = writeln!(s, "\n### Targets\n");
        let _ = writeln!(
            s,
            "| Backend | Target | Measured | Fraction of target | Met |"
        );
        let _ = writeln!(s, "|---|---|---:|---:|---|");
        let mut backends: Vec<&str> = Vec::new();
        for r in &self.intake.runs {
            if !backends.contains(&r.backend.as_str()) {
                backends.push(&r.backend);
            }
        }
        for b in backends {
            let find = |auth: Auth, attachment: bool, c: usize| {
                self.intake.runs.iter().find(|r| {
                    r.backend == b
                        && !r.encrypted
                        && r.auth == auth
                        && (r.attachment_bytes > 0) == attachment
                        && r.concurrency == c
                })
            };
            // (target, measured text, fraction of target, met)
            let mut rows: Vec<(String, String, f64, bool)> = Vec::new();
            if let Some(r) = find(Auth::Token, false, 16) {
                rows.push(at_least(
                    "token, c=16: ≥ 3000 subs/s",
                    r.per_sec,
                    TOKEN_C16_TARGET,
                    "/s",
                ));
                rows.push((
                    "token, c=16: p99 < 20 ms".to_owned(),
                    format!("{} ms", fmt(r.p99_ms)),
                    r.p99_ms / TOKEN_C16_P99_TARGET_MS,
                    r.p99_ms < TOKEN_C16_P99_TARGET_MS,
                ));
            }
            if let Some(r) = find(Auth::Token, false, 1) {
                rows.push(at_least(
                    "token, c=1: ≥ 1000 subs/s",
                    r.per_sec,
                    TOKEN_C1_TARGET,
                    "/s",
                ));
            }
            if let Some(r) = find(Auth::Basic, false, 16) {
                rows.push(at_least(
                    "Basic, c=16: ≥ 1500 subs/s",
                    r.per_sec,
                    BASIC_TARGET,
                    "/s",
                ));
            }
            if let Some(r) = find(Auth::Token, true, 16) {
                let frac = r.attachment_mb_per_sec / seq;
                rows.push((
                    format!(
                        "100 KiB attachments, c=16: ≥ 70% of seq write ({} MB/s)",
                        fmt(seq)
                    ),
                    format!(
                        "{} MB/s = {:.0}%",
                        fmt(r.attachment_mb_per_sec),
                        frac * 100.0
                    ),
                    frac / ATTACHMENT_SEQ_WRITE_TARGET,
                    frac >= ATTACHMENT_SEQ_WRITE_TARGET,
                ));
            }
            let c64 = self
                .intake
                .runs
                .iter()
                .filter(|r| r.backend == b && !r.encrypted && r.concurrency == 64)
                .map(|r| r.peak_rss_mib)
                .fold(None, |m: Option<f64>, v| Some(m.map_or(v, |m| m.max(v))));
            if let Some(rss) = c64 {
                rows.push((
                    "peak RSS at c=64 (worst of token/Basic) < 200 MB".to_owned(),
                    format!("{} MiB", fmt(rss)),
                    rss / RSS_C64_TARGET_MIB,
                    rss < RSS_C64_TARGET_MIB,
                ));
            }
            for (c, central) in [(1, CENTRAL_C1), (16, CENTRAL_C16)] {
                if let Some(r) = find(Auth::Token, false, c) {
                    let factor = r.per_sec / central;
                    rows.push((
                        format!("token, c={c}: ≥ 40× ODK Central ({central}/s)"),
                        format!("{factor:.0}×"),
                        factor / CENTRAL_FACTOR_TARGET,
                        factor >= CENTRAL_FACTOR_TARGET,
                    ));
                }
            }
            for (target, measured, fraction, met) in rows {
                let _ = writeln!(
                    s,
                    "| {b} | {target} | {measured} | {fraction:.2} | {} |",
                    if met { "yes" } else { "**no**" }
                );
            }
        }

        let mut notes: Vec<String> = self.intake.notes.clone();
        for r in &self.intake.runs {
            if let Some(e) = &r.first_error {
                notes.push(format!(
                    "{} {:?} c={} ({} B attachment): {} errors; first: {}",
                    r.backend,
                    r.auth,
                    r.concurrency,
                    r.attachment_bytes,
                    r.errors_all_repeats,
                    e.replace('|', "\\|").replace('\n', " ")
                ));
            }
            let other = r.other_cpu_s / r.elapsed_s.max(1e-9);
            // On the embedded store nothing else should run; PostgreSQL's own CPU is expected.
            if r.backend.starts_with("SQLite") && other > 0.25 {
                notes.push(format!(
                    "{} {:?} c={}{}: other processes used {other:.2} cores during the run, so \
                     its numbers are probably depressed; re-run on a quiet machine.",
                    r.backend,
                    r.auth,
                    r.concurrency,
                    if r.attachment_bytes > 0 {
                        " with attachments"
                    } else {
                        ""
                    }
                ));
            }
            if r.sent < r.requested {
                notes.push(format!(
                    "{} {:?} c={}{}: stopped by the time cap after {} of {} submissions.",
                    r.backend,
                    r.auth,
                    r.concurrency,
                    if r.encrypted { " (encrypted)" } else { "" },
                    r.sent,
                    r.requested
                ));
            }
        }
        if !notes.is_empty() {
            let _ = writeln!(s, "\nNotes:\n");
            for n in notes {
                let _ = writeln!(s, "- {n}");
            }
        }
    }
}

/// The small-file limit in MB/s (10^6 bytes).
fn small_file_mb_per_sec(l: &Limits) -> f64 {
    l.small_files_per_sec * crate::limits::SMALL_FILE_BYTES as f64 / 1e6
}

impl Report {
    /// The large-store section: checkpoints, exports, backup, each with its bound.
    fn big_markdown(&self, s: &mut String, b: &BigData) {
        let cores = self.machine.nproc.max(1) as f64;
        let aes = self
            .limits
            .aes_gcm_envelope_mb_per_sec
            .max(self.limits.aes_gcm_stream_mb_per_sec);
        let seq = self.limits.seq_write_mb_per_sec;
        let _ = writeln!(s, "\n## Data at scale (embedded store)\n");
        let _ = writeln!(
            s,
            "Submissions loaded through the real intake (token, c = {}, ~1.1 KB XML each), \
             then the server restarted before each group of reads so *peak RSS* is theirs. \
             A read that decrypts every row is bounded by AES-256-GCM on all {} cores \
             ({} MB/s) over the sealed XML, about {} bytes a row: **{} rows/s**; that bound \
             ignores parsing and formatting, so it is far above what any of them can reach.\n",
            64,
            self.machine.nproc,
            fmt(aes * cores),
            ROW_BYTES,
            fmt(aes * cores * 1e6 / ROW_BYTES as f64),
        );
        let row_bound = aes * cores * 1e6 / ROW_BYTES as f64;
        let _ = writeln!(s, "| Measure | Value | Unit | Fraction | Relative to |");
        let _ = writeln!(s, "|---|---:|---|---:|---|");
        let mut row = |measure: String, value: f64, unit: &str, fraction: Option<f64>, of: &str| {
            let frac = fraction.map_or_else(|| "—".to_owned(), |f| format!("{:.2}", f));
            let _ = writeln!(s, "| {measure} | {} | {unit} | {frac} | {of} |", fmt(value));
        };
        for c in &b.checkpoints {
            let at = rows_label(c.rows);
            let load_rate = c.loaded as f64 / c.load_secs.max(1e-9);
            row(
                format!(
                    "{at}: intake while loading {} (c=64, {} errors)",
                    c.loaded, c.load_errors
                ),
                load_rate,
                "subs/s",
                Some(load_rate / TOKEN_C16_TARGET),
                "token target 3000/s",
            );
            row(
                format!("{at}: data directory size"),
                c.data_dir_bytes as f64 / 1e6,
                "MB",
                None,
                "",
            );
            row(
                format!(
                    "{at}: `GET …/submissions?limit=1000` first page p50 ({} rows, {} requests)",
                    c.page_first.rows, c.page_first.requests
                ),
                c.page_first.p50_ms,
                "ms",
                Some(c.page_first.p50_ms / PAGE_P50_TARGET_MS),
                "target p50 < 100 ms (at 1 M)",
            );
            row(
                format!("{at}: same, p99"),
                c.page_first.p99_ms,
                "ms",
                None,
                "",
            );
            row(
                format!(
                    "{at}: `…?limit=1000&offset={}` (half-way) p50 ({} requests)",
                    c.rows / 2,
                    c.page_deep.requests
                ),
                c.page_deep.p50_ms,
                "ms",
                Some(c.page_deep.p50_ms / PAGE_P50_TARGET_MS),
                "target p50 < 100 ms (at 1 M)",
            );
            row(
                format!("{at}: same, p99"),
                c.page_deep.p99_ms,
                "ms",
                None,
                "",
            );
            if let Some(ms) = c.kobo_page_ms {
                row(
                    format!(
                        "{at}: KoboToolbox `/data/?limit=1000` first page (count from the index), once"
                    ),
                    ms,
                    "ms",
                    Some(ms / PAGE_P50_TARGET_MS),
                    "target p50 < 100 ms (at 1 M)",
                );
            }
            if let Some(q) = c.kobo_query_rows_per_sec {
                row(
                    format!("{at}: KoboToolbox `/data/?query=` scan (one match)"),
                    q,
                    "rows/s",
                    Some(q / row_bound),
                    "AES-GCM bound over sealed rows",
                );
            }
            row(
                format!("{at}: server peak RSS during these reads"),
                c.peak_rss_mib,
                "MiB",
                Some(c.peak_rss_mib / RSS_C64_TARGET_MIB),
                "200 MB (intake c=64 target)",
            );
        }
        for e in &b.exports {
            let at = rows_label(e.rows);
            let csv_sync = e.download_secs.is_none();
            row(
                format!(
                    "{at}: {}: {} rows, {} MB{}",
                    e.kind,
                    e.rows,
                    fmt(e.bytes as f64 / 1e6),
                    e.download_secs
                        .map_or_else(String::new, |d| format!(", download {} s", fmt(d)))
                ),
                e.rows_per_sec,
                "rows/s",
                Some(if csv_sync {
                    e.rows_per_sec / CSV_ROWS_TARGET
                } else {
                    e.rows_per_sec / row_bound
                }),
                if csv_sync {
                    "target ≥ 250,000 rows/s"
                } else {
                    "AES-GCM bound over sealed rows"
                },
            );
            row(
                format!("{at}: {}: server peak RSS", e.kind),
                e.peak_rss_mib,
                "MiB",
                Some(e.peak_rss_mib / CSV_RSS_TARGET_MIB),
                "target < 100 MB",
            );
        }
        let at = b
            .checkpoints
            .last()
            .map_or_else(String::new, |c| rows_label(c.rows));
        if let Some(k) = &b.backup {
            row(
                format!(
                    "{at}: `fieldvault backup run` of {} MB ({} MB on the target), {} s",
                    fmt(k.source_bytes as f64 / 1e6),
                    fmt(k.target_bytes as f64 / 1e6),
                    fmt(k.backup_secs)
                ),
                k.backup_mb_per_sec,
                "MB/s",
                Some(k.backup_mb_per_sec / seq),
                "sequential write",
            );
            row(
                format!(
                    "{at}: `fieldvault restore` ({} MB restored)",
                    fmt(k.restored_bytes as f64 / 1e6)
                ),
                k.restore_secs,
                "s",
                None,
                "",
            );
            row(
                format!("{at}: restore rate"),
                k.restore_mb_per_sec,
                "MB/s",
                Some(k.restore_mb_per_sec / seq),
                "sequential write",
            );
        }
        if !b.notes.is_empty() {
            let _ = writeln!(s, "\nNotes:\n");
            for n in &b.notes {
                let _ = writeln!(s, "- {}", n.replace('|', "\\|"));
            }
        }
    }
}

/// Sealed XML per row in the large store: ~1.1 KB of XML plus nonce and tag.
const ROW_BYTES: usize = 1_150;

/// "100 k", "1 M" or the plain number.
fn rows_label(rows: usize) -> String {
    if rows >= 1_000_000 && rows.is_multiple_of(100_000) {
        format!("{} M", rows as f64 / 1e6)
    } else if rows >= 1000 && rows.is_multiple_of(1000) {
        format!("{} k", rows / 1000)
    } else {
        rows.to_string()
    }
}

/// ODK Central's rate at this run's concurrency, where one was measured.
fn central_for(r: &IntakeRun) -> Option<f64> {
    if r.encrypted {
        return None;
    }
    match (r.attachment_bytes, r.concurrency) {
        (0, 1) => Some(CENTRAL_C1),
        (0, 16) => Some(CENTRAL_C16),
        _ => None,
    }
}

/// A "measured ≥ target" row.
fn at_least(target: &str, value: f64, goal: f64, unit: &str) -> (String, String, f64, bool) {
    (
        target.to_owned(),
        format!("{}{unit}", fmt(value)),
        value / goal,
        value >= goal,
    )
}

impl Report {
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
