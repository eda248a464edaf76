//! Turning a submission's XML into the shapes people analyse: KoboToolbox-style JSON and
//! ODK Central-style CSV tables (one main table, one per repeat).
//!
//! Both walk the submission, not the form, so nothing the device sent is lost: a leaf the schema
//! does not know (a field of an older form version) still becomes a key (JSON) or an extra column
//! (CSV, appended after the form's own columns in the order first seen). Without a schema
//! ("no schema" mode, for `fieldvault decrypt`), the tree is inferred from the data: an element with
//! children is a group, and one whose name repeats among its siblings is a repeat.
//!
//! CSV rows are produced one submission at a time through a callback, so an export holds one
//! submission in memory whatever the number of rows. Because a ZIP stream writes one file at a
//! time, [`CsvLayout::rows`] can emit the rows of a single table (`only`), and the caller makes one
//! pass per table. The columns must be known before the header is written: call
//! [`CsvLayout::discover`] on every submission first (a pass that keeps only column names).

use std::io::Write;

use serde_json::{Map, Number, Value};

use crate::CoreError;
use crate::schema::{FieldType, FormSchema, Node, NodeKind};
use crate::xml::{Element, parse_document};

mod main_row;
pub use main_row::{MainRowWriter, RowScratch};

/// The error field name for refusals of a submission document.
const FIELD: &str = "submission";
/// Most columns one table may gain from [`CsvLayout::discover`] beyond the form's own.
pub const MAX_DISCOVERED_COLUMNS: usize = 5_000;

/// A parsed submission instance.
#[derive(Debug, Clone)]
pub struct Instance {
    root: Element,
}

/// Parses a (plaintext) submission of at most `max_bytes` bytes for flattening.
pub fn parse_instance(bytes: &[u8], max_bytes: usize) -> Result<Instance, CoreError> {
    Ok(Instance {
        root: parse_document(bytes, max_bytes, FIELD)?,
    })
}

impl Instance {
    pub(crate) fn from_root(root: Element) -> Self {
        Self { root }
    }

    /// The document element.
    pub(crate) fn root(&self) -> &Element {
        &self.root
    }

    /// The root element's local name.
    pub fn root_name(&self) -> &str {
        &self.root.name
    }

    /// `meta/instanceID`, if present.
    pub fn instance_id(&self) -> Option<&str> {
        self.root
            .child("meta")
            .and_then(|m| m.child("instanceID"))
            .map(Element::trimmed_text)
            .filter(|s| !s.is_empty())
    }

    /// The text of the first leaf at `path` (segments below the root), if any.
    pub fn value<S: AsRef<str>>(&self, path: &[S]) -> Option<&str> {
        let mut el = &self.root;
        for seg in path {
            el = el.child(seg.as_ref())?;
        }
        el.children.is_empty().then(|| el.trimmed_text())
    }
}

/// How JSON leaf values are typed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Typing {
    /// Every value a string, exactly as in the XML (what KoboToolbox's own API returns).
    Strings,
    /// `int` → JSON integer, `decimal` → JSON number, `boolean` → JSON boolean, others strings;
    /// a value that does not parse as its type stays a string.
    FromForm,
}

/// The submission as KoboToolbox flattens it: keys are paths below the root joined with `/`,
/// repeats are arrays of objects whose keys are again full paths, empty leaves are left out,
/// select_multiple stays one space-separated string, and an element that occurs several times
/// without being a repeat becomes an array of values. Server keys (`_id`, `_uuid`, …) are the
/// caller's; see [`geolocation`] for `_geolocation`.
pub fn kobo_json(
    inst: &Instance,
    schema: Option<&FormSchema>,
    typing: Typing,
) -> Map<String, Value> {
    let mut out = Map::new();
    let mut path = Vec::new();
    kobo_walk(
        &inst.root,
        schema.map(|s| s.children.as_slice()),
        &mut path,
        typing,
        &mut out,
    );
    out
}

