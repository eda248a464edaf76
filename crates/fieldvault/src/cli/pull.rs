//! `fieldvault pull`: downloads submissions (for encrypted projects: the envelopes and `.enc`
//! files, which the server cannot read) into a directory, incrementally and resumably, checking
//! every file against the SHA-256 the server recorded at intake.
//!
//! Layout: `OUT/<xmlFormId>/form.xml` (the current form definition, for column names), then
//! `OUT/<xmlFormId>/<instanceId, ':' as '_'>/submission.xml` plus the attachments, and a
//! `.complete` marker once everything of that submission is on disk. A submission with a marker
//! is skipped on the next run; an interrupted one is fetched again (files go to `*.part` first and
//! are renamed only after their hash matches).

use std::path::{Path, PathBuf};

use anyhow::{Context as _, bail};
use serde_json::Value;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Server base URL, e.g. https://data.example.org
    #[arg(long)]
    server: String,
    /// Project id.
    #[arg(long)]
    project: i64,
    /// Only this form (xmlFormId); default: every form of the project.
    #[arg(long)]
    form: Option<String>,
    /// An API token (`fvt_…`, scope data:read) or a session token. Or set FIELDVAULT_PULL_TOKEN.
    #[arg(long, env = "FIELDVAULT_PULL_TOKEN", hide_env_values = true)]
    token: String,
    /// Output directory.
    #[arg(long)]
    out: PathBuf,
}

/// Submissions listed per request.
const PAGE: usize = 500;

