//! `fieldvault-bench`: measures the physical limits of this machine and Fieldvault's own
//! numbers, so every Fieldvault figure can be read as a fraction of what the hardware allows.
//!
//! Kept as small modules so later benchmarks (intake, export, decrypt) can be added as new
//! modules that feed the same [`report::Report`]:
//! - [`limits`]: fsync rate, sequential write, AES-256-GCM and PBKDF2 cost on this machine.
//! - [`server`]: runs the real `fieldvault` binary and measures start-up, idle memory and
//!   `/healthz` latency.
//! - [`intake`]: OpenRosa submissions (token and Basic auth, with and without attachments) at
//!   several concurrencies, on the embedded store and optionally PostgreSQL.
//! - [`data`]: a store filled to 100 k and 1 M submissions: data API pages and queries, CSV
//!   and XLSX exports, backup and restore.
//! - [`decrypt`]: `fieldvault decrypt` over ODK-encrypted submissions.
//! - [`report`]: machine description, JSON and markdown output.

mod data;
mod decrypt;
mod intake;
mod limits;
mod report;
mod server;

use std::path::PathBuf;

use anyhow::Context as _;
use clap::Parser;

/// Measures machine limits and Fieldvault's start-up numbers; writes JSON and a markdown table.
#[derive(Parser, Debug)]
#[command(version, about, long_about = None)]
struct Cli {
    /// The `fieldvault` binary to benchmark (build it first: `cargo build --release -p fieldvault`).
    #[arg(long, default_value = "target/release/fieldvault")]
    fieldvault_bin: PathBuf,
    /// Directory for `latest.json` and `latest.md`.
    #[arg(long, default_value = "bench/results")]
    out: PathBuf,
    /// Sequential-write test size in MiB (stops early after ~3 s either way).
    #[arg(long, default_value_t = 512)]
    write_mib: u64,
    /// Number of sequential `GET /healthz` requests per server start.
    #[arg(long, default_value_t = 2000)]
    healthz_requests: usize,
    /// Submissions per intake run (each run also stops at `--intake-max-secs`).
    #[arg(long, default_value_t = 2000)]
    intake_count: usize,
    /// Time cap per intake run, in seconds: no new submission starts after it.
    #[arg(long, default_value_t = 30.0)]
    intake_max_secs: f64,
    /// Runs per intake scenario; the median by throughput is reported, with the range.
    #[arg(long, default_value_t = 3)]
    intake_repeats: usize,
    /// PostgreSQL server URL without a database (e.g. `postgres://postgres@127.0.0.1:5432`);
    /// a throwaway `fv_bench_*` database is created and dropped with `psql`. Defaults to
    /// `FIELDVAULT_TEST_PG`; without either, intake runs on the embedded store only.
    #[arg(long, env = "FIELDVAULT_TEST_PG", hide_env_values = true)]
    pg: Option<String>,
    /// Encrypted submissions generated for the `fieldvault decrypt` measurement (0 skips it).
    #[arg(long, default_value_t = 200)]
    decrypt_count: usize,
    /// Attachment size per encrypted submission, KiB.
    #[arg(long, default_value_t = 1024)]
    decrypt_attachment_kib: usize,
    /// Submissions in the large store (data API, exports, backup); a 100 k checkpoint is
    /// measured on the way when larger. Loading goes through the real intake (~5 min for 1 M).
    #[arg(long, default_value_t = 1_000_000)]
    rows: usize,
    /// Skip the large-store measurements (data API, exports, backup and restore).
    #[arg(long)]
    skip_big: bool,
    /// Skip the intake measurements.
    #[arg(long)]
    skip_intake: bool,
    /// Run only the intake scenarios whose label contains this (e.g. `PostgreSQL Token c=16 Xml`),
    /// to profile one of them.
    #[arg(long)]
    intake_filter: Option<String>,
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    // Resolve the binary before spending time on the limits, so a missing build fails fast.
    let bin = server::resolve_bin(&cli.fieldvault_bin)?;
    // The scratch directory lives under the cwd, so the disk numbers are for the filesystem
    // Fieldvault would normally run on, not for a tmpfs /tmp.
    let cwd = std::env::current_dir().context("cannot read the current directory")?;

    eprintln!("measuring machine limits in {} ...", cwd.display());
    let limits = limits::measure(&cwd, cli.write_mib)?;

    eprintln!("benchmarking {} ...", bin.display());
    let server = server::measure(&bin, &cwd, cli.healthz_requests)?;

    let load_before = report::load_average();
    let intake = if cli.skip_intake {
        intake::Intake {
            runs: Vec::new(),
            notes: vec!["Intake not measured (--skip-intake).".to_owned()],
        }
    } else {
        eprintln!("benchmarking intake ...");
        intake::measure(
            &bin,
            &cwd,
            &intake::Options {
                count: cli.intake_count,
                max_secs: cli.intake_max_secs,
                repeats: cli.intake_repeats,
                pg: cli.pg.filter(|s| !s.is_empty()),
                filter: cli.intake_filter.clone(),
            },
        )?
    };

    let big = if cli.skip_big || cli.rows == 0 {
        None
    } else {
        eprintln!("benchmarking a store of {} submissions ...", cli.rows);
        // A failure here must not cost the intake numbers already taken.
        match data::measure(&bin, &cwd, &data::Options { rows: cli.rows }) {
            Ok(b) => Some(b),
            Err(e) => Some(data::BigData {
                checkpoints: Vec::new(),
                exports: Vec::new(),
                backup: None,
                notes: vec![format!("the large-store benchmark failed: {e:#}")],
            }),
        }
    };

    let decrypt = if cli.decrypt_count > 0 {
        eprintln!("benchmarking fieldvault decrypt ...");
        Some(decrypt::measure(
            &bin,
            &cwd,
            cli.decrypt_count,
            cli.decrypt_attachment_kib * 1024,
        )?)
    } else {
        None
    };

    let load = [load_before, report::load_average()];
    let report = report::Report::new(limits, server, intake, big, decrypt, load);
    let markdown = report.markdown();
    report.write(&cli.out, &markdown)?;
    println!("{markdown}");
    eprintln!(
        "wrote {} and {}",
        cli.out.join("latest.json").display(),
        cli.out.join("latest.md").display()
    );
    Ok(())
}
