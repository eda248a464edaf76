//! `fieldvault keygen`, `encrypt-submission` and `decrypt`: offline, real binary.

use std::path::Path;

use crate::harness::{cmd, run};

const PASS: &str = "tr0ub4dor&3 plus some";
const CRYPTO_DATA: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../fieldvault-crypto/testdata/odk"
);
const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures");

fn fv(dir: &Path, args: &[&str], stdin: &str) -> (bool, String, String) {
    let mut c = cmd(dir);
    c.args(args);
    run(c, stdin)
}

/// `keygen` into `dir/name`; returns the printed public key.
fn keygen(dir: &Path, name: &str, passphrase: Option<&str>) -> String {
    let (ok, out, err) = match passphrase {
        Some(p) => fv(
            dir,
            &[
                "keygen",
                "--out",
                name,
                "--bits",
                "2048",
                "--passphrase-stdin",
            ],
            &format!("{p}\n"),
        ),
        None => fv(
            dir,
            &["keygen", "--out", name, "--bits", "2048", "--no-passphrase"],
            "",
        ),
    };
    assert!(ok, "keygen failed: {err}");
    assert!(err.contains("base64RsaPublicKey"), "{err}");
    out.trim().to_owned()
}

fn submission_xml(instance_id: &str) -> String {
    format!(
        "<?xml version='1.0' ?><data id=\"f\" version=\"1\"><name>Ada ☃</name>\
         <meta><instanceID>{instance_id}</instanceID></meta></data>"
    )
}

/// Encrypts a submission into `dir/in/f/<instance id with '_'>`; returns that directory.
fn encrypt(
    dir: &Path,
    public: &str,
    instance_id: &str,
    attachments: &[&str],
) -> std::path::PathBuf {
    let xml = dir.join(format!("{}.xml", instance_id.replace(':', "_")));
    std::fs::write(&xml, submission_xml(instance_id)).unwrap();
    let out = dir.join("in/f").join(instance_id.replace(':', "_"));
    let mut args = vec![
        "encrypt-submission".to_owned(),
        "--public-key".into(),
        public.into(),
        "--form-id".into(),
        "f".into(),
        "--version".into(),
        "1".into(),
        "--instance-id".into(),
        instance_id.into(),
        "--xml".into(),
        xml.display().to_string(),
        "--out".into(),
        out.display().to_string(),
    ];
    for a in attachments {
        args.push("--attachment".into());
        args.push(dir.join(a).display().to_string());
    }
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let (ok, _, err) = fv(dir, &args, "");
    assert!(ok, "encrypt-submission failed: {err}");
    out
}