fn kobo_walk(
    el: &Element,
    nodes: Option<&[Node]>,
    path: &mut Vec<String>,
    typing: Typing,
    out: &mut Map<String, Value>,
) {
    let mut seen: Vec<&str> = Vec::new();
    for child in &el.children {
        if seen.contains(&child.name.as_str()) {
            continue;
        }
        seen.push(&child.name);
        let same: Vec<&Element> = el.children_named(&child.name).collect();
        let node = nodes.and_then(|ns| ns.iter().find(|n| n.name == child.name));
        path.push(child.name.clone());
        let key = path.join("/");
        let has_children = same.iter().any(|e| !e.children.is_empty());
        let is_repeat = match node {
            Some(n) => n.is_repeat(),
            None => has_children && same.len() > 1,
        };
        let sub = node.map(Node::children);
        if is_repeat {
            let items: Vec<Value> = same
                .iter()
                .map(|e| {
                    let mut obj = Map::new();
                    kobo_walk(e, sub, path, typing, &mut obj);
                    Value::Object(obj)
                })
                .filter(|v| v.as_object().is_some_and(|o| !o.is_empty()))
                .collect();
            if !items.is_empty() {
                out.insert(key, Value::Array(items));
            }
        } else if has_children {
            for e in &same {
                kobo_walk(e, sub, path, typing, out);
            }
        } else {
            let ty = node.and_then(Node::field_type);
            let values: Vec<Value> = same
                .iter()
                .map(|e| e.trimmed_text())
                .filter(|t| !t.is_empty())
                .map(|t| typed(t, ty, typing))
                .collect();
            match values.len() {
                0 => {}
                1 => {
                    if let Some(v) = values.into_iter().next() {
                        out.insert(key, v);
                    }
                }
                _ => {
                    out.insert(key, Value::Array(values));
                }
            }
        }
        path.pop();
    }
}

/// A leaf's JSON value.
pub fn typed(text: &str, ty: Option<&FieldType>, typing: Typing) -> Value {
    if typing == Typing::Strings {
        return Value::String(text.to_owned());
    }
    match ty {
        Some(FieldType::Int) => text
            .parse::<i64>()
            .map(|n| Value::Number(n.into()))
            .unwrap_or_else(|_| Value::String(text.to_owned())),
        Some(FieldType::Decimal) => text
            .parse::<f64>()
            .ok()
            .and_then(Number::from_f64)
            .map(Value::Number)
            .unwrap_or_else(|| Value::String(text.to_owned())),
        Some(FieldType::Boolean) => match text {
            "true" | "1" => Value::Bool(true),
            "false" | "0" => Value::Bool(false),
            _ => Value::String(text.to_owned()),
        },
        _ => Value::String(text.to_owned()),
    }
}

/// KoboToolbox's `_geolocation`: `[lat, lon]` of the first answered geopoint outside repeats.
pub fn geolocation(inst: &Instance, schema: Option<&FormSchema>) -> Option<(f64, f64)> {
    fn first(nodes: &[Node], inst: &Instance) -> Option<(f64, f64)> {
        for n in nodes {
            match &n.kind {
                NodeKind::Field {
                    ty: FieldType::Geopoint,
                    ..
                } => {
                    if let Some(p) = inst.value(&n.path).and_then(parse_point) {
                        return Some((p[0], p[1]));
                    }
                }
                NodeKind::Group(c) => {
                    if let Some(p) = first(c, inst) {
                        return Some(p);
                    }
                }
                _ => {}
            }
        }
        None
    }
    first(&schema?.children, inst)
}

/// `lat lon [alt [acc]]` → numbers; `None` when it is not a point.
pub fn parse_point(text: &str) -> Option<Vec<f64>> {
    let parts: Vec<f64> = text
        .split_whitespace()
        .map(str::parse::<f64>)
        .collect::<Result<_, _>>()
        .ok()?;
    (2..=4).contains(&parts.len()).then_some(parts)
}

// ---------------------------------------------------------------------------------------------
// CSV tables (ODK Central's `submissions.csv` / `submissions.csv.zip` layout)

/// The system values of one submission's root row.
#[derive(Debug, Clone, Default)]
pub struct RowMeta {
    /// `SubmissionDate` (ISO 8601).
    pub submission_date: String,
    /// `KEY` of the root row: the submission's instanceID (current version).
    pub instance_id: String,
    /// `SubmitterID`.
    pub submitter_id: String,
    /// `SubmitterName`.
    pub submitter_name: String,
    /// `AttachmentsPresent`.
    pub attachments_present: u64,
    /// `AttachmentsExpected`.
    pub attachments_expected: u64,
    /// `Status` (blank, or `notDecrypted` for encrypted submissions).
    pub status: String,
    /// `ReviewState` (blank for received).
    pub review_state: String,
    /// `DeviceID`.
    pub device_id: String,
    /// `Edits`.
    pub edits: u64,
    /// `FormVersion`.
    pub form_version: String,
}

