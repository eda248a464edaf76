//! OData rows of a submission, as ODK Central shapes them (specs/central-api.md §7): the
//! `Submissions` row with nested groups and navigation links for repeats, and the rows of each
//! repeat table with their `__id` (SHA-1 of the row's place) and the parent's join key.
//!
//! Values are typed from the form: `int` → integer, `decimal` → number, `boolean` → boolean,
//! geopoint / geotrace / geoshape → GeoJSON (or WKT text with `$wkt=true`), everything else a
//! string; an unanswered field is `null`. Fields the form does not declare are not part of the
//! OData model and are left out (the CSV and JSON exports keep them).

use serde_json::{Map, Number, Value, json};
use sha1::{Digest, Sha1};

use crate::flatten::{Instance, parse_point};
use crate::schema::{FieldType, FormSchema, Node, NodeKind};
use crate::xml::Element;

/// One entity set: its OData name (`Submissions`, `Submissions.hh.member`) and the repeat's path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Table {
    /// The entity set name.
    pub name: String,
    /// Path of the repeat below the root (empty for `Submissions`).
    pub path: Vec<String>,
}

/// Every entity set of a form, `Submissions` first, repeats outer before inner.
pub fn tables(schema: &FormSchema) -> Vec<Table> {
    let mut out = vec![Table {
        name: "Submissions".into(),
        path: Vec::new(),
    }];
    for r in schema.repeats() {
        out.push(Table {
            name: format!("Submissions.{}", r.path.join(".")),
            path: r.path.clone(),
        });
    }
    out
}

/// The join-key property of a repeat table: `__Submissions-id` for a top-level repeat,
/// `__Submissions-<parent repeat path dash-joined>-id` inside another repeat.
pub fn parent_key_name(schema: &FormSchema, path: &[String]) -> String {
    match enclosing_repeat(schema, path) {
        Some(parent) => format!("__Submissions-{}-id", parent.join("-")),
        None => "__Submissions-id".into(),
    }
}

/// The path of the nearest repeat strictly enclosing `path`, if any.
fn enclosing_repeat(schema: &FormSchema, path: &[String]) -> Option<Vec<String>> {
    (1..path.len())
        .rev()
        .map(|n| path.get(..n).unwrap_or_default())
        .find(|p| schema.node(p).is_some_and(Node::is_repeat))
        .map(<[String]>::to_vec)
}

