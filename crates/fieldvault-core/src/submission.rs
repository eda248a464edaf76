//! Reading an OpenRosa submission (`xml_submission_file`) and deciding what to do with it.
//!
//! The server does not validate answers (clients did, and forms evolve); it needs only what routes
//! and deduplicates a submission: the form id and version from the root, the `meta/instanceID`
//! idempotency key, the edit link `meta/deprecatedID`, and, for encrypted forms, the envelope
//! (manifest) parts that name the ciphertext files to expect. [`decide`] then applies the intake
//! rules of OpenRosa §6.3 without touching storage, so they can be tested exhaustively.

use crate::CoreError;
use crate::xml::{Element, parse_document};

/// The error field name for refusals of the submission document as a whole.
const FIELD: &str = "submission";

/// Longest accepted instanceID / deprecatedID, in characters (specs require ≥ 249 to work).
pub const MAX_INSTANCE_ID_CHARS: usize = 255;

/// What the server keeps from a submission's XML.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubmissionMeta {
    /// Local name of the root element (same as the form's primary instance root).
    pub root_element: String,
    /// The root's `id` (legacy fallback: the root's default `xmlns`): which form this is for.
    pub xml_form_id: String,
    /// The root's `version`; `None` when absent or blank.
    pub version: Option<String>,
    /// `meta/instanceID`: the per-form idempotency key, e.g. `uuid:…`.
    pub instance_id: String,
    /// `meta/deprecatedID`: the instanceID of the submission this one edits.
    pub deprecated_id: Option<String>,
    /// `meta/instanceName`: a display label chosen by the form (never in encrypted envelopes).
    pub instance_name: Option<String>,
    /// The encryption envelope, when the root says `encrypted="yes"`.
    pub encrypted: Option<EncryptedEnvelope>,
}

/// The visible parts of an encrypted submission (the manifest Collect and Enketo write).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EncryptedEnvelope {
    /// The RSA-OAEP-wrapped AES key, base64.
    pub base64_encrypted_key: String,
    /// `media/file` names (`*.enc`), in encryption order, which the decryptor relies on.
    pub media_files: Vec<String>,
    /// Name of the encrypted submission XML, normally `submission.xml.enc`.
    pub encrypted_xml_file: String,
    /// The RSA-encrypted signature over the envelope; optional by spec, always sent by Collect.
    pub base64_encrypted_element_signature: Option<String>,
}

impl SubmissionMeta {
    /// Attachment names the server should expect for an encrypted submission:
    /// every `media/file`, then the encrypted XML. Empty for plaintext submissions, whose
    /// attachments are named in the form's binary fields.
    pub fn expected_encrypted_files(&self) -> Vec<&str> {
        self.encrypted
            .iter()
            .flat_map(|e| {
                e.media_files
                    .iter()
                    .map(String::as_str)
                    .chain([e.encrypted_xml_file.as_str()])
            })
            .collect()
    }
}

/// Parses and checks a submission document of at most `max_bytes` bytes.
///
/// Refuses oversized or malformed XML, any DOCTYPE (no DTD, no XXE), a root without form id, a
/// missing, empty or overlong `meta/instanceID`, and an encrypted envelope lacking
/// `base64EncryptedKey` or `encryptedXmlFile`, or naming a file that is not a plain file name.
pub fn parse_submission(bytes: &[u8], max_bytes: usize) -> Result<SubmissionMeta, CoreError> {
    let root = parse_document(bytes, max_bytes, FIELD)?;
    meta_of(&root)
}

/// [`parse_submission`] plus the attachment file names a plaintext submission names in the form's
/// binary fields (`binary_fields` are bind nodesets such as `/data/photo`; repeats yield one name
/// per occurrence). For an encrypted envelope the names are the envelope's files instead. One
/// parse serves both, which matters on the intake path.
pub fn parse_submission_with_attachments(
    bytes: &[u8],
    max_bytes: usize,
    binary_fields: &[String],
) -> Result<(SubmissionMeta, Vec<String>), CoreError> {
    let (meta, inst) = parse_submission_instance(bytes, max_bytes)?;
    let names = attachment_names(&meta, &inst, binary_fields);
    Ok((meta, names))
}

