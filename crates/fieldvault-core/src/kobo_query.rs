//! KoboToolbox's `query` parameter: a bounded subset of MongoDB's filter language, evaluated over
//! the flat JSON of a submission (specs/kobo-api-v2.md §2.1).
//!
//! Accepted operators: `$and $or $nor $not $in $nin $gt $gte $lt $lte $ne $exists $regex $options
//! $all $elemMatch`. Any other `$`-word (KPI treats `$eq` and friends as literal keys that match
//! nothing) is refused with [`QueryError::Unsupported`], so a typo is an error rather than an empty
//! result. Input is bounded: nesting depth, number of conditions, list lengths, regex pattern
//! length and compiled size.
//!
//! Semantics follow MongoDB where KPI relies on them: equality is type-sensitive (`"0"` ≠ `0`); a
//! field holding an array matches a value when any element does; `$ne` and `$nin` match a missing
//! field; ordered comparisons only compare values of the same kind (numbers with numbers, strings
//! with strings — `_submission_time` is compared as a string); keys are literal names, except that a
//! dotted key that is not present reaches into an object (`_validation_status.uid`).

use std::cmp::Ordering;

use regex::{Regex, RegexBuilder};
use serde_json::{Map, Value};

/// Deepest nesting of `$and`/`$or`/`$not`/`$elemMatch`.
pub const MAX_DEPTH: usize = 16;
/// Most conditions in one query.
pub const MAX_CONDITIONS: usize = 256;
/// Longest `$in`/`$nin`/`$all` list.
pub const MAX_LIST: usize = 10_000;
/// Longest regex pattern (characters).
pub const MAX_PATTERN: usize = 1_000;
/// Compiled-size limit of one regex (bytes).
const REGEX_SIZE_LIMIT: usize = 256 * 1024;

/// Why a query was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum QueryError {
    /// The text is not JSON, or not a JSON object.
    #[error("Value must be valid JSON.")]
    NotJson,
    /// An operator outside the accepted set, or one used in the wrong place.
    #[error("Unsupported query: {0}")]
    Unsupported(String),
    /// An operator's argument has the wrong shape.
    #[error("{0}")]
    Invalid(String),
    /// Too deep, too many conditions, too long a list or pattern.
    #[error("Query too large: {0}")]
    TooLarge(String),
}

/// A parsed filter.
#[derive(Debug, Clone)]
pub enum Query {
    /// Every part matches (a top-level object with several keys is an implicit `$and`).
    And(Vec<Query>),
    /// At least one part matches.
    Or(Vec<Query>),
    /// No part matches.
    Nor(Vec<Query>),
    /// Conditions on one field, all of which must hold.
    Field(String, Vec<Cond>),
}

/// One condition on a field's value.
#[derive(Debug, Clone)]
pub enum Cond {
    /// Equal (or, for an array, containing an equal element).
    Eq(Value),
    /// Not [`Cond::Eq`].
    Ne(Value),
    /// Equal to one of the values.
    In(Vec<Value>),
    /// Equal to none of the values.
    Nin(Vec<Value>),
    /// Greater than (same kind only).
    Gt(Value),
    /// Greater or equal.
    Gte(Value),
    /// Less than.
    Lt(Value),
    /// Less or equal.
    Lte(Value),
    /// The field is present (`true`) or absent (`false`).
    Exists(bool),
    /// A string value matching the pattern.
    Regex(Regex),
    /// None of the inner conditions' conjunction holds.
    Not(Vec<Cond>),
    /// An array holding every value.
    All(Vec<Value>),
    /// An array with an element (an object) matching the query.
    ElemMatch(Box<Query>),
}

struct Budget {
    conditions: usize,
}

impl Budget {
    fn take(&mut self) -> Result<(), QueryError> {
        self.conditions += 1;
        if self.conditions > MAX_CONDITIONS {
            return Err(QueryError::TooLarge(format!(
                "more than {MAX_CONDITIONS} conditions"
            )));
        }
        Ok(())
    }
}