/// The system columns that end Central's main table, in order.
pub const SYSTEM_COLUMNS: [&str; 10] = [
    "SubmitterID",
    "SubmitterName",
    "AttachmentsPresent",
    "AttachmentsExpected",
    "Status",
    "ReviewState",
    "DeviceID",
    "Edits",
    "FormVersion",
    "KEY",
];

/// Geopoint parts, as Central names its split columns.
const GEO_PARTS: [&str; 4] = ["Latitude", "Longitude", "Altitude", "Accuracy"];

/// The table layout of a form's CSV export; grows with [`CsvLayout::discover`].
#[derive(Debug, Clone)]
pub struct CsvLayout {
    tree: Vec<LNode>,
    discovered: usize,
    options: CsvOptions,
    /// Whether the tree came from a form definition (so unknown fields are "deleted" ones).
    declared: bool,
}

/// Central's CSV options (specs/central-api.md §6).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CsvOptions {
    /// `groupPaths`: `group-field` column names (true) or bare field names (false).
    pub group_paths: bool,
    /// `splitSelectMultiples`: after each select-multiple column, one `field/option` column of
    /// 1/0 per option seen in the data.
    pub split_select_multiples: bool,
    /// `deletedFields`: also columns for fields the current definition no longer declares
    /// (earlier versions'). Without a definition every field found is kept.
    pub deleted_fields: bool,
}

impl Default for CsvOptions {
    /// Central's defaults, except `deleted_fields`: an export never drops data unless asked to.
    fn default() -> Self {
        Self {
            group_paths: true,
            split_select_multiples: false,
            deleted_fields: true,
        }
    }
}

#[derive(Debug, Clone)]
struct LNode {
    name: String,
    kind: LKind,
    /// Options seen in the data, for a select-multiple leaf when they are split.
    seen: Vec<String>,
}

#[derive(Debug, Clone)]
enum LKind {
    Leaf(FieldType),
    Group(Vec<LNode>),
    Repeat(Vec<LNode>),
}

/// One CSV table: where its rows come from and its header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableSpec {
    /// Path of the repeat below the root (empty for the main table).
    pub path: Vec<String>,
    /// Column names.
    pub header: Vec<String>,
}

impl TableSpec {
    /// The repeat's own name (`None` for the main table).
    pub fn repeat_name(&self) -> Option<&str> {
        self.path.last().map(String::as_str)
    }
}

impl CsvLayout {
    /// The layout of a form (or, with `None`, an empty layout to be filled by `discover`), keeping
    /// every field found in the data (what `fieldvault decrypt` writes).
    pub fn new(schema: Option<&FormSchema>) -> Self {
        Self::with_options(schema, CsvOptions::default())
    }

    /// The layout of a form with Central's CSV options.
    pub fn with_options(schema: Option<&FormSchema>, options: CsvOptions) -> Self {
        fn conv(nodes: &[Node]) -> Vec<LNode> {
            nodes
                .iter()
                .map(|n| LNode {
                    name: n.name.clone(),
                    kind: match &n.kind {
                        NodeKind::Field { ty, .. } => LKind::Leaf(ty.clone()),
                        NodeKind::Group(c) => LKind::Group(conv(c)),
                        NodeKind::Repeat(c) => LKind::Repeat(conv(c)),
                    },
                    seen: Vec::new(),
                })
                .collect()
        }
        Self {
            tree: schema.map(|s| conv(&s.children)).unwrap_or_default(),
            discovered: 0,
            options,
            declared: schema.is_some(),
        }
    }

