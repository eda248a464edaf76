//! A small, bounded XML tree for the documents a server must read (XForms, submissions).
//!
//! Forms and submissions come from untrusted devices and uploads, so the parser is strict where it
//! matters for safety: a byte cap before anything is parsed, any DOCTYPE refused (no DTD, hence no
//! entity expansion or XXE), only the five predefined entities and character references accepted,
//! and a depth cap so a deeply nested document cannot exhaust the stack. Names are reduced to their
//! local part because namespace prefixes differ between form generators (`h:`, `xf:`, `orx:`, none).

use quick_xml::events::{BytesStart, Event};
use quick_xml::{Reader, XmlVersion};

use crate::CoreError;

/// Deepest element nesting accepted; real forms nest a few dozen levels at most.
const MAX_DEPTH: usize = 256;

/// One element: local name, attributes (local name, value) without namespace declarations,
/// its own text (concatenated, untrimmed) and its child elements in document order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Element {
    pub name: String,
    pub attrs: Vec<(String, String)>,
    /// The default namespace declared on this element (`xmlns="…"`), if any.
    pub default_ns: Option<String>,
    pub text: String,
    pub children: Vec<Element>,
}

impl Element {
    /// The value of the attribute with this local name (any prefix).
    pub fn attr(&self, local: &str) -> Option<&str> {
        self.attrs
            .iter()
            .find(|(k, _)| k == local)
            .map(|(_, v)| v.as_str())
    }

    /// The first child element with this local name.
    pub fn child(&self, local: &str) -> Option<&Element> {
        self.children.iter().find(|c| c.name == local)
    }

    /// All child elements with this local name.
    pub fn children_named<'a>(&'a self, local: &'a str) -> impl Iterator<Item = &'a Element> {
        self.children.iter().filter(move |c| c.name == local)
    }

    /// The first element with this local name in a depth-first walk of the descendants.
    pub fn descendant(&self, local: &str) -> Option<&Element> {
        self.children.iter().find_map(|c| {
            if c.name == local {
                Some(c)
            } else {
                c.descendant(local)
            }
        })
    }

    /// Calls `f` on this element and every descendant, in document order.
    pub fn walk<'a>(&'a self, f: &mut impl FnMut(&'a Element)) {
        f(self);
        for c in &self.children {
            c.walk(f);
        }
    }

    /// The element's own text with surrounding whitespace removed.
    pub fn trimmed_text(&self) -> &str {
        self.text.trim()
    }
}

/// Parses `bytes` into the document element, enforcing the size cap and the safety rules above.
/// `what` names the input in error messages ("form", "submission").
pub(crate) fn parse_document(
    bytes: &[u8],
    max_bytes: usize,
    what: &'static str,
) -> Result<Element, CoreError> {
    if bytes.len() > max_bytes {
        return Err(CoreError::invalid(
            what,
            format!(
                "the file is {} bytes, more than the {max_bytes} bytes allowed",
                bytes.len()
            ),
        ));
    }
    let malformed =
        |detail: String| CoreError::invalid(what, format!("not well-formed XML: {detail}"));

    let mut reader = Reader::from_reader(bytes);
    reader.config_mut().check_end_names = true;
    let mut stack: Vec<Element> = Vec::new();
    let mut root: Option<Element> = None;

    loop {
        let event = reader
            .read_event()
            .map_err(|e| malformed(format!("{e} (near byte {})", reader.error_position())))?;
        match event {
            Event::DocType(_) => {
                return Err(CoreError::invalid(
                    what,
                    "a DOCTYPE (DTD) is not allowed; remove the <!DOCTYPE …> declaration",
                ));
            }
            Event::Start(start) => {
                if root.is_some() {
                    return Err(malformed("more than one top-level element".into()));
                }
                if stack.len() >= MAX_DEPTH {
                    return Err(CoreError::invalid(
                        what,
                        format!("elements are nested more than {MAX_DEPTH} levels deep"),
                    ));
                }
                stack.push(element_from(&start, what)?);
            }
            Event::Empty(start) => {
                if root.is_some() {
                    return Err(malformed("more than one top-level element".into()));
                }
                let el = element_from(&start, what)?;
                attach(&mut stack, &mut root, el);
            }
            Event::End(_) => match stack.pop() {
                Some(el) => attach(&mut stack, &mut root, el),
                None => return Err(malformed("closing tag without an opening tag".into())),
            },
            Event::Text(t) => {
                let s = t.decode().map_err(|e| malformed(e.to_string()))?;
                push_text(&mut stack, &s, &malformed)?;
            }
            Event::CData(t) => {
                let s = t.decode().map_err(|e| malformed(e.to_string()))?;
                push_text(&mut stack, &s, &malformed)?;
            }
            Event::GeneralRef(r) => {
                let resolved = if r.is_char_ref() {
                    match r.resolve_char_ref() {
                        Ok(Some(c)) => c.to_string(),
                        Ok(None) | Err(_) => {
                            return Err(malformed("invalid character reference".into()));
                        }
                    }
                } else {
                    let name = r.decode().map_err(|e| malformed(e.to_string()))?;
                    match &*name {
                        "lt" => "<".to_owned(),
                        "gt" => ">".to_owned(),
                        "amp" => "&".to_owned(),
                        "apos" => "'".to_owned(),
                        "quot" => "\"".to_owned(),
                        other => {
                            return Err(CoreError::invalid(
                                what,
                                format!(
                                    "the entity &{other}; is not allowed; only &lt; &gt; &amp; \
                                     &apos; &quot; and character references may be used"
                                ),
                            ));
                        }
                    }
                };
                push_text(&mut stack, &resolved, &malformed)?;
            }
            Event::Comment(_) | Event::Decl(_) | Event::PI(_) => {}
            Event::Eof => break,
        }
    }
    if !stack.is_empty() {
        return Err(malformed(
            "the document ends before all elements are closed".into(),
        ));
    }
    root.ok_or_else(|| malformed("the document has no element".into()))
}