impl Query {
    /// Parses the text of a `query` parameter.
    pub fn parse_str(text: &str) -> Result<Query, QueryError> {
        let v: Value = serde_json::from_str(text).map_err(|_| QueryError::NotJson)?;
        Query::parse(&v)
    }

    /// Parses a JSON filter object.
    pub fn parse(v: &Value) -> Result<Query, QueryError> {
        let Value::Object(m) = v else {
            return Err(QueryError::NotJson);
        };
        parse_object(m, 0, &mut Budget { conditions: 0 })
    }

    /// The query that matches everything (`{}`).
    pub fn all() -> Query {
        Query::And(Vec::new())
    }

    /// Whether the query matches every document (`{}`, or `$and`s of it): then a page can be
    /// read at its offset instead of scanning and decrypting every submission.
    pub fn is_all(&self) -> bool {
        matches!(self, Query::And(parts) if parts.iter().all(Query::is_all))
    }

    /// Whether the query reads the field `key` or a path inside it (`key.sub`), so a caller
    /// knows which costly fields it must fill in before matching.
    pub fn mentions(&self, key: &str) -> bool {
        match self {
            Query::And(parts) | Query::Or(parts) | Query::Nor(parts) => {
                parts.iter().any(|q| q.mentions(key))
            }
            Query::Field(k, _) => path_within(k, key),
        }
    }

    /// Whether the flat submission `doc` matches.
    pub fn matches(&self, doc: &Map<String, Value>) -> bool {
        match self {
            Query::And(parts) => parts.iter().all(|q| q.matches(doc)),
            Query::Or(parts) => parts.iter().any(|q| q.matches(doc)),
            Query::Nor(parts) => !parts.iter().any(|q| q.matches(doc)),
            Query::Field(key, conds) => {
                let value = lookup(doc, key);
                conds.iter().all(|c| c.holds(value))
            }
        }
    }
}

/// Whether `path` is `key` or a dotted path inside it.
fn path_within(path: &str, key: &str) -> bool {
    path.strip_prefix(key)
        .is_some_and(|rest| rest.is_empty() || rest.starts_with('.'))
}

/// The value of `key` in `doc`: the literal key, else a dotted path into objects.
pub fn lookup<'a>(doc: &'a Map<String, Value>, key: &str) -> Option<&'a Value> {
    if let Some(v) = doc.get(key) {
        return Some(v);
    }
    let (head, rest) = key.split_once('.')?;
    match doc.get(head)? {
        Value::Object(inner) => lookup(inner, rest),
        _ => None,
    }
}

fn parse_object(m: &Map<String, Value>, depth: usize, b: &mut Budget) -> Result<Query, QueryError> {
    if depth > MAX_DEPTH {
        return Err(QueryError::TooLarge(format!(
            "nested more than {MAX_DEPTH} levels"
        )));
    }
    let mut parts = Vec::with_capacity(m.len());
    for (key, value) in m {
        b.take()?;
        let q = match key.as_str() {
            "$and" | "$or" | "$nor" => {
                let Value::Array(items) = value else {
                    return Err(QueryError::Invalid(format!("{key} needs an array")));
                };
                if items.is_empty() {
                    return Err(QueryError::Invalid(format!(
                        "{key} needs a non-empty array"
                    )));
                }
                let subs = items
                    .iter()
                    .map(|item| match item {
                        Value::Object(o) => parse_object(o, depth + 1, b),
                        _ => Err(QueryError::Invalid(format!(
                            "{key} needs an array of objects"
                        ))),
                    })
                    .collect::<Result<Vec<_>, _>>()?;
                match key.as_str() {
                    "$and" => Query::And(subs),
                    "$or" => Query::Or(subs),
                    _ => Query::Nor(subs),
                }
            }
            k if k.starts_with('$') => return Err(QueryError::Unsupported(k.to_owned())),
            field => Query::Field(field.to_owned(), parse_field(value, depth + 1, b)?),
        };
        parts.push(q);
    }
    Ok(if parts.len() == 1 {
        parts.pop().unwrap_or_else(Query::all)
    } else {
        Query::And(parts)
    })
}

