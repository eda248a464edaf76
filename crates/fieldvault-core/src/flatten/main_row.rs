//! The main table's row of one submission, written straight from the parser's events as CSV
//! bytes.
//!
//! A CSV export runs this once per submission on every core, so its cost per row is the export's
//! speed. The general path ([`CsvLayout::rows`]) builds an element tree of the submission, then a
//! `Vec<String>` of cells, then encodes them: about sixty allocations for a small form, and more
//! CPU than decrypting the row. This writer reads the document once through the same checked
//! reader as the tree parser, copies the text of the leaves the table wants into one buffer and
//! encodes the cells from there, so a row costs a few allocations whatever the form.
//!
//! It writes exactly the bytes of [`CsvLayout::rows`] for table 0 encoded by [`TableWriter`]; the
//! differential tests in `flatten/tests.rs` hold it to that on generated documents. Select-multiple
//! splitting (columns that depend on the answers) and forms whose groups repeat a child name are
//! left to the general path: [`CsvLayout::main_row_writer`] gives no writer for them.

use std::ops::Range;

use super::{CsvLayout, FIELD, GEO_PARTS, LKind, LNode, RowMeta, SYSTEM_COLUMNS, csv_row};
use crate::CoreError;
use crate::schema::FieldType;
use crate::xml::{CheckedReader, Piece, attributes, local_name};

/// The main table of one layout, compiled for streaming.
#[derive(Debug, Clone)]
pub struct MainRowWriter {
    nodes: Vec<PNode>,
    /// The root's children, as indexes into `nodes`, sorted by name.
    root: Vec<usize>,
    /// Cell slots in column order.
    slots: Vec<Slot>,
    groups: usize,
}

#[derive(Debug, Clone)]
struct PNode {
    name: Box<[u8]>,
    kind: PKind,
}

#[derive(Debug, Clone)]
enum PKind {
    /// A field: its slot.
    Leaf(usize),
    /// A group: its children sorted by name, and its number (only the first instance counts).
    Group { children: Vec<usize>, id: usize },
    /// A repeat: its `SET-OF-` slot.
    Repeat(usize),
}

#[derive(Debug, Clone)]
enum Slot {
    Text,
    Geopoint,
    /// A repeat's `SET-OF-` cell: the row's KEY, then this suffix (`/group/repeat`).
    SetOf(String),
}

/// What a slot holds for the current document.
#[derive(Debug, Clone)]
enum Cell {
    Blank,
    Text(Range<usize>),
    Present,
}

/// Where the reader is: one entry per open element.
#[derive(Debug, Clone, Copy)]
enum Frame {
    /// The document element, whatever its name.
    Root,
    Group(usize),
    /// A leaf collecting its text from `start` in the buffer; `spoiled` once a child element
    /// appears (the general path keeps only leaves without children).
    Leaf {
        slot: usize,
        start: usize,
        spoiled: bool,
    },
    /// An element the main table does not read.
    Skip,
}

/// Buffers reused from one submission to the next on the same thread.
#[derive(Debug, Default)]
pub struct RowScratch {
    text: String,
    cells: Vec<Cell>,
    frames: Vec<Frame>,
    visited: Vec<bool>,
}

impl RowScratch {
    /// Drops buffers that one large submission grew past 1 MiB, so a thread does not keep them.
    pub fn shrink(&mut self) {
        if self.text.capacity() > 1 << 20 {
            self.text = String::new();
        }
    }
}

impl CsvLayout {
    /// The streaming writer of the main table, or `None` where only the general path applies.
    pub fn main_row_writer(&self) -> Option<MainRowWriter> {
        if self.options.split_select_multiples {
            return None;
        }
        let mut w = MainRowWriter {
            nodes: Vec::new(),
            root: Vec::new(),
            slots: Vec::new(),
            groups: 0,
        };
        w.root = w.compile(&self.tree, &mut Vec::new())?;
        Some(w)
    }
}

impl MainRowWriter {
    /// Compiles `tree` (whose group path inside the row is `rel`); `None` on a repeated name.
    fn compile(&mut self, tree: &[LNode], rel: &mut Vec<String>) -> Option<Vec<usize>> {
        let mut children = Vec::with_capacity(tree.len());
        for n in tree {
            rel.push(n.name.clone());
            let kind = match &n.kind {
                LKind::Leaf(ty) => {
                    self.slots.push(if *ty == FieldType::Geopoint {
                        Slot::Geopoint
                    } else {
                        Slot::Text
                    });
                    PKind::Leaf(self.slots.len() - 1)
                }
                LKind::Group(c) => {
                    let id = self.groups;
                    self.groups += 1;
                    PKind::Group {
                        children: self.compile(c, rel)?,
                        id,
                    }
                }
                LKind::Repeat(_) => {
                    self.slots.push(Slot::SetOf(format!("/{}", rel.join("/"))));
                    PKind::Repeat(self.slots.len() - 1)
                }
            };
            rel.pop();
            self.nodes.push(PNode {
                name: n.name.as_bytes().into(),
                kind,
            });
            children.push(self.nodes.len() - 1);
        }
        children.sort_by(|a, b| self.nodes[*a].name.cmp(&self.nodes[*b].name));
        let unique = children
            .windows(2)
            .all(|w| self.nodes[w[0]].name != self.nodes[w[1]].name);
        unique.then_some(children)
    }

    fn find(&self, among: &[usize], name: &str) -> Option<usize> {
        among
            .binary_search_by(|i| (*self.nodes[*i].name).cmp(name.as_bytes()))
            .ok()
            .map(|k| among[k])
    }

