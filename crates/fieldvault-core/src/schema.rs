//! A form's field tree: what the data API, exports and `fieldvault decrypt` need to turn a
//! submission into rows and typed values.
//!
//! The tree comes from the primary instance (structure and document order), the `<bind>`s (XForms
//! types) and the body (labels, select controls, choices and which groups are `<repeat>`s). Labels
//! come from inline `<label>` text or from `itext` translations, one entry per language. Choices come
//! from inline `<item>`s or from a simple `itemset` over a secondary instance (what pyxform writes).
//! The reader is bounded like the other parsers: the XML reader caps size and nesting, and this
//! module caps the number of nodes and the tree depth.

use std::collections::HashMap;

use crate::CoreError;
use crate::xml::{Element, parse_document};

/// The error field name for refusals of a form definition.
const FIELD: &str = "form";
/// Most nodes (fields + groups + repeats) a form may have.
pub const MAX_NODES: usize = 20_000;
/// Deepest group / repeat nesting accepted below the root.
pub const MAX_TREE_DEPTH: usize = 64;
/// Most choices read from one select.
pub const MAX_CHOICES: usize = 10_000;

/// A form's field tree.
#[derive(Debug, Clone, PartialEq)]
pub struct FormSchema {
    /// Local name of the primary instance root (`data` for pyxform forms).
    pub root: String,
    /// The form id (root `id`).
    pub xml_form_id: String,
    /// The root's `version`, if any.
    pub version: Option<String>,
    /// itext languages in document order, the default one first; empty for forms without itext.
    pub languages: Vec<String>,
    /// Top-level nodes in document order.
    pub children: Vec<Node>,
}

/// One node of the tree: a field, a group or a repeat.
#[derive(Debug, Clone, PartialEq)]
pub struct Node {
    /// The element's local name.
    pub name: String,
    /// Segments below the root: `/data/hh/member/mname` → `["hh", "member", "mname"]`.
    pub path: Vec<String>,
    /// Labels by language (`None`: a label without language, i.e. inline text).
    pub labels: Vec<Label>,
    /// What kind of node this is.
    pub kind: NodeKind,
}

/// A label text in one language.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Label {
    /// The itext language; `None` for an inline label.
    pub lang: Option<String>,
    /// The text.
    pub text: String,
}

/// Field, group or repeat.
#[derive(Debug, Clone, PartialEq)]
pub enum NodeKind {
    /// A leaf holding one value.
    Field {
        /// Its XForms type.
        ty: FieldType,
        /// Choices of a select (empty otherwise or when they come from a file).
        choices: Vec<Choice>,
    },
    /// A non-repeating group.
    Group(Vec<Node>),
    /// A repeat: its instances become an array (JSON) or rows of their own table (CSV, OData).
    Repeat(Vec<Node>),
}

/// One choice of a select.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Choice {
    /// The stored value (the XLSForm choice `name`).
    pub value: String,
    /// Labels by language.
    pub labels: Vec<Label>,
}

/// XForms data types (`<bind type=…>`), refined by the body control (`select`, `select1`, `upload`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FieldType {
    /// `string` (also the default when a bind has no type).
    String,
    /// `int` / `integer`.
    Int,
    /// `decimal`.
    Decimal,
    /// `boolean`.
    Boolean,
    /// `date`.
    Date,
    /// `dateTime`.
    DateTime,
    /// `time`.
    Time,
    /// `geopoint`: `lat lon alt acc`.
    Geopoint,
    /// `geotrace`: points separated by `;`.
    Geotrace,
    /// `geoshape`: a closed geotrace.
    Geoshape,
    /// `select1`: one choice.
    Select1,
    /// `select`: several choices, space-separated.
    Select,
    /// `binary`: the value names an attachment.
    Binary,
    /// `barcode`.
    Barcode,
    /// Any other type, as written (local name).
    Other(String),
}