    /// Adds what `inst` has and the layout lacks: unknown leaves (extra columns), groups, and
    /// repeats (an element with children whose name repeats among its siblings).
    pub fn discover(&mut self, inst: &Instance) -> Result<(), CoreError> {
        let mut added = 0usize;
        let how = Discover {
            add: self.options.deleted_fields || !self.declared,
            split: self.options.split_select_multiples,
        };
        discover_into(&mut self.tree, &inst.root, how, &mut added);
        self.discovered += added;
        if self.discovered > MAX_DISCOVERED_COLUMNS {
            return Err(CoreError::invalid(
                FIELD,
                format!(
                    "the submissions hold more than {MAX_DISCOVERED_COLUMNS} fields the form does not declare"
                ),
            ));
        }
        Ok(())
    }

    /// The tables: the main one first, then each repeat (outer before inner), with headers.
    pub fn tables(&self) -> Vec<TableSpec> {
        let mut out = Vec::new();
        let mut header = vec!["SubmissionDate".to_owned()];
        let paths = self.options.group_paths;
        header_of(&self.tree, &mut Vec::new(), paths, &mut header);
        header.extend(SYSTEM_COLUMNS.iter().map(|s| (*s).to_owned()));
        out.push(TableSpec {
            path: Vec::new(),
            header,
        });
        repeat_tables(&self.tree, &mut Vec::new(), paths, &mut out);
        out
    }

    /// Produces the rows of one submission: `(table index, cells)` in [`Self::tables`] order,
    /// the main row first, then each repeat instance in document order (parents before children).
    /// With `only`, rows of other tables are skipped.
    pub fn rows(
        &self,
        inst: &Instance,
        meta: &RowMeta,
        only: Option<usize>,
        sink: &mut impl FnMut(usize, Vec<String>) -> Result<(), CoreError>,
    ) -> Result<(), CoreError> {
        let mut row = Vec::new();
        if only.is_none_or(|t| t == 0) {
            row.push(meta.submission_date.clone());
            cells_of(
                &self.tree,
                Some(&inst.root),
                &meta.instance_id,
                &mut Vec::new(),
                &mut row,
            );
            row.extend([
                meta.submitter_id.clone(),
                meta.submitter_name.clone(),
                meta.attachments_present.to_string(),
                meta.attachments_expected.to_string(),
                meta.status.clone(),
                meta.review_state.clone(),
                meta.device_id.clone(),
                meta.edits.to_string(),
                meta.form_version.clone(),
                meta.instance_id.clone(),
            ]);
            sink(0, row)?;
        }
        if only == Some(0) {
            return Ok(());
        }
        let tables = self.table_index();
        let mut ctx = RepeatCtx {
            tables: &tables,
            only,
            sink,
        };
        ctx.repeat_rows(&self.tree, &inst.root, &meta.instance_id, &mut Vec::new())
    }

    /// Paths of the repeat tables, in [`Self::tables`] order (index 0 is the main table).
    fn table_index(&self) -> Vec<Vec<String>> {
        let mut out = vec![Vec::new()];
        repeat_paths(&self.tree, &mut Vec::new(), &mut out);
        out
    }
}

impl CsvLayout {
    /// Whether [`Self::discover`] would change the layout for `inst`: most submissions fit the
    /// form, and a discovery pass asks this on every core before handing on the few that do not.
    pub fn would_grow(&self, inst: &Instance) -> bool {
        let how = Discover {
            add: self.options.deleted_fields || !self.declared,
            split: self.options.split_select_multiples,
        };
        grows(&self.tree, &inst.root, how)
    }
}

impl CsvLayout {
    /// Whether every submission that fits `def` (adds nothing to the layout of `def` alone) adds
    /// nothing to this layout either: then a form whose current versions all fit their own
    /// definitions, each covered here, needs no discovery pass. Never true when select-multiples
    /// are split (their columns come from the answers).
    pub fn covers(&self, def: &FormSchema) -> bool {
        fn covered(def: &[Node], tree: &[LNode]) -> bool {
            def.iter().all(|d| {
                let Some(n) = tree.iter().find(|n| n.name == d.name) else {
                    return false;
                };
                match (&d.kind, &n.kind) {
                    // A fitting leaf has no children, and adds nothing to a node of any kind.
                    (NodeKind::Field { .. }, _) => true,
                    (NodeKind::Group(c), LKind::Group(t) | LKind::Repeat(t))
                    | (NodeKind::Repeat(c), LKind::Repeat(t)) => covered(c, t),
                    _ => false,
                }
            })
        }
        !self.options.split_select_multiples && covered(&def.children, &self.tree)
    }
}

