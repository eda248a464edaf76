//! Intake: OpenRosa submissions posted to the real release server over loopback, the way ODK
//! Collect posts them (multipart, `xml_submission_file` plus attachments), with app-user token
//! and Basic auth, at several concurrencies. Reports throughput, latency percentiles, errors
//! (anything but `201`), the server's peak RSS and CPU seconds, for the embedded store and,
//! when a server is given, PostgreSQL.
//!
//! The server is restarted for every run, so `VmHWM` (peak RSS since process start) is that
//! run's peak and the CPU figures are that run's alone; the data directory (and database) are
//! kept, so later runs write into a store that already holds the earlier runs' submissions.

use std::path::Path;
use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use fieldvault_crypto::odk::{OdkPrivateKey, OdkPublicKey, encrypt_submission};
use serde::Serialize;

use crate::server::{self, Running};

/// Login of the benchmark's account.
pub(crate) const USER: &str = "bench";
/// Its password (long enough for any password policy; never a real secret).
pub(crate) const PASSWORD: &str = "bench-intake-password-7Qx";
/// Multipart boundary; cannot occur in the generated XML or (with any real chance) in the
/// random attachment bytes.
const BOUNDARY: &str = "fieldvault-bench-4c1f9a7e2b6d8035";
/// Attachment size of the attachment variant: a small phone photo.
const ATTACHMENT_BYTES: usize = 100 * 1024;
/// Clock ticks per second of `/proc/<pid>/stat` times (`USER_HZ`, 100 on every Linux build
/// that matters; reading it properly needs libc, which this crate does not depend on).
const TICKS_PER_SEC: f64 = 100.0;
/// Per-request timeout: generous, so a slow server shows as latency rather than as errors.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);

/// The minimal XForm the submissions are for: two text fields and one binary (photo) field.
pub(crate) const XFORM: &str = r#"<?xml version="1.0"?><h:html xmlns="http://www.w3.org/2002/xforms" xmlns:h="http://www.w3.org/1999/xhtml" xmlns:jr="http://openrosa.org/javarosa"><h:head><h:title>Bench</h:title><model><instance><data id="bench" version="1"><name/><note/><photo/><meta><instanceID/></meta></data></instance><bind nodeset="/data/name" type="string"/><bind nodeset="/data/note" type="string"/><bind nodeset="/data/photo" type="binary"/><bind nodeset="/data/meta/instanceID" type="string" readonly="true()" jqcalculate="concat('uuid:', uuid())"/></model></h:head><h:body><input ref="/data/name"><label>Name</label></input></h:body></h:html>"#;

/// Form id of the encrypted form.
const ENC_FORM: &str = "bench_enc";

/// The same form with `base64RsaPublicKey`: Collect encrypts every submission to it.
fn encrypted_xform(public_b64: &str) -> String {
    XFORM
        .replace(
            "<h:title>Bench</h:title>",
            "<h:title>Bench encrypted</h:title>",
        )
        .replace("<data id=\"bench\"", &format!("<data id=\"{ENC_FORM}\""))
        .replace(
            "</model>",
            &format!("<submission method=\"post\" base64RsaPublicKey=\"{public_b64}\"/></model>"),
        )
}

/// Options from the command line.
#[derive(Debug, Clone)]
pub struct Options {
    /// Submissions per run.
    pub count: usize,
    /// Time cap per run: no new submission is started after it.
    pub max_secs: f64,
    /// Runs per scenario; the median by throughput is reported, with the range.
    pub repeats: usize,
    /// PostgreSQL server URL without a database, e.g. `postgres://postgres@127.0.0.1:5432`.
    pub pg: Option<String>,
    /// Only scenarios whose label (`SQLite Token c=16 Xml`) contains this, for profiling one.
    pub filter: Option<String>,
}

/// What each submission carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum Payload {
    /// ~1.1 KB of instance XML only.
    Xml,
    /// The XML plus one attachment of this many random bytes.
    Attachment(usize),
    /// An ODK-encrypted envelope as Collect makes it (`fieldvault_crypto::odk`): the manifest
    /// as `xml_submission_file` plus `submission.xml.enc` (the same ~1.1 KB XML, AES-CFB under
    /// a fresh key wrapped with the form's RSA public key), to a form that carries the key.
    Encrypted,
}

/// How a submission authenticates.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum Auth {
    /// App-user token in the URL (`/v1/key/{token}/projects/{pid}/submission`), as Collect
    /// does after scanning a Central-style QR code.
    Token,
    /// HTTP Basic with a web user's password (served from the verified-credential cache after
    /// the first request, so PBKDF2 is not paid per submission).
    Basic,
}

