//! A small, bounded XML tree for the documents a server must read (XForms, submissions).
//!
//! Forms and submissions come from untrusted devices and uploads, so the parser is strict where it
//! matters for safety: a byte cap before anything is parsed, any DOCTYPE refused (no DTD, hence no
//! entity expansion or XXE), only the five predefined entities and character references accepted,
//! and a depth cap so a deeply nested document cannot exhaust the stack. Names are reduced to their
//! local part because namespace prefixes differ between form generators (`h:`, `xf:`, `orx:`, none).

use std::borrow::Cow;

use quick_xml::events::{BytesRef, BytesStart, Event};
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
    let mut reader = CheckedReader::new(bytes, max_bytes, what)?;
    let mut stack: Vec<Element> = Vec::new();
    let mut root: Option<Element> = None;
    while let Some(piece) = reader.next()? {
        match piece {
            Piece::Open { start, empty } => {
                let el = element_from(&start, what)?;
                if empty {
                    attach(&mut stack, &mut root, el);
                } else {
                    stack.push(el);
                }
            }
            Piece::Close => {
                if let Some(el) = stack.pop() {
                    attach(&mut stack, &mut root, el);
                }
            }
            Piece::Text(t) => {
                if let Some(el) = stack.last_mut() {
                    el.text.push_str(&t);
                }
            }
        }
    }
    root.ok_or_else(|| reader.malformed("the document has no element".into()))
}

/// One step of a document that passed the safety rules, for readers that want no tree.
pub(crate) enum Piece<'a> {
    /// An element opens; `empty` when it also closes at once (`<x/>`).
    Open {
        /// The start tag (check its name with [`local_name`]).
        start: BytesStart<'a>,
        /// Whether it is an empty-element tag.
        empty: bool,
    },
    /// The innermost open element closes.
    Close,
    /// Text of the innermost open element, references resolved; never outside the root.
    Text(Cow<'a, str>),
}

/// quick-xml's reader with the rules above applied to every event: the tree parser and the
/// streaming CSV writer (`flatten::main_row`) accept exactly the same documents because both
/// read through this.
pub(crate) struct CheckedReader<'a> {
    reader: Reader<&'a [u8]>,
    what: &'static str,
    depth: usize,
    root_seen: bool,
}

impl<'a> CheckedReader<'a> {
    /// Refuses a document over `max_bytes` before reading any of it.
    pub(crate) fn new(
        bytes: &'a [u8],
        max_bytes: usize,
        what: &'static str,
    ) -> Result<Self, CoreError> {
        if bytes.len() > max_bytes {
            return Err(CoreError::invalid(
                what,
                format!(
                    "the file is {} bytes, more than the {max_bytes} bytes allowed",
                    bytes.len()
                ),
            ));
        }
        let mut reader = Reader::from_reader(bytes);
        reader.config_mut().check_end_names = true;
        Ok(Self {
            reader,
            what,
            depth: 0,
            root_seen: false,
        })
    }

    fn malformed(&self, detail: String) -> CoreError {
        CoreError::invalid(self.what, format!("not well-formed XML: {detail}"))
    }

