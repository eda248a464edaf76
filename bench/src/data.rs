//! Data at scale: a store filled with 100 k and then 1 M submissions, and what reading it costs.
//!
//! The rows are loaded the honest way, through the real OpenRosa intake over loopback (app-user
//! token, 64 concurrent clients), never written into the database behind the server's back, so
//! the store holds exactly what production intake makes (sealed XML, versions, indexes). At each
//! checkpoint the server is restarted (so `VmHWM` is the reads' own peak) and measures:
//!
//! - the Central-shaped data API page, `GET …/submissions?limit=1000`, first page and a page
//!   half-way down (`offset = rows / 2`): latency p50/p99;
//! - the KoboToolbox data API, `GET /api/v2/assets/{uid}/data/?limit=1000` (counted in the index,
//!   one page read) and the same with a `query` matching one row (a full scan that decrypts and
//!   filters every row): latency, and rows scanned per second;
//!
//! at the first and the last checkpoint the KoboToolbox asynchronous XLSX export (create, poll
//! until complete, download), and at the last also the CSV export (`…/submissions.csv`,
//! streamed),
//! `fieldvault backup run` and `fieldvault restore`, each with the server's peak RSS.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use futures_util::StreamExt as _;
use serde::Serialize;

use crate::intake::{self, Auth, PASSWORD, Scenario, USER};
use crate::server::{self, Running};

/// Clients used to load the store: enough to keep the group commit's batches full.
const LOAD_CONCURRENCY: usize = 64;
/// Requests per page-latency sample set (first page).
const FIRST_PAGE_REQUESTS: usize = 20;
/// Requests for the deep page (each may walk half the table).
const DEEP_PAGE_REQUESTS: usize = 3;
/// The first checkpoint (also where the KoboToolbox XLSX export is first timed).
const FIRST_CHECKPOINT: usize = 10_000;
/// Longest a single read or export may take before the benchmark gives up on it.
const READ_TIMEOUT: Duration = Duration::from_secs(1800);

/// Options from the command line.
#[derive(Debug, Clone)]
pub struct Options {
    /// Rows at the last checkpoint (a 100 k checkpoint is taken on the way when larger).
    pub rows: usize,
}

/// Latency percentiles of a set of requests.
#[derive(Debug, Serialize)]
pub struct Latency {
    /// Requests timed.
    pub requests: usize,
    /// Rows in each answer (checked to be the same every time).
    pub rows: usize,
    /// Median, ms.
    pub p50_ms: f64,
    /// 99th percentile (nearest rank; with few requests, the slowest), ms.
    pub p99_ms: f64,
}

/// Everything measured at one store size.
#[derive(Debug, Serialize)]
pub struct Checkpoint {
    /// Submissions in the store.
    pub rows: usize,
    /// Submissions accepted (201) while loading to this checkpoint (since the previous one).
    pub loaded: usize,
    /// Seconds the load took.
    pub load_secs: f64,
    /// Load errors (anything but 201).
    pub load_errors: usize,
    /// Size of the data directory (database, WAL, blobs, journal), bytes.
    pub data_dir_bytes: u64,
    /// `GET …/submissions?limit=1000` (offset 0).
    pub page_first: Latency,
    /// `GET …/submissions?limit=1000&offset=rows/2`.
    pub page_deep: Latency,
    /// `GET /api/v2/assets/{uid}/data/?limit=1000`, one request, ms.
    pub kobo_page_ms: Option<f64>,
    /// `GET …/data/?query={"name": …}` matching one row: rows scanned per second.
    pub kobo_query_rows_per_sec: Option<f64>,
    /// Its wall time, s.
    pub kobo_query_secs: Option<f64>,
    /// Server `VmHWM` after these reads (restarted just before), MiB.
    pub peak_rss_mib: f64,
}