impl FieldType {
    /// The type named by a bind's `type` attribute (any prefix, e.g. `xsd:int`).
    pub fn from_bind(ty: &str) -> Self {
        match ty.rsplit(':').next().unwrap_or(ty).trim() {
            "" | "string" => Self::String,
            "int" | "integer" | "long" | "short" => Self::Int,
            "decimal" | "double" | "float" => Self::Decimal,
            "boolean" => Self::Boolean,
            "date" => Self::Date,
            "dateTime" => Self::DateTime,
            "time" => Self::Time,
            "geopoint" => Self::Geopoint,
            "geotrace" => Self::Geotrace,
            "geoshape" => Self::Geoshape,
            "select1" => Self::Select1,
            "select" => Self::Select,
            "binary" => Self::Binary,
            "barcode" => Self::Barcode,
            other => Self::Other(other.to_owned()),
        }
    }

    /// The XForms name of the type.
    pub fn as_str(&self) -> &str {
        match self {
            Self::String => "string",
            Self::Int => "int",
            Self::Decimal => "decimal",
            Self::Boolean => "boolean",
            Self::Date => "date",
            Self::DateTime => "dateTime",
            Self::Time => "time",
            Self::Geopoint => "geopoint",
            Self::Geotrace => "geotrace",
            Self::Geoshape => "geoshape",
            Self::Select1 => "select1",
            Self::Select => "select",
            Self::Binary => "binary",
            Self::Barcode => "barcode",
            Self::Other(s) => s,
        }
    }
}

impl Node {
    /// The node's children when it is a group or a repeat.
    pub fn children(&self) -> &[Node] {
        match &self.kind {
            NodeKind::Group(c) | NodeKind::Repeat(c) => c,
            NodeKind::Field { .. } => &[],
        }
    }

    /// The field type, when this is a field.
    pub fn field_type(&self) -> Option<&FieldType> {
        match &self.kind {
            NodeKind::Field { ty, .. } => Some(ty),
            _ => None,
        }
    }

    /// Whether this node is a repeat.
    pub fn is_repeat(&self) -> bool {
        matches!(self.kind, NodeKind::Repeat(_))
    }

    /// The label in `lang`, else the inline label, else the first one.
    pub fn label(&self, lang: Option<&str>) -> Option<&str> {
        pick_label(&self.labels, lang)
    }
}

impl Choice {
    /// The label in `lang`, else the inline label, else the first one.
    pub fn label(&self, lang: Option<&str>) -> Option<&str> {
        pick_label(&self.labels, lang)
    }
}

fn pick_label<'a>(labels: &'a [Label], lang: Option<&str>) -> Option<&'a str> {
    labels
        .iter()
        .find(|l| l.lang.as_deref() == lang)
        .or_else(|| labels.iter().find(|l| l.lang.is_none()))
        .or_else(|| labels.first())
        .map(|l| l.text.as_str())
}

impl FormSchema {
    /// The node at `path` (segments below the root), ignoring repeat indices.
    pub fn node<S: AsRef<str>>(&self, path: &[S]) -> Option<&Node> {
        let (first, rest) = path.split_first()?;
        let mut node = self.children.iter().find(|n| n.name == first.as_ref())?;
        for seg in rest {
            node = node.children().iter().find(|n| n.name == seg.as_ref())?;
        }
        Some(node)
    }

    /// Every field (leaf) in document order, repeats included.
    pub fn fields(&self) -> Vec<&Node> {
        let mut out = Vec::new();
        fn walk<'a>(nodes: &'a [Node], out: &mut Vec<&'a Node>) {
            for n in nodes {
                match &n.kind {
                    NodeKind::Field { .. } => out.push(n),
                    NodeKind::Group(c) | NodeKind::Repeat(c) => walk(c, out),
                }
            }
        }
        walk(&self.children, &mut out);
        out
    }

    /// Every repeat in document order (outer before inner).
    pub fn repeats(&self) -> Vec<&Node> {
        let mut out = Vec::new();
        fn walk<'a>(nodes: &'a [Node], out: &mut Vec<&'a Node>) {
            for n in nodes {
                if n.is_repeat() {
                    out.push(n);
                }
                walk(n.children(), out);
            }
        }
        walk(&self.children, &mut out);
        out
    }

    /// The path of `meta/instanceID` when the form has one.
    pub fn instance_id_path(&self) -> Option<Vec<String>> {
        self.node(&["meta", "instanceID"]).map(|n| n.path.clone())
    }

    /// Adds the nodes of `older` (another version of the form) that this schema lacks, each at the
    /// end of its parent, so that data filled against an older version keeps its columns.
    pub fn merge(&mut self, older: &FormSchema) {
        fn merge_into(into: &mut Vec<Node>, from: &[Node]) {
            for n in from {
                match into.iter_mut().find(|m| m.name == n.name) {
                    Some(m) => {
                        if let (
                            NodeKind::Group(a) | NodeKind::Repeat(a),
                            NodeKind::Group(b) | NodeKind::Repeat(b),
                        ) = (&mut m.kind, &n.kind)
                        {
                            merge_into(a, b);
                        }
                    }
                    None => into.push(n.clone()),
                }
            }
        }
        merge_into(&mut self.children, &older.children);
    }
}

