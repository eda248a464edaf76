//! Rewriting a published XForm for project encryption: set or remove
//! `<submission base64RsaPublicKey="…">` and give the definition a new `version`.
//!
//! Collect, KoboCollect and Enketo encrypt a submission exactly when the form they downloaded
//! carries a public key, and they only download a form again when its version or hash changes.
//! So turning encryption on (or changing the key) must produce new bytes with a new version.
//! The rewrite is textual: only the primary instance root's start tag and the `<submission>` tag
//! are regenerated; every other byte of the author's form (comments, whitespace, itext) is kept,
//! so the served form differs from the uploaded one in exactly those two places.

use quick_xml::Reader;
use quick_xml::events::{BytesStart, Event};

use crate::CoreError;

const FIELD: &str = "form";

/// Suffix marking a version produced by turning encryption on (Central uses the same shape).
const ENCRYPTED_TAG: &str = "[encrypted:";
/// Suffix marking a version produced by turning project encryption off.
const UNENCRYPTED_TAG: &str = "[unencrypted:";

/// What to change.
#[derive(Debug, Clone, Copy)]
pub struct XFormRewrite<'a> {
    /// `Some(key)`: set `base64RsaPublicKey` to this base64 SubjectPublicKeyInfo; `None`: remove it.
    pub public_key: Option<&'a str>,
    /// The new `version` attribute of the primary instance root.
    pub version: &'a str,
}

/// The version a re-versioned form gets: the author's version without any earlier
/// encryption suffix, then `[encrypted:STAMP]` or `[unencrypted:STAMP]`.
pub fn encryption_version(current: &str, encrypted: bool, stamp: &str) -> String {
    let base = strip_encryption_suffix(current);
    let tag = if encrypted {
        ENCRYPTED_TAG
    } else {
        UNENCRYPTED_TAG
    };
    format!("{base}{tag}{stamp}]")
}

/// The author's version: `current` without a suffix added by [`encryption_version`].
pub fn strip_encryption_suffix(current: &str) -> &str {
    for tag in [ENCRYPTED_TAG, UNENCRYPTED_TAG] {
        if let Some(pos) = current.rfind(tag)
            && current.ends_with(']')
        {
            return &current[..pos];
        }
    }
    current
}

/// Byte span of one tag in the source, and whether it is self-closing.
#[derive(Debug, Clone, Copy)]
struct Span {
    start: usize,
    end: usize,
}

/// Rewrites `bytes` (an XForm already accepted by `parse_xform`) as `change` says.
pub fn rewrite_xform(bytes: &[u8], change: XFormRewrite<'_>) -> Result<Vec<u8>, CoreError> {
    let malformed = |detail: String| CoreError::invalid(FIELD, format!("cannot rewrite: {detail}"));
    let mut reader = Reader::from_reader(bytes);
    reader.config_mut().check_end_names = true;

    // Local names of the open elements.
    let mut stack: Vec<String> = Vec::new();
    let mut model: Option<(Span, String)> = None; // span of the start tag, its prefix
    let mut model_depth = 0usize;
    let mut instance_seen = false;
    let mut in_primary_instance = false;
    let mut root: Option<(Span, Vec<u8>, bool)> = None;
    let mut submission: Option<(Span, Vec<u8>, bool)> = None;

    loop {
        let before = pos(reader.buffer_position());
        let event = reader.read_event().map_err(|e| malformed(format!("{e}")))?;
        let after = pos(reader.buffer_position());
        let span = Span {
            start: before,
            end: after,
        };
        match event {
            Event::Start(ref s) | Event::Empty(ref s) => {
                let empty = matches!(event, Event::Empty(_));
                let local = String::from_utf8_lossy(s.local_name().as_ref()).into_owned();
                let depth = stack.len();
                if model.is_none() && local == "model" {
                    let prefix = s
                        .name()
                        .prefix()
                        .map(|p| String::from_utf8_lossy(p.as_ref()).into_owned())
                        .unwrap_or_default();
                    model = Some((span, prefix));
                    model_depth = depth + 1;
                } else if model.is_some() && depth == model_depth {
                    if local == "instance" && !instance_seen {
                        instance_seen = true;
                        in_primary_instance = !empty;
                    } else if local == "submission" && submission.is_none() {
                        submission = Some((span, s.to_vec(), empty));
                    }
                } else if in_primary_instance && depth == model_depth + 1 && root.is_none() {
                    root = Some((span, s.to_vec(), empty));
                }
                if !empty {
                    stack.push(local);
                }
            }
            Event::End(_) => {
                let closed = stack.pop();
                if in_primary_instance
                    && stack.len() == model_depth
                    && closed.as_deref() == Some("instance")
                {
                    in_primary_instance = false;
                }
                if model.is_some() && stack.len() < model_depth {
                    // Past the end of the model: nothing more to find.
                    break;
                }
            }
            Event::DocType(_) => return Err(malformed("a DOCTYPE is not allowed".into())),
            Event::Eof => break,
            _ => {}
        }
    }
    let (model_span, prefix) = model.ok_or_else(|| malformed("the form has no <model>".into()))?;
    let (root_span, root_tag, root_empty) =
        root.ok_or_else(|| malformed("the form has no primary instance".into()))?;

    // Edits, applied back to front so earlier offsets stay valid.
    let mut edits: Vec<(usize, usize, Vec<u8>)> = Vec::new();
    edits.push((
        root_span.start,
        root_span.end,
        retag(&root_tag, root_empty, "version", Some(change.version))?,
    ));
    match (&submission, change.public_key) {
        (Some((span, tag, empty)), key) => {
            edits.push((
                span.start,
                span.end,
                retag(tag, *empty, "base64RsaPublicKey", key)?,
            ));
        }
        (None, Some(key)) => {
            let name = if prefix.is_empty() {
                "submission".to_owned()
            } else {
                format!("{prefix}:submission")
            };
            let tag = format!(
                "<{name} base64RsaPublicKey=\"{}\"/>",
                quick_xml::escape::escape(key)
            );
            edits.push((model_span.end, model_span.end, tag.into_bytes()));
        }
        (None, None) => {}
    }
    edits.sort_by_key(|e| std::cmp::Reverse(e.0));
    let mut out = bytes.to_vec();
    for (start, end, with) in edits {
        out.splice(start..end, with);
    }
    Ok(out)
}

