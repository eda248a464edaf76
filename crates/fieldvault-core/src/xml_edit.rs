//! Changing leaf values of a submission document while keeping everything else byte for byte
//! (namespace prefixes, attributes, order, whitespace): bulk edits set answers, redaction
//! replaces them.
//!
//! Paths are the element local names below the root (`["grp", "q"]` for `/data/grp/q`), repeat
//! instances included (every instance of a repeated element matches its path). The reader has the
//! same safety rules as the document parser: a byte cap, no DOCTYPE, only predefined entities,
//! bounded nesting.

use quick_xml::Reader;
use quick_xml::Writer;
use quick_xml::events::{BytesEnd, BytesStart, BytesText, Event};

use crate::CoreError;

/// Deepest nesting accepted (as the document parser).
const MAX_DEPTH: usize = 256;

/// Replaces the text of every leaf at one of `paths` that holds a non-empty value, by
/// `replace(path, old_value)`. Returns the new document and the values that were replaced.
pub fn replace_leaves(
    xml: &[u8],
    max_bytes: usize,
    paths: &[Vec<String>],
    replace: &mut dyn FnMut(&[String], &str) -> String,
) -> Result<(Vec<u8>, Vec<String>), CoreError> {
    let mut replaced = Vec::new();
    let out = edit(
        xml,
        max_bytes,
        &|p| paths.iter().any(|t| t.as_slice() == p),
        &mut |p, old| {
            if old.trim().is_empty() {
                return None;
            }
            replaced.push(old.to_owned());
            Some(replace(p, old))
        },
        &[],
    )?;
    Ok((out, replaced))
}

/// Sets the leaves at the given paths to the given values, creating elements (and the groups
/// leading to them) that the document lacks, at the end of their parent.
pub fn set_leaves(
    xml: &[u8],
    max_bytes: usize,
    values: &[(Vec<String>, String)],
) -> Result<Vec<u8>, CoreError> {
    for (p, _) in values {
        if p.is_empty() || p.iter().any(|s| !valid_name(s)) {
            return Err(CoreError::invalid(
                "data",
                format!("{:?} is not a valid field path", p.join("/")),
            ));
        }
    }
    edit(
        xml,
        max_bytes,
        &|p| values.iter().any(|(t, _)| t.as_slice() == p),
        &mut |p, _| {
            values
                .iter()
                .find(|(t, _)| t.as_slice() == p)
                .map(|(_, v)| v.clone())
        },
        values,
    )
}

/// An XML name this module will create: letters, digits, `_ - .`, not starting with a digit,
/// `-` or `.`, no prefix.
fn valid_name(s: &str) -> bool {
    let mut chars = s.chars();
    chars.next().is_some_and(|c| c.is_alphabetic() || c == '_')
        && chars.all(|c| c.is_alphanumeric() || matches!(c, '_' | '-' | '.'))
}

struct Open {
    name: String,
    children: Vec<String>,
}