/// Reads the field tree of an XForm of at most `max_bytes` bytes.
pub fn parse_schema(bytes: &[u8], max_bytes: usize) -> Result<FormSchema, CoreError> {
    let doc = parse_document(bytes, max_bytes, FIELD)?;
    let model = if doc.name == "model" {
        &doc
    } else {
        doc.descendant("model")
            .ok_or_else(|| CoreError::invalid(FIELD, "the form has no <model> element"))?
    };
    let instances: Vec<&Element> = model.children_named("instance").collect();
    let root = instances
        .first()
        .and_then(|i| i.children.first())
        .ok_or_else(|| CoreError::invalid(FIELD, "the form has no primary instance"))?;
    let secondary: HashMap<&str, &Element> = instances
        .iter()
        .skip(1)
        .filter_map(|i| Some((i.attr("id")?, *i)))
        .collect();

    let itext = Itext::read(model);
    let mut binds: HashMap<String, FieldType> = HashMap::new();
    for b in model.children_named("bind") {
        if let (Some(nodeset), Some(ty)) = (b.attr("nodeset"), b.attr("type")) {
            binds.insert(key_of(&local_segments(nodeset)), FieldType::from_bind(ty));
        }
    }

    let mut body = Body::default();
    if let Some(b) = doc.descendant("body") {
        body.read(b, &[], &itext, &secondary);
    }

    let mut count = 0usize;
    let children = build(root, &[], &binds, &body, &mut count)?;
    Ok(FormSchema {
        root: root.name.clone(),
        xml_form_id: root.attr("id").unwrap_or_default().trim().to_owned(),
        version: root
            .attr("version")
            .map(str::trim)
            .filter(|v| !v.is_empty())
            .map(str::to_owned),
        languages: itext.languages,
        children,
    })
}

/// Builds the nodes under instance element `el` (whose path below the root is `path`).
fn build(
    el: &Element,
    path: &[String],
    binds: &HashMap<String, FieldType>,
    body: &Body,
    count: &mut usize,
) -> Result<Vec<Node>, CoreError> {
    if path.len() >= MAX_TREE_DEPTH {
        return Err(CoreError::invalid(
            FIELD,
            format!("groups are nested more than {MAX_TREE_DEPTH} levels deep"),
        ));
    }
    let mut out: Vec<Node> = Vec::new();
    for child in &el.children {
        // A repeat appears twice in pyxform's instance (the jr:template and one instance).
        if out.iter().any(|n| n.name == child.name) {
            continue;
        }
        *count += 1;
        if *count > MAX_NODES {
            return Err(CoreError::invalid(
                FIELD,
                format!("the form has more than {MAX_NODES} fields and groups"),
            ));
        }
        let mut p = path.to_vec();
        p.push(child.name.clone());
        let key = key_of(&p);
        let control = body.controls.get(&key);
        let labels = control.map(|c| c.labels.clone()).unwrap_or_default();
        let is_repeat = body.repeats.contains(&key) || child.attr("template").is_some();
        let kind = if is_repeat {
            NodeKind::Repeat(build(child, &p, binds, body, count)?)
        } else if !child.children.is_empty() {
            NodeKind::Group(build(child, &p, binds, body, count)?)
        } else {
            let bind_ty = binds.get(&key).cloned().unwrap_or(FieldType::String);
            let ty = match control.map(|c| c.control.as_str()) {
                Some("select") => FieldType::Select,
                Some("select1") => FieldType::Select1,
                Some("upload") if bind_ty == FieldType::String => FieldType::Binary,
                _ => bind_ty,
            };
            NodeKind::Field {
                ty,
                choices: control.map(|c| c.choices.clone()).unwrap_or_default(),
            }
        };
        out.push(Node {
            name: child.name.clone(),
            path: p,
            labels,
            kind,
        });
    }
    Ok(out)
}