fn segment(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~:".contains(&b) {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// A directory name for an instanceID that is safe on every filesystem.
fn dir_name(instance_id: &str) -> String {
    instance_id
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '.' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// A file name from the server, refused if it could escape the submission's directory.
fn safe_file(name: &str) -> anyhow::Result<&str> {
    if name.is_empty() || name == "." || name == ".." || name.contains(['/', '\\', '\0']) {
        bail!("the server sent an unsafe file name {name:?}");
    }
    Ok(name)
}

struct Client {
    http: reqwest::Client,
    base: String,
    token: String,
}

impl Client {
    async fn get(&self, path: &str) -> anyhow::Result<reqwest::Response> {
        let url = format!("{}{path}", self.base);
        let r = self
            .http
            .get(&url)
            .bearer_auth(&self.token)
            .send()
            .await
            .with_context(|| format!("cannot reach {url}"))?;
        if !r.status().is_success() {
            let status = r.status();
            let body = r.text().await.unwrap_or_default();
            let msg = serde_json::from_str::<Value>(&body)
                .ok()
                .and_then(|v| v["message"].as_str().map(str::to_owned))
                .unwrap_or(body);
            bail!("{url}: {status}: {msg}");
        }
        Ok(r)
    }

    async fn json(&self, path: &str) -> anyhow::Result<Value> {
        Ok(self.get(path).await?.json().await?)
    }
}

pub async fn run(args: &Args) -> anyhow::Result<()> {
    let client = Client {
        http: reqwest::Client::builder()
            .timeout(std::time::Duration::from_secs(300))
            .build()?,
        base: args.server.trim_end_matches('/').to_owned(),
        token: args.token.clone(),
    };
    let project = format!("/v1/projects/{}", args.project);
    let forms: Vec<String> = match &args.form {
        Some(f) => vec![f.clone()],
        None => client
            .json(&format!("{project}/forms"))
            .await?
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|f| f["xmlFormId"].as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default(),
    };
    let (mut fetched, mut skipped, mut bytes) = (0u64, 0u64, 0u64);
    for form in &forms {
        let form_dir = args.out.join(dir_name(form));
        std::fs::create_dir_all(&form_dir)
            .with_context(|| format!("cannot create {}", form_dir.display()))?;
        // The form definition, so `fieldvault decrypt` can name and order the CSV columns.
        let def = client
            .get(&format!("{project}/forms/{}.xml", segment(form)))
            .await?
            .bytes()
            .await?;
        write_atomic(&form_dir.join("form.xml"), &def)?;
        let base = format!("{project}/forms/{}/submissions", segment(form));
        // List first, so the progress bar knows how much is left.
        let mut pending = Vec::new();
        let mut offset = 0usize;
        loop {
            let page = client
                .json(&format!("{base}?limit={PAGE}&offset={offset}"))
                .await?;
            let rows = page.as_array().cloned().unwrap_or_default();
            for row in &rows {
                let Some(id) = row["instanceId"].as_str() else {
                    continue;
                };
                if form_dir.join(dir_name(id)).join(".complete").exists() {
                    skipped += 1;
                } else {
                    pending.push((id.to_owned(), row_meta(row)));
                }
            }
            if rows.len() < PAGE {
                break;
            }
            offset += PAGE;
        }
        let progress = super::progress::bar(pending.len() as u64, "submissions");
        progress.set_message(form.clone());
        for (id, meta) in &pending {
            let dir = form_dir.join(dir_name(id));
            std::fs::create_dir_all(&dir)
                .with_context(|| format!("cannot create {}", dir.display()))?;
            write_atomic(&dir.join("meta.json"), meta.to_string().as_bytes())?;
            bytes +=
                fetch_one(&client, &format!("{base}/{}", segment(id)), &dir, &progress).await?;
            fetched += 1;
            progress.inc(1);
        }
        progress.finish_and_clear();
    }
    eprintln!(
        "Downloaded {fetched} submission(s) ({bytes} bytes), {skipped} already present, from {} form(s) into {}.",
        forms.len(),
        args.out.display()
    );
    Ok(())
}

/// What `fieldvault decrypt` puts in the system columns of its tables (`meta.json`).
fn row_meta(row: &Value) -> Value {
    serde_json::json!({
        "instanceId": row["instanceId"],
        "createdAt": row["createdAt"],
        "submitterId": row["submitterId"],
        "deviceId": row["deviceId"],
        "reviewState": row["reviewState"],
        "formVersion": row["currentVersion"]["formVersion"],
    })
}

/// Downloads one submission's XML and attachments; returns the bytes written.
async fn fetch_one(
    client: &Client,
    sub: &str,
    dir: &Path,
    progress: &indicatif::ProgressBar,
) -> anyhow::Result<u64> {
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let xml = client.get(&format!("{sub}.xml")).await?.bytes().await?;
    write_atomic(&dir.join("submission.xml"), &xml)?;
    let mut total = xml.len() as u64;
    let atts = client.json(&format!("{sub}/attachments")).await?;
    for a in atts.as_array().cloned().unwrap_or_default() {
        if a["exists"] != Value::Bool(true) {
            progress.suspend(|| {
                eprintln!(
                    "warning: {} has no {} on the server yet",
                    dir.display(),
                    a["name"]
                )
            });
            continue;
        }
        let name = safe_file(a["name"].as_str().unwrap_or_default())?.to_owned();
        let body = client
            .get(&format!("{sub}/attachments/{}", segment(&name)))
            .await?
            .bytes()
            .await?;
        if let Some(want) = a["sha256"].as_str() {
            let got = fieldvault_crypto::random::to_hex(&fieldvault_crypto::mac::sha256(&body));
            if got != want {
                bail!(
                    "{}: {name} does not match the hash recorded at intake",
                    dir.display()
                );
            }
        }
        write_atomic(&dir.join(&name), &body)?;
        total += body.len() as u64;
    }
    std::fs::write(dir.join(".complete"), b"")?;
    Ok(total)
}

fn write_atomic(path: &Path, data: &[u8]) -> anyhow::Result<()> {
    let part = path.with_extension("part");
    std::fs::write(&part, data).with_context(|| format!("cannot write {}", part.display()))?;
    std::fs::rename(&part, path).with_context(|| format!("cannot write {}", path.display()))?;
    Ok(())
}
