//! Reading an XForm definition: what a server needs to publish, list and route a form.
//!
//! The server never evaluates forms (clients do). It only extracts identity (form ID, version),
//! the title for `formList`, the `<submission>` settings (an encryption key changes how submissions
//! must be handled), the primary instance's root name, binary fields (expected attachments), the
//! media files the manifest must offer, and the `md5:` hash of the exact bytes it will serve.
//! Elements and attributes are matched by local name, because generators use different prefixes.

use md5::{Digest, Md5};

use crate::CoreError;
use crate::xml::{Element, parse_document};

/// The error field name used for every refusal of a form definition.
const FIELD: &str = "form";

/// `jr://` URL prefixes whose files a client must download with the form.
const MEDIA_PREFIXES: [&str; 5] = [
    "jr://images/",
    "jr://audio/",
    "jr://video/",
    "jr://file/",
    "jr://file-csv/",
];

/// What the server keeps from a parsed XForm.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct XForm {
    /// The primary instance root's `id`: the form ID used by `formList` and submissions.
    pub xml_form_id: String,
    /// The primary instance root's `version` (any prefix); `None` when absent or blank.
    pub version: Option<String>,
    /// `h:head/h:title`, falling back to the form ID when absent or blank (as Central does).
    pub title: String,
    /// `submission/@base64RsaPublicKey`, whitespace removed; `Some` means submissions are encrypted.
    pub base64_rsa_public_key: Option<String>,
    /// `submission/@action`: where clients post instead of the server's own endpoint.
    pub submission_action: Option<String>,
    /// Local name of the primary instance root element (`data` for pyxform forms by default).
    pub root_element: String,
    /// `nodeset` of every `bind` with `type="binary"`: fields whose value is an attachment name.
    pub binary_fields: Vec<String>,
    /// File names the form references and the manifest must provide, in first-seen order.
    pub media_files: Vec<String>,
    /// `md5:<32 lowercase hex>` of the exact bytes, as `formList` advertises it.
    pub hash: String,
}

impl XForm {
    /// Whether submissions to this form arrive encrypted.
    pub fn is_encrypted(&self) -> bool {
        self.base64_rsa_public_key.is_some()
    }
}

/// The `formList` hash of a byte string: `md5:` followed by 32 lowercase hex digits.
pub fn md5_hash(bytes: &[u8]) -> String {
    let digest = Md5::digest(bytes);
    let mut out = String::with_capacity(4 + 32);
    out.push_str("md5:");
    for b in digest {
        out.push_str(&format!("{b:02x}"));
    }
    out
}