/// One export.
#[derive(Debug, Serialize)]
pub struct Export {
    /// What was exported, for the report.
    pub kind: String,
    /// Data rows in the file (CSV: lines minus the header; XLSX: the submissions exported).
    pub rows: usize,
    /// Bytes of the file.
    pub bytes: u64,
    /// Wall time, s (asynchronous exports: from the create request to `complete`).
    pub secs: f64,
    /// Rows per second.
    pub rows_per_sec: f64,
    /// Time to download the finished file, s (asynchronous exports only).
    pub download_secs: Option<f64>,
    /// Server `VmHWM` (restarted just before), MiB.
    pub peak_rss_mib: f64,
}

/// `fieldvault backup run` and `fieldvault restore` of the full store.
#[derive(Debug, Serialize)]
pub struct BackupRun {
    /// Data directory size before the backup, bytes.
    pub source_bytes: u64,
    /// Bytes on the backup target afterwards.
    pub target_bytes: u64,
    /// `backup run` wall time, s.
    pub backup_secs: f64,
    /// `source_bytes` per second of `backup run`, MB/s.
    pub backup_mb_per_sec: f64,
    /// `restore` wall time, s.
    pub restore_secs: f64,
    /// Restored data directory size, bytes.
    pub restored_bytes: u64,
    /// `restored_bytes` per second of `restore`, MB/s.
    pub restore_mb_per_sec: f64,
}

/// All large-store results.
#[derive(Debug, Serialize)]
pub struct BigData {
    /// One per store size.
    pub checkpoints: Vec<Checkpoint>,
    /// Exports at the last checkpoint.
    pub exports: Vec<Export>,
    /// Backup and restore at the last checkpoint.
    pub backup: Option<BackupRun>,
    /// Remarks for the report.
    pub notes: Vec<String>,
}

/// Fills one embedded store and measures it at each checkpoint.
pub fn measure(bin: &Path, scratch_parent: &Path, opts: &Options) -> anyhow::Result<BigData> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(run(bin, scratch_parent, opts))
}