/// Local-name segments of an absolute path, without the root: `/h:data/g/q` → `[g, q]`.
fn local_segments(path: &str) -> Vec<String> {
    path.trim()
        .split('/')
        .filter(|s| !s.is_empty())
        .skip(1)
        .map(|s| {
            let s = s.split('[').next().unwrap_or(s);
            s.rsplit(':').next().unwrap_or(s).to_owned()
        })
        .collect()
}

fn key_of(segments: &[String]) -> String {
    segments.join("/")
}

/// itext translations: id → labels (plain values only, not image/audio forms).
#[derive(Default)]
struct Itext {
    languages: Vec<String>,
    texts: HashMap<String, Vec<Label>>,
}

impl Itext {
    fn read(model: &Element) -> Self {
        let mut it = Itext::default();
        let Some(itext) = model.child("itext") else {
            return it;
        };
        let mut translations: Vec<&Element> = itext.children_named("translation").collect();
        // The default language first (pyxform marks it `default="true()"`).
        translations.sort_by_key(|t| t.attr("default").is_none());
        for t in translations {
            let lang = t.attr("lang").unwrap_or("default").to_owned();
            if !it.languages.contains(&lang) {
                it.languages.push(lang.clone());
            }
            for text in t.children_named("text") {
                let Some(id) = text.attr("id") else { continue };
                let value = text
                    .children_named("value")
                    .find(|v| matches!(v.attr("form"), None | Some("long")))
                    .map(|v| v.trimmed_text().to_owned());
                if let Some(value) = value.filter(|v| !v.is_empty()) {
                    it.texts.entry(id.to_owned()).or_default().push(Label {
                        lang: Some(lang.clone()),
                        text: value,
                    });
                }
            }
        }
        it
    }

    /// Labels for a `<label>` element: `ref="jr:itext('id')"` or inline text.
    fn labels_of(&self, label: &Element) -> Vec<Label> {
        if let Some(id) = label.attr("ref").and_then(itext_id) {
            return self.texts.get(id).cloned().unwrap_or_default();
        }
        let text = label.trimmed_text();
        if text.is_empty() {
            Vec::new()
        } else {
            vec![Label {
                lang: None,
                text: text.to_owned(),
            }]
        }
    }
}

/// `jr:itext('id')` → `id`.
fn itext_id(reference: &str) -> Option<&str> {
    let inner = reference
        .trim()
        .strip_prefix("jr:itext(")?
        .strip_suffix(')')?;
    let inner = inner.trim();
    inner
        .strip_prefix('\'')
        .and_then(|s| s.strip_suffix('\''))
        .or_else(|| inner.strip_prefix('"').and_then(|s| s.strip_suffix('"')))
}

/// What the body says about each path.
#[derive(Default)]
struct Body {
    controls: HashMap<String, Control>,
    repeats: Vec<String>,
}

struct Control {
    control: String,
    labels: Vec<Label>,
    choices: Vec<Choice>,
}

const CONTROLS: [&str; 8] = [
    "input", "select", "select1", "upload", "trigger", "range", "rank", "odk:rank",
];