/// The one pass behind both functions. `target(path)` says which elements are leaves to offer to
/// `decide(path, text)`, which returns the new text (or `None` to keep the element as it is).
/// `inserts` are written at the end of their parent when that parent lacks them.
fn edit(
    xml: &[u8],
    max_bytes: usize,
    target: &dyn Fn(&[String]) -> bool,
    decide: &mut dyn FnMut(&[String], &str) -> Option<String>,
    inserts: &[(Vec<String>, String)],
) -> Result<Vec<u8>, CoreError> {
    const WHAT: &str = "submission";
    if xml.len() > max_bytes {
        return Err(CoreError::invalid(
            WHAT,
            format!("the document is more than {max_bytes} bytes"),
        ));
    }
    let malformed = |d: String| CoreError::invalid(WHAT, format!("not well-formed XML: {d}"));
    let io = |e: std::io::Error| CoreError::invalid(WHAT, format!("cannot write XML: {e}"));
    let mut reader = Reader::from_reader(xml);
    reader.config_mut().check_end_names = true;
    let mut w = Writer::new(Vec::with_capacity(xml.len() + 256));
    let mut stack: Vec<Open> = Vec::new();
    // While inside a target leaf: its start tag, the buffered events and the decoded text.
    let mut capture: Option<(BytesStart<'static>, Vec<Event<'static>>, String, bool)> = None;

    loop {
        let event = reader
            .read_event()
            .map_err(|e| malformed(format!("{e} (near byte {})", reader.error_position())))?;
        if let Some((_, buffered, text, nested)) = capture.as_mut() {
            match &event {
                Event::End(_) if !*nested || buffered_depth(buffered) == 0 => {
                    let Some((start, buffered, text, nested)) = capture.take() else {
                        continue;
                    };
                    let path = path_of(&stack);
                    let new = if nested {
                        None
                    } else {
                        decide(&path[..], &text)
                    };
                    stack.pop();
                    match new {
                        Some(value) => {
                            w.write_event(Event::Start(start.borrow())).map_err(io)?;
                            w.write_event(Event::Text(BytesText::new(&value)))
                                .map_err(io)?;
                        }
                        None => {
                            w.write_event(Event::Start(start.borrow())).map_err(io)?;
                            for e in buffered {
                                w.write_event(e).map_err(io)?;
                            }
                        }
                    }
                    w.write_event(event.into_owned()).map_err(io)?;
                    continue;
                }
                Event::Start(_) => *nested = true,
                Event::Text(t) => text.push_str(&t.decode().map_err(|e| malformed(e.to_string()))?),
                Event::CData(t) => {
                    text.push_str(&t.decode().map_err(|e| malformed(e.to_string()))?)
                }
                Event::GeneralRef(r) => text.push_str(&resolve(r, &malformed)?),
                Event::DocType(_) => return Err(doctype()),
                Event::Eof => return Err(malformed("the document ends inside an element".into())),
                _ => {}
            }
            buffered.push(event.into_owned());
            continue;
        }
        match event {
            Event::DocType(_) => return Err(doctype()),
            Event::Start(start) => {
                if stack.len() >= MAX_DEPTH {
                    return Err(malformed(format!("nested more than {MAX_DEPTH} levels")));
                }
                let name = local(&start, &malformed)?;
                if let Some(parent) = stack.last_mut() {
                    parent.children.push(name.clone());
                }
                stack.push(Open {
                    name,
                    children: Vec::new(),
                });
                let path = path_of(&stack);
                if stack.len() > 1 && target(&path) {
                    capture = Some((start.into_owned(), Vec::new(), String::new(), false));
                } else {
                    w.write_event(Event::Start(start)).map_err(io)?;
                }
            }
            Event::Empty(start) => {
                let name = local(&start, &malformed)?;
                if let Some(parent) = stack.last_mut() {
                    parent.children.push(name.clone());
                }
                let mut path = path_of(&stack);
                path.push(name);
                let new = if !stack.is_empty() && target(&path) {
                    decide(&path, "")
                } else {
                    None
                };
                match new {
                    Some(value) => {
                        let end = start.to_end().into_owned();
                        w.write_event(Event::Start(start)).map_err(io)?;
                        w.write_event(Event::Text(BytesText::new(&value)))
                            .map_err(io)?;
                        w.write_event(Event::End(end)).map_err(io)?;
                    }
                    None => w.write_event(Event::Empty(start)).map_err(io)?,
                }
            }
            Event::End(end) => {
                let path = path_of(&stack);
                if let Some(open) = stack.last() {
                    let missing: Vec<(&[String], &str)> = inserts
                        .iter()
                        .filter(|(p, _)| {
                            p.len() > path.len()
                                && p.starts_with(&path)
                                && !open.children.contains(&p[path.len()])
                        })
                        .map(|(p, v)| (&p[path.len()..], v.as_str()))
                        .collect();
                    write_new(&mut w, &missing).map_err(io)?;
                }
                stack.pop();
                w.write_event(Event::End(end)).map_err(io)?;
            }
            Event::Eof => break,
            other => w.write_event(other).map_err(io)?,
        }
    }
    if !stack.is_empty() {
        return Err(malformed(
            "the document ends before all elements are closed".into(),
        ));
    }
    Ok(w.into_inner())
}

