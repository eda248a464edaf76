//! `fieldvault keygen`, `fieldvault encrypt-submission` and `fieldvault decrypt`: offline tools
//! for ODK encrypted forms (the format of ODK Collect, KoboCollect and Enketo).

use std::fs::{self, File, OpenOptions};
use std::io::{BufRead as _, IsTerminal as _, Write as _};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

use anyhow::{Context as _, anyhow, bail};
use clap::Args;
use fieldvault_crypto::odk::{self, Manifest, OdkPrivateKey, OdkPublicKey, SignatureDigests};
use md5::Digest as _;

use super::decrypt_tables::{Decrypted, find_schemas, write_tables};
use fieldvault_crypto::{CryptoError, SecretString};

/// Name of the envelope (manifest) in a submission directory.
const ENVELOPE: &str = "submission.xml";
/// Marker written into an output directory once its submission is completely decrypted.
const DONE: &str = ".done";
/// The output summary file.
const INDEX: &str = "submissions.jsonl";

/// Arguments of `fieldvault keygen`.
#[derive(Args, Debug)]
pub struct KeygenArgs {
    /// Where to write the private key (PKCS#8 PEM, mode 0600; must not exist).
    #[arg(long)]
    out: PathBuf,
    /// RSA key size: 2048, 3072 or 4096.
    #[arg(long, default_value_t = 3072, value_parser = parse_bits)]
    bits: usize,
    /// Read the passphrase protecting the private key from standard input (one line).
    #[arg(long, conflicts_with = "no_passphrase")]
    passphrase_stdin: bool,
    /// Write the private key unencrypted (anyone who can read the file can decrypt the data).
    #[arg(long)]
    no_passphrase: bool,
}

/// Arguments of `fieldvault encrypt-submission`.
#[derive(Args, Debug)]
pub struct EncryptArgs {
    /// The form's public key: base64 DER SubjectPublicKeyInfo (the form's
    /// `base64RsaPublicKey`), or the path of a file holding that or a PEM public key.
    #[arg(long)]
    public_key: String,
    /// The form id (`id` of the form's primary instance).
    #[arg(long)]
    form_id: String,
    /// The form version.
    #[arg(long)]
    version: Option<String>,
    /// The submission's `meta/instanceID` (e.g. `uuid:…`).
    #[arg(long)]
    instance_id: String,
    /// The plaintext submission XML.
    #[arg(long)]
    xml: PathBuf,
    /// A media file to attach (repeatable; the order is kept).
    #[arg(long = "attachment")]
    attachments: Vec<PathBuf>,
    /// Directory to write `submission.xml` (the envelope), `submission.xml.enc` and one
    /// `<name>.enc` per attachment into (created if needed; existing files are not overwritten).
    #[arg(long)]
    out: PathBuf,
}

/// Arguments of `fieldvault decrypt`.
#[derive(Args, Debug)]
pub struct DecryptArgs {
    /// The form's private key (PEM: PKCS#8, encrypted PKCS#8 or PKCS#1).
    #[arg(long)]
    key: PathBuf,
    /// Read the private key's passphrase from standard input (one line).
    #[arg(long)]
    passphrase_stdin: bool,
    /// Directory of encrypted submissions: every directory below it (at any depth) holding a
    /// `submission.xml` with `encrypted="yes"` is one submission.
    #[arg(long = "in")]
    input: PathBuf,
    /// Output directory: plaintext submissions under the same relative paths, plus
    /// `submissions.jsonl` (one line per decrypted submission: id, signature, files), and per form
    /// `<formId>.csv`, `<formId>-<repeat>.csv` (the server export's columns; from the `form.xml`
    /// that `pull` saves, else inferred) and `<formId>.jsonl`. Submissions whose output
    /// directory holds a `.done` marker are skipped, so an interrupted run can be resumed.
    #[arg(long)]
    out: PathBuf,
}

fn parse_bits(s: &str) -> Result<usize, String> {
    match s.parse::<usize>() {
        Ok(b @ (2048 | 3072 | 4096)) => Ok(b),
        _ => Err("must be 2048, 3072 or 4096".to_owned()),
    }
}