fn pos(p: u64) -> usize {
    usize::try_from(p).unwrap_or(usize::MAX)
}

/// Regenerates a start (or empty) tag with `attr` set to `value` (or removed when `None`),
/// keeping every other attribute's raw text and order.
fn retag(raw: &[u8], empty: bool, attr: &str, value: Option<&str>) -> Result<Vec<u8>, CoreError> {
    let start = BytesStart::from_content(
        std::str::from_utf8(raw)
            .map_err(|_| CoreError::invalid(FIELD, "cannot rewrite: a tag is not UTF-8"))?,
        name_len(raw),
    );
    let mut out = Vec::with_capacity(raw.len() + value.map_or(0, str::len) + 32);
    out.push(b'<');
    out.extend_from_slice(start.name().as_ref());
    let mut replaced = false;
    for a in start.attributes().with_checks(true) {
        let a = a.map_err(|e| CoreError::invalid(FIELD, format!("cannot rewrite: {e}")))?;
        if a.key.local_name().as_ref() == attr.as_bytes() {
            if let Some(v) = value
                && !replaced
            {
                push_attr(
                    &mut out,
                    a.key.as_ref(),
                    quick_xml::escape::escape(v).as_bytes(),
                );
                replaced = true;
            }
            continue;
        }
        push_attr(&mut out, a.key.as_ref(), &a.value);
    }
    if let (Some(v), false) = (value, replaced) {
        push_attr(
            &mut out,
            attr.as_bytes(),
            quick_xml::escape::escape(v).as_bytes(),
        );
    }
    out.extend_from_slice(if empty { b"/>" } else { b">" });
    Ok(out)
}

/// Length of the element name at the start of a tag's content.
fn name_len(content: &[u8]) -> usize {
    content
        .iter()
        .position(|b| b.is_ascii_whitespace() || *b == b'/')
        .unwrap_or(content.len())
}