/// The read-only twin of [`discover_into`]: true where it would add or change a node.
fn grows(tree: &[LNode], el: &Element, how: Discover) -> bool {
    el.children.iter().any(|child| {
        let has_children = !child.children.is_empty();
        let Some(node) = tree.iter().find(|n| n.name == child.name) else {
            return how.add;
        };
        let repeated = || el.children_named(&child.name).nth(1).is_some();
        match &node.kind {
            LKind::Leaf(_) if has_children => true,
            LKind::Group(_) if has_children && repeated() => true,
            LKind::Group(c) | LKind::Repeat(c) => grows(c, child, how),
            LKind::Leaf(FieldType::Select) if how.split => child
                .trimmed_text()
                .split_whitespace()
                .any(|opt| !node.seen.iter().any(|s| s == opt)),
            LKind::Leaf(_) => false,
        }
    })
}

/// What a discovery pass does besides following known structure.
#[derive(Debug, Clone, Copy)]
struct Discover {
    /// Add fields the layout lacks.
    add: bool,
    /// Collect the options of select-multiple fields.
    split: bool,
}

fn discover_into(tree: &mut Vec<LNode>, el: &Element, how: Discover, added: &mut usize) {
    for child in &el.children {
        let count = el.children_named(&child.name).count();
        let has_children = !child.children.is_empty();
        let pos = match tree.iter().position(|n| n.name == child.name) {
            Some(p) => p,
            None if !how.add => continue,
            None => {
                *added += 1;
                tree.push(LNode {
                    name: child.name.clone(),
                    kind: if !has_children {
                        LKind::Leaf(FieldType::String)
                    } else if count > 1 {
                        LKind::Repeat(Vec::new())
                    } else {
                        LKind::Group(Vec::new())
                    },
                    seen: Vec::new(),
                });
                tree.len() - 1
            }
        };
        let Some(node) = tree.get_mut(pos) else {
            continue;
        };
        // A node first seen empty (a leaf) that later arrives with children is a group: the
        // data's structure wins over what was inferred or declared.
        if has_children && matches!(node.kind, LKind::Leaf(_)) {
            node.kind = LKind::Group(Vec::new());
        }
        if count > 1 && has_children && matches!(node.kind, LKind::Group(_)) {
            let LKind::Group(c) = std::mem::replace(&mut node.kind, LKind::Leaf(FieldType::String))
            else {
                continue;
            };
            node.kind = LKind::Repeat(c);
        }
        match &mut node.kind {
            LKind::Group(c) | LKind::Repeat(c) => discover_into(c, child, how, added),
            LKind::Leaf(FieldType::Select) if how.split => {
                for opt in child.trimmed_text().split_whitespace() {
                    if !node.seen.iter().any(|s| s == opt) {
                        *added += 1;
                        node.seen.push(opt.to_owned());
                    }
                }
            }
            LKind::Leaf(_) => {}
        }
    }
}

/// Columns of the table whose context is `nodes`; `prefix` is the group path inside the table.
fn header_of(nodes: &[LNode], prefix: &mut Vec<String>, paths: bool, out: &mut Vec<String>) {
    for n in nodes {
        prefix.push(n.name.clone());
        let name = if paths {
            prefix.join("-")
        } else {
            n.name.clone()
        };
        match &n.kind {
            LKind::Leaf(FieldType::Geopoint) => {
                out.extend(GEO_PARTS.iter().map(|p| format!("{name}-{p}")));
            }
            LKind::Leaf(_) => {
                out.extend(n.seen.iter().map(|o| format!("{name}/{o}")));
                out.insert(out.len() - n.seen.len(), name);
            }
            LKind::Group(c) => header_of(c, prefix, paths, out),
            LKind::Repeat(_) => out.push(format!("SET-OF-{}", n.name)),
        }
        prefix.pop();
    }
}

/// The paths of the repeat tables in [`CsvLayout::tables`] order, without building headers
/// (this runs once per submission).
fn repeat_paths(nodes: &[LNode], path: &mut Vec<String>, out: &mut Vec<Vec<String>>) {
    for n in nodes {
        path.push(n.name.clone());
        match &n.kind {
            LKind::Repeat(c) => {
                out.push(path.clone());
                repeat_paths(c, path, out);
            }
            LKind::Group(c) => repeat_paths(c, path, out),
            LKind::Leaf(_) => {}
        }
        path.pop();
    }
}