// ---------------------------------------------------------------------------------------------
// keygen
// ---------------------------------------------------------------------------------------------

pub fn run_keygen(args: &KeygenArgs) -> anyhow::Result<()> {
    if args.out.exists() {
        bail!(
            "{} already exists; refusing to overwrite it",
            args.out.display()
        );
    }
    let passphrase = if args.no_passphrase {
        None
    } else if args.passphrase_stdin {
        Some(read_line_stdin()?)
    } else if std::io::stdin().is_terminal() {
        eprint!("Passphrase for the new private key: ");
        let first = read_line_stdin()?;
        eprint!("Repeat the passphrase: ");
        let second = read_line_stdin()?;
        if first.expose() != second.expose() {
            bail!("the passphrases do not match");
        }
        Some(first)
    } else {
        bail!(
            "pass --passphrase-stdin (and pipe the passphrase in) or --no-passphrase \
             to write an unprotected key"
        );
    };
    if passphrase.as_ref().is_some_and(|p| p.expose().is_empty()) {
        bail!("the passphrase is empty; use --no-passphrase for an unprotected key");
    }
    let (pem, public) = OdkPrivateKey::generate_pem(args.bits, passphrase.as_ref())
        .map_err(|e| anyhow!("cannot generate the key: {e}"))?;
    let mut file = create_new_private(&args.out)?;
    file.write_all(pem.as_bytes())
        .and_then(|()| file.sync_all())
        .with_context(|| format!("cannot write {}", args.out.display()))?;
    println!("{}", public.to_base64_spki());
    eprintln!(
        "Wrote the RSA-{} private key to {} ({}). Keep it (and a backup) offline: without it \
         the submissions cannot be decrypted.\nThe line above is the public key: put it in the \
         form as <submission base64RsaPublicKey=\"…\"/>.",
        args.bits,
        args.out.display(),
        if passphrase.is_some() {
            "passphrase-protected PKCS#8"
        } else {
            "NOT passphrase-protected"
        }
    );
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// encrypt-submission
// ---------------------------------------------------------------------------------------------

pub fn run_encrypt(args: &EncryptArgs) -> anyhow::Result<()> {
    let public = load_public_key(&args.public_key)?;
    let xml = fs::read(&args.xml).with_context(|| format!("cannot read {}", args.xml.display()))?;
    let mut attachments = Vec::with_capacity(args.attachments.len());
    for path in &args.attachments {
        let name = path
            .file_name()
            .and_then(|n| n.to_str())
            .ok_or_else(|| anyhow!("{}: not a usable file name", path.display()))?
            .to_owned();
        let bytes = fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
        attachments.push((name, bytes));
    }
    let refs: Vec<(&str, &[u8])> = attachments
        .iter()
        .map(|(n, b)| (n.as_str(), b.as_slice()))
        .collect();
    let enc = odk::encrypt_submission(
        &public,
        &args.form_id,
        args.version.as_deref(),
        &args.instance_id,
        &xml,
        &refs,
    )
    .map_err(|e| anyhow!("cannot encrypt the submission: {e}"))?;
    fs::create_dir_all(&args.out)
        .with_context(|| format!("cannot create {}", args.out.display()))?;
    let mut outputs = vec![(ENVELOPE.to_owned(), enc.manifest_xml.into_bytes())];
    outputs.extend(enc.files);
    for (name, _) in &outputs {
        let p = args.out.join(name);
        if p.exists() {
            bail!("{} already exists; refusing to overwrite it", p.display());
        }
    }
    for (name, bytes) in &outputs {
        let p = args.out.join(name);
        let mut f = OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&p)
            .with_context(|| format!("cannot create {}", p.display()))?;
        f.write_all(bytes)
            .with_context(|| format!("cannot write {}", p.display()))?;
    }
    eprintln!("Wrote {} file(s) to {}.", outputs.len(), args.out.display());
    Ok(())
}