/// Parses and checks an XForm of at most `max_bytes` bytes.
///
/// Refuses, each with a message a form author can act on: oversized input, XML that is not
/// well-formed, any DOCTYPE or non-predefined entity (no DTD processing at all, so no XXE), a missing
/// `<model>` or primary `<instance>`, a primary instance root without `id`, and a form without
/// `meta/instanceID`.
pub fn parse_xform(bytes: &[u8], max_bytes: usize) -> Result<XForm, CoreError> {
    let doc = parse_document(bytes, max_bytes, FIELD)?;
    let model = if doc.name == "model" {
        &doc
    } else {
        doc.descendant("model")
            .ok_or_else(|| CoreError::invalid(FIELD, "the form has no <model> element"))?
    };
    let root = model
        .child("instance")
        .ok_or_else(|| CoreError::invalid(FIELD, "the <model> has no <instance> element"))?
        .children
        .first()
        .ok_or_else(|| {
            CoreError::invalid(
                FIELD,
                "the primary <instance> is empty; it must contain the record's root element",
            )
        })?;

    let xml_form_id = root
        .attr("id")
        .map(str::trim)
        .filter(|id| !id.is_empty())
        .ok_or_else(|| {
            CoreError::invalid(
                FIELD,
                format!(
                    "the primary instance root <{}> has no id attribute (set form_id in the \
                     XLSForm settings)",
                    root.name
                ),
            )
        })?
        .to_owned();
    let lower = xml_form_id.to_ascii_lowercase();
    if [".xml", ".xls", ".xlsx"].iter().any(|s| lower.ends_with(s)) {
        return Err(CoreError::invalid(
            FIELD,
            format!("the form id \"{xml_form_id}\" must not end in .xml, .xls or .xlsx"),
        ));
    }
    let version = root
        .attr("version")
        .map(str::trim)
        .filter(|v| !v.is_empty())
        .map(str::to_owned);

    let binds: Vec<&Element> = model.children_named("bind").collect();
    let has_instance_id_element = root
        .child("meta")
        .is_some_and(|meta| meta.child("instanceID").is_some());
    let has_instance_id_bind = binds
        .iter()
        .filter_map(|b| b.attr("nodeset"))
        .any(|n| path_local_names(n).ends_with(&["meta", "instanceID"]));
    if !has_instance_id_element && !has_instance_id_bind {
        return Err(CoreError::invalid(
            FIELD,
            "the form has no meta/instanceID; every form needs one so submissions can be identified",
        ));
    }

    let title = doc
        .descendant("head")
        .and_then(|h| h.child("title"))
        .map(|t| t.trimmed_text())
        .filter(|t| !t.is_empty())
        .unwrap_or(&xml_form_id)
        .to_owned();

    let submission = model.child("submission");
    let base64_rsa_public_key = submission
        .and_then(|s| s.attr("base64RsaPublicKey"))
        .map(|k| k.split_whitespace().collect::<String>())
        .filter(|k| !k.is_empty());
    let submission_action = submission
        .and_then(|s| s.attr("action"))
        .map(str::trim)
        .filter(|a| !a.is_empty())
        .map(str::to_owned);

    let binary_fields = binds
        .iter()
        .filter(|b| {
            b.attr("type")
                .is_some_and(|t| t.rsplit(':').next() == Some("binary"))
        })
        .filter_map(|b| b.attr("nodeset"))
        .map(|n| n.trim().to_owned())
        .collect();

    Ok(XForm {
        xml_form_id,
        version,
        title,
        base64_rsa_public_key,
        submission_action,
        root_element: root.name.clone(),
        binary_fields,
        media_files: media_files(&doc),
        hash: md5_hash(bytes),
    })
}

/// The local names of the steps of a simple absolute path: `/orx:data/orx:meta/x` → `[data, meta, x]`.
fn path_local_names(path: &str) -> Vec<&str> {
    path.trim()
        .split('/')
        .filter(|s| !s.is_empty())
        .map(|s| s.rsplit(':').next().unwrap_or(s))
        .collect()
}

/// Every file name the form references (Central `expectedFormAttachments`): `jr://` media and
/// file URLs in any attribute or text, `itemsets.csv` for `input[@query]`, and `<name>.csv` for a
/// `search('name', …)` appearance.
fn media_files(doc: &Element) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    let mut add = |name: &str| {
        if !name.is_empty() && !out.iter().any(|n| n == name) {
            out.push(name.to_owned());
        }
    };
    doc.walk(&mut |el| {
        for value in el
            .attrs
            .iter()
            .map(|(_, v)| v.as_str())
            .chain([el.text.as_str()])
        {
            if let Some(name) = media_name(value) {
                add(name);
            }
        }
        if el.name == "input" && el.attr("query").is_some() {
            add("itemsets.csv");
        }
        if matches!(el.name.as_str(), "select" | "select1")
            && let Some(name) = el.attr("appearance").and_then(search_file)
        {
            add(&format!("{name}.csv"));
        }
    });
    out
}

/// The base name in a `jr://images/…`-style reference, if `value` is one.
fn media_name(value: &str) -> Option<&str> {
    let value = value.trim();
    let rest = MEDIA_PREFIXES.iter().find_map(|p| value.strip_prefix(p))?;
    rest.rsplit('/')
        .next()
        .map(str::trim)
        .filter(|n| !n.is_empty())
}