fn repeat_tables(nodes: &[LNode], path: &mut Vec<String>, paths: bool, out: &mut Vec<TableSpec>) {
    for n in nodes {
        path.push(n.name.clone());
        match &n.kind {
            LKind::Repeat(c) => {
                let mut header = Vec::new();
                header_of(c, &mut Vec::new(), paths, &mut header);
                header.extend(["PARENT_KEY".to_owned(), "KEY".to_owned()]);
                out.push(TableSpec {
                    path: path.clone(),
                    header,
                });
                repeat_tables(c, path, paths, out);
            }
            LKind::Group(c) => repeat_tables(c, path, paths, out),
            LKind::Leaf(_) => {}
        }
        path.pop();
    }
}

/// Cells of one row for context element `el` (`None`: the group is absent, all cells blank).
/// `key` is the row's KEY, `rel` the group path inside the row (for `SET-OF-` values).
fn cells_of(
    nodes: &[LNode],
    el: Option<&Element>,
    key: &str,
    rel: &mut Vec<String>,
    out: &mut Vec<String>,
) {
    for n in nodes {
        let matches: Vec<&Element> = el
            .map(|e| e.children_named(&n.name).collect())
            .unwrap_or_default();
        rel.push(n.name.clone());
        match &n.kind {
            LKind::Leaf(ty) => {
                let text = matches
                    .iter()
                    .filter(|e| e.children.is_empty())
                    .map(|e| e.trimmed_text())
                    .filter(|t| !t.is_empty())
                    .collect::<Vec<_>>()
                    .join(" ");
                if *ty == FieldType::Geopoint {
                    let parts: Vec<&str> = text.split_whitespace().collect();
                    for i in 0..GEO_PARTS.len() {
                        out.push(parts.get(i).copied().unwrap_or_default().to_owned());
                    }
                } else if n.seen.is_empty() {
                    out.push(text);
                } else {
                    let chosen: Vec<&str> = text.split_whitespace().collect();
                    for opt in &n.seen {
                        out.push(if text.is_empty() {
                            String::new()
                        } else if chosen.contains(&opt.as_str()) {
                            "1".to_owned()
                        } else {
                            "0".to_owned()
                        });
                    }
                    out.insert(out.len() - n.seen.len(), text);
                }
            }
            LKind::Group(c) => cells_of(c, matches.first().copied(), key, rel, out),
            LKind::Repeat(_) => out.push(if matches.is_empty() {
                String::new()
            } else {
                format!("{key}/{}", rel.join("/"))
            }),
        }
        rel.pop();
    }
}

struct RepeatCtx<'a, F> {
    tables: &'a [Vec<String>],
    only: Option<usize>,
    sink: &'a mut F,
}

impl<F: FnMut(usize, Vec<String>) -> Result<(), CoreError>> RepeatCtx<'_, F> {
    /// Emits the rows of every repeat under `el` (context `nodes`), whose row KEY is `key`;
    /// `abs` is the absolute path of `el` below the root (to find the table index).
    fn repeat_rows(
        &mut self,
        nodes: &[LNode],
        el: &Element,
        key: &str,
        abs: &mut Vec<String>,
    ) -> Result<(), CoreError> {
        self.walk(nodes, Some(el), key, &mut Vec::new(), abs)
    }

    fn walk(
        &mut self,
        nodes: &[LNode],
        el: Option<&Element>,
        key: &str,
        rel: &mut Vec<String>,
        abs: &mut Vec<String>,
    ) -> Result<(), CoreError> {
        let Some(el) = el else { return Ok(()) };
        for n in nodes {
            rel.push(n.name.clone());
            abs.push(n.name.clone());
            match &n.kind {
                LKind::Leaf(_) => {}
                LKind::Group(c) => self.walk(c, el.child(&n.name), key, rel, abs)?,
                LKind::Repeat(c) => {
                    let table = self.tables.iter().position(|p| p == abs);
                    for (i, item) in el.children_named(&n.name).enumerate() {
                        let item_key = format!("{key}/{}[{}]", rel.join("/"), i + 1);
                        if let Some(t) = table
                            && self.only.is_none_or(|o| o == t)
                        {
                            let mut row = Vec::new();
                            cells_of(c, Some(item), &item_key, &mut Vec::new(), &mut row);
                            row.push(key.to_owned());
                            row.push(item_key.clone());
                            (self.sink)(t, row)?;
                        }
                        self.walk(c, Some(item), &item_key, &mut Vec::new(), abs)?;
                    }
                }
            }
            rel.pop();
            abs.pop();
        }
        Ok(())
    }
}

