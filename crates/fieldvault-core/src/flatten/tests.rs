use serde_json::json;

use super::*;
use crate::schema::parse_schema;

const CENSUS: &[u8] = include_bytes!("../../testdata/pyxform-census.xml");

/// A census submission: two members, the first with two visits, a group-less photo, an unknown
/// leaf `legacy` (from an older version) and an unknown leaf inside the repeat.
const SUBMISSION: &str = r#"<data xmlns:jr="http://openrosa.org/javarosa" id="census" version="3">
  <name>Ann &amp; Bo</name><age>41</age><income>1200.50</income><visit>2026-11-27</visit>
  <consent>yes</consent>
  <hh><location>-1.28 36.8 1650 4.5</location><assets>radio phone</assets>
    <member><mname>Ann</mname><mage>41</mage><old_note>x</old_note>
      <visit_log><vdate>2026-01-01</vdate></visit_log><visit_log><vdate>2026-02-01</vdate></visit_log>
    </member>
    <member><mname>Ben</mname><mage>nine</mage></member>
  </hh>
  <photo>p.jpg</photo><double_age/>
  <legacy>kept</legacy>
  <meta><instanceID>uuid:abc</instanceID></meta>
</data>"#;

fn census() -> FormSchema {
    parse_schema(CENSUS, 1 << 20).unwrap()
}

fn inst() -> Instance {
    parse_instance(SUBMISSION.as_bytes(), 1 << 20).unwrap()
}

fn meta() -> RowMeta {
    RowMeta {
        submission_date: "2026-11-27T10:00:00.000Z".into(),
        instance_id: "uuid:abc".into(),
        submitter_id: "5".into(),
        submitter_name: "alice".into(),
        attachments_present: 1,
        attachments_expected: 1,
        review_state: "approved".into(),
        device_id: "collect:1".into(),
        edits: 0,
        form_version: "3".into(),
        ..RowMeta::default()
    }
}

#[test]
fn kobo_json_typed_from_form() {
    let s = census();
    let j = Value::Object(kobo_json(&inst(), Some(&s), Typing::FromForm));
    assert_eq!(
        j,
        json!({
            "name": "Ann & Bo",
            "age": 41,
            "income": 1200.5,
            "visit": "2026-11-27",
            "consent": "yes",
            "hh/location": "-1.28 36.8 1650 4.5",
            "hh/assets": "radio phone",
            "hh/member": [
                {"hh/member/mname": "Ann", "hh/member/mage": 41, "hh/member/old_note": "x",
                 "hh/member/visit_log": [{"hh/member/visit_log/vdate": "2026-01-01"},
                                         {"hh/member/visit_log/vdate": "2026-02-01"}]},
                {"hh/member/mname": "Ben", "hh/member/mage": "nine"}
            ],
            "photo": "p.jpg",
            "legacy": "kept",
            "meta/instanceID": "uuid:abc"
        })
    );
    // Document order is kept.
    let keys: Vec<String> = kobo_json(&inst(), Some(&s), Typing::FromForm)
        .keys()
        .cloned()
        .collect();
    assert_eq!(keys.first().map(String::as_str), Some("name"));
    assert_eq!(keys.last().map(String::as_str), Some("meta/instanceID"));
    assert_eq!(geolocation(&inst(), Some(&s)), Some((-1.28, 36.8)));
}

#[test]
fn kobo_json_strings_and_no_schema() {
    let s = census();
    let strings = kobo_json(&inst(), Some(&s), Typing::Strings);
    assert_eq!(strings.get("age"), Some(&json!("41")));
    assert_eq!(strings.get("income"), Some(&json!("1200.50")));
    // Without a schema: repeated elements with children are repeats; a lone one is a group.
    let inferred = kobo_json(&inst(), None, Typing::FromForm);
    assert_eq!(inferred.get("age"), Some(&json!("41")));
    let members = inferred.get("hh/member").and_then(Value::as_array).unwrap();
    assert_eq!(members.len(), 2);
    // visit_log occurs twice in the first member only: a repeat there.
    assert_eq!(
        members[0].get("hh/member/visit_log"),
        Some(&json!([{"hh/member/visit_log/vdate": "2026-01-01"},
                     {"hh/member/visit_log/vdate": "2026-02-01"}]))
    );
    assert_eq!(geolocation(&inst(), None), None);
    // A leaf repeated without being a repeat becomes a list of values.
    let twice = parse_instance(b"<d><a>1</a><a>2</a><b/></d>", 100).unwrap();
    assert_eq!(
        Value::Object(kobo_json(&twice, None, Typing::Strings)),
        json!({"a": ["1", "2"]})
    );
}

