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

/// A form with a repeat group, as `fieldvault pull` saves it beside the submissions.
const REPEAT_FORM: &str = r#"<?xml version="1.0"?>
<h:html xmlns="http://www.w3.org/2002/xforms" xmlns:h="http://www.w3.org/1999/xhtml" xmlns:jr="http://openrosa.org/javarosa">
  <h:head><h:title>Household</h:title>
    <model>
      <instance><data id="hh" version="1"><name/><age/><member jr:template=""><mname/></member><meta><instanceID/></meta></data></instance>
      <bind nodeset="/data/name" type="string"/>
      <bind nodeset="/data/age" type="int"/>
      <bind nodeset="/data/member/mname" type="string"/>
      <bind nodeset="/data/meta/instanceID" type="string" readonly="true()"/>
    </model>
  </h:head>
  <h:body>
    <input ref="/data/name"><label>Name</label></input>
    <input ref="/data/age"><label>Age</label></input>
    <group ref="/data/member"><label>Members</label><repeat nodeset="/data/member"><input ref="/data/member/mname"><label>Member</label></input></repeat></group>
  </h:body>
</h:html>"#;

fn read_csv(path: &Path) -> Vec<Vec<String>> {
    let text = std::fs::read_to_string(path).unwrap();
    let mut r = csv::ReaderBuilder::new()
        .has_headers(false)
        .from_reader(text.as_bytes());
    r.records()
        .map(|rec| rec.unwrap().iter().map(str::to_owned).collect())
        .collect()
}

fn column(table: &[Vec<String>], row: usize, name: &str) -> String {
    let i = table[0]
        .iter()
        .position(|h| h == name)
        .unwrap_or_else(|| panic!("no column {name} in {:?}", table[0]));
    table[row][i].clone()
}

#[test]
fn decrypt_writes_csv_tables_with_repeats_and_json_lines() {
    let d = tempfile::tempdir().unwrap();
    let d = d.path();
    let public = keygen(d, "k.pem", None);
    std::fs::create_dir_all(d.join("in/hh")).unwrap();
    std::fs::write(d.join("in/hh/form.xml"), REPEAT_FORM).unwrap();
    let subs = [
        (
            "uuid:h1",
            "<data id=\"hh\" version=\"1\"><name>Ada, \"the first\"</name><age>36</age>\
             <member><mname>Byron</mname></member><member><mname>Lovelace</mname></member>\
             <meta><instanceID>uuid:h1</instanceID></meta></data>",
        ),
        (
            "uuid:h2",
            "<data id=\"hh\" version=\"1\"><name>Grace</name><age>85</age><legacy>old field</legacy>\
             <meta><instanceID>uuid:h2</instanceID></meta></data>",
        ),
    ];
    for (id, xml) in subs {
        let x = d.join(format!("{}.xml", id.replace(':', "_")));
        std::fs::write(&x, xml).unwrap();
        let out = d.join("in/hh").join(id.replace(':', "_"));
        let (ok, _, err) = fv(
            d,
            &[
                "encrypt-submission",
                "--public-key",
                &public,
                "--form-id",
                "hh",
                "--version",
                "1",
                "--instance-id",
                id,
                "--xml",
                x.to_str().unwrap(),
                "--out",
                out.to_str().unwrap(),
            ],
            "",
        );
        assert!(ok, "{err}");
    }
    let decrypt = |out: &str| {
        fv(
            d,
            &["decrypt", "--key", "k.pem", "--in", "in", "--out", out],
            "",
        )
    };
    let (ok, _, err) = decrypt("out");
    assert!(ok, "{err}");
    assert!(
        err.contains("hh.csv") && err.contains("hh-member.csv"),
        "{err}"
    );

    let main = read_csv(&d.join("out/hh.csv"));
    assert_eq!(main.len(), 3, "header + 2 rows: {main:?}");
    assert_eq!(main[0][0], "SubmissionDate");
    assert_eq!(main[0][1..3], ["name".to_owned(), "age".to_owned()]);
    assert!(
        main[0].contains(&"legacy".to_owned()),
        "an older version's field is kept"
    );
    assert_eq!(column(&main, 1, "name"), "Ada, \"the first\"");
    assert_eq!(column(&main, 1, "KEY"), "uuid:h1");
    assert_eq!(column(&main, 1, "AttachmentsExpected"), "0");
    assert_eq!(column(&main, 2, "legacy"), "old field");
    let members = read_csv(&d.join("out/hh-member.csv"));
    assert_eq!(members.len(), 3, "{members:?}");
    assert_eq!(column(&members, 1, "mname"), "Byron");
    assert_eq!(column(&members, 2, "mname"), "Lovelace");
    assert_eq!(column(&members, 2, "PARENT_KEY"), "uuid:h1");
    assert_eq!(column(&members, 2, "KEY"), "uuid:h1/member[2]");

    let lines: Vec<serde_json::Value> = std::fs::read_to_string(d.join("out/hh.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 2);
    assert_eq!(lines[0]["age"], 36, "typed from the form");
    assert_eq!(lines[0]["_uuid"], "h1");
    assert_eq!(lines[0]["member"][1]["member/mname"], "Lovelace");

    // A resumed run skips the decryption but still writes complete tables.
    let (ok, _, err) = decrypt("out");
    assert!(ok && err.contains("skipped 2"), "{err}");
    assert_eq!(read_csv(&d.join("out/hh.csv")).len(), 3);

    // Without the form definition the columns are inferred from the data.
    std::fs::remove_file(d.join("in/hh/form.xml")).unwrap();
    let (ok, _, err) = decrypt("out2");
    assert!(ok, "{err}");
    let inferred = read_csv(&d.join("out2/hh.csv"));
    assert_eq!(column(&inferred, 2, "name"), "Grace");
    assert_eq!(read_csv(&d.join("out2/hh-member.csv")).len(), 3);
}