/// Central's repeat-row id: hex SHA-1 of the parts joined with `%%`.
pub fn row_id(parts: &[String]) -> String {
    let digest = Sha1::digest(parts.join("%%").as_bytes());
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

/// Percent-encodes an instance id for a navigation link (`uuid:x` → `uuid%3Ax`).
fn encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// The `Submissions` row. `system` is the `__system` object; `inst` is `None` for a submission
/// the server cannot read (ODK-encrypted), whose row has only `__id` and `__system`.
pub fn root_row(
    schema: &FormSchema,
    instance_id: &str,
    system: Value,
    inst: Option<&Instance>,
    wkt: bool,
) -> Map<String, Value> {
    let mut row = Map::new();
    row.insert("__id".into(), Value::String(instance_id.to_owned()));
    row.insert("__system".into(), system);
    if let Some(inst) = inst {
        let link = format!("Submissions('{}')", encode(instance_id));
        fields(&schema.children, Some(inst.root()), &link, wkt, &mut row);
    }
    row
}

/// Field values of the nodes `nodes` under element `el` into `out`; `link` is the navigation
/// path of the enclosing entity (for repeat links).
fn fields(
    nodes: &[Node],
    el: Option<&Element>,
    link: &str,
    wkt: bool,
    out: &mut Map<String, Value>,
) {
    for n in nodes {
        let child = el.and_then(|e| e.child(&n.name));
        match &n.kind {
            NodeKind::Field { ty, .. } => {
                let text = child
                    .filter(|c| c.children.is_empty())
                    .map(Element::trimmed_text)
                    .filter(|t| !t.is_empty());
                out.insert(
                    n.name.clone(),
                    text.map_or(Value::Null, |t| value(ty, t, wkt)),
                );
            }
            NodeKind::Group(c) => {
                let mut obj = Map::new();
                fields(c, child, &format!("{link}/{}", n.name), wkt, &mut obj);
                out.insert(n.name.clone(), Value::Object(obj));
            }
            NodeKind::Repeat(_) => {
                out.insert(
                    format!("{}@odata.navigationLink", n.name),
                    Value::String(format!("{link}/{}", n.name)),
                );
            }
        }
    }
}

/// A typed OData value.
pub fn value(ty: &FieldType, text: &str, wkt: bool) -> Value {
    match ty {
        FieldType::Int => text
            .parse::<i64>()
            .map(|n| Value::Number(n.into()))
            .unwrap_or_else(|_| Value::String(text.to_owned())),
        FieldType::Decimal => text
            .parse::<f64>()
            .ok()
            .and_then(Number::from_f64)
            .map_or_else(|| Value::String(text.to_owned()), Value::Number),
        FieldType::Boolean => match text {
            "true" | "1" => Value::Bool(true),
            "false" | "0" => Value::Bool(false),
            _ => Value::String(text.to_owned()),
        },
        FieldType::DateTime => Value::String(fix_offset(text)),
        FieldType::Geopoint => {
            geo_point(text, wkt).unwrap_or_else(|| Value::String(text.to_owned()))
        }
        FieldType::Geotrace | FieldType::Geoshape => {
            geo_line(text, *ty == FieldType::Geoshape, wkt)
                .unwrap_or_else(|| Value::String(text.to_owned()))
        }
        _ => Value::String(text.to_owned()),
    }
}

/// `…+03` → `…+03:00` (Central rewrites short offsets).
fn fix_offset(text: &str) -> String {
    let bytes = text.as_bytes();
    let n = bytes.len();
    if n > 3
        && matches!(bytes.get(n - 3), Some(b'+' | b'-'))
        && bytes
            .get(n - 2..)
            .is_some_and(|d| d.iter().all(u8::is_ascii_digit))
        && text.contains('T')
    {
        format!("{text}:00")
    } else {
        text.to_owned()
    }
}

fn coords(p: &[f64]) -> Vec<Value> {
    // GeoJSON order: longitude, latitude, altitude.
    let mut c = vec![json!(p.get(1)), json!(p.first())];
    if let Some(alt) = p.get(2) {
        c.push(json!(alt));
    }
    c
}

/// WKT coordinates: `lon lat [alt]`, numbers as Rust prints them (`1650`, `36.8`).
fn wkt_coords(p: &[f64]) -> String {
    let mut c: Vec<String> = [p.get(1), p.first()]
        .into_iter()
        .flatten()
        .map(ToString::to_string)
        .collect();
    if let Some(alt) = p.get(2) {
        c.push(alt.to_string());
    }
    c.join(" ")
}

fn geo_point(text: &str, wkt: bool) -> Option<Value> {
    let p = parse_point(text)?;
    if wkt {
        return Some(Value::String(format!("POINT ({})", wkt_coords(&p))));
    }
    let mut v = json!({"type": "Point", "coordinates": coords(&p)});
    if let (Some(acc), Some(obj)) = (p.get(3), v.as_object_mut()) {
        obj.insert("properties".into(), json!({"accuracy": acc}));
    }
    Some(v)
}

fn geo_line(text: &str, polygon: bool, wkt: bool) -> Option<Value> {
    let points: Vec<Vec<f64>> = text
        .split(';')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(parse_point)
        .collect::<Option<_>>()?;
    if points.is_empty() {
        return None;
    }
    let cs: Vec<Value> = points.iter().map(|p| Value::Array(coords(p))).collect();
    if wkt {
        let list: Vec<String> = points.iter().map(|p| wkt_coords(p)).collect();
        return Some(Value::String(if polygon {
            format!("POLYGON (({}))", list.join(", "))
        } else {
            format!("LINESTRING ({})", list.join(", "))
        }));
    }
    let accuracies: Vec<Value> = points.iter().map(|p| json!(p.get(3))).collect();
    let mut v = if polygon {
        json!({"type": "Polygon", "coordinates": [cs]})
    } else {
        json!({"type": "LineString", "coordinates": cs})
    };
    if points.iter().any(|p| p.len() > 3)
        && let Some(obj) = v.as_object_mut()
    {
        obj.insert("properties".into(), json!({"accuracies": accuracies}));
    }
    Some(v)
}

/// Every row of the repeat table at `table` for one submission, in document order.
pub fn repeat_rows(
    schema: &FormSchema,
    table: &[String],
    instance_id: &str,
    inst: &Instance,
    wkt: bool,
    out: &mut impl FnMut(Map<String, Value>),
) {
    let key_name = parent_key_name(schema, table);
    let mut ctx = RepeatWalk {
        table,
        key_name: &key_name,
        wkt,
        out,
    };
    ctx.walk(
        &schema.children,
        inst.root(),
        &mut Vec::new(),
        &mut vec![format!("Submissions#{instance_id}")],
        instance_id,
        &format!("Submissions('{}')", encode(instance_id)),
    );
}

struct RepeatWalk<'a, F> {
    table: &'a [String],
    key_name: &'a str,
    wkt: bool,
    out: &'a mut F,
}