fn element_from(start: &BytesStart<'_>, what: &'static str) -> Result<Element, CoreError> {
    let name = utf8(start.local_name().as_ref(), what)?;
    let mut el = Element {
        name,
        ..Element::default()
    };
    for attr in start.attributes() {
        let attr = attr.map_err(|e| {
            CoreError::invalid(what, format!("not well-formed XML: bad attribute: {e}"))
        })?;
        let value = attr.normalized_value(XmlVersion::default()).map_err(|e| {
            CoreError::invalid(
                what,
                format!("not well-formed XML: bad attribute value: {e}"),
            )
        })?;
        let qname = attr.key.as_ref();
        if qname == b"xmlns" {
            el.default_ns = Some(value.into_owned());
        } else if qname.starts_with(b"xmlns:") {
            // Prefix declarations are irrelevant once names are matched by local part.
        } else {
            el.attrs.push((
                utf8(attr.key.local_name().as_ref(), what)?,
                value.into_owned(),
            ));
        }
    }
    Ok(el)
}

fn utf8(bytes: &[u8], what: &'static str) -> Result<String, CoreError> {
    String::from_utf8(bytes.to_vec())
        .map_err(|_| CoreError::invalid(what, "not well-formed XML: a name is not valid UTF-8"))
}

fn attach(stack: &mut [Element], root: &mut Option<Element>, el: Element) {
    match stack.last_mut() {
        Some(parent) => parent.children.push(el),
        None => *root = Some(el),
    }
}

fn push_text(
    stack: &mut [Element],
    text: &str,
    malformed: &impl Fn(String) -> CoreError,
) -> Result<(), CoreError> {
    match stack.last_mut() {
        Some(el) => {
            el.text.push_str(text);
            Ok(())
        }
        None if text.trim().is_empty() => Ok(()),
        None => Err(malformed("text outside the top-level element".into())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> Result<Element, CoreError> {
        parse_document(s.as_bytes(), 10_000, "form")
    }

    #[test]
    fn local_names_and_entities() {
        let el = parse(
            r#"<a:r xmlns:a="u" xmlns="d" a:id="x">1 &lt; 2 &#x41;<![CDATA[<b>]]><c/></a:r>"#,
        )
        .unwrap();
        assert_eq!(el.name, "r");
        assert_eq!(el.attr("id"), Some("x"));
        assert_eq!(el.default_ns.as_deref(), Some("d"));
        assert_eq!(el.attrs.len(), 1);
        assert_eq!(el.text, "1 < 2 A<b>");
        assert_eq!(el.children.len(), 1);
    }

    #[test]
    fn refuses_doctype_unknown_entity_and_malformed() {
        assert!(parse("<!DOCTYPE r []><r/>").is_err());
        assert!(parse("<r>&foo;</r>").is_err());
        assert!(parse("<r><a></r>").is_err());
        assert!(parse("<r>").is_err());
        assert!(parse("").is_err());
        assert!(parse("<r/><s/>").is_err());
        assert!(parse("<r/>trailing").is_err());
        assert!(parse(r#"<r a="&x;"/>"#).is_err());
    }

    #[test]
    fn refuses_deep_nesting() {
        let deep = "<a>".repeat(MAX_DEPTH + 1) + &"</a>".repeat(MAX_DEPTH + 1);
        let err = parse_document(deep.as_bytes(), usize::MAX, "form").unwrap_err();
        assert!(err.to_string().contains("nested"), "{err}");
    }
}