#[test]
fn typed_values() {
    let int = Some(&FieldType::Int);
    assert_eq!(typed("-3", int, Typing::FromForm), json!(-3));
    assert_eq!(typed("3.0", int, Typing::FromForm), json!("3.0"));
    assert_eq!(
        typed("2.5", Some(&FieldType::Decimal), Typing::FromForm),
        json!(2.5)
    );
    assert_eq!(
        typed("NaN", Some(&FieldType::Decimal), Typing::FromForm),
        json!("NaN")
    );
    assert_eq!(
        typed("true", Some(&FieldType::Boolean), Typing::FromForm),
        json!(true)
    );
    assert_eq!(
        typed("0", Some(&FieldType::Boolean), Typing::FromForm),
        json!(false)
    );
    assert_eq!(typed("7", None, Typing::FromForm), json!("7"));
    assert_eq!(parse_point("1 2"), Some(vec![1.0, 2.0]));
    assert_eq!(parse_point("1 x"), None);
    assert_eq!(parse_point("1"), None);
}

fn collect(layout: &CsvLayout, inst: &Instance, only: Option<usize>) -> Vec<(usize, Vec<String>)> {
    let mut rows = Vec::new();
    layout
        .rows(inst, &meta(), only, &mut |t, r| {
            rows.push((t, r));
            Ok(())
        })
        .unwrap();
    rows
}

#[test]
fn csv_tables_like_central() {
    let s = census();
    let mut layout = CsvLayout::new(Some(&s));
    let before = layout.tables();
    assert_eq!(
        before[0].header,
        vec![
            "SubmissionDate",
            "name",
            "age",
            "income",
            "visit",
            "consent",
            "hh-location-Latitude",
            "hh-location-Longitude",
            "hh-location-Altitude",
            "hh-location-Accuracy",
            "hh-assets",
            "SET-OF-member",
            "photo",
            "double_age",
            "meta-instanceID",
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
        ]
    );
    assert_eq!(before[1].path, vec!["hh", "member"]);
    assert_eq!(before[1].repeat_name(), Some("member"));
    assert_eq!(
        before[1].header,
        vec!["mname", "mage", "SET-OF-visit_log", "PARENT_KEY", "KEY"]
    );
    assert_eq!(before[2].header, vec!["vdate", "PARENT_KEY", "KEY"]);

    // Unknown leaves become extra columns after the form's own.
    layout.discover(&inst()).unwrap();
    let tables = layout.tables();
    assert_eq!(tables.len(), 3);
    let main = &tables[0].header;
    assert_eq!(main[main.len() - SYSTEM_COLUMNS.len() - 1], "legacy");
    assert_eq!(
        tables[1].header,
        vec![
            "mname",
            "mage",
            "SET-OF-visit_log",
            "old_note",
            "PARENT_KEY",
            "KEY"
        ]
    );

    let rows = collect(&layout, &inst(), None);
    let tables_of: Vec<usize> = rows.iter().map(|(t, _)| *t).collect();
    assert_eq!(tables_of, vec![0, 1, 2, 2, 1]);
    let main_row = &rows[0].1;
    assert_eq!(main_row.len(), main.len());
    let cell = |name: &str| &main_row[main.iter().position(|h| h == name).unwrap()];
    assert_eq!(cell("SubmissionDate"), "2026-11-27T10:00:00.000Z");
    assert_eq!(cell("name"), "Ann & Bo");
    assert_eq!(cell("hh-location-Latitude"), "-1.28");
    assert_eq!(cell("hh-location-Accuracy"), "4.5");
    assert_eq!(cell("hh-assets"), "radio phone");
    assert_eq!(cell("SET-OF-member"), "uuid:abc/hh/member");
    assert_eq!(cell("double_age"), "");
    assert_eq!(cell("legacy"), "kept");
    assert_eq!(cell("meta-instanceID"), "uuid:abc");
    assert_eq!(cell("ReviewState"), "approved");
    assert_eq!(cell("KEY"), "uuid:abc");
    assert_eq!(
        rows[1].1,
        vec![
            "Ann",
            "41",
            "uuid:abc/hh/member[1]/visit_log",
            "x",
            "uuid:abc",
            "uuid:abc/hh/member[1]"
        ]
    );
    assert_eq!(
        rows[3].1,
        vec![
            "2026-02-01",
            "uuid:abc/hh/member[1]",
            "uuid:abc/hh/member[1]/visit_log[2]"
        ]
    );
    assert_eq!(
        rows[4].1,
        vec!["Ben", "nine", "", "", "uuid:abc", "uuid:abc/hh/member[2]"]
    );
    // One table at a time (for a ZIP stream).
    let only: Vec<usize> = collect(&layout, &inst(), Some(2))
        .iter()
        .map(|(t, _)| *t)
        .collect();
    assert_eq!(only, vec![2, 2]);
}