/// A public key given as base64 SPKI, or as a file holding base64 SPKI or a PEM public key.
fn load_public_key(arg: &str) -> anyhow::Result<OdkPublicKey> {
    let path = Path::new(arg);
    if path.is_file() {
        let text =
            fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
        let key = if text.contains("-----BEGIN") {
            OdkPublicKey::from_pem(&text)
        } else {
            OdkPublicKey::from_base64_spki(text.trim())
        };
        return key.map_err(|e| anyhow!("{}: {e}", path.display()));
    }
    OdkPublicKey::from_base64_spki(arg.trim()).map_err(|e| {
        anyhow!("--public-key is neither an existing file nor a base64 RSA public key ({e})")
    })
}

// ---------------------------------------------------------------------------------------------
// decrypt
// ---------------------------------------------------------------------------------------------

/// The outcome of one submission.
enum Outcome {
    Decrypted { signature_invalid: bool },
    Skipped,
    Failed,
}

pub fn run_decrypt(args: &DecryptArgs) -> anyhow::Result<()> {
    let pem = fs::read_to_string(&args.key)
        .with_context(|| format!("cannot read {}", args.key.display()))?;
    let key = if pem.contains("-----BEGIN ENCRYPTED PRIVATE KEY-----") {
        let passphrase = if args.passphrase_stdin {
            read_line_stdin()?
        } else if std::io::stdin().is_terminal() {
            eprint!("Passphrase for {}: ", args.key.display());
            read_line_stdin()?
        } else {
            bail!(
                "{} is passphrase-protected: pass --passphrase-stdin and pipe the passphrase in",
                args.key.display()
            );
        };
        OdkPrivateKey::from_pem_with_passphrase(&pem, &passphrase).map_err(|e| match e {
            CryptoError::Decrypt => anyhow!(
                "cannot open {}: wrong passphrase (or the key file is damaged)",
                args.key.display()
            ),
            e => anyhow!("cannot open {}: {e}", args.key.display()),
        })?
    } else {
        OdkPrivateKey::from_pem(&pem)
            .map_err(|e| anyhow!("cannot open {}: {e}", args.key.display()))?
    };

    if !args.input.is_dir() {
        bail!("{} is not a directory", args.input.display());
    }
    fs::create_dir_all(&args.out)
        .with_context(|| format!("cannot create {}", args.out.display()))?;
    let skip = fs::canonicalize(&args.out).ok();
    let mut dirs = Vec::new();
    find_submissions(&args.input, skip.as_deref(), &mut dirs)?;
    dirs.sort();

    let index_path = args.out.join(INDEX);
    let index = Mutex::new(
        OpenOptions::new()
            .create(true)
            .append(true)
            .open(&index_path)
            .with_context(|| format!("cannot open {}", index_path.display()))?,
    );
    let next = AtomicUsize::new(0);
    let progress = crate::cli::progress::bar(dirs.len() as u64, "submissions");
    let threads = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
        .clamp(1, 16)
        .min(dirs.len().max(1));
    let outcomes: Vec<Outcome> = std::thread::scope(|s| {
        let workers: Vec<_> = (0..threads)
            .map(|_| {
                s.spawn(|| {
                    let mut done = Vec::new();
                    loop {
                        let i = next.fetch_add(1, Ordering::Relaxed);
                        let Some(dir) = dirs.get(i) else { break };
                        done.push(decrypt_one(
                            &key,
                            &args.input,
                            dir,
                            &args.out,
                            &index,
                            &progress,
                        ));
                        progress.inc(1);
                    }
                    done
                })
            })
            .collect();
        workers
            .into_iter()
            .flat_map(|w| w.join().unwrap_or_default())
            .collect()
    });
    progress.finish_and_clear();
    if outcomes.len() != dirs.len() {
        bail!("a decryption worker stopped unexpectedly");
    }

    // The tables cover every decrypted submission, from this run and earlier ones.
    let mut done = Vec::new();
    for dir in &dirs {
        let rel = dir.strip_prefix(&args.input).unwrap_or(dir);
        let out_dir = args.out.join(rel);
        if !out_dir.join(ENVELOPE).is_file() {
            continue;
        }
        let Ok(manifest) = fs::read_to_string(dir.join(ENVELOPE))
            .map_err(|e| e.to_string())
            .and_then(|t| Manifest::parse(&t).map_err(|e| e.to_string()))
        else {
            continue;
        };
        let media: Vec<String> = manifest
            .media
            .iter()
            .map(|m| m.strip_suffix(".enc").unwrap_or(m).to_owned())
            .filter(|m| out_dir.join(m).is_file())
            .collect();
        done.push(Decrypted {
            form_id: manifest.form_id.clone(),
            out_dir,
            in_dir: dir.clone(),
            media,
            media_expected: manifest.media.len(),
        });
    }
    let schemas = find_schemas(&args.input);
    let tables = write_tables(&args.out, &done, &schemas)?;

    let mut decrypted = 0;
    let mut failed = 0;
    let mut skipped = 0;
    let mut invalid = 0;
    for o in &outcomes {
        match o {
            Outcome::Decrypted { signature_invalid } => {
                decrypted += 1;
                invalid += usize::from(*signature_invalid);
            }
            Outcome::Skipped => skipped += 1,
            Outcome::Failed => failed += 1,
        }
    }
    eprintln!(
        "decrypted {decrypted}, failed {failed} (skipped {skipped} already done, \
         {invalid} with an invalid signature); tables: {}",
        if tables.files.is_empty() {
            "none".to_owned()
        } else {
            tables.files.join(", ")
        }
    );
    if failed > 0 || invalid > 0 || tables.unreadable > 0 {
        bail!(
            "{} submission(s) need attention (see the messages above)",
            failed + invalid + tables.unreadable
        );
    }
    Ok(())
}

