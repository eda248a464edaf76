//! The streaming writer against the general path: on every generated document and layout, the
//! same bytes, or the same error.

use super::super::{CsvLayout, CsvOptions, RowMeta, csv_line, parse_instance};
use super::RowScratch;
use crate::schema::parse_schema;

const CENSUS: &[u8] = include_bytes!("../../../testdata/pyxform-census.xml");

/// A small deterministic generator (xorshift64), so a failure reproduces.
struct Gen(u64);

impl Gen {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    fn pick<'a>(&mut self, from: &[&'a str]) -> &'a str {
        from[self.below(from.len())]
    }
}

/// Names of the census form at every level, and some it does not declare.
const NAMES: &[&str] = &[
    "name",
    "age",
    "hh",
    "location",
    "assets",
    "member",
    "mname",
    "mage",
    "visit_log",
    "vdate",
    "photo",
    "legacy",
    "meta",
    "instanceID",
    "consent",
    "x",
    "grp",
];

/// Texts as they appear in XML (escaped), covering CSV quoting, whitespace and references.
const TEXTS: &[&str] = &[
    "",
    " ",
    "a",
    "  b c  ",
    "1,2",
    "say &quot;hi&quot;",
    "line\nbreak",
    "carriage\r\nreturn",
    "&lt;tag&gt; &amp; &#65;&#x42;",
    "-1.28 36.8 1650 4.5",
    "1.5 2.5",
    "<![CDATA[raw, \"quoted\" <x>]]>",
    "é ü 日本",
    "<!-- note -->kept",
];

fn element(g: &mut Gen, depth: usize, out: &mut String) {
    let name = g.pick(NAMES);
    match g.below(6) {
        0 => out.push_str(&format!("<{name}/>")),
        1 | 2 if depth < 4 => {
            out.push_str(&format!("<{name}>"));
            if g.below(4) == 0 {
                out.push_str(g.pick(TEXTS));
            }
            for _ in 0..g.below(5) {
                element(g, depth + 1, out);
            }
            out.push_str(&format!("</{name}>"));
        }
        _ => out.push_str(&format!("<{name}>{}</{name}>", g.pick(TEXTS))),
    }
}

fn document(g: &mut Gen) -> String {
    let mut s = String::from(
        r#"<?xml version="1.0"?><data id="census" version="3" xmlns:jr="http://openrosa.org/javarosa">"#,
    );
    for _ in 0..g.below(8) {
        element(g, 1, &mut s);
    }
    s.push_str(" </data>");
    s
}

fn meta() -> RowMeta {
    RowMeta {
        submission_date: "2026-12-07T10:00:00.000Z".into(),
        instance_id: "uuid:a,b".into(),
        submitter_id: "5".into(),
        submitter_name: "Ann \"A\"".into(),
        attachments_present: 1,
        attachments_expected: 2,
        device_id: "collect:1".into(),
        form_version: "3".into(),
        ..RowMeta::default()
    }
}

/// The general path's bytes for the main table, or its error.
fn general(layout: &CsvLayout, xml: &str) -> Result<Vec<u8>, String> {
    let inst = parse_instance(xml.as_bytes(), 1 << 20).map_err(|e| e.to_string())?;
    let mut out = Vec::new();
    layout
        .rows(&inst, &meta(), Some(0), &mut |_, row| {
            csv_line(&mut out, &row);
            Ok(())
        })
        .map_err(|e| e.to_string())?;
    Ok(out)
}

fn streamed(layout: &CsvLayout, xml: &str, scratch: &mut RowScratch) -> Result<Vec<u8>, String> {
    let w = layout.main_row_writer().expect("a writer for this layout");
    let mut out = Vec::new();
    w.write_row(xml.as_bytes(), 1 << 20, &meta(), scratch, &mut out)
        .map_err(|e| e.to_string())?;
    Ok(out)
}

fn same(layout: &CsvLayout, xml: &str, scratch: &mut RowScratch) {
    let want = general(layout, xml);
    let got = streamed(layout, xml, scratch);
    assert_eq!(
        got.as_ref().map(|b| String::from_utf8_lossy(b)),
        want.as_ref().map(|b| String::from_utf8_lossy(b)),
        "document: {xml}"
    );
}

#[test]
fn same_rows_as_the_general_path() {
    let schema = parse_schema(CENSUS, 1 << 20).unwrap();
    let declared = CsvLayout::new(Some(&schema));
    let only_declared = CsvLayout::with_options(
        Some(&schema),
        CsvOptions {
            deleted_fields: false,
            group_paths: false,
            ..CsvOptions::default()
        },
    );
    let mut g = Gen(0x5eed_f1e1_d0a7_2026);
    let mut scratch = RowScratch::default();
    let mut grown = declared.clone();
    let mut inferred = CsvLayout::new(None);
    let mut compared = 0;
    for n in 0..3_000 {
        // Random nesting soon adds thousands of columns; start again every few dozen documents.
        if n % 40 == 0 {
            grown = declared.clone();
            inferred = CsvLayout::new(None);
        }
        let xml = document(&mut g);
        let inst = parse_instance(xml.as_bytes(), 1 << 20).unwrap();
        // Layouts that have seen this document and its predecessors, as an export's would.
        grown.discover(&inst).unwrap();
        inferred.discover(&inst).unwrap();
        for layout in [&declared, &only_declared, &grown, &inferred] {
            same(layout, &xml, &mut scratch);
            compared += 1;
        }
    }
    assert_eq!(compared, 12_000);
}

#[test]
fn same_errors_as_the_general_path() {
    let layout = CsvLayout::new(None);
    let mut scratch = RowScratch::default();
    for xml in [
        "",
        "<data>",
        "<data><a></data>",
        "<!DOCTYPE data [<!ENTITY x \"y\">]><data>&x;</data>",
        "<data>&foo;</data>",
        "<data>&#xFFFFFFF;</data>",
        "<data/><data/>",
        "<data/>trailing",
        r#"<data a="&x;"/>"#,
        "<data><a b=></a></data>",
        "</data>",
    ] {
        assert!(general(&layout, xml).is_err(), "{xml}");
        same(&layout, xml, &mut scratch);
    }
    let deep = "<a>".repeat(300) + &"</a>".repeat(300);
    same(&layout, &deep, &mut scratch);
}

#[test]
fn refuses_what_it_cannot_stream() {
    let schema = parse_schema(CENSUS, 1 << 20).unwrap();
    let split = CsvLayout::with_options(
        Some(&schema),
        CsvOptions {
            split_select_multiples: true,
            ..CsvOptions::default()
        },
    );
    assert!(split.main_row_writer().is_none());
    assert!(CsvLayout::new(Some(&schema)).main_row_writer().is_some());
}

#[test]
fn csv_line_is_the_csv_crates_encoding() {
    let cells = [
        "",
        "plain",
        "a,b",
        "say \"hi\"",
        "\"",
        "line\nbreak",
        "cr\rx",
        " spaced ",
        "#hash",
        "é,ü",
        "'single'",
        "tab\there",
    ];
    let mut g = Gen(42);
    for n in 1..200 {
        let row: Vec<String> = (0..1 + n % 5)
            .map(|_| (0..g.below(3)).map(|_| g.pick(&cells)).collect::<String>())
            .collect();
        let mut ours = Vec::new();
        csv_line(&mut ours, &row);
        let mut w = csv::Writer::from_writer(Vec::new());
        w.write_record(&row).unwrap();
        assert_eq!(ours, w.into_inner().unwrap(), "{row:?}");
    }
}