#[test]
fn csv_without_schema_infers_tables() {
    let mut layout = CsvLayout::new(None);
    layout.discover(&inst()).unwrap();
    let tables = layout.tables();
    let paths: Vec<String> = tables.iter().map(|t| t.path.join("/")).collect();
    assert_eq!(paths, vec!["", "hh/member", "hh/member/visit_log"]);
    assert!(tables[0].header.contains(&"hh-location".to_owned()));
    let rows = collect(&layout, &inst(), None);
    assert_eq!(rows.len(), 5);
    // Inference is deterministic: the same data gives the same layout.
    let mut again = CsvLayout::new(None);
    again.discover(&inst()).unwrap();
    assert_eq!(again.tables(), tables);
}

#[test]
fn discover_is_bounded() {
    let many = format!(
        "<d>{}</d>",
        (0..=MAX_DISCOVERED_COLUMNS)
            .map(|i| format!("<f{i}>1</f{i}>"))
            .collect::<String>()
    );
    let inst = parse_instance(many.as_bytes(), usize::MAX).unwrap();
    assert!(CsvLayout::new(None).discover(&inst).is_err());
}

#[test]
fn table_writer_quotes_and_parses_back() {
    let header = vec!["a".to_owned(), "b".to_owned()];
    let mut w = TableWriter::new(Vec::new(), &header).unwrap();
    w.write_row(&["x,y".to_owned(), "say \"hi\"\nbye".to_owned()])
        .unwrap();
    let bytes = w.finish().unwrap();
    let mut r = csv::Reader::from_reader(bytes.as_slice());
    let rec = r.records().next().unwrap().unwrap();
    assert_eq!(&rec[0], "x,y");
    assert_eq!(&rec[1], "say \"hi\"\nbye");
}

#[test]
fn csv_options_like_central() {
    use super::CsvOptions;
    let s = census();
    // Group paths, select-multiples whole, and (deletedFields=false) no fields the form lacks.
    let only_declared = CsvOptions {
        deleted_fields: false,
        ..CsvOptions::default()
    };
    let mut plain = CsvLayout::with_options(Some(&s), only_declared);
    plain.discover(&inst()).unwrap();
    let header = &plain.tables()[0].header;
    assert!(header.contains(&"hh-assets".to_owned()));
    assert!(!header.contains(&"legacy".to_owned()), "{header:?}");

    let opts = CsvOptions {
        group_paths: false,
        split_select_multiples: true,
        deleted_fields: true,
    };
    let mut layout = CsvLayout::with_options(Some(&s), opts);
    layout.discover(&inst()).unwrap();
    let tables = layout.tables();
    let header = &tables[0].header;
    let at = header.iter().position(|h| h == "assets").unwrap();
    assert_eq!(header[at + 1..at + 3], ["assets/radio", "assets/phone"]);
    assert!(header.contains(&"location-Latitude".to_owned()));
    assert!(header.contains(&"instanceID".to_owned()));
    assert!(header.contains(&"legacy".to_owned()));
    let rows = collect(&layout, &inst(), Some(0));
    let row = &rows[0].1;
    assert_eq!(row.len(), header.len());
    assert_eq!(row[at..at + 3], ["radio phone", "1", "1"]);
    // A submission choosing one option gets 1 and 0; one choosing none, blanks.
    let one = parse_instance(
        SUBMISSION.replace("radio phone", "phone").as_bytes(),
        1 << 20,
    )
    .unwrap();
    assert_eq!(
        collect(&layout, &one, Some(0))[0].1[at..at + 3],
        ["phone", "0", "1"]
    );
    let none = parse_instance(SUBMISSION.replace("radio phone", "").as_bytes(), 1 << 20).unwrap();
    assert_eq!(
        collect(&layout, &none, Some(0))[0].1[at..at + 3],
        ["", "", ""]
    );
}