/// One measured run.
#[derive(Debug, Serialize)]
pub struct IntakeRun {
    /// "SQLite", "SQLite+PITR" (with the change journal on) or "PostgreSQL".
    pub backend: String,
    /// Token or Basic.
    pub auth: Auth,
    /// Attachment bytes per submission (0: XML only, ~1 KB).
    pub attachment_bytes: usize,
    /// ODK-encrypted envelopes rather than plaintext XML.
    pub encrypted: bool,
    /// Concurrent clients (connections).
    pub concurrency: usize,
    /// Submissions asked for.
    pub requested: usize,
    /// Submissions sent before the count or the time cap was reached.
    pub sent: usize,
    /// Answers with `201 Created`.
    pub created: usize,
    /// Everything else: other statuses and transport errors.
    pub errors: usize,
    /// Errors summed over every repetition of this scenario, not just the median one.
    pub errors_all_repeats: usize,
    /// The first error of any repetition, for the report's notes.
    pub first_error: Option<String>,
    /// How many times the scenario ran; this entry is the median by `per_sec`.
    pub repeats: usize,
    /// Lowest and highest `per_sec` over the repetitions: the run-to-run spread.
    pub per_sec_min: f64,
    /// Highest `per_sec` over the repetitions.
    pub per_sec_max: f64,
    /// Wall time of the run, in seconds.
    pub elapsed_s: f64,
    /// `201`s per second.
    pub per_sec: f64,
    /// Attachment megabytes (10^6) accepted per second.
    pub attachment_mb_per_sec: f64,
    /// Latency percentiles over all requests, in milliseconds.
    pub p50_ms: f64,
    /// 99th percentile, ms.
    pub p99_ms: f64,
    /// 99.9th percentile, ms.
    pub p999_ms: f64,
    /// `VmHWM` of the server at the end of the run (it was started for this run), MiB.
    pub peak_rss_mib: f64,
    /// Server user + system CPU seconds during the run.
    pub server_cpu_s: f64,
    /// The benchmark client's own CPU seconds during the run (it shares the machine).
    pub client_cpu_s: f64,
    /// CPU seconds of everything else on the machine during the run (all CPUs busy time from
    /// `/proc/stat` minus server and client): PostgreSQL's backends on the PostgreSQL rows,
    /// and on any row a sign that something else (a build, say) competed for the CPUs.
    pub other_cpu_s: f64,
}

impl IntakeRun {
    /// Server CPU milliseconds per accepted submission.
    pub fn cpu_ms_per_submission(&self) -> f64 {
        if self.created == 0 {
            0.0
        } else {
            self.server_cpu_s * 1e3 / self.created as f64
        }
    }
}

/// All intake runs, plus notes on what was skipped.
#[derive(Debug, Serialize)]
pub struct Intake {
    /// Runs in the order they were taken.
    pub runs: Vec<IntakeRun>,
    /// Skipped backends and other remarks for the report.
    pub notes: Vec<String>,
}

/// Runs every scenario on the embedded store, then on PostgreSQL if a server was given.
pub fn measure(bin: &Path, scratch_parent: &Path, opts: &Options) -> anyhow::Result<Intake> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    let mut runs = Vec::new();
    let mut notes = Vec::new();
    runs.extend(
        runtime
            .block_on(backend(bin, scratch_parent, opts, "SQLite", &[]))
            .context("intake benchmark on the embedded store")?,
    );
    // The embedded store again with a backup target: the change journal (point-in-time
    // recovery) is on, and what it costs intake shows against the rows above.
    let pitr = tempfile::Builder::new()
        .prefix(".fieldvault-bench-target-")
        .tempdir_in(scratch_parent)
        .context("cannot create the backup target directory")?;
    let key = pitr.path().join("backup.key");
    let keygen = server::command(bin, pitr.path(), &pitr.path().join("unused"), &[])
        .args(["backup", "keygen"])
        .arg(&key)
        .output()
        .context("cannot run fieldvault backup keygen")?;
    anyhow::ensure!(
        keygen.status.success(),
        "fieldvault backup keygen failed: {}",
        String::from_utf8_lossy(&keygen.stderr)
    );
    let target = format!("file://{}", pitr.path().join("target").display());
    let key = key.display().to_string();
    let env = [
        ("FIELDVAULT_BACKUP_TARGET", target.as_str()),
        ("FIELDVAULT_BACKUP_KEY_FILE", key.as_str()),
    ];
    runs.extend(
        runtime
            .block_on(backend(bin, scratch_parent, opts, "SQLite+PITR", &env))
            .context("intake benchmark on the embedded store with the change journal")?,
    );
    match &opts.pg {
        None => notes
            .push("PostgreSQL not measured: pass `--pg URL` or set FIELDVAULT_TEST_PG.".to_owned()),
        Some(server_url) => match PgDb::create(server_url) {
            Err(e) => notes.push(format!("PostgreSQL skipped: {e:#}")),
            Ok(db) => {
                let env = [("FIELDVAULT_DATABASE_URL", db.url.as_str())];
                match runtime.block_on(backend(bin, scratch_parent, opts, "PostgreSQL", &env)) {
                    Ok(pg_runs) => runs.extend(pg_runs),
                    Err(e) => notes.push(format!("PostgreSQL run failed: {e:#}")),
                }
                notes.push(
                    "PostgreSQL rows: server CPU and RSS are the fieldvault process only; \
                     the postgres backends' CPU shows under *Other cores*."
                        .to_owned(),
                );
            }
        },
    }
    Ok(Intake { runs, notes })
}