/// Depth of open elements inside a buffered capture (0 when back at the captured level).
fn buffered_depth(events: &[Event<'static>]) -> i64 {
    events.iter().fold(0, |d, e| match e {
        Event::Start(_) => d + 1,
        Event::End(_) => d - 1,
        _ => d,
    })
}

/// Writes new elements for relative paths, grouping those that share a first segment.
fn write_new(w: &mut Writer<Vec<u8>>, items: &[(&[String], &str)]) -> std::io::Result<()> {
    let mut done: Vec<&str> = Vec::new();
    for (p, v) in items {
        let Some(first) = p.first() else { continue };
        if done.contains(&first.as_str()) {
            continue;
        }
        done.push(first);
        w.write_event(Event::Start(BytesStart::new(first.as_str())))?;
        if p.len() == 1 {
            w.write_event(Event::Text(BytesText::new(v)))?;
        } else {
            let inner: Vec<(&[String], &str)> = items
                .iter()
                .filter(|(q, _)| q.len() > 1 && q.first() == Some(first))
                .map(|(q, v)| (&q[1..], *v))
                .collect();
            write_new(w, &inner)?;
        }
        w.write_event(Event::End(BytesEnd::new(first.as_str())))?;
    }
    Ok(())
}

fn path_of(stack: &[Open]) -> Vec<String> {
    stack.iter().skip(1).map(|o| o.name.clone()).collect()
}

fn local(
    start: &BytesStart<'_>,
    malformed: &dyn Fn(String) -> CoreError,
) -> Result<String, CoreError> {
    std::str::from_utf8(start.local_name().as_ref())
        .map(str::to_owned)
        .map_err(|_| malformed("an element name is not UTF-8".into()))
}

fn resolve(
    r: &quick_xml::events::BytesRef<'_>,
    malformed: &dyn Fn(String) -> CoreError,
) -> Result<String, CoreError> {
    crate::xml::resolve_reference(r).map_err(|e| match e {
        crate::xml::BadReference::CharRef => malformed("invalid character reference".into()),
        crate::xml::BadReference::Undecodable(e) => malformed(e),
        crate::xml::BadReference::Entity(other) => {
            malformed(format!("the entity &{other}; is not allowed"))
        }
    })
}

fn doctype() -> CoreError {
    CoreError::invalid("submission", "a DOCTYPE (DTD) is not allowed")
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn p(s: &str) -> Vec<String> {
        s.split('/').map(str::to_owned).collect()
    }

    const DOC: &str = r#"<?xml version="1.0"?><data xmlns:orx="http://openrosa.org/xforms" id="f" version="1"><name>Ana &amp; Bo</name><grp><age>30</age><note/></grp><rep><who>x1</who></rep><rep><who>x2</who></rep><orx:meta><orx:instanceID>uuid:1</orx:instanceID></orx:meta></data>"#;

    #[test]
    fn replaces_values_everywhere_keeping_the_rest() {
        let (out, old) = replace_leaves(
            DOC.as_bytes(),
            1 << 20,
            &[p("name"), p("rep/who"), p("grp/note")],
            &mut |_, v| format!("H({})", v.len()),
        )
        .unwrap();
        let out = String::from_utf8(out).unwrap();
        assert_eq!(old, vec!["Ana & Bo", "x1", "x2"]);
        assert!(out.contains("<name>H(8)</name>"), "{out}");
        assert!(out.contains("<rep><who>H(2)</who></rep><rep><who>H(2)</who></rep>"));
        assert!(out.contains("<note/>"), "empty leaves stay empty: {out}");
        assert!(out.contains("<orx:meta><orx:instanceID>uuid:1</orx:instanceID></orx:meta>"));
        assert!(out.starts_with(r#"<?xml version="1.0"?><data xmlns:orx="#));
        assert!(!out.contains("Ana"));
    }

    #[test]
    fn sets_existing_empty_and_missing_leaves() {
        let out = set_leaves(
            DOC.as_bytes(),
            1 << 20,
            &[
                (p("grp/age"), "31".into()),
                (p("grp/note"), "a<b".into()),
                (p("grp/extra"), "e".into()),
                (p("newgrp/deep/q"), "n".into()),
                (p("meta/instanceID"), "uuid:2".into()),
                (p("meta/deprecatedID"), "uuid:1".into()),
            ],
        )
        .unwrap();
        let out = String::from_utf8(out).unwrap();
        assert!(
            out.contains("<grp><age>31</age><note>a&lt;b</note><extra>e</extra></grp>"),
            "{out}"
        );
        assert!(
            out.contains("<newgrp><deep><q>n</q></deep></newgrp>"),
            "{out}"
        );
        assert!(
            out.contains("<orx:meta><orx:instanceID>uuid:2</orx:instanceID><deprecatedID>uuid:1</deprecatedID></orx:meta>"),
            "{out}"
        );
    }

    #[test]
    fn refuses_bad_input() {
        assert!(set_leaves(b"<!DOCTYPE x><data/>", 100, &[(p("a"), "1".into())]).is_err());
        assert!(set_leaves(b"<data><a></data>", 100, &[(p("a"), "1".into())]).is_err());
        assert!(set_leaves(DOC.as_bytes(), 10, &[(p("a"), "1".into())]).is_err());
        assert!(set_leaves(DOC.as_bytes(), 1 << 20, &[(p("a b"), "1".into())]).is_err());
        assert!(set_leaves(DOC.as_bytes(), 1 << 20, &[(vec![], "1".into())]).is_err());
    }
}