fn index(out: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(out.join("submissions.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

fn entry<'a>(lines: &'a [serde_json::Value], instance_id: &str) -> &'a serde_json::Value {
    lines
        .iter()
        .find(|l| l["instanceId"] == instance_id)
        .unwrap_or_else(|| panic!("no line for {instance_id} in {lines:?}"))
}

fn binary() -> Vec<u8> {
    (0..100_000u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect()
}

#[test]
fn keygen_passphrase_encrypt_decrypt_round_trip() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    let public = keygen(d, "project-key.pem", Some(PASS));
    let pem = std::fs::read_to_string(d.join("project-key.pem")).unwrap();
    assert!(pem.starts_with("-----BEGIN ENCRYPTED PRIVATE KEY-----"));
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::metadata(d.join("project-key.pem"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }

    // Never overwrite; a passphrase choice is required when stdin is not a terminal.
    let (ok, _, err) = fv(
        d,
        &["keygen", "--out", "project-key.pem", "--no-passphrase"],
        "",
    );
    assert!(!ok && err.contains("already exists"), "{err}");
    assert_eq!(
        std::fs::read_to_string(d.join("project-key.pem")).unwrap(),
        pem
    );
    let (ok, _, err) = fv(d, &["keygen", "--out", "other.pem"], "");
    assert!(
        !ok && err.contains("--passphrase-stdin") && err.contains("--no-passphrase"),
        "{err}"
    );
    assert!(!d.join("other.pem").exists());
    let (ok, _, _) = fv(
        d,
        &[
            "keygen",
            "--out",
            "other.pem",
            "--bits",
            "1024",
            "--no-passphrase",
        ],
        "",
    );
    assert!(!ok);

    std::fs::write(d.join("photo.bin"), binary()).unwrap();
    std::fs::write(d.join("empty.txt"), b"").unwrap();
    let s1 = encrypt(d, &public, "uuid:aaa", &["photo.bin", "empty.txt"]);
    for f in [
        "submission.xml",
        "submission.xml.enc",
        "photo.bin.enc",
        "empty.txt.enc",
    ] {
        assert!(s1.join(f).is_file(), "{f} missing");
    }
    assert_eq!(std::fs::read_dir(&s1).unwrap().count(), 4);
    let envelope = std::fs::read_to_string(s1.join("submission.xml")).unwrap();
    assert!(
        envelope.contains("encrypted=\"yes\"")
            && envelope.contains("base64EncryptedElementSignature")
    );
    // Existing files are not overwritten.
    let (ok, _, err) = fv(
        d,
        &[
            "encrypt-submission",
            "--public-key",
            &public,
            "--form-id",
            "f",
            "--instance-id",
            "uuid:aaa",
            "--xml",
            "uuid_aaa.xml",
            "--out",
            &s1.display().to_string(),
        ],
        "",
    );
    assert!(!ok && err.contains("already exists"), "{err}");
    // The public key can also be given as a file.
    std::fs::write(d.join("public.b64"), format!("{public}\n")).unwrap();
    let s2 = encrypt(d, d.join("public.b64").to_str().unwrap(), "uuid:bbb", &[]);

    // Wrong passphrase, and no passphrase at all.
    let (ok, _, err) = fv(
        d,
        &[
            "decrypt",
            "--key",
            "project-key.pem",
            "--passphrase-stdin",
            "--in",
            "in",
            "--out",
            "out",
        ],
        "not it\n",
    );
    assert!(!ok && err.contains("wrong passphrase"), "{err}");
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    let (ok, _, err) = fv(
        d,
        &[
            "decrypt",
            "--key",
            "project-key.pem",
            "--in",
            "in",
            "--out",
            "out",
        ],
        "",
    );
    assert!(!ok && err.contains("--passphrase-stdin"), "{err}");

    let (ok, _, err) = fv(
        d,
        &[
            "decrypt",
            "--key",
            "project-key.pem",
            "--passphrase-stdin",
            "--in",
            "in",
            "--out",
            "out",
        ],
        &format!("{PASS}\n"),
    );
    assert!(ok, "{err}");
    assert!(err.contains("decrypted 2, failed 0"), "{err}");
    let out = d.join("out/f/uuid_aaa");
    assert_eq!(std::fs::read(out.join("photo.bin")).unwrap(), binary());
    assert_eq!(std::fs::read(out.join("empty.txt")).unwrap(), b"");
    assert_eq!(
        std::fs::read_to_string(out.join("submission.xml")).unwrap(),
        submission_xml("uuid:aaa")
    );
    assert_eq!(
        std::fs::read_to_string(d.join("out/f/uuid_bbb/submission.xml")).unwrap(),
        submission_xml("uuid:bbb")
    );
    assert!(s2.is_dir());
    let lines = index(&d.join("out"));
    assert_eq!(lines.len(), 2);
    let a = entry(&lines, "uuid:aaa");
    assert_eq!(a["signature"], "valid");
    assert_eq!(a["formId"], "f");
    assert_eq!(a["version"], "1");
    assert_eq!(
        a["files"],
        serde_json::json!(["submission.xml", "photo.bin", "empty.txt"])
    );
    assert_eq!(entry(&lines, "uuid:bbb")["signature"], "valid");
    assert!(
        std::fs::read_to_string(d.join("out/submissions.jsonl"))
            .unwrap()
            .contains("\"signature\":\"valid\"")
    );

    // Resumable: done submissions are skipped.
    let (ok, _, err) = fv(
        d,
        &[
            "decrypt",
            "--key",
            "project-key.pem",
            "--passphrase-stdin",
            "--in",
            "in",
            "--out",
            "out",
        ],
        &format!("{PASS}\n"),
    );
    assert!(ok, "{err}");
    assert!(err.contains("decrypted 0, failed 0 (skipped 2"), "{err}");
    assert_eq!(index(&d.join("out")).len(), 2);
}

#[test]
fn decrypt_reports_wrong_key_and_damaged_files_and_continues() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    let public = keygen(d, "key.pem", None);
    let other = keygen(d, "other.pem", None);
    std::fs::write(d.join("photo.bin"), binary()).unwrap();
    std::fs::write(d.join("empty.txt"), b"").unwrap();

    encrypt(d, &public, "uuid:good", &["photo.bin", "empty.txt"]);
    let flipped = encrypt(d, &public, "uuid:flipped", &["photo.bin", "empty.txt"]);
    let truncated = encrypt(d, &public, "uuid:padding", &["photo.bin"]);
    encrypt(d, &other, "uuid:otherkey", &[]);

    // A flipped byte in the middle of a media file: decrypts, but the signature no longer matches.
    let p = flipped.join("photo.bin.enc");
    let mut b = std::fs::read(&p).unwrap();
    b[1000] ^= 0x01;
    std::fs::write(&p, b).unwrap();
    // A flipped last byte breaks the padding: that file cannot be decrypted.
    let p = truncated.join("photo.bin.enc");
    let mut b = std::fs::read(&p).unwrap();
    let n = b.len();
    b[n - 1] ^= 0xff;
    std::fs::write(&p, b).unwrap();

    // The unprotected key opens without a passphrase.
    let (ok, _, err) = fv(
        d,
        &["decrypt", "--key", "key.pem", "--in", "in", "--out", "out"],
        "",
    );
    assert!(!ok, "{err}");
    assert!(err.contains("decrypted 2, failed 2"), "{err}");
    assert!(
        err.contains("uuid_otherkey: failed: cannot unwrap the submission key"),
        "{err}"
    );
    assert!(
        err.contains("uuid_padding: failed: photo.bin.enc does not decrypt"),
        "{err}"
    );
    assert!(err.contains("uuid_flipped: SIGNATURE MISMATCH"), "{err}");

    let out = d.join("out/f");
    assert_eq!(
        std::fs::read(out.join("uuid_good/photo.bin")).unwrap(),
        binary()
    );
    assert_eq!(
        std::fs::read_to_string(out.join("uuid_good/submission.xml")).unwrap(),
        submission_xml("uuid:good")
    );
    // Altered data is still written, flagged.
    let altered = std::fs::read(out.join("uuid_flipped/photo.bin")).unwrap();
    assert_eq!(altered.len(), binary().len());
    assert_ne!(altered, binary());
    assert!(!out.join("uuid_otherkey").join("submission.xml").exists());
    assert!(!out.join("uuid_padding").join(".done").exists());
    let lines = index(&d.join("out"));
    assert_eq!(lines.len(), 2);
    assert_eq!(entry(&lines, "uuid:good")["signature"], "valid");
    assert_eq!(entry(&lines, "uuid:flipped")["signature"], "invalid");

    // The other key decrypts its own submission; the rest is not its business.
    let (ok, _, err) = fv(
        d,
        &[
            "decrypt",
            "--key",
            "other.pem",
            "--in",
            "in",
            "--out",
            "out",
        ],
        "",
    );
    assert!(!ok);
    assert!(err.contains("decrypted 1, failed 1 (skipped 2"), "{err}");
    assert_eq!(
        std::fs::read_to_string(out.join("uuid_otherkey/submission.xml")).unwrap(),
        submission_xml("uuid:otherkey")
    );
}

#[test]
fn decrypt_real_collect_submission() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    let sub = d.join("in/encrypted/uuid_99b303d9-6494-477b-a30d-d8aae8867335");
    std::fs::create_dir_all(&sub).unwrap();
    std::fs::copy(
        format!("{FIXTURES}/collect-1.22.4-manifest.xml"),
        sub.join("submission.xml"),
    )
    .unwrap();
    std::fs::copy(
        format!("{FIXTURES}/collect-1.22.4-submission.xml.enc"),
        sub.join("submission.xml.enc"),
    )
    .unwrap();
    let key = format!("{CRYPTO_DATA}/collect-rsa2048-private.pem");
    let (ok, _, err) = fv(
        d,
        &["decrypt", "--key", &key, "--in", "in", "--out", "out"],
        "",
    );
    assert!(ok, "{err}");
    assert!(err.contains("decrypted 1, failed 0"), "{err}");
    assert!(
        err.contains("media file 1561432532482.jpg.enc is missing"),
        "{err}"
    );
    let out = d.join("out/encrypted/uuid_99b303d9-6494-477b-a30d-d8aae8867335");
    assert_eq!(
        std::fs::read(out.join("submission.xml")).unwrap(),
        std::fs::read(format!(
            "{CRYPTO_DATA}/collect-1.22.4-expected-plaintext.xml"
        ))
        .unwrap()
    );
    // Incomplete: no marker, so a later run (with the media) retries it.
    assert!(!out.join(".done").exists());
    let lines = index(&d.join("out"));
    let e = entry(&lines, "uuid:99b303d9-6494-477b-a30d-d8aae8867335");
    assert_eq!(e["formId"], "encrypted");
    assert_eq!(e["version"], "working3");
    assert_eq!(e["signature"], "unknown");
    assert_eq!(e["missing"], serde_json::json!(["1561432532482.jpg"]));
}