impl Body {
    /// Walks body element `el` whose enclosing group/repeat path is `context`.
    fn read(
        &mut self,
        el: &Element,
        context: &[String],
        itext: &Itext,
        secondary: &HashMap<&str, &Element>,
    ) {
        for child in &el.children {
            let reference = child.attr("ref").or_else(|| child.attr("nodeset"));
            let path = reference.map(|r| resolve(r, context));
            match child.name.as_str() {
                "group" => {
                    let ctx = path.clone().unwrap_or_else(|| context.to_vec());
                    if let Some(p) = &path {
                        self.label_for(p, "group", child, itext, Vec::new());
                    }
                    self.read(child, &ctx, itext, secondary);
                }
                "repeat" => {
                    let ctx = path.clone().unwrap_or_else(|| context.to_vec());
                    if let Some(p) = &path {
                        let key = key_of(p);
                        if !self.repeats.contains(&key) {
                            self.repeats.push(key);
                        }
                        self.label_for(p, "repeat", child, itext, Vec::new());
                    }
                    self.read(child, &ctx, itext, secondary);
                }
                name if CONTROLS.contains(&name) => {
                    if let Some(p) = &path {
                        let choices = if matches!(name, "select" | "select1" | "rank") {
                            choices_of(child, itext, secondary)
                        } else {
                            Vec::new()
                        };
                        self.label_for(p, name, child, itext, choices);
                    }
                }
                _ => {}
            }
        }
    }

    fn label_for(
        &mut self,
        path: &[String],
        control: &str,
        el: &Element,
        itext: &Itext,
        choices: Vec<Choice>,
    ) {
        let labels = el
            .child("label")
            .map(|l| itext.labels_of(l))
            .unwrap_or_default();
        let key = key_of(path);
        match self.controls.get_mut(&key) {
            // A repeat's label usually sits on its wrapping group; keep the first non-empty one.
            Some(existing) => {
                if existing.labels.is_empty() {
                    existing.labels = labels;
                }
            }
            None => {
                self.controls.insert(
                    key,
                    Control {
                        control: control.to_owned(),
                        labels,
                        choices,
                    },
                );
            }
        }
    }
}

/// An absolute `ref` (`/data/g/q`) or one relative to the enclosing group (`q`, `./q`).
fn resolve(reference: &str, context: &[String]) -> Vec<String> {
    let r = reference.trim();
    if r.starts_with('/') {
        return local_segments(r);
    }
    let mut out = context.to_vec();
    for seg in r.split('/').filter(|s| !s.is_empty() && *s != ".") {
        if seg == ".." {
            out.pop();
        } else {
            out.push(seg.rsplit(':').next().unwrap_or(seg).to_owned());
        }
    }
    out
}

/// Choices of a select: inline `<item>`s, or an `itemset` over `instance('id')/root/item`.
fn choices_of(select: &Element, itext: &Itext, secondary: &HashMap<&str, &Element>) -> Vec<Choice> {
    let mut out = Vec::new();
    for item in select.children_named("item").take(MAX_CHOICES) {
        let value = item
            .child("value")
            .map(|v| v.trimmed_text().to_owned())
            .unwrap_or_default();
        let labels = item
            .child("label")
            .map(|l| itext.labels_of(l))
            .unwrap_or_default();
        out.push(Choice { value, labels });
    }
    let Some(itemset) = select.child("itemset") else {
        return out;
    };
    let Some(instance) = itemset
        .attr("nodeset")
        .and_then(instance_name)
        .and_then(|id| secondary.get(id))
    else {
        return out;
    };
    let value_ref = itemset
        .child("value")
        .and_then(|v| v.attr("ref"))
        .unwrap_or("name")
        .trim();
    let label_ref = itemset
        .child("label")
        .and_then(|l| l.attr("ref"))
        .unwrap_or("label")
        .trim();
    let Some(root) = instance.children.first() else {
        return out;
    };
    for item in root.children.iter().take(MAX_CHOICES) {
        let value = item
            .child(value_ref)
            .map(|v| v.trimmed_text().to_owned())
            .unwrap_or_default();
        let labels = if let Some(inner) = label_ref
            .strip_prefix("jr:itext(")
            .and_then(|s| s.strip_suffix(')'))
        {
            item.child(inner.trim())
                .and_then(|id| itext.texts.get(id.trimmed_text()))
                .cloned()
                .unwrap_or_default()
        } else {
            item.child(label_ref)
                .map(|l| l.trimmed_text())
                .filter(|t| !t.is_empty())
                .map(|t| {
                    vec![Label {
                        lang: None,
                        text: t.to_owned(),
                    }]
                })
                .unwrap_or_default()
        };
        out.push(Choice { value, labels });
    }
    out
}