    /// The next piece, `None` at the end of a whole document.
    pub(crate) fn next(&mut self) -> Result<Option<Piece<'a>>, CoreError> {
        loop {
            let event = self.reader.read_event().map_err(|e| {
                self.malformed(format!("{e} (near byte {})", self.reader.error_position()))
            })?;
            let text = match event {
                Event::DocType(_) => {
                    return Err(CoreError::invalid(
                        self.what,
                        "a DOCTYPE (DTD) is not allowed; remove the <!DOCTYPE …> declaration",
                    ));
                }
                Event::Start(start) => {
                    self.open()?;
                    if self.depth >= MAX_DEPTH {
                        return Err(CoreError::invalid(
                            self.what,
                            format!("elements are nested more than {MAX_DEPTH} levels deep"),
                        ));
                    }
                    self.depth += 1;
                    return Ok(Some(Piece::Open {
                        start,
                        empty: false,
                    }));
                }
                Event::Empty(start) => {
                    self.open()?;
                    return Ok(Some(Piece::Open { start, empty: true }));
                }
                Event::End(_) => {
                    if self.depth == 0 {
                        return Err(self.malformed("closing tag without an opening tag".into()));
                    }
                    self.depth -= 1;
                    return Ok(Some(Piece::Close));
                }
                Event::Text(t) => t.decode().map_err(|e| self.malformed(e.to_string()))?,
                Event::CData(t) => t.decode().map_err(|e| self.malformed(e.to_string()))?,
                Event::GeneralRef(r) => Cow::Owned(self.resolve(&r)?),
                Event::Comment(_) | Event::Decl(_) | Event::PI(_) => continue,
                Event::Eof => {
                    if self.depth > 0 {
                        return Err(self
                            .malformed("the document ends before all elements are closed".into()));
                    }
                    if !self.root_seen {
                        return Err(self.malformed("the document has no element".into()));
                    }
                    return Ok(None);
                }
            };
            if self.depth > 0 {
                return Ok(Some(Piece::Text(text)));
            }
            if !text.trim().is_empty() {
                return Err(self.malformed("text outside the top-level element".into()));
            }
        }
    }

    /// An element may open only inside the root, or as the root itself.
    fn open(&mut self) -> Result<(), CoreError> {
        if self.depth == 0 && self.root_seen {
            return Err(self.malformed("more than one top-level element".into()));
        }
        self.root_seen = true;
        Ok(())
    }

    /// A character reference or one of the five predefined entities; nothing else.
    fn resolve(&self, r: &BytesRef<'_>) -> Result<String, CoreError> {
        resolve_reference(r).map_err(|e| match e {
            BadReference::CharRef => self.malformed("invalid character reference".into()),
            BadReference::Undecodable(e) => self.malformed(e),
            BadReference::Entity(other) => CoreError::invalid(
                self.what,
                format!(
                    "the entity &{other}; is not allowed; only &lt; &gt; &amp; \
                     &apos; &quot; and character references may be used"
                ),
            ),
        })
    }
}

/// Why a reference was refused.
pub(crate) enum BadReference {
    /// A character reference to no character.
    CharRef,
    /// The name could not be decoded.
    Undecodable(String),
    /// An entity other than the five XML predefines (no DTD declares any here).
    Entity(String),
}

/// The text of a character reference or one of the five predefined entities.
pub(crate) fn resolve_reference(r: &BytesRef<'_>) -> Result<String, BadReference> {
    if r.is_char_ref() {
        return match r.resolve_char_ref() {
            Ok(Some(c)) => Ok(c.to_string()),
            Ok(None) | Err(_) => Err(BadReference::CharRef),
        };
    }
    let name = r
        .decode()
        .map_err(|e| BadReference::Undecodable(e.to_string()))?;
    Ok(match &*name {
        "lt" => "<",
        "gt" => ">",
        "amp" => "&",
        "apos" => "'",
        "quot" => "\"",
        other => return Err(BadReference::Entity(other.to_owned())),
    }
    .to_owned())
}

/// The element's local name, which must be UTF-8.
pub(crate) fn local_name<'s>(
    start: &'s BytesStart<'_>,
    what: &'static str,
) -> Result<&'s str, CoreError> {
    std::str::from_utf8(start.local_name().into_inner())
        .map_err(|_| CoreError::invalid(what, "not well-formed XML: a name is not valid UTF-8"))
}

/// Calls `f` with each attribute's qualified name, local name and normalized value; refuses a
/// malformed attribute. Readers that keep no attributes still call this, so they refuse what the
/// tree parser refuses.
pub(crate) fn attributes(
    start: &BytesStart<'_>,
    what: &'static str,
    mut f: impl FnMut(&[u8], &str, Cow<'_, str>) -> Result<(), CoreError>,
) -> Result<(), CoreError> {
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
        let local = std::str::from_utf8(attr.key.local_name().into_inner()).map_err(|_| {
            CoreError::invalid(what, "not well-formed XML: a name is not valid UTF-8")
        })?;
        f(attr.key.as_ref(), local, value)?;
    }
    Ok(())
}

fn element_from(start: &BytesStart<'_>, what: &'static str) -> Result<Element, CoreError> {
    let mut el = Element {
        name: local_name(start, what)?.to_owned(),
        ..Element::default()
    };
    attributes(start, what, |qname, local, value| {
        if qname == b"xmlns" {
            el.default_ns = Some(value.into_owned());
        } else if !qname.starts_with(b"xmlns:") {
            // Prefix declarations are irrelevant once names are matched by local part.
            el.attrs.push((local.to_owned(), value.into_owned()));
        }
        Ok(())
    })?;
    Ok(el)
}

fn attach(stack: &mut [Element], root: &mut Option<Element>, el: Element) {
    match stack.last_mut() {
        Some(parent) => parent.children.push(el),
        None => *root = Some(el),
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