/// `{field: value}` or `{field: {"$op": arg, …}}`. An object without `$` keys is a literal value.
fn parse_field(value: &Value, depth: usize, b: &mut Budget) -> Result<Vec<Cond>, QueryError> {
    match value {
        Value::Object(ops) if ops.keys().any(|k| k.starts_with('$')) => {
            if !ops.keys().all(|k| k.starts_with('$')) {
                return Err(QueryError::Invalid(
                    "an operator object cannot mix operators and field names".into(),
                ));
            }
            parse_ops(ops, depth, b)
        }
        other => Ok(vec![Cond::Eq(other.clone())]),
    }
}

fn parse_ops(
    ops: &Map<String, Value>,
    depth: usize,
    b: &mut Budget,
) -> Result<Vec<Cond>, QueryError> {
    if depth > MAX_DEPTH {
        return Err(QueryError::TooLarge(format!(
            "nested more than {MAX_DEPTH} levels"
        )));
    }
    let options = match ops.get("$options") {
        None => "",
        Some(Value::String(s)) => s.as_str(),
        Some(_) => return Err(QueryError::Invalid("$options needs a string".into())),
    };
    if ops.contains_key("$options") && !ops.contains_key("$regex") {
        return Err(QueryError::Invalid("$options needs $regex".into()));
    }
    let mut out = Vec::with_capacity(ops.len());
    for (op, arg) in ops {
        b.take()?;
        let c = match op.as_str() {
            "$ne" => Cond::Ne(arg.clone()),
            "$gt" => Cond::Gt(arg.clone()),
            "$gte" => Cond::Gte(arg.clone()),
            "$lt" => Cond::Lt(arg.clone()),
            "$lte" => Cond::Lte(arg.clone()),
            "$in" => Cond::In(list(op, arg)?),
            "$nin" => Cond::Nin(list(op, arg)?),
            "$all" => Cond::All(
                list(op, arg).map_err(|_| QueryError::Invalid("$all needs an array".into()))?,
            ),
            "$exists" => Cond::Exists(truthy(arg)),
            "$regex" => Cond::Regex(regex(arg, options)?),
            "$options" => continue,
            "$not" => match arg {
                Value::Object(inner)
                    if inner.keys().all(|k| k.starts_with('$')) && !inner.is_empty() =>
                {
                    Cond::Not(parse_ops(inner, depth + 1, b)?)
                }
                Value::String(_) => Cond::Not(vec![Cond::Regex(regex(arg, "")?)]),
                _ => return Err(QueryError::Invalid("$not needs an operator object".into())),
            },
            "$elemMatch" => match arg {
                Value::Object(inner) => {
                    Cond::ElemMatch(Box::new(parse_object(inner, depth + 1, b)?))
                }
                _ => return Err(QueryError::Invalid("$elemMatch needs an object".into())),
            },
            other => return Err(QueryError::Unsupported(other.to_owned())),
        };
        out.push(c);
    }
    Ok(out)
}

fn list(op: &str, arg: &Value) -> Result<Vec<Value>, QueryError> {
    let Value::Array(items) = arg else {
        return Err(QueryError::Invalid(format!("{op} needs an array")));
    };
    if items.len() > MAX_LIST {
        return Err(QueryError::TooLarge(format!(
            "{op} lists at most {MAX_LIST} values"
        )));
    }
    Ok(items.clone())
}

fn truthy(v: &Value) -> bool {
    match v {
        Value::Bool(b) => *b,
        Value::Null => false,
        Value::Number(n) => n.as_f64().is_some_and(|f| f != 0.0),
        _ => true,
    }
}