/// Appends ` key="value"`; a raw value that holds `"` (it was single-quoted) keeps single quotes.
fn push_attr(out: &mut Vec<u8>, key: &[u8], raw_value: &[u8]) {
    let quote = if raw_value.contains(&b'"') {
        b'\''
    } else {
        b'"'
    };
    out.push(b' ');
    out.extend_from_slice(key);
    out.push(b'=');
    out.push(quote);
    out.extend_from_slice(raw_value);
    out.push(quote);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::parse_xform;

    const FORM: &str = r#"<?xml version="1.0"?>
<h:html xmlns="http://www.w3.org/2002/xforms" xmlns:h="http://www.w3.org/1999/xhtml" xmlns:jr="http://openrosa.org/javarosa" xmlns:orx="http://openrosa.org/xforms">
  <h:head>
    <h:title>Household &amp; people</h:title>
    <model odk:xforms-version="1.0.0" xmlns:odk="http://www.opendatakit.org/xforms">
      <instance>
        <data id="household" version='2024 "one"'>
          <name/>
          <meta><instanceID/></meta>
        </data>
      </instance>
      <instance id="other"><root id="x" version="9"/></instance>
      <bind nodeset="/data/name" type="string"/>
      <bind nodeset="/data/meta/instanceID" type="string" readonly="true()" jr:preload="uid"/>
    </model>
  </h:head>
  <h:body><input ref="/data/name"><label>Name</label></input></h:body>
</h:html>"#;

    #[test]
    fn adds_a_key_and_a_version_and_keeps_everything_else() {
        let out = rewrite_xform(
            FORM.as_bytes(),
            XFormRewrite {
                public_key: Some("MIIBIjAN+/="),
                version: "v2[encrypted:0001]",
            },
        )
        .unwrap();
        let x = parse_xform(&out, 1 << 20).unwrap();
        assert_eq!(x.base64_rsa_public_key.as_deref(), Some("MIIBIjAN+/="));
        assert_eq!(x.version.as_deref(), Some("v2[encrypted:0001]"));
        assert_eq!(x.xml_form_id, "household");
        assert_eq!(x.title, "Household & people");
        let text = String::from_utf8(out).unwrap();
        // The secondary instance keeps its own version; the author's formatting survives.
        assert!(text.contains(r#"<root id="x" version="9"/>"#), "{text}");
        assert!(text.contains("<h:title>Household &amp; people</h:title>"));
        assert!(text.contains(r#"<data id="household" version="v2[encrypted:0001]">"#));
    }

    #[test]
    fn replaces_and_removes_an_existing_key() {
        let with_sub = FORM.replace(
            "<instance>",
            "<submission method=\"form-data-post\" base64RsaPublicKey=\"OLD\"/>\n      <instance>",
        );
        let out = rewrite_xform(
            with_sub.as_bytes(),
            XFormRewrite {
                public_key: Some("NEW"),
                version: "3",
            },
        )
        .unwrap();
        let text = String::from_utf8(out.clone()).unwrap();
        assert!(text.contains(r#"<submission method="form-data-post" base64RsaPublicKey="NEW"/>"#));
        assert!(!text.contains("OLD"));
        let off = rewrite_xform(
            &out,
            XFormRewrite {
                public_key: None,
                version: "4",
            },
        )
        .unwrap();
        let x = parse_xform(&off, 1 << 20).unwrap();
        assert_eq!(x.base64_rsa_public_key, None);
        assert_eq!(x.version.as_deref(), Some("4"));
        assert!(
            String::from_utf8(off)
                .unwrap()
                .contains(r#"<submission method="form-data-post"/>"#)
        );
    }

    #[test]
    fn a_prefixed_model_gets_a_prefixed_submission() {
        let form = r#"<h:html xmlns:h="http://www.w3.org/1999/xhtml" xmlns:xf="http://www.w3.org/2002/xforms"><h:head><h:title>t</h:title><xf:model><xf:instance><d id="p"><meta><instanceID/></meta></d></xf:instance></xf:model></h:head><h:body/></h:html>"#;
        let out = rewrite_xform(
            form.as_bytes(),
            XFormRewrite {
                public_key: Some("K"),
                version: "1",
            },
        )
        .unwrap();
        let text = String::from_utf8(out.clone()).unwrap();
        assert!(
            text.contains(r#"<xf:model><xf:submission base64RsaPublicKey="K"/>"#),
            "{text}"
        );
        assert!(text.contains(r#"<d id="p" version="1">"#));
        assert_eq!(
            parse_xform(&out, 1 << 20)
                .unwrap()
                .base64_rsa_public_key
                .as_deref(),
            Some("K")
        );
    }

    #[test]
    fn versions_do_not_accumulate_suffixes() {
        let v1 = encryption_version("2024", true, "a1");
        assert_eq!(v1, "2024[encrypted:a1]");
        let v2 = encryption_version(&v1, true, "b2");
        assert_eq!(v2, "2024[encrypted:b2]");
        let v3 = encryption_version(&v2, false, "c3");
        assert_eq!(v3, "2024[unencrypted:c3]");
        assert_eq!(strip_encryption_suffix(&v3), "2024");
        assert_eq!(encryption_version("", true, "z"), "[encrypted:z]");
    }

    #[test]
    fn garbage_is_refused() {
        assert!(
            rewrite_xform(
                b"<h:html><model></h:html>",
                XFormRewrite {
                    public_key: None,
                    version: "1"
                }
            )
            .is_err()
        );
        assert!(
            rewrite_xform(
                b"<a/>",
                XFormRewrite {
                    public_key: None,
                    version: "1"
                }
            )
            .is_err()
        );
    }
}