/// The file stem named by a `search('name'…)` appearance.
fn search_file(appearance: &str) -> Option<&str> {
    let rest = appearance.split("search(").nth(1)?.trim_start();
    let quote = rest.chars().next().filter(|c| *c == '\'' || *c == '"')?;
    let rest = rest.get(1..)?;
    let name = rest.split(quote).next()?.trim();
    (!name.is_empty()).then_some(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    const PLAIN: &str = r#"<?xml version="1.0"?>
<h:html xmlns="http://www.w3.org/2002/xforms" xmlns:h="http://www.w3.org/1999/xhtml"
        xmlns:ev="http://www.w3.org/2001/xml-events" xmlns:xsd="http://www.w3.org/2001/XMLSchema"
        xmlns:jr="http://openrosa.org/javarosa" xmlns:orx="http://openrosa.org/xforms"
        xmlns:odk="http://www.opendatakit.org/xforms">
  <h:head>
    <h:title>Household survey</h:title>
    <model odk:xforms-version="1.0.0">
      <instance>
        <data id="household" version="2024061801">
          <name/>
          <age/>
          <photo/>
          <meta>
            <instanceID/>
            <instanceName/>
          </meta>
        </data>
      </instance>
      <bind nodeset="/data/name" type="string"/>
      <bind nodeset="/data/age" type="int"/>
      <bind nodeset="/data/photo" type="binary"/>
      <bind nodeset="/data/meta/instanceID" type="string" readonly="true()" jr:preload="uid"/>
      <bind nodeset="/data/meta/instanceName" type="string" calculate="concat( /data/name , '-',  /data/age )"/>
    </model>
  </h:head>
  <h:body>
    <input ref="/data/name"><label>Your name</label></input>
    <input ref="/data/age"><label>Your age</label></input>
    <upload ref="/data/photo" mediatype="image/*"><label>Take a photo</label></upload>
  </h:body>
</h:html>"#;

    const ENCRYPTED: &[u8] = include_bytes!("../testdata/encrypted-form.xml");

    fn err(xml: &str) -> String {
        match parse_xform(xml.as_bytes(), 1 << 20) {
            Err(CoreError::Invalid { field, reason }) => {
                assert_eq!(field, "form");
                reason
            }
            other => panic!("expected a refusal, got {other:?}"),
        }
    }

    #[test]
    fn pyxform_plain_form() {
        let f = parse_xform(PLAIN.as_bytes(), 1 << 20).unwrap();
        assert_eq!(f.xml_form_id, "household");
        assert_eq!(f.version.as_deref(), Some("2024061801"));
        assert_eq!(f.title, "Household survey");
        assert_eq!(f.root_element, "data");
        assert_eq!(f.base64_rsa_public_key, None);
        assert!(!f.is_encrypted());
        assert_eq!(f.submission_action, None);
        assert_eq!(f.binary_fields, vec!["/data/photo".to_owned()]);
        assert!(f.media_files.is_empty());
        assert_eq!(f.hash, md5_hash(PLAIN.as_bytes()));
    }

    #[test]
    fn central_encrypted_form() {
        let f = parse_xform(ENCRYPTED, 1 << 20).unwrap();
        assert_eq!(f.xml_form_id, "encrypted");
        assert_eq!(f.version.as_deref(), Some("working3"));
        assert_eq!(f.title, "Encrypted");
        assert_eq!(f.binary_fields, vec!["/data/file".to_owned()]);
        assert!(f.is_encrypted());
        let key = f.base64_rsa_public_key.unwrap();
        assert!(key.starts_with("MIIBIjANBgkqhkiG9w0BAQEFAAOCAQ8AMIIBCgKCAQEAyYh7bSui"));
        assert!(key.ends_with("gNdRUQIDAQAB"));
        assert_eq!(key.len(), 392);
        assert!(f.media_files.is_empty());
    }

    #[test]
    fn encrypted_variant_with_action() {
        let xml = PLAIN.replace(
            "<instance>",
            r#"<submission action="https://example.org/submission" method="post"
                  base64RsaPublicKey="  MIIB
                  IDAQAB  "/><instance>"#,
        );
        let f = parse_xform(xml.as_bytes(), 1 << 20).unwrap();
        assert_eq!(
            f.submission_action.as_deref(),
            Some("https://example.org/submission")
        );
        assert_eq!(f.base64_rsa_public_key.as_deref(), Some("MIIBIDAQAB"));
    }

    #[test]
    fn md5_hash_format() {
        assert_eq!(md5_hash(b""), "md5:d41d8cd98f00b204e9800998ecf8427e");
        assert_eq!(md5_hash(b"abc"), "md5:900150983cd24fb0d6963f7d28e17f72");
        let h = parse_xform(ENCRYPTED, 1 << 20).unwrap().hash;
        assert_eq!(h.len(), 36);
        assert!(h.starts_with("md5:"));
        assert!(
            h[4..]
                .chars()
                .all(|c| c.is_ascii_digit() || ('a'..='f').contains(&c))
        );
        // Exact bytes: a trailing newline is a different form file.
        let mut more = ENCRYPTED.to_vec();
        more.push(b'\n');
        assert_ne!(parse_xform(&more, 1 << 20).unwrap().hash, h);
    }

    #[test]
    fn namespace_prefix_variants() {
        let xml = r#"<xf:html xmlns:xf="http://www.w3.org/2002/xforms" xmlns:orx="http://openrosa.org/xforms">
          <xf:head><xf:title> Prefixed </xf:title>
            <xf:model>
              <xf:submission orx:auto-send="true" xf:base64RsaPublicKey="KEY"/>
              <xf:instance>
                <household id="mysurvey" orx:version="2014083101">
                  <orx:meta><orx:instanceID/></orx:meta>
                </household>
              </xf:instance>
              <xf:bind nodeset="/household/pic" type="xsd:binary"/>
            </xf:model>
          </xf:head></xf:html>"#;
        let f = parse_xform(xml.as_bytes(), 1 << 20).unwrap();
        assert_eq!(f.xml_form_id, "mysurvey");
        assert_eq!(f.version.as_deref(), Some("2014083101"));
        assert_eq!(f.title, "Prefixed");
        assert_eq!(f.root_element, "household");
        assert_eq!(f.base64_rsa_public_key.as_deref(), Some("KEY"));
        assert_eq!(f.binary_fields, vec!["/household/pic".to_owned()]);
    }

    #[test]
    fn instance_id_bind_alone_is_enough_and_title_falls_back() {
        let xml = r#"<html><head><model><instance><r id="f" version=" "/></instance>
            <bind nodeset="/r/orx:meta/orx:instanceID" type="string"/></model></head></html>"#;
        let f = parse_xform(xml.as_bytes(), 1 << 20).unwrap();
        assert_eq!(f.title, "f");
        assert_eq!(f.version, None, "blank version means no version");
    }

    #[test]
    fn media_references() {
        let xml = r#"<h:html xmlns:h="x" xmlns:jr="j"><h:head><h:title>M</h:title><model>
            <itext><translation lang="en">
              <text id="a"><value form="image">jr://images/a.png</value>
                <value form="audio"> jr://audio/b.mp3 </value></text>
              <text id="b"><value form="video">jr://video/c.mp4</value>
                <value form="big-image">jr://images/a.png</value></text>
            </translation></itext>
            <instance><data id="m"><pic>jr://images/default.jpg</pic><meta><instanceID/></meta></data></instance>
            <instance id="towns" src="jr://file/towns.xml"/>
            <instance id="prices" src="jr://file-csv/prices.csv"/>
          </model></h:head><h:body>
            <input ref="/data/q" query="instance('x')/root/item"/>
            <select1 ref="/data/s" appearance="minimal search('fruits', 'matches', 'k', 'v')"/>
            <input ref="/data/t"><label>see jr://images/not-a-ref.png inline</label></input>
          </h:body></h:html>"#;
        let f = parse_xform(xml.as_bytes(), 1 << 20).unwrap();
        assert_eq!(
            f.media_files,
            vec![
                "a.png",
                "b.mp3",
                "c.mp4",
                "default.jpg",
                "towns.xml",
                "prices.csv",
                "itemsets.csv",
                "fruits.csv"
            ]
        );
    }

    #[test]
    fn refuses_too_large() {
        let r = parse_xform(PLAIN.as_bytes(), PLAIN.len() - 1);
        let Err(CoreError::Invalid { reason, .. }) = r else {
            panic!("expected refusal, got {r:?}");
        };
        assert!(reason.contains("bytes allowed"), "{reason}");
        assert!(parse_xform(PLAIN.as_bytes(), PLAIN.len()).is_ok());
    }

    #[test]
    fn refuses_malformed() {
        assert!(err("<h:html><h:head></h:html>").contains("not well-formed"));
        assert!(err("not xml at all").contains("not well-formed"));
        assert!(err(&PLAIN[..PLAIN.len() - 5]).contains("not well-formed"));
        assert!(err("").contains("not well-formed"));
    }

    #[test]
    fn refuses_dtd_and_xxe() {
        let xxe = r#"<?xml version="1.0"?>
<!DOCTYPE h:html [<!ENTITY xxe SYSTEM "file:///etc/passwd">]>
<h:html xmlns:h="x"><h:head><h:title>&xxe;</h:title><model><instance>
<data id="x"><meta><instanceID/></meta></data></instance></model></h:head></h:html>"#;
        assert!(err(xxe).contains("DOCTYPE"));
        let billion = r#"<!DOCTYPE lolz [<!ENTITY lol "lol"><!ENTITY lol2 "&lol;&lol;">]><lolz>&lol2;</lolz>"#;
        assert!(err(billion).contains("DOCTYPE"));
        // Without a DTD, an undeclared entity is refused rather than silently dropped.
        let undeclared = PLAIN.replace("Household survey", "&xxe;");
        assert!(err(&undeclared).contains("&xxe;"));
    }

    #[test]
    fn refuses_missing_model_instance_id() {
        assert!(err("<h:html xmlns:h='x'><h:head/></h:html>").contains("<model>"));
        assert!(err("<html><head><model/></head></html>").contains("<instance>"));
        assert!(err("<html><head><model><instance/></model></head></html>").contains("empty"));
        let no_id = PLAIN.replace(r#"id="household" "#, "");
        assert!(err(&no_id).contains("no id attribute"));
        let blank_id = PLAIN.replace(r#"id="household""#, r#"id="  ""#);
        assert!(err(&blank_id).contains("no id attribute"));
        let xls = PLAIN.replace(r#"id="household""#, r#"id="survey.XLSX""#);
        assert!(err(&xls).contains(".xlsx"));
    }

    #[test]
    fn refuses_missing_instance_id() {
        let xml = PLAIN
            .replace("<instanceID/>", "")
            .replace(r#"<bind nodeset="/data/meta/instanceID" type="string" readonly="true()" jr:preload="uid"/>"#, "");
        assert!(err(&xml).contains("meta/instanceID"));
        // instanceID outside meta does not count.
        let misplaced = r#"<html><head><model><instance><r id="f"><instanceID/></r></instance>
            </model></head></html>"#;
        assert!(err(misplaced).contains("meta/instanceID"));
    }

    #[test]
    fn utf8_bom_is_accepted_and_hashed_as_is() {
        let mut bytes = vec![0xEF, 0xBB, 0xBF];
        bytes.extend_from_slice(ENCRYPTED);
        let f = parse_xform(&bytes, 1 << 20).unwrap();
        assert_eq!(f.xml_form_id, "encrypted");
        assert_eq!(f.hash, md5_hash(&bytes));
    }

    #[test]
    fn refuses_invalid_utf8() {
        let bytes = PLAIN.replace("Household survey", "@@").into_bytes();
        assert!(parse_xform(&bytes, 1 << 20).is_ok());
        let mut bad = bytes.clone();
        let at = bad.iter().position(|b| *b == b'@').unwrap();
        bad[at] = 0xFF;
        bad[at + 1] = 0xFE;
        assert!(parse_xform(&bad, 1 << 20).is_err());
    }

    #[test]
    fn helpers() {
        assert_eq!(media_name("jr://images/sub/x.png"), Some("x.png"));
        assert_eq!(media_name("jr://images/"), None);
        assert_eq!(media_name("http://x/y.png"), None);
        assert_eq!(search_file(r#"search("a b")"#), Some("a b"));
        assert_eq!(search_file("search(x)"), None);
        assert_eq!(search_file("minimal"), None);
        assert_eq!(path_local_names("/a:b/c"), vec!["b", "c"]);
    }
}