/// Writes one CSV table: the header, then rows as they come, encoded by [`csv_line`].
pub struct TableWriter<W: Write> {
    out: W,
    buf: Vec<u8>,
}

/// Bytes a [`TableWriter`] gathers before writing them on.
const TABLE_BUFFER: usize = 64 * 1024;

impl<W: Write> TableWriter<W> {
    /// Starts a table by writing its header.
    pub fn new(out: W, header: &[String]) -> Result<Self, std::io::Error> {
        let mut w = Self {
            out,
            buf: Vec::with_capacity(TABLE_BUFFER),
        };
        w.write_row(header)?;
        Ok(w)
    }

    /// Writes one row.
    pub fn write_row(&mut self, row: &[String]) -> Result<(), std::io::Error> {
        csv_line(&mut self.buf, row);
        if self.buf.len() >= TABLE_BUFFER {
            self.out.write_all(&self.buf)?;
            self.buf.clear();
        }
        Ok(())
    }

    /// Writes what is buffered and returns the underlying writer.
    pub fn finish(mut self) -> Result<W, std::io::Error> {
        self.out.write_all(&self.buf)?;
        self.out.flush()?;
        Ok(self.out)
    }
}

/// Appends one CSV line (RFC 4180 quoting, `\n` terminated) to `out`. The bytes are those of the
/// `csv` crate's default writer (a test holds them to it); encoding here, without a writer and
/// its buffer per row, lets every decrypting core encode its own rows.
pub fn csv_line<S: AsRef<str>>(out: &mut Vec<u8>, cells: &[S]) {
    let mut row = csv_row(out);
    for c in cells {
        row.cell(c.as_ref());
    }
    row.end();
}

/// A CSV line being appended to a buffer.
pub(crate) struct CsvRow<'a> {
    out: &'a mut Vec<u8>,
    cells: usize,
    last_empty: bool,
}

pub(crate) fn csv_row(out: &mut Vec<u8>) -> CsvRow<'_> {
    CsvRow {
        out,
        cells: 0,
        last_empty: false,
    }
}

impl CsvRow<'_> {
    /// Appends one cell.
    pub(crate) fn cell(&mut self, s: &str) {
        self.cell_parts(&[s]);
    }

    /// Appends one cell made of `parts` in order.
    pub(crate) fn cell_parts(&mut self, parts: &[&str]) {
        if self.cells > 0 {
            self.out.push(b',');
        }
        self.cells += 1;
        // Searched with memchr: a cell is often a long free-text answer, and this runs on every
        // byte of an export.
        let quote = parts.iter().any(|p| {
            let b = p.as_bytes();
            memchr::memchr3(b',', b'"', b'\n', b).is_some() || memchr::memchr(b'\r', b).is_some()
        });
        self.last_empty = parts.iter().all(|p| p.is_empty());
        if !quote {
            for p in parts {
                self.out.extend_from_slice(p.as_bytes());
            }
            return;
        }
        self.out.push(b'"');
        for p in parts {
            let mut rest = p.as_bytes();
            while let Some(at) = memchr::memchr(b'"', rest) {
                self.out.extend_from_slice(&rest[..=at]);
                self.out.push(b'"');
                rest = &rest[at + 1..];
            }
            self.out.extend_from_slice(rest);
        }
        self.out.push(b'"');
    }

    /// Ends the line. A line of one empty cell is written `""`, or it would read as no cell.
    pub(crate) fn end(self) {
        if self.cells == 1 && self.last_empty {
            self.out.extend_from_slice(b"\"\"");
        }
        self.out.push(b'\n');
    }
}

#[cfg(test)]
mod tests;