async fn run(bin: &Path, scratch_parent: &Path, opts: &Options) -> anyhow::Result<BigData> {
    let dir = tempfile::Builder::new()
        .prefix(".fieldvault-bench-big-")
        .tempdir_in(scratch_parent)
        .with_context(|| format!("cannot create a directory in {}", scratch_parent.display()))?;
    let data_dir = dir.path().join("data");
    intake::create_user(bin, dir.path(), &data_dir, &[])?;
    let client = reqwest::Client::builder()
        .no_proxy()
        .timeout(READ_TIMEOUT)
        .build()
        .context("cannot build the HTTP client")?;

    let mut srv = start(bin, dir.path(), &data_dir, &client, "big setup").await?;
    let target = intake::setup(&client, &srv.base)
        .await
        .context("setting up the project")?;
    let project = target.project;
    let mut checkpoints_at = Vec::new();
    for at in [FIRST_CHECKPOINT, 100_000] {
        if opts.rows > at {
            checkpoints_at.push(at);
        }
    }
    checkpoints_at.push(opts.rows);

    let nonce = intake::splitmix64(intake::seed());
    let mut loaded = 0usize;
    let mut checkpoints = Vec::new();
    let mut notes = Vec::new();
    let mut exports = Vec::new();
    for &at in &checkpoints_at {
        let scenario = Scenario {
            url: target.url(&srv.base, Auth::Token),
            auth: Auth::Token,
            attachment_bytes: 0,
            nonce,
            encrypted: None,
        };
        eprintln!("  data: loading {} submissions ...", at - loaded);
        let started = Instant::now();
        let (ok, errors, first_error) = load(&client, Arc::new(scenario), loaded, at).await;
        let load_secs = started.elapsed().as_secs_f64();
        if let Some(e) = first_error {
            notes.push(format!("load to {at}: {errors} errors; first: {e}"));
        }
        loaded = at;
        srv.stop("big load").await?;
        drop(srv);
        let data_dir_bytes = dir_size(&data_dir);

        eprintln!("  data: reads at {at} rows ...");
        srv = start(bin, dir.path(), &data_dir, &client, "big reads").await?;
        let base = srv.base.clone();
        let list = format!("{base}/v1/projects/{project}/forms/bench/submissions");
        let page_first = pages(&client, &list, 0, FIRST_PAGE_REQUESTS).await?;
        let page_deep = pages(&client, &list, at / 2, DEEP_PAGE_REQUESTS).await?;
        let uid = asset_uid(&client, &base).await?;
        let data_url = format!("{base}/api/v2/assets/{uid}/data/");
        let (mut kobo_page_ms, mut kobo_query_secs) = (None, None);
        {
            let t = Instant::now();
            match get_json(&client, &data_url, &[("limit", "1000")]).await {
                Ok(_) => kobo_page_ms = Some(t.elapsed().as_secs_f64() * 1e3),
                Err(e) => notes.push(format!("at {at} rows the KoboToolbox page failed: {e:#}")),
            }
            let needle = serde_json::json!({ "name": format!("Bench {}", at / 3) }).to_string();
            let t = Instant::now();
            match get_json(&client, &data_url, &[("query", &needle), ("limit", "1000")]).await {
                Ok(found) => {
                    kobo_query_secs = Some(t.elapsed().as_secs_f64());
                    if found["count"].as_u64() != Some(1) {
                        notes.push(format!(
                            "at {at} rows the query {needle} matched {} rows, not 1",
                            found["count"]
                        ));
                    }
                }
                Err(e) => notes.push(format!("at {at} rows the KoboToolbox query failed: {e:#}")),
            }
        }
        let peak_rss_mib = server::peak_rss_mib(srv.pid())?;
        if at == FIRST_CHECKPOINT || at == opts.rows {
            // KoboToolbox's XLSX export (the synchronous CSV, with the target, is at the end).
            srv.stop("big reads").await?;
            drop(srv);
            eprintln!("  data: KoboToolbox XLSX export of {at} rows ...");
            let mut x = start(bin, dir.path(), &data_dir, &client, "kobo export").await?;
            match asset_uid(&client, &x.base).await {
                Ok(uid) => match kobo_export(&client, &x.base, &uid, "xls", at, x.pid()).await {
                    Ok(e) => exports.push(e),
                    Err(e) => notes.push(format!("XLSX export at {at} rows failed: {e:#}")),
                },
                Err(e) => notes.push(format!("{e:#}")),
            }
            x.stop("kobo export").await?;
            drop(x);
            srv = start(bin, dir.path(), &data_dir, &client, "big load").await?;
        }
        checkpoints.push(Checkpoint {
            rows: at,
            loaded: ok,
            load_secs,
            load_errors: errors,
            data_dir_bytes,
            page_first,
            page_deep,
            kobo_page_ms,
            kobo_query_rows_per_sec: kobo_query_secs.map(|q| at as f64 / q.max(1e-9)),
            kobo_query_secs,
            peak_rss_mib,
        });
    }

    // Exports, each on a freshly started server so its VmHWM is the export's own peak.
    let rows = checkpoints.last().map_or(0, |c| c.rows);
    srv.stop("big reads").await?;
    drop(srv);
    {
        eprintln!("  data: CSV export of {rows} rows ...");
        let mut srv = start(bin, dir.path(), &data_dir, &client, "csv export").await?;
        let url = format!(
            "{}/v1/projects/{project}/forms/bench/submissions.csv",
            srv.base
        );
        match csv_export(&client, &url, srv.pid()).await {
            Ok(e) => exports.push(e),
            Err(e) => notes.push(format!("CSV export failed: {e:#}")),
        }
        srv.stop("csv export").await?;
    }

    eprintln!("  data: backup and restore ...");
    let backup = match backup_restore(bin, dir.path(), &data_dir) {
        Ok(b) => Some(b),
        Err(e) => {
            notes.push(format!("backup/restore failed: {e:#}"));
            None
        }
    };
    if std::env::var_os("FIELDVAULT_BENCH_KEEP").is_some() {
        // For profiling the reads by hand afterwards (user `bench`, project and form `bench`).
        eprintln!("  data: kept the store in {}", dir.keep().display());
    }
    Ok(BigData {
        checkpoints,
        exports,
        backup,
        notes,
    })
}