/// Collects every directory below `dir` holding an encrypted envelope (symbolic links are not
/// followed; `skip`, the output directory, is not searched).
fn find_submissions(dir: &Path, skip: Option<&Path>, out: &mut Vec<PathBuf>) -> anyhow::Result<()> {
    if skip.is_some() && fs::canonicalize(dir).ok().as_deref() == skip {
        return Ok(());
    }
    let envelope = dir.join(ENVELOPE);
    if envelope.is_file() {
        let head =
            fs::read(&envelope).with_context(|| format!("cannot read {}", envelope.display()))?;
        let text = String::from_utf8_lossy(&head);
        if text.contains("encrypted=\"yes\"") || text.contains("encrypted='yes'") {
            out.push(dir.to_path_buf());
        }
    }
    let entries = fs::read_dir(dir).with_context(|| format!("cannot read {}", dir.display()))?;
    for entry in entries {
        let entry = entry.with_context(|| format!("cannot read {}", dir.display()))?;
        if entry.file_type().is_ok_and(|t| t.is_dir()) {
            find_submissions(&entry.path(), skip, out)?;
        }
    }
    Ok(())
}

/// Decrypts one submission directory, reporting on standard error.
fn decrypt_one(
    key: &OdkPrivateKey,
    input: &Path,
    dir: &Path,
    out_root: &Path,
    index: &Mutex<File>,
    progress: &indicatif::ProgressBar,
) -> Outcome {
    let rel = dir.strip_prefix(input).unwrap_or(dir);
    let label = if rel.as_os_str().is_empty() {
        ".".to_owned()
    } else {
        rel.display().to_string()
    };
    let out_dir = out_root.join(rel);
    if out_dir.join(DONE).exists() {
        return Outcome::Skipped;
    }
    let say = |line: String| progress.suspend(|| eprintln!("{line}"));
    match decrypt_dir(key, dir, &out_dir, index) {
        Ok(report) => {
            for m in &report.missing {
                say(format!(
                    "{label}: media file {m} is missing (not decrypted)"
                ));
            }
            if report.signature == "invalid" {
                say(format!(
                    "{label}: SIGNATURE MISMATCH: the files do not match the envelope \
                     (damaged or altered); the data was written anyway"
                ));
            }
            Outcome::Decrypted {
                signature_invalid: report.signature == "invalid",
            }
        }
        Err(e) => {
            say(format!("{label}: failed: {e:#}"));
            Outcome::Failed
        }
    }
}

struct Report {
    signature: &'static str,
    missing: Vec<String>,
}

/// A manifest file name that is safe to use as a single path component.
fn safe_name(name: &str) -> bool {
    !name.is_empty()
        && !name.starts_with('.')
        && !name.contains(['/', '\\', '\0'])
        && name != ENVELOPE
}