fn regex(arg: &Value, options: &str) -> Result<Regex, QueryError> {
    let Value::String(pattern) = arg else {
        return Err(QueryError::Invalid("$regex needs a string".into()));
    };
    if pattern.chars().count() > MAX_PATTERN {
        return Err(QueryError::TooLarge(format!(
            "a $regex pattern has at most {MAX_PATTERN} characters"
        )));
    }
    let mut builder = RegexBuilder::new(pattern);
    for o in options.chars() {
        match o {
            'i' => builder.case_insensitive(true),
            'm' => builder.multi_line(true),
            's' => builder.dot_matches_new_line(true),
            'x' => builder.ignore_whitespace(true),
            other => {
                return Err(QueryError::Invalid(format!(
                    "$options: unknown flag {other:?}"
                )));
            }
        };
    }
    builder
        .size_limit(REGEX_SIZE_LIMIT)
        .dfa_size_limit(REGEX_SIZE_LIMIT)
        .build()
        .map_err(|e| match e {
            regex::Error::CompiledTooBig(_) => QueryError::TooLarge("$regex is too complex".into()),
            other => QueryError::Invalid(format!("$regex: {other}")),
        })
}

impl Cond {
    fn holds(&self, value: Option<&Value>) -> bool {
        match self {
            Cond::Eq(want) => value.is_some_and(|v| equal_or_contains(v, want)),
            Cond::Ne(want) => !value.is_some_and(|v| equal_or_contains(v, want)),
            Cond::In(wants) => value.is_some_and(|v| wants.iter().any(|w| equal_or_contains(v, w))),
            Cond::Nin(wants) => {
                !value.is_some_and(|v| wants.iter().any(|w| equal_or_contains(v, w)))
            }
            Cond::Gt(w) => ordered(value, w, |o| o == Ordering::Greater),
            Cond::Gte(w) => ordered(value, w, |o| o != Ordering::Less),
            Cond::Lt(w) => ordered(value, w, |o| o == Ordering::Less),
            Cond::Lte(w) => ordered(value, w, |o| o != Ordering::Greater),
            Cond::Exists(want) => value.is_some() == *want,
            Cond::Regex(re) => value.is_some_and(|v| match v {
                Value::String(s) => re.is_match(s),
                Value::Array(items) => items
                    .iter()
                    .any(|i| matches!(i, Value::String(s) if re.is_match(s))),
                _ => false,
            }),
            Cond::Not(inner) => !inner.iter().all(|c| c.holds(value)),
            Cond::All(wants) => match value {
                Some(Value::Array(items)) => wants.iter().all(|w| items.contains(w)),
                Some(v) => wants.iter().all(|w| v == w),
                None => false,
            },
            Cond::ElemMatch(q) => match value {
                Some(Value::Array(items)) => items.iter().any(|i| match i {
                    Value::Object(o) => q.matches(o),
                    _ => false,
                }),
                _ => false,
            },
        }
    }
}

fn equal_or_contains(v: &Value, want: &Value) -> bool {
    if v == want || numbers_equal(v, want) {
        return true;
    }
    match v {
        Value::Array(items) => items.iter().any(|i| i == want || numbers_equal(i, want)),
        _ => false,
    }
}

fn numbers_equal(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => x.as_f64() == y.as_f64(),
        _ => false,
    }
}

fn ordered(value: Option<&Value>, want: &Value, ok: impl Fn(Ordering) -> bool) -> bool {
    let cmp_one = |v: &Value| same_kind_cmp(v, want).is_some_and(&ok);
    match value {
        Some(Value::Array(items)) => items.iter().any(cmp_one),
        Some(v) => cmp_one(v),
        None => false,
    }
}

fn same_kind_cmp(a: &Value, b: &Value) -> Option<Ordering> {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => x.as_f64()?.partial_cmp(&y.as_f64()?),
        (Value::String(x), Value::String(y)) => Some(x.cmp(y)),
        (Value::Bool(x), Value::Bool(y)) => Some(x.cmp(y)),
        _ => None,
    }
}

/// A parsed `sort` parameter: keys with direction (`true` = ascending).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sort(pub Vec<(String, bool)>);

impl Sort {
    /// Parses `{"key": 1|-1, …}`; at most 16 keys.
    pub fn parse_str(text: &str) -> Result<Sort, QueryError> {
        let v: Value = serde_json::from_str(text).map_err(|_| QueryError::NotJson)?;
        let Value::Object(m) = v else {
            return Err(QueryError::NotJson);
        };
        if m.len() > 16 {
            return Err(QueryError::TooLarge("sort by at most 16 keys".into()));
        }
        let mut keys = Vec::with_capacity(m.len());
        for (k, d) in m {
            let asc = match d.as_i64() {
                Some(1) => true,
                Some(-1) => false,
                _ => return Err(QueryError::Invalid(format!("sort: {k} must be 1 or -1"))),
            };
            keys.push((k, asc));
        }
        Ok(Sort(keys))
    }