/// `instance('assets')/root/item[…]` → `assets`.
fn instance_name(nodeset: &str) -> Option<&str> {
    let rest = nodeset.trim().strip_prefix("instance(")?;
    let quote = rest.chars().next().filter(|c| *c == '\'' || *c == '"')?;
    let rest = rest.get(1..)?;
    rest.split(quote).next()
}

#[cfg(test)]
mod tests {
    use super::*;

    const CENSUS: &[u8] = include_bytes!("../testdata/pyxform-census.xml");
    const HOUSEHOLD: &[u8] = include_bytes!("../testdata/pyxform-household.xml");

    fn paths(s: &FormSchema) -> Vec<String> {
        s.fields().iter().map(|n| n.path.join("/")).collect()
    }

    #[test]
    fn census_tree_types_and_repeats() {
        let s = parse_schema(CENSUS, 1 << 20).unwrap();
        assert_eq!(s.root, "data");
        assert_eq!(s.xml_form_id, "census");
        assert_eq!(s.version.as_deref(), Some("3"));
        assert_eq!(s.languages, vec!["English (en)", "Français (fr)"]);
        assert_eq!(
            paths(&s),
            vec![
                "name",
                "age",
                "income",
                "visit",
                "consent",
                "hh/location",
                "hh/assets",
                "hh/member/mname",
                "hh/member/mage",
                "hh/member/visit_log/vdate",
                "photo",
                "double_age",
                "meta/instanceID",
            ]
        );
        let ty = |p: &[&str]| s.node(p).unwrap().field_type().unwrap().clone();
        assert_eq!(ty(&["age"]), FieldType::Int);
        assert_eq!(ty(&["income"]), FieldType::Decimal);
        assert_eq!(ty(&["visit"]), FieldType::Date);
        assert_eq!(ty(&["consent"]), FieldType::Select1);
        assert_eq!(ty(&["hh", "location"]), FieldType::Geopoint);
        assert_eq!(ty(&["hh", "assets"]), FieldType::Select);
        assert_eq!(ty(&["hh", "member", "mage"]), FieldType::Int);
        assert_eq!(ty(&["photo"]), FieldType::Binary);
        assert_eq!(ty(&["double_age"]), FieldType::String);
        assert!(matches!(s.node(&["hh"]).unwrap().kind, NodeKind::Group(_)));
        let repeats: Vec<String> = s.repeats().iter().map(|n| n.path.join("/")).collect();
        assert_eq!(repeats, vec!["hh/member", "hh/member/visit_log"]);
        assert_eq!(
            s.instance_id_path(),
            Some(vec!["meta".to_owned(), "instanceID".to_owned()])
        );
    }

    #[test]
    fn census_labels_and_choices_per_language() {
        let s = parse_schema(CENSUS, 1 << 20).unwrap();
        let age = s.node(&["age"]).unwrap();
        assert_eq!(age.label(Some("English (en)")), Some("Age"));
        assert_eq!(age.label(Some("Français (fr)")), Some("Âge"));
        let member = s.node(&["hh", "member"]).unwrap();
        assert_eq!(member.label(Some("Français (fr)")), Some("Membre"));
        let NodeKind::Field { choices, .. } = &s.node(&["hh", "assets"]).unwrap().kind else {
            panic!("assets is a field");
        };
        let values: Vec<&str> = choices.iter().map(|c| c.value.as_str()).collect();
        assert_eq!(values, vec!["radio", "bicycle", "phone"]);
        assert_eq!(choices[1].label(Some("Français (fr)")), Some("Vélo"));
        assert_eq!(choices[1].label(Some("English (en)")), Some("Bicycle"));
        let NodeKind::Field { choices, .. } = &s.node(&["consent"]).unwrap().kind else {
            panic!("consent is a field");
        };
        assert_eq!(choices.len(), 2);
        assert_eq!(choices[0].label(Some("Français (fr)")), Some("Oui"));
    }