/// Starts the server and waits until it is healthy.
async fn start(
    bin: &Path,
    cwd: &Path,
    data_dir: &Path,
    client: &reqwest::Client,
    label: &str,
) -> anyhow::Result<Running> {
    let srv = server::spawn(bin, cwd, data_dir, &[], label)?;
    server::wait_healthy(client, &srv, Instant::now(), label).await?;
    Ok(srv)
}

/// Posts submissions `from..to` from [`LOAD_CONCURRENCY`] tasks. Returns (201s, errors, first).
async fn load(
    client: &reqwest::Client,
    scenario: Arc<Scenario>,
    from: usize,
    to: usize,
) -> (usize, usize, Option<String>) {
    let next = Arc::new(AtomicUsize::new(from));
    let mut handles = Vec::new();
    for _ in 0..LOAD_CONCURRENCY {
        let next = next.clone();
        let client = client.clone();
        let scenario = scenario.clone();
        handles.push(tokio::spawn(async move {
            let (mut ok, mut errors, mut first) = (0usize, 0usize, None);
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= to {
                    return (ok, errors, first);
                }
                let body = scenario.body(i as u64, &[]);
                match scenario.request(&client, body).send().await {
                    Ok(r) if r.status() == reqwest::StatusCode::CREATED => {
                        let _ = r.bytes().await;
                        ok += 1;
                    }
                    Ok(r) => {
                        errors += 1;
                        let status = r.status();
                        let text = r.text().await.unwrap_or_default();
                        first.get_or_insert(format!("{status}: {}", clip(&text)));
                    }
                    Err(e) => {
                        errors += 1;
                        first.get_or_insert(format!("transport: {e}"));
                    }
                }
                if i.is_multiple_of(50_000) && i > from {
                    eprintln!("    {i} ...");
                }
            }
        }));
    }
    let (mut ok, mut errors, mut first) = (0, 0, None);
    for h in handles {
        match h.await {
            Ok((o, e, f)) => {
                ok += o;
                errors += e;
                first = first.or(f);
            }
            Err(e) => {
                errors += 1;
                first.get_or_insert(format!("a load task failed: {e}"));
            }
        }
    }
    (ok, errors, first)
}

fn clip(s: &str) -> String {
    s.chars().take(300).collect::<String>().replace('\n', " ")
}

/// `GET url?limit=1000&offset=…` `n` times; checks every answer is a JSON array of one size.
async fn pages(
    client: &reqwest::Client,
    url: &str,
    offset: usize,
    n: usize,
) -> anyhow::Result<Latency> {
    let mut times = Vec::with_capacity(n);
    let mut rows = None;
    let offset = offset.to_string();
    for _ in 0..n {
        let t = Instant::now();
        let v = get_json(client, url, &[("limit", "1000"), ("offset", &offset)]).await?;
        times.push(t.elapsed());
        let len = v.as_array().map_or(0, Vec::len);
        if rows.is_some_and(|r| r != len) {
            bail!("{url}: pages of the same offset returned different row counts");
        }
        rows = Some(len);
    }
    times.sort_unstable();
    Ok(Latency {
        requests: n,
        rows: rows.unwrap_or(0),
        p50_ms: server::percentile_us(&times, 0.50) / 1e3,
        p99_ms: server::percentile_us(&times, 0.99) / 1e3,
    })
}

/// A Basic-authenticated GET that must answer 200 with JSON.
async fn get_json(
    client: &reqwest::Client,
    url: &str,
    query: &[(&str, &str)],
) -> anyhow::Result<serde_json::Value> {
    let mut full = url.to_owned();
    for (i, (k, v)) in query.iter().enumerate() {
        full.push(if i == 0 { '?' } else { '&' });
        full.push_str(k);
        full.push('=');
        full.push_str(&percent_encode(v));
    }
    intake::expect_ok(client.get(&full).basic_auth(USER, Some(PASSWORD)), url).await
}