fn decrypt_dir(
    key: &OdkPrivateKey,
    dir: &Path,
    out_dir: &Path,
    index: &Mutex<File>,
) -> anyhow::Result<Report> {
    let envelope = fs::read_to_string(dir.join(ENVELOPE)).context("cannot read submission.xml")?;
    let manifest = Manifest::parse(&envelope).map_err(|e| anyhow!("submission.xml: {e}"))?;
    for name in manifest.files_in_order() {
        let plain = name.strip_suffix(".enc").unwrap_or(name);
        if !safe_name(name) || (name != manifest.encrypted_xml_file && !safe_name(plain)) {
            bail!("submission.xml names an unsafe file {name:?}");
        }
    }
    let aes = odk::unwrap_key(key, &manifest.base64_encrypted_key).map_err(|e| match e {
        CryptoError::Decrypt => {
            anyhow!("cannot unwrap the submission key: this is not the form's private key")
        }
        e => anyhow!("cannot unwrap the submission key: {e}"),
    })?;

    fs::create_dir_all(out_dir).with_context(|| format!("cannot create {}", out_dir.display()))?;
    let mut ivs = odk::IvSequence::new(&manifest.instance_id, &aes);
    // (plaintext name, MD5 of the plaintext) of each media file present, streamed to disk.
    let mut media: Vec<(String, Option<[u8; 16]>)> = Vec::with_capacity(manifest.media.len());
    for name in &manifest.media {
        let iv = ivs.next_iv();
        let plain = name.strip_suffix(".enc").unwrap_or(name).to_owned();
        let path = dir.join(name);
        let md5 = if path.is_file() {
            Some(
                decrypt_stream(&aes, iv, &path, &out_dir.join(&plain)).map_err(|e| match e {
                    StreamError::Crypto(c) => damaged(name, &c),
                    StreamError::Io(e) => e,
                })?,
            )
        } else {
            None
        };
        media.push((plain, md5));
    }
    let xml_name = &manifest.encrypted_xml_file;
    let ct = fs::read(dir.join(xml_name)).with_context(|| format!("cannot read {xml_name}"))?;
    let xml = odk::decrypt_file(&aes, ivs.next_iv(), &ct).map_err(|e| damaged(xml_name, &e))?;

    let missing: Vec<String> = manifest
        .media
        .iter()
        .zip(&media)
        .filter(|(_, (_, m))| m.is_none())
        .map(|(n, _)| n.clone())
        .collect();
    let signature = match &manifest.signature {
        Some(sig) if missing.is_empty() => {
            let xml_md5: [u8; 16] = md5::Md5::digest(&xml).into();
            let files: Vec<(&str, [u8; 16])> = manifest
                .files_in_order()
                .zip(
                    media
                        .iter()
                        .filter_map(|(_, m)| *m)
                        .chain(std::iter::once(xml_md5)),
                )
                .collect();
            let fields = SignatureDigests {
                form_id: &manifest.form_id,
                version: manifest.version.as_deref(),
                base64_encrypted_key: &manifest.base64_encrypted_key,
                instance_id: &manifest.instance_id,
                files: &files,
            };
            if odk::verify_signature_digests(key, &fields, sig) {
                "valid"
            } else {
                "invalid"
            }
        }
        _ => "unknown",
    };

    let mut files = vec![ENVELOPE.to_owned()];
    write_private(&out_dir.join(ENVELOPE), &xml)?;
    files.extend(
        media
            .iter()
            .filter(|(_, m)| m.is_some())
            .map(|(n, _)| n.clone()),
    );
    let line = serde_json::json!({
        "instanceId": manifest.instance_id,
        "formId": manifest.form_id,
        "version": manifest.version,
        "signature": signature,
        "files": files,
        "missing": missing.iter().map(|n| n.strip_suffix(".enc").unwrap_or(n)).collect::<Vec<_>>(),
    });
    {
        let mut f = index
            .lock()
            .map_err(|_| anyhow!("{INDEX} is unavailable"))?;
        writeln!(f, "{line}").with_context(|| format!("cannot write {INDEX}"))?;
    }
    // Incomplete submissions (missing media) are retried on the next run.
    if missing.is_empty() {
        File::create(out_dir.join(DONE)).context("cannot write the .done marker")?;
    }
    Ok(Report { signature, missing })
}