/// [`parse_submission`] that also keeps the parsed document, so intake can name attachments and
/// check the answers' shape against the form from one parse.
pub fn parse_submission_instance(
    bytes: &[u8],
    max_bytes: usize,
) -> Result<(SubmissionMeta, crate::Instance), CoreError> {
    let root = parse_document(bytes, max_bytes, FIELD)?;
    let meta = meta_of(&root)?;
    Ok((meta, crate::Instance::from_root(root)))
}

/// The attachment names a submission expects: an encrypted envelope's files, or the values of a
/// plaintext submission's binary fields (see [`parse_submission_with_attachments`]).
pub fn attachment_names(
    meta: &SubmissionMeta,
    inst: &crate::Instance,
    binary_fields: &[String],
) -> Vec<String> {
    match &meta.encrypted {
        Some(_) => meta
            .expected_encrypted_files()
            .into_iter()
            .map(str::to_owned)
            .collect(),
        None if binary_fields.is_empty() => Vec::new(),
        None => {
            let mut names = Vec::new();
            let mut path = Vec::new();
            collect_binary_values(inst.root(), &mut path, binary_fields, &mut names);
            names
        }
    }
}

fn collect_binary_values<'a>(
    el: &'a crate::xml::Element,
    path: &mut Vec<&'a str>,
    binary_fields: &[String],
    out: &mut Vec<String>,
) {
    path.push(&el.name);
    if el.children.is_empty() {
        let value = el.trimmed_text();
        if !value.is_empty()
            && binary_fields.iter().any(|f| {
                let mut parts = f.split('/').filter(|p| !p.is_empty());
                let mut segs = path.iter();
                loop {
                    match (parts.next(), segs.next()) {
                        (None, None) => break true,
                        // Bind nodesets may carry prefixes (`/h:data/x`); compare local names.
                        (Some(p), Some(s)) if p.rsplit(':').next() == Some(*s) => continue,
                        _ => break false,
                    }
                }
            })
            && check_file_name("attachment", value).is_ok()
            && !out.iter().any(|n| n == value)
        {
            out.push(value.to_owned());
        }
    }
    for c in &el.children {
        collect_binary_values(c, path, binary_fields, out);
    }
    path.pop();
}

fn meta_of(root: &crate::xml::Element) -> Result<SubmissionMeta, CoreError> {
    let xml_form_id = root
        .attr("id")
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .or_else(|| {
            root.default_ns
                .as_deref()
                .map(str::trim)
                .filter(|s| !s.is_empty())
        })
        .ok_or_else(|| {
            CoreError::invalid(
                "form id",
                format!(
                    "the submission root <{}> has no id attribute naming its form",
                    root.name
                ),
            )
        })?
        .to_owned();
    let version = non_blank(root.attr("version"));

    let meta = root.child("meta");
    let meta_text =
        |name: &str| non_blank(meta.and_then(|m| m.child(name)).map(Element::trimmed_text));

    let instance_id = meta_text("instanceID")
        .or_else(|| non_blank(root.attr("instanceID")))
        .ok_or_else(|| {
            CoreError::invalid(
                "instanceID",
                "the submission has no meta/instanceID; the form must define one",
            )
        })?;
    check_id_length("instanceID", &instance_id)?;
    let deprecated_id = meta_text("deprecatedID");
    if let Some(d) = &deprecated_id {
        check_id_length("deprecatedID", d)?;
    }
    let instance_name = meta_text("instanceName");

    let encrypted = if root.attr("encrypted").map(str::trim) == Some("yes") {
        Some(envelope(root)?)
    } else {
        None
    };

    Ok(SubmissionMeta {
        root_element: root.name.clone(),
        xml_form_id,
        version,
        instance_id,
        deprecated_id,
        instance_name,
        encrypted,
    })
}

fn non_blank(s: Option<&str>) -> Option<String> {
    s.map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
}