/// `would_grow` answers exactly what `discover` would do, for every kind of change.
#[test]
fn would_grow_agrees_with_discover() {
    let s = census();
    let check = |layout: &CsvLayout, inst: &Instance| {
        let mut grown = layout.clone();
        grown.discover(inst).unwrap();
        let changed = grown.tables() != layout.tables() || grown.discovered != layout.discovered;
        assert_eq!(layout.would_grow(inst), changed, "{:?}", inst.root_name());
        grown
    };
    // The submission has fields no version declares: it grows the form's layout, and once
    // discovered, the same submission changes nothing.
    let layout = CsvLayout::new(Some(&s));
    let grown = check(&layout, &inst());
    assert!(layout.would_grow(&inst()));
    check(&grown, &inst());
    // Without them it fits the form as it is.
    let fitting = SUBMISSION
        .replace("<legacy>kept</legacy>", "")
        .replace("<old_note>x</old_note>", "");
    let fitting = parse_instance(fitting.as_bytes(), 1 << 20).unwrap();
    assert!(!check(&layout, &fitting).would_grow(&fitting));
    // deletedFields=false adds nothing the form lacks.
    let declared_only = CsvLayout::with_options(
        Some(&s),
        CsvOptions {
            deleted_fields: false,
            ..CsvOptions::default()
        },
    );
    check(&declared_only, &inst());
    // A select-multiple option not seen yet grows a split layout, and only that.
    let split = CsvLayout::with_options(
        Some(&s),
        CsvOptions {
            split_select_multiples: true,
            ..CsvOptions::default()
        },
    );
    let split = check(&split, &fitting);
    let other = parse_instance(
        SUBMISSION
            .replace("<legacy>kept</legacy>", "")
            .replace("<old_note>x</old_note>", "")
            .replace("radio phone", "phone bicycle")
            .as_bytes(),
        1 << 20,
    )
    .unwrap();
    assert!(split.would_grow(&other));
    check(&split, &other);
    // A declared leaf arriving with children, and a group arriving twice, change the structure.
    let nested = parse_instance(
        SUBMISSION
            .replace("<age>41</age>", "<age><y>41</y></age>")
            .as_bytes(),
        1 << 20,
    )
    .unwrap();
    check(&declared_only, &nested);
    assert!(declared_only.would_grow(&nested));
    // Without a form every leaf is new.
    check(&CsvLayout::new(None), &fitting);
}

/// A layout covers the definitions whose fields it holds with compatible kinds, and none when
/// select-multiples are split (their columns come from the answers).
#[test]
fn layout_covers_definitions() {
    let s = census();
    let layout = CsvLayout::new(Some(&s));
    assert!(layout.covers(&s));
    // A definition with a field the layout lacks (a newer version not merged in) is not covered.
    let newer = String::from_utf8(CENSUS.to_vec())
        .unwrap()
        .replace("<photo/>", "<photo/><extra/>");
    let newer = parse_schema(newer.as_bytes(), 1 << 20).unwrap();
    assert!(!layout.covers(&newer));
    // Merged into the layout's schema, it is.
    let mut merged = census();
    merged.merge(&newer);
    assert!(CsvLayout::new(Some(&merged)).covers(&newer));
    assert!(CsvLayout::new(Some(&merged)).covers(&s));
    // Without a form nothing is covered; with split select-multiples nothing is either.
    assert!(!CsvLayout::new(None).covers(&s));
    let split = CsvLayout::with_options(
        Some(&s),
        CsvOptions {
            split_select_multiples: true,
            ..CsvOptions::default()
        },
    );
    assert!(!split.covers(&s));
}