/// Why streaming one file failed: the ciphertext (reported as damage) or the disk.
enum StreamError {
    Crypto(CryptoError),
    Io(anyhow::Error),
}

/// Chunk size for streamed media decryption.
const STREAM_CHUNK: usize = 1 << 20;

/// Decrypts one media file from `src` into `dst` in bounded memory (written to `dst.part`,
/// renamed once the padding checked out); returns the MD5 of the plaintext for the signature.
fn decrypt_stream(
    aes: &fieldvault_crypto::Key256,
    iv: [u8; 16],
    src: &Path,
    dst: &Path,
) -> Result<[u8; 16], StreamError> {
    use std::io::Read as _;
    let io = |what: &str, p: &Path, e: std::io::Error| {
        StreamError::Io(anyhow!("cannot {what} {}: {e}", p.display()))
    };
    let mut input = File::open(src).map_err(|e| io("read", src, e))?;
    let part = dst.with_file_name(format!(
        "{}.part",
        dst.file_name().and_then(|n| n.to_str()).unwrap_or("media")
    ));
    let mut out = open_private(&part).map_err(|e| io("write", &part, e))?;
    let mut dec = odk::Decryptor::new(aes, iv);
    let mut md5 = md5::Md5::new();
    let mut buf = vec![0u8; STREAM_CHUNK];
    loop {
        let n = input.read(&mut buf).map_err(|e| io("read", src, e))?;
        if n == 0 {
            break;
        }
        let plain = dec.update(&buf[..n]);
        md5.update(&plain);
        out.write_all(&plain).map_err(|e| io("write", &part, e))?;
    }
    let last = match dec.finish() {
        Ok(last) => last,
        Err(e) => {
            drop(out);
            let _ = fs::remove_file(&part);
            return Err(StreamError::Crypto(e));
        }
    };
    md5.update(&last);
    out.write_all(&last).map_err(|e| io("write", &part, e))?;
    drop(out);
    fs::rename(&part, dst).map_err(|e| io("write", dst, e))?;
    Ok(md5.finalize().into())
}

fn damaged(name: &str, e: &CryptoError) -> anyhow::Error {
    match e {
        CryptoError::Decrypt | CryptoError::Format(_) => {
            anyhow!("{name} does not decrypt: the file is damaged or truncated")
        }
        e => anyhow!("{name}: {e}"),
    }
}

// ---------------------------------------------------------------------------------------------
// helpers
// ---------------------------------------------------------------------------------------------

/// Reads one line from standard input (the line ending removed).
fn read_line_stdin() -> anyhow::Result<SecretString> {
    let mut line = String::new();
    std::io::stdin()
        .lock()
        .read_line(&mut line)
        .context("cannot read standard input")?;
    let trimmed = line.trim_end_matches(['\n', '\r']).to_owned();
    zeroize::Zeroize::zeroize(&mut line);
    Ok(SecretString::new(trimmed))
}

/// Creates a new file readable only by its owner; fails if it exists.
fn create_new_private(path: &Path) -> anyhow::Result<File> {
    let mut o = OpenOptions::new();
    o.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut o, 0o600);
    o.open(path).map_err(|e| {
        if e.kind() == std::io::ErrorKind::AlreadyExists {
            anyhow!(
                "{} already exists; refusing to overwrite it",
                path.display()
            )
        } else {
            anyhow!("cannot create {}: {e}", path.display())
        }
    })
}

/// Opens (creating or truncating) a plaintext output file readable only by its owner.
fn open_private(path: &Path) -> std::io::Result<File> {
    let mut o = OpenOptions::new();
    o.write(true).create(true).truncate(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut o, 0o600);
    o.open(path)
}

/// Writes (or replaces) a plaintext output file, readable only by its owner.
fn write_private(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    open_private(path)
        .and_then(|mut f| f.write_all(bytes))
        .with_context(|| format!("cannot write {}", path.display()))
}
