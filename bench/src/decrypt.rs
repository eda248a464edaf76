//! `fieldvault decrypt` throughput: the owner's side of an end-to-end encrypted project.
//!
//! Encrypted submissions are made exactly as ODK Collect makes them (`fieldvault_crypto::odk`),
//! each with one attachment, then the real `fieldvault decrypt` binary is timed over the whole
//! directory. The figure is compared with the machine's AES speed per core times the cores, the
//! bound for a job that is symmetric decryption plus one RSA-OAEP unwrap per submission.

use std::path::Path;
use std::process::Command;
use std::time::Instant;

use anyhow::{Context as _, bail};
use fieldvault_crypto::odk::{OdkPublicKey, encrypt_submission};
use serde::Serialize;

/// One decrypt measurement.
#[derive(Debug, Serialize)]
pub struct DecryptRun {
    /// Submissions decrypted.
    pub submissions: usize,
    /// Attachment size per submission, bytes.
    pub attachment_bytes: usize,
    /// Ciphertext read, MB (10^6 bytes).
    pub ciphertext_mb: f64,
    /// Wall time of the `fieldvault decrypt` process.
    pub secs: f64,
    /// Ciphertext MB/s.
    pub mb_per_sec: f64,
}

/// Generates `count` encrypted submissions with an `attachment_bytes` attachment and times
/// `fieldvault decrypt` over them.
pub fn measure(
    bin: &Path,
    dir: &Path,
    count: usize,
    attachment_bytes: usize,
) -> anyhow::Result<DecryptRun> {
    let scratch = tempfile::Builder::new()
        .prefix(".fieldvault-bench-decrypt-")
        .tempdir_in(dir)
        .context("cannot create a scratch directory")?;
    let key = scratch.path().join("key.pem");
    let out = Command::new(bin)
        .args(["keygen", "--bits", "3072", "--no-passphrase", "--out"])
        .arg(&key)
        .output()
        .context("cannot run fieldvault keygen")?;
    if !out.status.success() {
        bail!(
            "fieldvault keygen failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let public = OdkPublicKey::from_base64_spki(String::from_utf8_lossy(&out.stdout).trim())
        .map_err(|e| anyhow::anyhow!("keygen printed no usable public key: {e}"))?;
    let input = scratch.path().join("in").join("bench");
    let payload: Vec<u8> = (0..attachment_bytes).map(|i| (i * 7 % 251) as u8).collect();
    let mut bytes = 0u64;
    for i in 0..count {
        let id = format!("uuid:00000000-0000-4000-8000-{i:012}");
        let xml = format!(
            "<data id=\"bench\" version=\"1\"><name>n{i}</name><photo>p.jpg</photo><meta><instanceID>{id}</instanceID></meta></data>"
        );
        let enc = encrypt_submission(
            &public,
            "bench",
            Some("1"),
            &id,
            xml.as_bytes(),
            &[("p.jpg", &payload)],
        )
        .map_err(|e| anyhow::anyhow!("encrypting: {e}"))?;
        let d = input.join(format!("s{i}"));
        std::fs::create_dir_all(&d)?;
        std::fs::write(d.join("submission.xml"), &enc.manifest_xml)?;
        for (name, data) in &enc.files {
            bytes += data.len() as u64;
            std::fs::write(d.join(name), data)?;
        }
    }
    let start = Instant::now();
    let run = Command::new(bin)
        .args(["decrypt", "--key"])
        .arg(&key)
        .arg("--in")
        .arg(scratch.path().join("in"))
        .arg("--out")
        .arg(scratch.path().join("out"))
        .output()
        .context("cannot run fieldvault decrypt")?;
    let secs = start.elapsed().as_secs_f64();
    if !run.status.success() {
        bail!(
            "fieldvault decrypt failed: {}",
            String::from_utf8_lossy(&run.stderr)
        );
    }
    let mb = bytes as f64 / 1e6;
    Ok(DecryptRun {
        submissions: count,
        attachment_bytes,
        ciphertext_mb: mb,
        secs,
        mb_per_sec: mb / secs,
    })
}