    /// Whether the order reads the field `key` or a path inside it.
    pub fn mentions(&self, key: &str) -> bool {
        self.0.iter().any(|(k, _)| path_within(k, key))
    }

    /// True for the default order (ascending `_id`), which needs no buffering.
    pub fn is_by_id(&self) -> bool {
        self.0.is_empty() || (self.0.len() == 1 && self.0[0] == ("_id".to_owned(), true))
    }

    /// Orders two documents; ties keep `_id` order.
    pub fn compare(&self, a: &Map<String, Value>, b: &Map<String, Value>) -> Ordering {
        for (k, asc) in &self.0 {
            let o = total_cmp(lookup(a, k), lookup(b, k));
            let o = if *asc { o } else { o.reverse() };
            if o != Ordering::Equal {
                return o;
            }
        }
        total_cmp(a.get("_id"), b.get("_id"))
    }
}

/// Mongo's cross-type order, simplified: missing/null < numbers < strings < objects/arrays < bools.
fn total_cmp(a: Option<&Value>, b: Option<&Value>) -> Ordering {
    fn rank(v: Option<&Value>) -> u8 {
        match v {
            None | Some(Value::Null) => 0,
            Some(Value::Number(_)) => 1,
            Some(Value::String(_)) => 2,
            Some(Value::Object(_)) | Some(Value::Array(_)) => 3,
            Some(Value::Bool(_)) => 4,
        }
    }
    match (a, b) {
        (Some(x), Some(y)) => same_kind_cmp(x, y).unwrap_or_else(|| rank(a).cmp(&rank(b))),
        _ => rank(a).cmp(&rank(b)),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use serde_json::json;

    use super::*;

    fn doc(v: Value) -> Map<String, Value> {
        match v {
            Value::Object(m) => m,
            _ => Map::new(),
        }
    }

    fn q(text: &str) -> Query {
        Query::parse_str(text).unwrap()
    }

    #[test]
    fn match_all_and_mentioned_fields_are_recognised() {
        assert!(q("{}").is_all());
        assert!(q(r#"{"$and":[{},{}]}"#).is_all());
        assert!(!q(r#"{"$or":[{"a":1}]}"#).is_all());
        assert!(!q(r#"{"pet":"0"}"#).is_all());
        let att = q(r#"{"$or":[{"pet":"0"},{"_attachments.mimetype":"image/jpeg"}]}"#);
        assert!(att.mentions("_attachments"));
        assert!(!att.mentions("_attach"));
        assert!(q(r#"{"_attachments":{"$exists":true}}"#).mentions("_attachments"));
        assert!(!q(r#"{"_attachments_count":1}"#).mentions("_attachments"));
        assert!(
            Sort::parse_str(r#"{"_attachments.filename":1}"#)
                .unwrap()
                .mentions("_attachments")
        );
        assert!(
            !Sort::parse_str(r#"{"pet":-1}"#)
                .unwrap()
                .mentions("_attachments")
        );
    }

    #[test]
    fn equality_is_type_sensitive_and_reaches_arrays() {
        let d = doc(json!({"_id": 3, "pet": "0", "tags": ["a", "b"]}));
        assert!(q(r#"{"pet":"0"}"#).matches(&d));
        assert!(!q(r#"{"pet":0}"#).matches(&d));
        assert!(q(r#"{"_id":3}"#).matches(&d));
        assert!(q(r#"{"_id":3.0}"#).matches(&d));
        assert!(q(r#"{"tags":"b"}"#).matches(&d));
        assert!(!q(r#"{"tags":"c"}"#).matches(&d));
        assert!(q(r#"{}"#).matches(&d));
        assert!(!q(r#"{"missing":"x"}"#).matches(&d));
    }

    #[test]
    fn comparison_operators_compare_same_kinds_only() {
        let d = doc(json!({"_id": 5, "_submission_time": "2022-01-07T10:38:30", "age": "30"}));
        assert!(q(r#"{"_submission_time":{"$gt":"2022-01-01T00:00:00"}}"#).matches(&d));
        assert!(!q(r#"{"_submission_time":{"$lt":"2022-01-01T00:00:00"}}"#).matches(&d));
        assert!(q(r#"{"_id":{"$gte":5,"$lte":5}}"#).matches(&d));
        assert!(!q(r#"{"_id":{"$gt":5}}"#).matches(&d));
        assert!(q(r#"{"_id":{"$lt":6}}"#).matches(&d));
        // A string is never greater than a number, nor the reverse.
        assert!(!q(r#"{"age":{"$gt":3}}"#).matches(&d));
        assert!(!q(r#"{"age":{"$lt":300}}"#).matches(&d));
        assert!(!q(r#"{"missing":{"$gt":0}}"#).matches(&d));
    }

    #[test]
    fn set_and_existence_operators() {
        let d = doc(json!({"_id": 2, "who": "bob"}));
        assert!(q(r#"{"who":{"$in":["alice","bob"]}}"#).matches(&d));
        assert!(!q(r#"{"who":{"$nin":["alice","bob"]}}"#).matches(&d));
        assert!(q(r#"{"_id":{"$in":[1,2]}}"#).matches(&d));
        assert!(q(r#"{"who":{"$ne":"carol"}}"#).matches(&d));
        assert!(!q(r#"{"who":{"$ne":"bob"}}"#).matches(&d));
        // $ne and $nin match a missing field, $in does not.
        assert!(q(r#"{"nope":{"$ne":"x"}}"#).matches(&d));
        assert!(q(r#"{"nope":{"$nin":["x"]}}"#).matches(&d));
        assert!(!q(r#"{"nope":{"$in":["x"]}}"#).matches(&d));
        assert!(q(r#"{"who":{"$exists":true}}"#).matches(&d));
        assert!(q(r#"{"nope":{"$exists":false}}"#).matches(&d));
        assert!(!q(r#"{"nope":{"$exists":true}}"#).matches(&d));
    }

    #[test]
    fn boolean_combinators_and_not() {
        let d = doc(json!({"a": "1", "b": "2"}));
        assert!(q(r#"{"$or":[{"a":"9"},{"b":"2"}]}"#).matches(&d));
        assert!(!q(r#"{"$and":[{"a":"1"},{"b":"9"}]}"#).matches(&d));
        assert!(q(r#"{"$and":[{"a":"1"},{"$or":[{"b":"2"},{"c":"3"}]}]}"#).matches(&d));
        assert!(q(r#"{"a":"1","b":"2"}"#).matches(&d));
        assert!(!q(r#"{"a":"1","b":"3"}"#).matches(&d));
        assert!(!q(r#"{"$nor":[{"a":"1"}]}"#).matches(&d));
        assert!(q(r#"{"a":{"$not":{"$in":["7","8"]}}}"#).matches(&d));
        assert!(!q(r#"{"a":{"$not":{"$regex":"^1$"}}}"#).matches(&d));
    }

    #[test]
    fn regex_with_options_and_dotted_validation_status() {
        let d = doc(json!({
            "name": "Ahmad Khan",
            "_validation_status": {"uid": "validation_status_approved"}
        }));
        assert!(q(r#"{"name":{"$regex":"^ahm","$options":"i"}}"#).matches(&d));
        assert!(!q(r#"{"name":{"$regex":"^ahm"}}"#).matches(&d));
        assert!(q(r#"{"_validation_status.uid":"validation_status_approved"}"#).matches(&d));
        assert!(!q(r#"{"_validation_status.uid":"validation_status_on_hold"}"#).matches(&d));
    }

    #[test]
    fn elem_match_and_all_on_repeats() {
        let d = doc(
            json!({"demo": [{"demo/name": "A", "demo/age": "30"}, {"demo/name": "B"}],
                           "langs": ["en", "fr"]}),
        );
        assert!(q(r#"{"demo":{"$elemMatch":{"demo/name":"B"}}}"#).matches(&d));
        assert!(!q(r#"{"demo":{"$elemMatch":{"demo/name":"C"}}}"#).matches(&d));
        assert!(q(r#"{"langs":{"$all":["fr","en"]}}"#).matches(&d));
        assert!(!q(r#"{"langs":{"$all":["fr","de"]}}"#).matches(&d));
    }

    #[test]
    fn refusals() {
        assert_eq!(
            Query::parse_str("not json").unwrap_err(),
            QueryError::NotJson
        );
        assert_eq!(Query::parse_str("[1]").unwrap_err(), QueryError::NotJson);
        assert!(matches!(
            Query::parse_str(r#"{"a":{"$eq":"1"}}"#),
            Err(QueryError::Unsupported(_))
        ));
        assert!(matches!(
            Query::parse_str(r#"{"$where":"1"}"#),
            Err(QueryError::Unsupported(_))
        ));
        assert!(matches!(
            Query::parse_str(r#"{"a":{"$all":"x"}}"#),
            Err(QueryError::Invalid(m)) if m == "$all needs an array"
        ));
        assert!(matches!(
            Query::parse_str(r#"{"a":{"$in":"x"}}"#),
            Err(QueryError::Invalid(_))
        ));
        assert!(matches!(
            Query::parse_str(r#"{"a":{"$regex":"("}}"#),
            Err(QueryError::Invalid(_))
        ));
        assert!(matches!(
            Query::parse_str(r#"{"a":{"$regex":"x","$options":"q"}}"#),
            Err(QueryError::Invalid(_))
        ));
        assert!(matches!(
            Query::parse_str(r#"{"a":{"$gt":1,"b":2}}"#),
            Err(QueryError::Invalid(_))
        ));
        // Depth, size and regex bounds.
        let mut deep = String::from(r#"{"a":"1"}"#);
        for _ in 0..(MAX_DEPTH + 2) {
            deep = format!(r#"{{"$and":[{deep}]}}"#);
        }
        assert!(matches!(
            Query::parse_str(&deep),
            Err(QueryError::TooLarge(_))
        ));
        let many: Vec<String> = (0..=MAX_CONDITIONS)
            .map(|i| format!(r#""k{i}":"v""#))
            .collect();
        assert!(matches!(
            Query::parse_str(&format!("{{{}}}", many.join(","))),
            Err(QueryError::TooLarge(_))
        ));
        let long = "a".repeat(MAX_PATTERN + 1);
        assert!(matches!(
            Query::parse_str(&format!(r#"{{"a":{{"$regex":"{long}"}}}}"#)),
            Err(QueryError::TooLarge(_))
        ));
        assert!(matches!(
            Query::parse_str(r#"{"a":{"$regex":"(\\w{100}){100}"}}"#),
            Err(QueryError::TooLarge(_))
        ));
    }

    #[test]
    fn sort_orders_by_keys_then_id() {
        let a = doc(json!({"_id": 1, "n": "b"}));
        let b = doc(json!({"_id": 2, "n": "a"}));
        let c = doc(json!({"_id": 3}));
        let s = Sort::parse_str(r#"{"n":1}"#).unwrap();
        let mut v = [&a, &b, &c];
        v.sort_by(|x, y| s.compare(x, y));
        assert_eq!(v.map(|d| d["_id"].as_i64().unwrap()), [3, 2, 1]);
        let s = Sort::parse_str(r#"{"n":-1}"#).unwrap();
        v.sort_by(|x, y| s.compare(x, y));
        assert_eq!(v.map(|d| d["_id"].as_i64().unwrap()), [1, 2, 3]);
        assert!(Sort::parse_str(r#"{"_id":1}"#).unwrap().is_by_id());
        assert!(!Sort::parse_str(r#"{"_id":-1}"#).unwrap().is_by_id());
        assert!(Sort::parse_str(r#"{"n":2}"#).is_err());
        assert!(Sort::parse_str("[]").is_err());
    }
}