    /// Appends the CSV line of `xml`'s main-table row to `out`. A document the tree parser would
    /// refuse is refused with the same error, and `out` is then as it was.
    pub fn write_row(
        &self,
        xml: &[u8],
        max_bytes: usize,
        meta: &RowMeta,
        scratch: &mut RowScratch,
        out: &mut Vec<u8>,
    ) -> Result<(), CoreError> {
        self.read(xml, max_bytes, scratch)?;
        // A row is about as long as the document's text; growing a byte at a time cost more
        // than the encoding itself.
        out.reserve(scratch.text.len() + 64 * self.slots.len() + 256);
        let t = &scratch.text;
        let mut row = csv_row(out);
        row.cell(&meta.submission_date);
        for (slot, cell) in self.slots.iter().zip(&scratch.cells) {
            match (slot, cell) {
                (Slot::Text, Cell::Text(r)) => row.cell(&t[r.clone()]),
                (Slot::Geopoint, Cell::Text(r)) => {
                    let mut parts = t[r.clone()].split_whitespace();
                    for _ in GEO_PARTS {
                        row.cell(parts.next().unwrap_or_default());
                    }
                }
                (Slot::Geopoint, _) => {
                    for _ in GEO_PARTS {
                        row.cell("");
                    }
                }
                (Slot::SetOf(suffix), Cell::Present) => {
                    row.cell_parts(&[&meta.instance_id, suffix]);
                }
                _ => row.cell(""),
            }
        }
        let present = meta.attachments_present.to_string();
        let expected = meta.attachments_expected.to_string();
        let edits = meta.edits.to_string();
        let system: [&str; SYSTEM_COLUMNS.len()] = [
            &meta.submitter_id,
            &meta.submitter_name,
            &present,
            &expected,
            &meta.status,
            &meta.review_state,
            &meta.device_id,
            &edits,
            &meta.form_version,
            &meta.instance_id,
        ];
        for s in system {
            row.cell(s);
        }
        row.end();
        Ok(())
    }

    /// Reads the document into `scratch`: each slot's cell, texts in `scratch.text`.
    fn read(
        &self,
        xml: &[u8],
        max_bytes: usize,
        scratch: &mut RowScratch,
    ) -> Result<(), CoreError> {
        let RowScratch {
            text,
            cells,
            frames,
            visited,
        } = scratch;
        text.clear();
        cells.clear();
        cells.resize(self.slots.len(), Cell::Blank);
        frames.clear();
        visited.clear();
        visited.resize(self.groups, false);
        let mut reader = CheckedReader::new(xml, max_bytes, FIELD)?;
        while let Some(piece) = reader.next()? {
            match piece {
                Piece::Open { start, empty } => {
                    let name = local_name(&start, FIELD)?;
                    attributes(&start, FIELD, |_, _, _| Ok(()))?;
                    let frame = match frames.last_mut() {
                        None => Frame::Root,
                        Some(Frame::Skip) => Frame::Skip,
                        Some(Frame::Leaf { spoiled, .. }) => {
                            *spoiled = true;
                            Frame::Skip
                        }
                        Some(parent @ (Frame::Root | Frame::Group(_))) => {
                            let among = match parent {
                                Frame::Group(g) => match &self.nodes[*g].kind {
                                    PKind::Group { children, .. } => children.as_slice(),
                                    _ => &[],
                                },
                                _ => self.root.as_slice(),
                            };
                            match self.find(among, name).map(|i| (i, &self.nodes[i].kind)) {
                                None => Frame::Skip,
                                Some((_, PKind::Leaf(slot))) => Frame::Leaf {
                                    slot: *slot,
                                    start: text.len(),
                                    spoiled: false,
                                },
                                Some((i, PKind::Group { id, .. })) => {
                                    if std::mem::replace(&mut visited[*id], true) {
                                        Frame::Skip
                                    } else {
                                        Frame::Group(i)
                                    }
                                }
                                Some((_, PKind::Repeat(slot))) => {
                                    cells[*slot] = Cell::Present;
                                    Frame::Skip
                                }
                            }
                        }
                    };
                    if !empty {
                        frames.push(frame);
                    }
                }
                Piece::Text(s) => {
                    if let Some(Frame::Leaf { .. }) = frames.last() {
                        text.push_str(&s);
                    }
                }
                Piece::Close => {
                    if let Some(Frame::Leaf {
                        slot,
                        start,
                        spoiled,
                    }) = frames.pop()
                    {
                        close_leaf(text, &mut cells[slot], start, spoiled);
                    }
                }
            }
        }
        Ok(())
    }
}

/// Keeps a closed leaf's trimmed text in its cell; a second leaf of the same name is joined to
/// the first with a space, as the general path joins them.
fn close_leaf(text: &mut String, cell: &mut Cell, start: usize, spoiled: bool) {
    let own = &text[start..];
    let trimmed = own.trim();
    if spoiled || trimmed.is_empty() {
        text.truncate(start);
        return;
    }
    let lead = own.len() - own.trim_start().len();
    let range = start + lead..start + lead + trimmed.len();
    match cell {
        Cell::Text(first) => {
            let joined = format!("{} {}", &text[first.clone()], &text[range]);
            text.truncate(start);
            let at = text.len();
            text.push_str(&joined);
            *cell = Cell::Text(at..text.len());
        }
        _ => *cell = Cell::Text(range),
    }
}

#[cfg(test)]
mod tests;