impl<F: FnMut(Map<String, Value>)> RepeatWalk<'_, F> {
    /// `path`: element path so far; `parts`: id parts so far; `parent_id`: the join key of the
    /// nearest enclosing entity; `link`: its navigation path.
    fn walk(
        &mut self,
        nodes: &[Node],
        el: &Element,
        path: &mut Vec<String>,
        parts: &mut Vec<String>,
        parent_id: &str,
        link: &str,
    ) {
        for n in nodes {
            path.push(n.name.clone());
            let on_way = self.table.starts_with(path);
            if on_way {
                match &n.kind {
                    NodeKind::Group(c) => {
                        if let Some(child) = el.child(&n.name) {
                            parts.push(format!("{}#", n.name));
                            let l = format!("{link}/{}", n.name);
                            self.walk(c, child, path, parts, parent_id, &l);
                            parts.pop();
                        }
                    }
                    NodeKind::Repeat(c) => {
                        for (i, item) in el.children_named(&n.name).enumerate() {
                            parts.push(format!("{}#{i}", n.name));
                            let id = row_id(parts);
                            let l = format!("{link}/{}('{id}')", n.name);
                            if path.as_slice() == self.table {
                                let mut row = Map::new();
                                row.insert("__id".into(), Value::String(id.clone()));
                                let own_link = l.clone();
                                fields(c, Some(item), &own_link, self.wkt, &mut row);
                                row.insert(
                                    self.key_name.to_owned(),
                                    Value::String(parent_id.to_owned()),
                                );
                                (self.out)(row);
                            } else {
                                self.walk(c, item, path, parts, &id, &l);
                            }
                            parts.pop();
                        }
                    }
                    NodeKind::Field { .. } => {}
                }
            }
            path.pop();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::flatten::parse_instance;
    use crate::schema::parse_schema;

    const CENSUS: &[u8] = include_bytes!("../testdata/pyxform-census.xml");

    #[test]
    fn central_row_id_vector() {
        // specs/central-api.md §7, checked against Central's own test vectors.
        let parts = vec![
            "Submissions#rtwo".to_owned(),
            "children#".to_owned(),
            "child#0".to_owned(),
        ];
        assert_eq!(row_id(&parts), "52eff9ea82550183880b9d64c20487642fa6e60c");
    }

    #[test]
    fn rows_of_census() {
        let s = parse_schema(CENSUS, 1 << 20).unwrap();
        let names: Vec<String> = tables(&s).into_iter().map(|t| t.name).collect();
        assert_eq!(
            names,
            vec![
                "Submissions",
                "Submissions.hh.member",
                "Submissions.hh.member.visit_log"
            ]
        );
        let visit = vec!["hh".to_owned(), "member".to_owned(), "visit_log".to_owned()];
        assert_eq!(parent_key_name(&s, &visit), "__Submissions-hh-member-id");
        assert_eq!(parent_key_name(&s, &visit[..2]), "__Submissions-id");
        let xml = r#"<data id="census"><name>A</name><age>4</age><income>2.5</income>
          <hh><location>-1.28 36.8 1650 4.5</location><member><mname>M</mname><mage>x</mage>
          <visit_log><vdate>2026-01-01</vdate></visit_log></member></hh>
          <meta><instanceID>uuid:1</instanceID></meta></data>"#;
        let inst = parse_instance(xml.as_bytes(), 1 << 20).unwrap();
        let row = root_row(&s, "uuid:1", json!({}), Some(&inst), false);
        assert_eq!(row["age"], json!(4));
        assert_eq!(row["income"], json!(2.5));
        assert_eq!(row["visit"], Value::Null);
        assert_eq!(
            row["hh"]["location"],
            json!({"type": "Point", "coordinates": [36.8, -1.28, 1650.0], "properties": {"accuracy": 4.5}})
        );
        assert_eq!(
            row["hh"]["member@odata.navigationLink"],
            json!("Submissions('uuid%3A1')/hh/member")
        );
        assert_eq!(row["meta"]["instanceID"], json!("uuid:1"));
        let keys: Vec<&String> = row.keys().collect();
        assert_eq!(keys[0], "__id");
        assert_eq!(keys[1], "__system");
        let wkt = root_row(&s, "uuid:1", json!({}), Some(&inst), true);
        assert_eq!(wkt["hh"]["location"], json!("POINT (36.8 -1.28 1650)"));
        let enc = root_row(&s, "uuid:1", json!({}), None, false);
        assert_eq!(enc.len(), 2);

        let mut members = Vec::new();
        repeat_rows(&s, &visit[..2], "uuid:1", &inst, false, &mut |r| {
            members.push(r)
        });
        assert_eq!(members.len(), 1);
        let mid = row_id(&["Submissions#uuid:1".into(), "hh#".into(), "member#0".into()]);
        assert_eq!(members[0]["__id"], json!(mid));
        assert_eq!(members[0]["__Submissions-id"], json!("uuid:1"));
        assert_eq!(members[0]["mage"], json!("x"));
        assert_eq!(
            members[0]["visit_log@odata.navigationLink"],
            json!(format!(
                "Submissions('uuid%3A1')/hh/member('{mid}')/visit_log"
            ))
        );
        let mut visits = Vec::new();
        repeat_rows(&s, &visit, "uuid:1", &inst, false, &mut |r| visits.push(r));
        assert_eq!(visits.len(), 1);
        assert_eq!(visits[0]["__Submissions-hh-member-id"], json!(mid));
        assert_eq!(visits[0]["vdate"], json!("2026-01-01"));
    }

    #[test]
    fn values() {
        assert_eq!(
            value(&FieldType::DateTime, "2026-01-01T10:00:00.000+03", false),
            json!("2026-01-01T10:00:00.000+03:00")
        );
        assert_eq!(
            value(&FieldType::Geotrace, "1 2 3 4; 5 6 7 8", false),
            json!({"type": "LineString", "coordinates": [[2.0, 1.0, 3.0], [6.0, 5.0, 7.0]],
                   "properties": {"accuracies": [4.0, 8.0]}})
        );
        assert_eq!(
            value(&FieldType::Geoshape, "1 2;3 4;1 2", true),
            json!("POLYGON ((2 1, 4 3, 2 1))")
        );
        assert_eq!(value(&FieldType::Boolean, "true", false), json!(true));
        assert_eq!(value(&FieldType::Geopoint, "bad", false), json!("bad"));
        assert_eq!(encode("uuid:a b"), "uuid%3Aa%20b");
    }
}
