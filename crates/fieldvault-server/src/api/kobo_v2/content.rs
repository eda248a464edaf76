//! An asset's `content` (specs/kobo-api-v2.md §1.3): the XLSForm rows (`survey`, `choices`)
//! rebuilt from the form's field tree, with translated columns as arrays aligned with
//! `translations`.

use fieldvault_core::schema::{FieldType, FormSchema, Label, Node, NodeKind};
use serde_json::{Map, Value, json};

/// Groups the XForm carries for the server, not for people; KoboToolbox keeps them out of
/// `content` too.
const HIDDEN: [&str; 3] = ["meta", "formhub", "__version__"];

/// The `content` object of an asset.
pub fn content(schema: &FormSchema, title: &str) -> Value {
    let langs: Vec<Option<String>> = if schema.languages.is_empty() {
        vec![None]
    } else {
        schema.languages.iter().cloned().map(Some).collect()
    };
    let mut survey = Vec::new();
    let mut choices = Vec::new();
    rows(&schema.children, &langs, &mut survey, &mut choices);
    json!({
        "schema": "1",
        "survey": survey,
        "choices": choices,
        "settings": {
            "form_title": title,
            "form_id": schema.xml_form_id,
            "version": schema.version,
            "default_language": langs.first().cloned().flatten(),
        },
        "translated": ["label"],
        "translations": langs,
    })
}

/// Language names as `summary.languages` lists them.
pub fn languages(schema: &FormSchema) -> Vec<String> {
    schema.languages.clone()
}

fn kuid(path: &str) -> String {
    let d = fieldvault_crypto::mac::sha256(format!("fieldvault/kobo-row/{path}").as_bytes());
    fieldvault_crypto::random::to_hex(&d[..5])
}

fn labels(ls: &[Label], langs: &[Option<String>]) -> Value {
    Value::Array(
        langs
            .iter()
            .map(|lang| {
                ls.iter()
                    .find(|l| &l.lang == lang)
                    .or_else(|| ls.iter().find(|l| l.lang.is_none()))
                    .map(|l| json!(l.text))
                    .unwrap_or(Value::Null)
            })
            .collect(),
    )
}

fn kobo_type(ty: &FieldType) -> &str {
    match ty {
        FieldType::String => "text",
        FieldType::Int => "integer",
        FieldType::Decimal => "decimal",
        FieldType::Boolean => "acknowledge",
        FieldType::Date => "date",
        FieldType::DateTime => "datetime",
        FieldType::Time => "time",
        FieldType::Geopoint => "geopoint",
        FieldType::Geotrace => "geotrace",
        FieldType::Geoshape => "geoshape",
        FieldType::Select1 => "select_one",
        FieldType::Select => "select_multiple",
        FieldType::Binary => "file",
        FieldType::Barcode => "barcode",
        FieldType::Other(s) => s,
    }
}

fn rows(
    nodes: &[Node],
    langs: &[Option<String>],
    survey: &mut Vec<Value>,
    choices: &mut Vec<Value>,
) {
    for n in nodes {
        if n.path.len() == 1 && HIDDEN.contains(&n.name.as_str()) {
            continue;
        }
        let xpath = n.path.join("/");
        let mut row = Map::new();
        let (begin, end) = match &n.kind {
            NodeKind::Group(_) => ("begin_group", "end_group"),
            NodeKind::Repeat(_) => ("begin_repeat", "end_repeat"),
            NodeKind::Field { ty, choices: cs } => {
                row.insert("type".into(), json!(kobo_type(ty)));
                if matches!(ty, FieldType::Select1 | FieldType::Select) {
                    row.insert("select_from_list_name".into(), json!(n.name));
                    for c in cs {
                        choices.push(json!({
                            "list_name": n.name,
                            "name": c.value,
                            "$autovalue": c.value,
                            "$kuid": kuid(&format!("{xpath}#{}", c.value)),
                            "label": labels(&c.labels, langs),
                        }));
                    }
                }
                ("", "")
            }
        };
        if !begin.is_empty() {
            row.insert("type".into(), json!(begin));
        }
        row.insert("name".into(), json!(n.name));
        row.insert("$kuid".into(), json!(kuid(&xpath)));
        row.insert("$autoname".into(), json!(n.name));
        row.insert("$xpath".into(), json!(xpath));
        if !n.labels.is_empty() {
            row.insert("label".into(), labels(&n.labels, langs));
        }
        survey.push(Value::Object(row));
        if !end.is_empty() {
            rows(n.children(), langs, survey, choices);
            survey.push(json!({ "type": end, "$kuid": kuid(&format!("{xpath}#end")) }));
        }
    }
}