/// The scenarios, in run order: (auth, payload, concurrency).
const SCENARIOS: [(Auth, Payload, usize); 9] = [
    (Auth::Token, Payload::Xml, 1),
    (Auth::Token, Payload::Xml, 16),
    (Auth::Token, Payload::Xml, 64),
    (Auth::Basic, Payload::Xml, 1),
    (Auth::Basic, Payload::Xml, 16),
    (Auth::Basic, Payload::Xml, 64),
    (Auth::Token, Payload::Attachment(ATTACHMENT_BYTES), 16),
    (Auth::Token, Payload::Encrypted, 1),
    (Auth::Token, Payload::Encrypted, 16),
];

/// Sets up one store (account, project, form, app user) and runs every scenario on it.
async fn backend(
    bin: &Path,
    scratch_parent: &Path,
    opts: &Options,
    name: &str,
    env: &[(&str, &str)],
) -> anyhow::Result<Vec<IntakeRun>> {
    let dir = tempfile::Builder::new()
        .prefix(".fieldvault-bench-intake-")
        .tempdir_in(scratch_parent)
        .with_context(|| format!("cannot create a directory in {}", scratch_parent.display()))?;
    let data_dir = dir.path().join("data");
    create_user(bin, dir.path(), &data_dir, env)?;

    let client = reqwest::Client::builder()
        .no_proxy()
        .timeout(REQUEST_TIMEOUT)
        .build()
        .context("cannot build the HTTP client")?;

    let label = format!("{name} setup");
    let mut srv = server::spawn(bin, dir.path(), &data_dir, env, &label)?;
    server::wait_healthy(&client, &srv, Instant::now(), &label).await?;
    let target = setup(&client, &srv.base)
        .await
        .context("setting up the project")?;
    srv.stop(&label).await?;
    drop(srv);

    let mut seed = seed();
    let mut runs = Vec::new();
    for (auth, payload, concurrency) in SCENARIOS {
        let scenario_label = format!("{name} {auth:?} c={concurrency} {payload:?}");
        if opts
            .filter
            .as_deref()
            .is_some_and(|f| !scenario_label.contains(f))
        {
            continue;
        }
        seed = splitmix64(seed);
        let mut reps = Vec::new();
        for rep in 1..=opts.repeats.max(1) {
            seed = splitmix64(seed);
            let label = format!(
                "{name} {auth:?} c={concurrency} {payload:?} ({rep}/{})",
                opts.repeats.max(1)
            );
            eprintln!("  intake: {label} ...");
            let srv = server::spawn(bin, dir.path(), &data_dir, env, &label)?;
            server::wait_healthy(&client, &srv, Instant::now(), &label).await?;
            let attachment_bytes = match payload {
                Payload::Attachment(n) => n,
                Payload::Xml | Payload::Encrypted => 0,
            };
            let scenario = Scenario {
                url: target.url(&srv.base, auth),
                auth,
                attachment_bytes,
                nonce: seed,
                encrypted: (payload == Payload::Encrypted).then(|| target.enc_public.clone()),
            };
            reps.push(one_run(&client, srv, &scenario, concurrency, opts, name, &label).await?);
        }
        runs.push(median(reps).context("no intake run")?);
    }
    Ok(runs)
}