    #[test]
    fn household_inline_labels_and_itemset_labels() {
        let s = parse_schema(HOUSEHOLD, 1 << 20).unwrap();
        assert_eq!(s.node(&["name"]).unwrap().label(None), Some("Name"));
        assert_eq!(s.node(&["member"]).unwrap().label(None), Some("Members"));
        assert!(s.node(&["member"]).unwrap().is_repeat());
        assert_eq!(
            s.node(&["member", "member_photo"])
                .unwrap()
                .field_type()
                .cloned(),
            Some(FieldType::Binary)
        );
        let NodeKind::Field { ty, choices } = &s.node(&["home", "assets"]).unwrap().kind else {
            panic!("assets is a field");
        };
        assert_eq!(ty, &FieldType::Select);
        assert_eq!(choices[2].value, "phone");
        assert_eq!(choices[2].label(None), Some("Phone"));
        // The label with a media form still has its text.
        assert_eq!(
            s.node(&["home", "assets"]).unwrap().label(Some("default")),
            Some("Assets")
        );
    }

    #[test]
    fn inline_items_relative_refs_and_untyped_binds() {
        let xml = r#"<h:html xmlns:h="x"><h:head><model><instance><r id="f">
            <g><q/><b/></g><meta><instanceID/></meta></r></instance>
            <bind nodeset="/r/g/b" type="xsd:boolean"/></model></h:head><h:body>
            <group ref="/r/g"><label>G</label>
              <select1 ref="q"><label>Q</label>
                <item><label>One</label><value>1</value></item>
                <item><label>Two</label><value>2</value></item></select1></group>
            </h:body></h:html>"#;
        let s = parse_schema(xml.as_bytes(), 1 << 20).unwrap();
        let q = s.node(&["g", "q"]).unwrap();
        assert_eq!(q.label(None), Some("Q"));
        let NodeKind::Field { ty, choices } = &q.kind else {
            panic!()
        };
        assert_eq!(ty, &FieldType::Select1);
        assert_eq!(choices[1].value, "2");
        assert_eq!(
            s.node(&["g", "b"]).unwrap().field_type(),
            Some(&FieldType::Boolean)
        );
        assert_eq!(s.node(&["g"]).unwrap().label(None), Some("G"));
    }

    #[test]
    fn merge_keeps_fields_of_older_versions() {
        let new = r#"<html><head><model><instance><r id="f" version="2"><a/><g><x/></g><meta><instanceID/></meta></r></instance></model></head></html>"#;
        let old = r#"<html><head><model><instance><r id="f" version="1"><a/><gone/><g><x/><y/></g><meta><instanceID/></meta></r></instance></model></head></html>"#;
        let mut s = parse_schema(new.as_bytes(), 1 << 20).unwrap();
        s.merge(&parse_schema(old.as_bytes(), 1 << 20).unwrap());
        assert_eq!(
            paths(&s),
            vec!["a", "g/x", "g/y", "meta/instanceID", "gone"]
        );
    }

    #[test]
    fn limits() {
        let many = format!(
            "<html><head><model><instance><r id='f'>{}</r></instance></model></head></html>",
            "<a/>".repeat(10)
                + &(0..MAX_NODES)
                    .map(|i| format!("<f{i}/>"))
                    .collect::<String>()
        );
        let err = parse_schema(many.as_bytes(), usize::MAX).unwrap_err();
        assert!(err.to_string().contains("more than"), "{err}");
        let deep = format!(
            "<html><head><model><instance><r id='f'>{}{}</r></instance></model></head></html>",
            "<g>".repeat(MAX_TREE_DEPTH + 1),
            "</g>".repeat(MAX_TREE_DEPTH + 1)
        );
        let err = parse_schema(deep.as_bytes(), usize::MAX).unwrap_err();
        assert!(err.to_string().contains("nested"), "{err}");
        assert!(parse_schema(b"<html/>", 100).is_err());
    }

    #[test]
    fn helpers() {
        assert_eq!(itext_id("jr:itext('/data/a:label')"), Some("/data/a:label"));
        assert_eq!(itext_id("jr:itext(itextId)"), None);
        assert_eq!(instance_name("instance('yn')/root/item[x = 1]"), Some("yn"));
        assert_eq!(local_segments("/h:data/g[1]/q"), vec!["g", "q"]);
        assert_eq!(resolve("../b", &["g".into(), "h".into()]), vec!["g", "b"]);
        assert_eq!(FieldType::from_bind("xsd:dateTime"), FieldType::DateTime);
        assert_eq!(
            FieldType::from_bind("odk:rank"),
            FieldType::Other("rank".into())
        );
    }
}