fn check_id_length(field: &'static str, id: &str) -> Result<(), CoreError> {
    let n = id.chars().count();
    if n > MAX_INSTANCE_ID_CHARS {
        return Err(CoreError::invalid(
            field,
            format!("is {n} characters long; at most {MAX_INSTANCE_ID_CHARS} are allowed"),
        ));
    }
    Ok(())
}

fn envelope(root: &Element) -> Result<EncryptedEnvelope, CoreError> {
    let required = |name: &'static str| {
        non_blank(root.child(name).map(Element::trimmed_text)).ok_or_else(|| {
            CoreError::invalid(
                name,
                format!("the encrypted submission has no <{name}>; it cannot be decrypted"),
            )
        })
    };
    let base64_encrypted_key = required("base64EncryptedKey")?;
    let encrypted_xml_file = required("encryptedXmlFile")?;
    check_file_name("encryptedXmlFile", &encrypted_xml_file)?;

    let mut media_files = Vec::new();
    for file in root
        .children_named("media")
        .flat_map(|m| m.children_named("file"))
    {
        let name = file.trimmed_text();
        check_file_name("media", name)?;
        media_files.push(name.to_owned());
    }
    let base64_encrypted_element_signature = non_blank(
        root.child("base64EncryptedElementSignature")
            .map(Element::trimmed_text),
    );

    Ok(EncryptedEnvelope {
        base64_encrypted_key,
        media_files,
        encrypted_xml_file,
        base64_encrypted_element_signature,
    })
}

/// Attachment names become storage keys: only plain base names are accepted.
fn check_file_name(field: &'static str, name: &str) -> Result<(), CoreError> {
    if name.is_empty()
        || name == "."
        || name == ".."
        || name.contains(['/', '\\', '\0'])
        || name.chars().any(char::is_control)
    {
        return Err(CoreError::invalid(
            field,
            format!("\"{name}\" is not a plain file name"),
        ));
    }
    Ok(())
}

/// What to do with an incoming submission, per OpenRosa §6.3 steps 4–5.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IntakeDecision {
    /// A submission not seen before: create it.
    New,
    /// The same instanceID with byte-identical XML: a retry or a split-upload continuation.
    /// Store any new attachments and answer success.
    Duplicate,
    /// The same instanceID with different XML: refuse (409), never overwrite silently.
    Conflict,
    /// An edit of the current version of an existing submission, which `deprecated` names.
    Edit {
        /// The instanceID of the submission being replaced.
        deprecated: String,
    },
    /// `deprecatedID` names no current submission of this form (unknown, or already superseded):
    /// refuse (404 for unknown, 409 for superseded; the caller knows which).
    UnknownDeprecated {
        /// The deprecatedID that was not found.
        deprecated: String,
    },
}