/// The median run by throughput, carrying the spread and every repetition's errors: on a
/// shared or virtual machine one run can be 30% off, and a single number would hide that.
fn median(mut reps: Vec<IntakeRun>) -> Option<IntakeRun> {
    reps.sort_by(|a, b| a.per_sec.total_cmp(&b.per_sec));
    let per_sec_min = reps.first()?.per_sec;
    let per_sec_max = reps.last()?.per_sec;
    let errors_all_repeats = reps.iter().map(|r| r.errors).sum();
    let first_error = reps.iter().find_map(|r| r.first_error.clone());
    let repeats = reps.len();
    let mut m = reps.into_iter().nth(repeats / 2)?;
    m.per_sec_min = per_sec_min;
    m.per_sec_max = per_sec_max;
    m.errors_all_repeats = errors_all_repeats;
    m.first_error = first_error;
    m.repeats = repeats;
    Some(m)
}

/// `fieldvault user create bench --superuser --password-stdin`.
pub(crate) fn create_user(
    bin: &Path,
    cwd: &Path,
    data_dir: &Path,
    env: &[(&str, &str)],
) -> anyhow::Result<()> {
    use std::io::Write as _;
    let mut cmd = server::command(bin, cwd, data_dir, env);
    cmd.args(["user", "create", USER, "--superuser", "--password-stdin"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().context("cannot run fieldvault user create")?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin
            .write_all(format!("{PASSWORD}\n").as_bytes())
            .context("cannot write the password to fieldvault user create")?;
    }
    let out = child
        .wait_with_output()
        .context("fieldvault user create did not finish")?;
    if !out.status.success() {
        bail!(
            "fieldvault user create failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(())
}

/// Where submissions go, from the setup.
pub(crate) struct Target {
    /// Project id.
    pub project: u64,
    /// The app user's token.
    pub token: String,
    /// Public key of the encrypted form `bench_enc`.
    pub enc_public: Arc<OdkPublicKey>,
}

impl Target {
    /// The submission URL for `auth`.
    pub fn url(&self, base: &str, auth: Auth) -> String {
        match auth {
            Auth::Token => format!(
                "{base}/v1/key/{}/projects/{}/submission",
                self.token, self.project
            ),
            Auth::Basic => format!("{base}/v1/projects/{}/submission", self.project),
        }
    }
}

/// Project, published forms (plain `bench` and encrypted `bench_enc`), app user with both forms
/// assigned; all through the public API.
pub(crate) async fn setup(client: &reqwest::Client, base: &str) -> anyhow::Result<Target> {
    let project = expect_ok(
        client
            .post(format!("{base}/v1/projects"))
            .basic_auth(USER, Some(PASSWORD))
            .json(&serde_json::json!({ "name": "Bench" })),
        "POST /v1/projects",
    )
    .await?;
    let pid = project["id"].as_u64().context("project has no id")?;
    expect_ok(
        client
            .post(format!("{base}/v1/projects/{pid}/forms?publish=true"))
            .basic_auth(USER, Some(PASSWORD))
            .header(reqwest::header::CONTENT_TYPE, "application/xml")
            .body(XFORM),
        "POST forms",
    )
    .await?;
    // The encrypted form: the server gets only the public key; the private key is dropped.
    let enc_key = OdkPrivateKey::generate()
        .map_err(|e| anyhow::anyhow!("cannot generate an ODK key pair: {e}"))?;
    let enc_public = Arc::new(
        OdkPublicKey::from_base64_spki(&enc_key.public_key().to_base64_spki())
            .map_err(|e| anyhow::anyhow!("cannot copy the ODK public key: {e}"))?,
    );
    expect_ok(
        client
            .post(format!("{base}/v1/projects/{pid}/forms?publish=true"))
            .basic_auth(USER, Some(PASSWORD))
            .header(reqwest::header::CONTENT_TYPE, "application/xml")
            .body(encrypted_xform(&enc_public.to_base64_spki())),
        "POST encrypted form",
    )
    .await?;
    let app_user = expect_ok(
        client
            .post(format!("{base}/v1/projects/{pid}/app-users"))
            .basic_auth(USER, Some(PASSWORD))
            .json(&serde_json::json!({ "displayName": "bench" })),
        "POST app-users",
    )
    .await?;
    let actor = app_user["id"].as_u64().context("app user has no id")?;
    let token = app_user["token"]
        .as_str()
        .context("app user has no token")?
        .to_owned();
    for form in ["bench", ENC_FORM] {
        expect_ok(
            client
                .post(format!(
                    "{base}/v1/projects/{pid}/forms/{form}/assignments/app-user/{actor}"
                ))
                .basic_auth(USER, Some(PASSWORD)),
            "POST assignment",
        )
        .await?;
    }
    Ok(Target {
        project: pid,
        token,
        enc_public,
    })
}

/// Sends a request, fails on a non-2xx status, returns the JSON body (`null` if not JSON).
pub(crate) async fn expect_ok(
    req: reqwest::RequestBuilder,
    what: &str,
) -> anyhow::Result<serde_json::Value> {
    let resp = req.send().await.with_context(|| format!("{what} failed"))?;
    let status = resp.status();
    let text = resp.text().await.unwrap_or_default();
    if !status.is_success() {
        bail!("{what} returned {status}: {text}");
    }
    Ok(serde_json::from_str(&text).unwrap_or(serde_json::Value::Null))
}

/// What one run sends.
pub(crate) struct Scenario {
    /// Submission URL.
    pub url: String,
    /// Token or Basic.
    pub auth: Auth,
    /// Attachment size (0: none).
    pub attachment_bytes: usize,
    /// Makes this run's instance IDs and attachment bytes unique.
    pub nonce: u64,
    /// Encrypt each submission to this key (ODK envelopes) instead of sending plaintext XML.
    pub encrypted: Option<Arc<OdkPublicKey>>,
}

impl Scenario {
    /// The instanceID of submission `i`.
    fn instance_id(&self, i: u64) -> String {
        let n = self.nonce;
        format!(
            "uuid:{:08x}-{:04x}-4{:03x}-8{:03x}-{:012x}",
            (n >> 32) as u32,
            (n >> 16) as u16,
            n & 0xfff,
            (n >> 4) & 0xfff,
            i & 0xffff_ffff_ffff
        )
    }

    /// The multipart body of ODK-encrypted submission `i`: the manifest and
    /// `submission.xml.enc`, exactly what Collect posts for an encrypted form.
    fn encrypted_body(&self, public: &OdkPublicKey, i: u64) -> anyhow::Result<Vec<u8>> {
        let instance = self.instance_id(i);
        let xml = format!(
            "<data id=\"{ENC_FORM}\" version=\"1\"><name>Bench {i}</name><note>{NOTE_TEXT}</note>\
             <photo></photo><meta><instanceID>{instance}</instanceID></meta></data>"
        );
        let enc = encrypt_submission(public, ENC_FORM, Some("1"), &instance, xml.as_bytes(), &[])
            .map_err(|e| anyhow::anyhow!("encrypting a submission: {e}"))?;
        let mut body = Vec::with_capacity(enc.manifest_xml.len() + xml.len() + 512);
        body.extend_from_slice(
            format!(
                "--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"xml_submission_file\"; \
                 filename=\"submission.xml\"\r\nContent-Type: text/xml\r\n\r\n{}\r\n",
                enc.manifest_xml
            )
            .as_bytes(),
        );
        for (name, bytes) in &enc.files {
            body.extend_from_slice(
                format!(
                    "--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"{name}\"; \
                     filename=\"{name}\"\r\nContent-Type: application/octet-stream\r\n\r\n"
                )
                .as_bytes(),
            );
            body.extend_from_slice(bytes);
            body.extend_from_slice(b"\r\n");
        }
        body.extend_from_slice(format!("--{BOUNDARY}--\r\n").as_bytes());
        Ok(body)
    }

    /// The multipart body of submission `i`, built by hand: cheaper than reqwest's multipart
    /// encoder, so the client (which shares the machine) takes less CPU from the server.
    pub fn body(&self, i: u64, attachment: &[u8]) -> Vec<u8> {
        let n = self.nonce;
        let instance = self.instance_id(i);
        let photo = if self.attachment_bytes > 0 {
            "p.jpg"
        } else {
            ""
        };
        let note = NOTE_TEXT;
        let xml = format!(
            "<data id=\"bench\" version=\"1\"><name>Bench {i}</name><note>{note}</note>\
             <photo>{photo}</photo><meta><instanceID>{instance}</instanceID></meta></data>"
        );
        let mut body = Vec::with_capacity(xml.len() + attachment.len() + 512);
        body.extend_from_slice(
            format!(
                "--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"xml_submission_file\"; \
                 filename=\"submission.xml\"\r\nContent-Type: text/xml\r\n\r\n{xml}\r\n"
            )
            .as_bytes(),
        );
        if self.attachment_bytes > 0 {
            body.extend_from_slice(
                format!(
                    "--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"p.jpg\"; \
                     filename=\"p.jpg\"\r\nContent-Type: image/jpeg\r\n\r\n"
                )
                .as_bytes(),
            );
            let start = body.len();
            body.extend_from_slice(attachment);
            // Distinct bytes per submission, so no content-based deduplication can flatter
            // the write rate.
            let stamp = (i ^ n).to_le_bytes();
            for (dst, src) in body.iter_mut().skip(start).zip(stamp) {
                *dst = src;
            }
            body.extend_from_slice(b"\r\n");
        }
        body.extend_from_slice(format!("--{BOUNDARY}--\r\n").as_bytes());
        body
    }

    /// The POST of `body` with this scenario's headers and credentials.
    pub fn request(&self, client: &reqwest::Client, body: Vec<u8>) -> reqwest::RequestBuilder {
        let req = client
            .post(&self.url)
            .header("X-OpenRosa-Version", "1.0")
            .header(
                reqwest::header::CONTENT_TYPE,
                format!("multipart/form-data; boundary={BOUNDARY}"),
            )
            .body(body);
        match self.auth {
            Auth::Token => req,
            Auth::Basic => req.basic_auth(USER, Some(PASSWORD)),
        }
    }
}

/// ~900 bytes of field notes, so the XML part is about 1 KB like a short real form.
pub(crate) const NOTE_TEXT: &str = "Household visited in the morning; respondent available and consented. \
    Water source is a protected well about two hundred metres from the dwelling, shared with \
    four neighbouring households. Latrine present, in fair condition. Two children under five, \
    both with vaccination cards seen. Mosquito nets: three, all in use, one with small holes. \
    Main income from farming maize and beans; a small shop run from the front room. The road \
    was passable by motorbike only after the morning rain. Follow-up suggested for the \
    nutrition programme next month. GPS taken at the gate, accuracy about five metres. \
    Respondent asked about the clinic schedule and was given the leaflet. No other concerns \
    were raised. Interview took twenty-five minutes including the consent reading, which was \
    done in the local language by the enumerator and confirmed by the household head.";

/// Warms up (one request, so Basic's PBKDF2 and first-connection costs are not measured),
/// then sends the run's submissions from `concurrency` tasks and stops the server.
async fn one_run(
    client: &reqwest::Client,
    mut srv: Running,
    scenario: &Scenario,
    concurrency: usize,
    opts: &Options,
    backend: &str,
    label: &str,
) -> anyhow::Result<IntakeRun> {
    let attachment: Arc<[u8]> = random_bytes(scenario.attachment_bytes, scenario.nonce).into();
    // Encrypted envelopes are made before the clock starts: the client's RSA and AES work is
    // the phone's, not the server's, and must not take CPU from the server during the run.
    let bodies: Option<Arc<Vec<Vec<u8>>>> = match &scenario.encrypted {
        None => None,
        Some(public) => Some(Arc::new(
            (0..opts.count as u64)
                .map(|i| scenario.encrypted_body(public, i))
                .collect::<anyhow::Result<_>>()?,
        )),
    };
    let warm_body = match &scenario.encrypted {
        Some(public) => scenario.encrypted_body(public, 0xffff_0000_0000)?,
        None => scenario.body(0xffff_0000_0000, &attachment),
    };
    let warm = scenario
        .request(client, warm_body)
        .send()
        .await
        .with_context(|| format!("{label}: warm-up submission failed"))?;
    let status = warm.status();
    let text = warm.text().await.unwrap_or_default();
    if status != reqwest::StatusCode::CREATED {
        bail!(
            "{label}: warm-up submission returned {status}: {text}\n{}",
            srv.stderr_text()
        );
    }

    let pid = srv.pid();
    let server_cpu0 = cpu_seconds(&format!("/proc/{pid}/stat"))?;
    let client_cpu0 = cpu_seconds("/proc/self/stat")?;
    let busy0 = system_busy_seconds()?;
    let next = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let cap = Duration::from_secs_f64(opts.max_secs.max(0.1));
    let shared = Arc::new(Worker {
        client: client.clone(),
        url: scenario.url.clone(),
        auth: scenario.auth,
        attachment_bytes: scenario.attachment_bytes,
        nonce: scenario.nonce,
        attachment,
        bodies,
        count: opts.count,
        started,
        cap,
    });
    let mut handles = Vec::with_capacity(concurrency);
    for _ in 0..concurrency {
        let w = shared.clone();
        let next = next.clone();
        handles.push(tokio::spawn(async move { w.work(&next).await }));
    }
    let mut latencies = Vec::with_capacity(opts.count);
    let (mut created, mut errors, mut first_error) = (0, 0, None);
    for h in handles {
        let t = h.await.context("a client task panicked")?;
        latencies.extend(t.latencies);
        created += t.created;
        errors += t.errors;
        first_error = first_error.or(t.first_error);
    }
    let elapsed = started.elapsed().as_secs_f64();
    let server_cpu_s = cpu_seconds(&format!("/proc/{pid}/stat"))? - server_cpu0;
    let client_cpu_s = cpu_seconds("/proc/self/stat")? - client_cpu0;
    let other_cpu_s = (system_busy_seconds()? - busy0 - server_cpu_s - client_cpu_s).max(0.0);
    let peak_rss_mib = server::peak_rss_mib(pid)?;
    let (_, clean) = srv.stop(label).await?;
    if !clean {
        bail!(
            "{label}: fieldvault exited unsuccessfully:\n{}",
            srv.stderr_text()
        );
    }
    latencies.sort_unstable();
    let ms = |q| server::percentile_us(&latencies, q) / 1e3;
    let per_sec = created as f64 / elapsed;
    Ok(IntakeRun {
        backend: backend.to_owned(),
        auth: scenario.auth,
        attachment_bytes: scenario.attachment_bytes,
        encrypted: scenario.encrypted.is_some(),
        concurrency,
        requested: opts.count,
        sent: latencies.len(),
        created,
        errors,
        errors_all_repeats: errors,
        first_error,
        repeats: 1,
        per_sec_min: per_sec,
        per_sec_max: per_sec,
        elapsed_s: elapsed,
        per_sec,
        attachment_mb_per_sec: per_sec * scenario.attachment_bytes as f64 / 1e6,
        p50_ms: ms(0.50),
        p99_ms: ms(0.99),
        p999_ms: ms(0.999),
        peak_rss_mib,
        server_cpu_s,
        client_cpu_s,
        other_cpu_s,
    })
}

/// What every client task shares.
struct Worker {
    client: reqwest::Client,
    url: String,
    auth: Auth,
    attachment_bytes: usize,
    nonce: u64,
    attachment: Arc<[u8]>,
    /// Pre-made bodies (encrypted envelopes), indexed by submission number.
    bodies: Option<Arc<Vec<Vec<u8>>>>,
    count: usize,
    started: Instant,
    cap: Duration,
}

/// One task's tally.
struct Tally {
    latencies: Vec<Duration>,
    created: usize,
    errors: usize,
    first_error: Option<String>,
}

impl Worker {
    /// Takes submission numbers from `next` until the count or the time cap is reached.
    async fn work(&self, next: &AtomicUsize) -> Tally {
        let scenario = Scenario {
            url: self.url.clone(),
            auth: self.auth,
            attachment_bytes: self.attachment_bytes,
            nonce: self.nonce,
            encrypted: None,
        };
        let mut t = Tally {
            latencies: Vec::new(),
            created: 0,
            errors: 0,
            first_error: None,
        };
        loop {
            let i = next.fetch_add(1, Ordering::Relaxed);
            if i >= self.count || self.started.elapsed() > self.cap {
                return t;
            }
            let body = match self.bodies.as_deref().and_then(|b| b.get(i)) {
                Some(b) => b.clone(),
                None => scenario.body(i as u64, &self.attachment),
            };
            let sent = Instant::now();
            let outcome = match scenario.request(&self.client, body).send().await {
                Ok(resp) => {
                    let status = resp.status();
                    let text = resp.text().await.unwrap_or_default();
                    if status == reqwest::StatusCode::CREATED {
                        Ok(())
                    } else {
                        Err(format!(
                            "{status}: {}",
                            text.chars().take(300).collect::<String>()
                        ))
                    }
                }
                Err(e) => Err(format!("transport: {e}")),
            };
            t.latencies.push(sent.elapsed());
            match outcome {
                Ok(()) => t.created += 1,
                Err(e) => {
                    t.errors += 1;
                    t.first_error.get_or_insert(e);
                }
            }
        }
    }
}

/// User + system CPU seconds of a process, from a `/proc/<pid>/stat` file (all threads).
pub(crate) fn cpu_seconds(path: &str) -> anyhow::Result<f64> {
    let stat = std::fs::read_to_string(path).with_context(|| format!("cannot read {path}"))?;
    parse_cpu_seconds(&stat).with_context(|| format!("cannot parse {path}"))
}

/// utime and stime are fields 14 and 15; the command name (field 2) may contain spaces and
/// parentheses, so count from the last `)`.
fn parse_cpu_seconds(stat: &str) -> Option<f64> {
    let rest = &stat[stat.rfind(')')? + 1..];
    let mut fields = rest.split_whitespace().skip(11);
    let utime: u64 = fields.next()?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some((utime + stime) as f64 / TICKS_PER_SEC)
}

/// Busy CPU seconds of the whole machine, summed over CPUs, from the first line of
/// `/proc/stat` (everything but idle and iowait).
pub(crate) fn system_busy_seconds() -> anyhow::Result<f64> {
    let stat = std::fs::read_to_string("/proc/stat").context("cannot read /proc/stat")?;
    parse_busy_seconds(&stat).context("cannot parse /proc/stat")
}

/// `cpu  user nice system idle iowait irq softirq steal ...`, in ticks.
fn parse_busy_seconds(stat: &str) -> Option<f64> {
    let line = stat.lines().find(|l| l.starts_with("cpu "))?;
    let ticks: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .take(8)
        .map(|v| v.parse().ok())
        .collect::<Option<_>>()?;
    let total: u64 = ticks.iter().sum();
    let idle = ticks.get(3)? + ticks.get(4)?;
    Some(total.saturating_sub(idle) as f64 / TICKS_PER_SEC)
}

/// A throwaway PostgreSQL database, created and dropped with `psql` (so this crate needs no
/// database driver).
pub(crate) struct PgDb {
    admin_url: String,
    name: String,
    /// Connection URL of the new database, for `FIELDVAULT_DATABASE_URL`.
    pub(crate) url: String,
}

impl PgDb {
    pub(crate) fn create(server_url: &str) -> anyhow::Result<PgDb> {
        let server_url = server_url.trim_end_matches('/');
        let admin_url = format!("{server_url}/postgres");
        // Hex digits only, so the name is safe to put into SQL.
        let name = format!("fv_bench_{:016x}", splitmix64(seed()));
        psql(&admin_url, &format!("CREATE DATABASE {name}"))?;
        Ok(PgDb {
            url: format!("{server_url}/{name}"),
            admin_url,
            name,
        })
    }
}

impl Drop for PgDb {
    fn drop(&mut self) {
        let sql = format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name);
        if let Err(e) = psql(&self.admin_url, &sql) {
            eprintln!("warning: could not drop {}: {e:#}", self.name);
        }
    }
}

/// Runs one SQL statement with `psql`, failing with its stderr.
fn psql(url: &str, sql: &str) -> anyhow::Result<()> {
    let out = std::process::Command::new("psql")
        .arg(url)
        .args(["-v", "ON_ERROR_STOP=1", "-qAt", "-c", sql])
        .env("PGCONNECT_TIMEOUT", "5")
        .stdin(Stdio::null())
        .output()
        .context("cannot run psql (is the PostgreSQL client installed?)")?;
    if !out.status.success() {
        bail!(
            "psql `{sql}` failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

/// A seed that differs between runs (time and pid), so repeated benchmarks against the same
/// PostgreSQL server never collide on names or instance IDs.
pub(crate) fn seed() -> u64 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    splitmix64(nanos ^ (u64::from(std::process::id()) << 32))
}

/// SplitMix64: a tiny, good-enough mixer for names and filler bytes (not for secrets).
pub(crate) fn splitmix64(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// `len` incompressible bytes, so neither compression nor deduplication can flatter the rate.
pub(crate) fn random_bytes(len: usize, seed: u64) -> Vec<u8> {
    let mut out = Vec::with_capacity(len + 8);
    let mut s = seed;
    while out.len() < len {
        s = splitmix64(s);
        out.extend_from_slice(&s.to_le_bytes());
    }
    out.truncate(len);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_seconds_counts_from_the_last_parenthesis() {
        let stat = "42 (a) b) S 1 2 3 4 5 6 7 8 9 10 250 50 0 0 20 0";
        assert_eq!(parse_cpu_seconds(stat), Some(3.0));
    }

    #[test]
    fn busy_seconds_leave_out_idle_and_iowait() {
        let stat = "cpu  100 0 50 1000 30 5 5 0 0 0\ncpu0 1 2 3 4 5 6 7 8\n";
        assert_eq!(parse_busy_seconds(stat), Some(1.6));
    }

    #[test]
    fn bodies_are_multipart_with_unique_instance_ids() {
        let s = Scenario {
            url: String::new(),
            auth: Auth::Token,
            attachment_bytes: 16,
            nonce: 7,
            encrypted: None,
        };
        let a = random_bytes(16, 1);
        let one = String::from_utf8_lossy(&s.body(1, &a)).into_owned();
        let two = String::from_utf8_lossy(&s.body(2, &a)).into_owned();
        assert!(one.starts_with(&format!("--{BOUNDARY}\r\n")));
        assert!(one.ends_with(&format!("--{BOUNDARY}--\r\n")));
        assert!(one.contains("name=\"p.jpg\"; filename=\"p.jpg\""));
        assert_ne!(one, two);
        let xml_len = s.body(1, &[]).len();
        assert!((1000..1600).contains(&xml_len), "{xml_len}");
    }
}