/// Percent-encodes a query value (everything but unreserved characters).
fn percent_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len() * 3);
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// The KoboToolbox asset uid of the `bench` form (its title is "Bench").
async fn asset_uid(client: &reqwest::Client, base: &str) -> anyhow::Result<String> {
    let list = get_json(client, &format!("{base}/api/v2/assets/"), &[]).await?;
    list["results"]
        .as_array()
        .and_then(|r| r.iter().find(|a| a["name"] == "Bench"))
        .and_then(|a| a["uid"].as_str())
        .map(str::to_owned)
        .context("no asset named Bench in /api/v2/assets/")
}

/// Streams the CSV export, counting bytes and lines without keeping them.
async fn csv_export(client: &reqwest::Client, url: &str, pid: u32) -> anyhow::Result<Export> {
    let t = Instant::now();
    let resp = client
        .get(url)
        .basic_auth(USER, Some(PASSWORD))
        .send()
        .await
        .with_context(|| format!("GET {url}"))?;
    if !resp.status().is_success() {
        bail!("GET {url} returned {}", resp.status());
    }
    let (bytes, lines) = count_stream(resp).await?;
    let secs = t.elapsed().as_secs_f64();
    let rows = lines.saturating_sub(1);
    Ok(Export {
        kind: "CSV, `GET …/submissions.csv` (streamed)".to_owned(),
        rows,
        bytes,
        secs,
        rows_per_sec: rows as f64 / secs.max(1e-9),
        download_secs: None,
        peak_rss_mib: server::peak_rss_mib(pid)?,
    })
}

/// Bytes and newlines of a response body, read as it streams.
async fn count_stream(resp: reqwest::Response) -> anyhow::Result<(u64, usize)> {
    let mut bytes = 0u64;
    let mut lines = 0usize;
    let mut body = resp.bytes_stream();
    while let Some(chunk) = body.next().await {
        let chunk = chunk.context("reading the export")?;
        bytes += chunk.len() as u64;
        lines += chunk.iter().filter(|&&b| b == b'\n').count();
    }
    Ok((bytes, lines))
}

/// A KoboToolbox asynchronous export: create, poll until complete, download.
async fn kobo_export(
    client: &reqwest::Client,
    base: &str,
    uid: &str,
    kind: &str,
    rows: usize,
    pid: u32,
) -> anyhow::Result<Export> {
    let url = format!("{base}/api/v2/assets/{uid}/exports/");
    let t = Instant::now();
    let task = intake::expect_ok(
        client
            .post(&url)
            .basic_auth(USER, Some(PASSWORD))
            .json(&serde_json::json!({
                "type": kind,
                "fields_from_all_versions": true,
                "group_sep": "/",
                "hierarchy_in_labels": false,
                "lang": "_xml",
                "multiple_select": "both",
            })),
        "POST exports",
    )
    .await?;
    let euid = task["uid"].as_str().context("export task has no uid")?;
    let status_url = format!("{url}{euid}/");
    // Polled as a well-behaved client does: often at first (a small export is done in a fraction
    // of a second), then less (a 1 M-row one takes a minute and must not spend the account's
    // request budget), and after a 429 only once its Retry-After has passed.
    let mut pause = Duration::from_millis(20);
    let result = loop {
        let resp = client
            .get(&status_url)
            .basic_auth(USER, Some(PASSWORD))
            .send()
            .await
            .context("polling the export")?;
        if resp.status() == reqwest::StatusCode::TOO_MANY_REQUESTS {
            let wait = resp
                .headers()
                .get(reqwest::header::RETRY_AFTER)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.parse::<u64>().ok())
                .unwrap_or(1);
            tokio::time::sleep(Duration::from_secs(wait)).await;
            continue;
        }
        let s: serde_json::Value = resp
            .error_for_status()
            .context("polling the export")?
            .json()
            .await
            .context("polling the export")?;
        match s["status"].as_str() {
            Some("complete") => break s["result"].as_str().map(str::to_owned),
            Some("error") => bail!("{kind} export failed: {}", s["messages"]),
            _ => {}
        }
        if t.elapsed() > READ_TIMEOUT {
            bail!("{kind} export did not complete in {READ_TIMEOUT:?}");
        }
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(Duration::from_millis(500));
    };
    let secs = t.elapsed().as_secs_f64();
    let result = result.context("complete export has no result URL")?;
    let d = Instant::now();
    let resp = client
        .get(&result)
        .basic_auth(USER, Some(PASSWORD))
        .send()
        .await
        .context("downloading the export")?;
    if !resp.status().is_success() {
        bail!("download of the {kind} export returned {}", resp.status());
    }
    let (bytes, _) = count_stream(resp).await?;
    let download_secs = d.elapsed().as_secs_f64();
    let label = if kind == "xls" { "XLSX" } else { "CSV" };
    Ok(Export {
        kind: format!("{label}, KoboToolbox export (create → complete)"),
        rows,
        bytes,
        secs,
        rows_per_sec: rows as f64 / secs.max(1e-9),
        download_secs: Some(download_secs),
        peak_rss_mib: server::peak_rss_mib(pid)?,
    })
}