/// Decides how to take in a submission, without I/O.
///
/// The caller looks up, within the target form: `existing_same_instance`, the SHA-256 of the XML
/// stored under `meta.instance_id` (if any); and `deprecated_exists`, whether `meta.deprecated_id`
/// names the *current* version of a stored submission. Hashes are passed in rather than computed
/// here so the core stays free of hashing dependencies and never needs the stored bytes.
///
/// An already-known instanceID is checked first, so that retrying an edit whose response was lost
/// is a [`IntakeDecision::Duplicate`] rather than an edit of a now-superseded version.
pub fn decide(
    existing_same_instance: Option<&[u8; 32]>,
    new_sha256: &[u8; 32],
    deprecated_exists: bool,
    meta: &SubmissionMeta,
) -> IntakeDecision {
    match (existing_same_instance, &meta.deprecated_id) {
        (Some(stored), _) if stored == new_sha256 => IntakeDecision::Duplicate,
        (Some(_), _) => IntakeDecision::Conflict,
        (None, Some(d)) if deprecated_exists => IntakeDecision::Edit {
            deprecated: d.clone(),
        },
        (None, Some(d)) => IntakeDecision::UnknownDeprecated {
            deprecated: d.clone(),
        },
        (None, None) => IntakeDecision::New,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PLAIN: &str = r#"<?xml version='1.0' ?><data id="household" version="2024061801"><name>Zoe</name><age>42</age><photo>1718700000000.jpg</photo><meta><instanceID>uuid:6f1c2e0a-1111-4222-8333-944455556666</instanceID><instanceName>Zoe-42</instanceName></meta></data>"#;
    const MANIFEST: &[u8] = include_bytes!("../testdata/collect-1.22.4-manifest.xml");
    const MANIFEST_ONE: &[u8] =
        include_bytes!("../testdata/collect-manifest-one-no-ciphertext.xml");
    const DECRYPTED: &[u8] = include_bytes!("../testdata/collect-1.22.4-expected-plaintext.xml");

    fn parse(xml: &str) -> Result<SubmissionMeta, CoreError> {
        parse_submission(xml.as_bytes(), 1 << 20)
    }

    fn refusal(xml: &str) -> (&'static str, String) {
        match parse(xml) {
            Err(CoreError::Invalid { field, reason }) => (field, reason),
            other => panic!("expected a refusal, got {other:?}"),
        }
    }

    #[test]
    fn plaintext_submission() {
        let m = parse(PLAIN).unwrap();
        assert_eq!(m.root_element, "data");
        assert_eq!(m.xml_form_id, "household");
        assert_eq!(m.version.as_deref(), Some("2024061801"));
        assert_eq!(m.instance_id, "uuid:6f1c2e0a-1111-4222-8333-944455556666");
        assert_eq!(m.instance_name.as_deref(), Some("Zoe-42"));
        assert_eq!(m.deprecated_id, None);
        assert_eq!(m.encrypted, None);
        assert!(m.expected_encrypted_files().is_empty());
    }

    #[test]
    fn decrypted_collect_submission() {
        let m = parse_submission(DECRYPTED, 1 << 20).unwrap();
        assert_eq!(m.xml_form_id, "encrypted");
        assert_eq!(m.version.as_deref(), Some("working3"));
        assert_eq!(m.instance_id, "uuid:99b303d9-6494-477b-a30d-d8aae8867335");
        assert_eq!(m.encrypted, None);
    }

    #[test]
    fn collect_encrypted_envelope() {
        let m = parse_submission(MANIFEST, 1 << 20).unwrap();
        assert_eq!(m.root_element, "data");
        assert_eq!(m.xml_form_id, "encrypted");
        assert_eq!(m.version.as_deref(), Some("working3"));
        assert_eq!(m.instance_id, "uuid:99b303d9-6494-477b-a30d-d8aae8867335");
        let e = m.encrypted.as_ref().unwrap();
        assert!(e.base64_encrypted_key.starts_with("iyEB1LAlvVE8"));
        assert_eq!(e.base64_encrypted_key.len(), 344);
        assert_eq!(e.media_files, vec!["1561432532482.jpg.enc".to_owned()]);
        assert_eq!(e.encrypted_xml_file, "submission.xml.enc");
        assert_eq!(
            e.base64_encrypted_element_signature
                .as_deref()
                .map(str::len),
            Some(344)
        );
        assert_eq!(
            m.expected_encrypted_files(),
            vec!["1561432532482.jpg.enc", "submission.xml.enc"]
        );

        let one = parse_submission(MANIFEST_ONE, 1 << 20).unwrap();
        assert_eq!(one.instance_id, "uuid:dcf4a151-5088-453f-99e6-369d67828f7a");
        assert_eq!(
            one.encrypted.unwrap().media_files,
            vec!["1561432508817.jpg.enc".to_owned()]
        );
    }

    #[test]
    fn envelope_media_order_and_optional_signature() {
        let xml = r#"<data id="f" encrypted="yes"><base64EncryptedKey>K</base64EncryptedKey>
            <meta><instanceID>uuid:1</instanceID></meta>
            <media><file>b.jpg.enc</file></media><media><file>audit.csv.enc</file></media>
            <encryptedXmlFile>submission.xml.enc</encryptedXmlFile></data>"#;
        let e = parse(xml).unwrap().encrypted.unwrap();
        assert_eq!(e.media_files, vec!["b.jpg.enc", "audit.csv.enc"]);
        assert_eq!(e.base64_encrypted_element_signature, None);
        assert_eq!(parse(xml).unwrap().version, None);
    }

    #[test]
    fn envelope_refusals() {
        let base = r#"<data id="f" encrypted="yes"><base64EncryptedKey>K</base64EncryptedKey><meta><instanceID>uuid:1</instanceID></meta><media><file>a.enc</file></media><encryptedXmlFile>submission.xml.enc</encryptedXmlFile></data>"#;
        assert!(parse(base).is_ok());
        let no_key = base.replace("<base64EncryptedKey>K</base64EncryptedKey>", "");
        assert_eq!(refusal(&no_key).0, "base64EncryptedKey");
        let empty_key = base.replace(">K<", "> <");
        assert_eq!(refusal(&empty_key).0, "base64EncryptedKey");
        let no_xml = base.replace(
            "<encryptedXmlFile>submission.xml.enc</encryptedXmlFile>",
            "",
        );
        assert_eq!(refusal(&no_xml).0, "encryptedXmlFile");
        for bad in ["../a.enc", "x/a.enc", r"x\a.enc", "..", ""] {
            let xml = base.replace("a.enc", bad);
            assert_eq!(refusal(&xml).0, "media", "{bad:?}");
        }
        let bad_xml_name = base.replace("submission.xml.enc", "../../etc/x");
        assert_eq!(refusal(&bad_xml_name).0, "encryptedXmlFile");
        // Without encrypted="yes" the envelope is not read at all.
        assert_eq!(
            parse(&no_key.replace(r#" encrypted="yes""#, ""))
                .unwrap()
                .encrypted,
            None
        );
    }

    #[test]
    fn namespace_prefix_variants() {
        let xml = r#"<x:household xmlns:x="http://example.org/f" xmlns:orx="http://openrosa.org/xforms" x:id="mysurvey" orx:version="2014083101">
            <orx:meta><orx:instanceID> uuid:abc </orx:instanceID><orx:deprecatedID>uuid:old</orx:deprecatedID></orx:meta></x:household>"#;
        let m = parse(xml).unwrap();
        assert_eq!(m.root_element, "household");
        assert_eq!(m.xml_form_id, "mysurvey");
        assert_eq!(m.version.as_deref(), Some("2014083101"));
        assert_eq!(m.instance_id, "uuid:abc");
        assert_eq!(m.deprecated_id.as_deref(), Some("uuid:old"));
    }

    #[test]
    fn form_id_falls_back_to_xmlns_then_refuses() {
        let m = parse(
            r#"<data xmlns="legacy-form"><meta><instanceID>uuid:1</instanceID></meta></data>"#,
        )
        .unwrap();
        assert_eq!(m.xml_form_id, "legacy-form");
        let (field, reason) = refusal("<data><meta><instanceID>uuid:1</instanceID></meta></data>");
        assert_eq!(field, "form id");
        assert!(reason.contains("<data>"), "{reason}");
    }

    #[test]
    fn instance_id_rules() {
        let (field, _) = refusal(r#"<data id="f"><meta/></data>"#);
        assert_eq!(field, "instanceID");
        let (field, _) = refusal(r#"<data id="f"><meta><instanceID>  </instanceID></meta></data>"#);
        assert_eq!(field, "instanceID");
        // instanceID outside meta does not count.
        let (field, _) = refusal(r#"<data id="f"><instanceID>uuid:1</instanceID></data>"#);
        assert_eq!(field, "instanceID");
        // Root attribute fallback (OpenRosa §6.3 step 2).
        let m = parse(r#"<data id="f" instanceID="uuid:2"/>"#).unwrap();
        assert_eq!(m.instance_id, "uuid:2");

        let ok = "u".repeat(MAX_INSTANCE_ID_CHARS);
        let xml = format!(r#"<data id="f"><meta><instanceID>{ok}</instanceID></meta></data>"#);
        assert!(parse(&xml).is_ok());
        let long = "é".repeat(MAX_INSTANCE_ID_CHARS + 1);
        let xml = format!(r#"<data id="f"><meta><instanceID>{long}</instanceID></meta></data>"#);
        assert_eq!(refusal(&xml).0, "instanceID");
        let xml = format!(
            r#"<data id="f"><meta><instanceID>uuid:1</instanceID><deprecatedID>{long}</deprecatedID></meta></data>"#
        );
        assert_eq!(refusal(&xml).0, "deprecatedID");
    }

    #[test]
    fn document_refusals() {
        let (field, reason) = refusal("<data id='f'><meta>");
        assert_eq!(field, "submission");
        assert!(reason.contains("not well-formed"), "{reason}");
        let xxe = r#"<!DOCTYPE data [<!ENTITY e SYSTEM "file:///etc/passwd">]><data id="f"><meta><instanceID>&e;</instanceID></meta></data>"#;
        assert!(refusal(xxe).1.contains("DOCTYPE"));
        assert!(refusal(&PLAIN.replace("Zoe<", "&e;<")).1.contains("&e;"));
        let r = parse_submission(PLAIN.as_bytes(), PLAIN.len() - 1);
        assert!(
            matches!(
                r,
                Err(CoreError::Invalid {
                    field: "submission",
                    ..
                })
            ),
            "{r:?}"
        );
    }

    fn meta(deprecated: Option<&str>) -> SubmissionMeta {
        SubmissionMeta {
            root_element: "data".into(),
            xml_form_id: "f".into(),
            version: None,
            instance_id: "uuid:new".into(),
            deprecated_id: deprecated.map(str::to_owned),
            instance_name: None,
            encrypted: None,
        }
    }

    #[test]
    fn intake_decisions() {
        let a = [1u8; 32];
        let b = [2u8; 32];
        assert_eq!(decide(None, &a, false, &meta(None)), IntakeDecision::New);
        assert_eq!(
            decide(Some(&a), &a, false, &meta(None)),
            IntakeDecision::Duplicate
        );
        assert_eq!(
            decide(Some(&b), &a, false, &meta(None)),
            IntakeDecision::Conflict
        );
        assert_eq!(
            decide(None, &a, true, &meta(Some("uuid:old"))),
            IntakeDecision::Edit {
                deprecated: "uuid:old".into()
            }
        );
        assert_eq!(
            decide(None, &a, false, &meta(Some("uuid:old"))),
            IntakeDecision::UnknownDeprecated {
                deprecated: "uuid:old".into()
            }
        );
        // A retried edit (instanceID already stored, same bytes) is a duplicate, not a new edit.
        assert_eq!(
            decide(Some(&a), &a, false, &meta(Some("uuid:old"))),
            IntakeDecision::Duplicate
        );
        assert_eq!(
            decide(Some(&b), &a, true, &meta(Some("uuid:old"))),
            IntakeDecision::Conflict
        );
        // deprecated_exists is meaningless without a deprecatedID.
        assert_eq!(decide(None, &a, true, &meta(None)), IntakeDecision::New);
    }
}

#[cfg(test)]
mod attachment_tests {
    use super::*;

    #[test]
    fn binary_field_values_are_expected_attachments() {
        let xml = br#"<data id="f"><photo>a.jpg</photo><rep><pic>b.png</pic></rep><rep><pic>c.png</pic></rep>
            <rep><pic></pic></rep><note>a.jpg</note><other>../x</other><meta><instanceID>uuid:1</instanceID></meta></data>"#;
        let fields = vec![
            "/data/photo".to_owned(),
            "/data/rep/pic".to_owned(),
            "/data/other".to_owned(),
        ];
        let (meta, names) = parse_submission_with_attachments(xml, 10_000, &fields).unwrap();
        assert_eq!(meta.instance_id, "uuid:1");
        assert_eq!(
            names,
            vec!["a.jpg", "b.png", "c.png"],
            "unsafe names and blanks skipped"
        );
        let (_, none) = parse_submission_with_attachments(xml, 10_000, &[]).unwrap();
        assert!(none.is_empty());
    }
}