/// `fieldvault backup keygen`, `backup run` to a `file://` target beside the data, then
/// `restore` into a new directory, timing the last two. The server is stopped (a backup is
/// safe while it runs; stopping it keeps its CPU out of the figure).
fn backup_restore(bin: &Path, cwd: &Path, data_dir: &Path) -> anyhow::Result<BackupRun> {
    let key = cwd.join("backup.key");
    let target_dir = cwd.join("backup-target");
    std::fs::create_dir_all(&target_dir)?;
    let target = format!("file://{}", target_dir.display());
    let key_s = key.display().to_string();
    run_cli(
        bin,
        cwd,
        data_dir,
        &[],
        &["backup", "keygen", key_s.as_str()],
    )?;
    let env = [
        ("FIELDVAULT_BACKUP_TARGET", target.as_str()),
        ("FIELDVAULT_BACKUP_KEY_FILE", key_s.as_str()),
    ];
    let source_bytes = dir_size(data_dir);
    let t = Instant::now();
    run_cli(bin, cwd, data_dir, &env, &["backup", "run"])?;
    let backup_secs = t.elapsed().as_secs_f64();
    let target_bytes = dir_size(&target_dir);
    let restored: PathBuf = cwd.join("restored");
    let t = Instant::now();
    run_cli(
        bin,
        cwd,
        &restored,
        &[],
        &[
            "restore",
            "--from",
            target.as_str(),
            "--backup-key-file",
            key_s.as_str(),
        ],
    )?;
    let restore_secs = t.elapsed().as_secs_f64();
    let restored_bytes = dir_size(&restored);
    Ok(BackupRun {
        source_bytes,
        target_bytes,
        backup_secs,
        backup_mb_per_sec: source_bytes as f64 / 1e6 / backup_secs.max(1e-9),
        restore_secs,
        restored_bytes,
        restore_mb_per_sec: restored_bytes as f64 / 1e6 / restore_secs.max(1e-9),
    })
}

/// Runs a `fieldvault` command to completion, failing with its output.
fn run_cli(
    bin: &Path,
    cwd: &Path,
    data_dir: &Path,
    env: &[(&str, &str)],
    args: &[&str],
) -> anyhow::Result<()> {
    let out = server::command(bin, cwd, data_dir, env)
        .args(args)
        .stdin(std::process::Stdio::null())
        .output()
        .with_context(|| format!("cannot run fieldvault {}", args.join(" ")))?;
    if !out.status.success() {
        bail!(
            "fieldvault {} failed: {}{}",
            args.join(" "),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(())
}

/// Bytes of every regular file under `dir` (0 if it cannot be read).
pub fn dir_size(dir: &Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    entries
        .filter_map(Result::ok)
        .map(|e| match e.file_type() {
            Ok(t) if t.is_dir() => dir_size(&e.path()),
            Ok(t) if t.is_file() => e.metadata().map_or(0, |m| m.len()),
            _ => 0,
        })
        .sum()
}
