//! OData `$filter` on submission system fields (specs/central-api.md §7), parsed once and
//! evaluated per row without touching the (encrypted) answers.
//!
//! Grammar: `or` / `and` / `not`, parentheses, comparisons `eq ne lt le gt ge`, the functions
//! `year month day hour minute second` (of a field) and `now()`, literals `null`, `true`,
//! `false`, numbers, `'strings'` (`''` escapes a quote) and bare dates or date-times
//! (`2026-01-31`, `2026-01-31T10:00:00Z`). Fields: `__id` and `__system/<submissionDate |
//! updatedAt | submitterId | reviewState | deletedAt>`, also written `$root/Submissions/…` (the
//! only form repeat tables accept). Input is bounded in length and nesting.

use crate::CoreError;

/// The error field name for refusals.
const FIELD: &str = "$filter";
/// Longest `$filter` accepted, in bytes.
pub const MAX_FILTER_BYTES: usize = 4096;
/// Deepest nesting of parentheses and `not`.
const MAX_NESTING: usize = 32;

/// A system field a filter can name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SystemField {
    /// `__id`: the instanceID.
    Id,
    /// `__system/submissionDate`.
    SubmissionDate,
    /// `__system/updatedAt`.
    UpdatedAt,
    /// `__system/submitterId`.
    SubmitterId,
    /// `__system/reviewState` (`null` for received).
    ReviewState,
    /// `__system/deletedAt`.
    DeletedAt,
}

/// A parsed filter expression.
#[derive(Debug, Clone, PartialEq)]
pub enum Filter {
    /// Both.
    And(Box<Filter>, Box<Filter>),
    /// Either.
    Or(Box<Filter>, Box<Filter>),
    /// Negation.
    Not(Box<Filter>),
    /// A comparison.
    Cmp(Operand, CmpOp, Operand),
    /// A bare boolean literal.
    Const(bool),
}

/// Comparison operators.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CmpOp {
    /// `eq`
    Eq,
    /// `ne`
    Ne,
    /// `lt`
    Lt,
    /// `le`
    Le,
    /// `gt`
    Gt,
    /// `ge`
    Ge,
}

/// One side of a comparison.
#[derive(Debug, Clone, PartialEq)]
pub enum Operand {
    /// A system field.
    Field(SystemField),
    /// A date part of a field: `year(__system/submissionDate)`.
    Part(DatePart, SystemField),
    /// `now()`.
    Now,
    /// A literal.
    Lit(Value),
}

/// Date parts for the functions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DatePart {
    /// `year`
    Year,
    /// `month`
    Month,
    /// `day`
    Day,
    /// `hour`
    Hour,
    /// `minute`
    Minute,
    /// `second`
    Second,
}

/// A value during evaluation.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    /// `null`.
    Null,
    /// `true` / `false`.
    Bool(bool),
    /// A number.
    Num(f64),
    /// A string.
    Str(String),
    /// A point in time, Unix milliseconds.
    Time(i64),
}

/// The system values of one row, as a filter sees them.
#[derive(Debug, Clone, Default)]
pub struct Row<'a> {
    /// instanceID.
    pub id: &'a str,
    /// Submission time, ms.
    pub submission_date: i64,
    /// Last update, ms.
    pub updated_at: Option<i64>,
    /// Submitter id.
    pub submitter_id: Option<i64>,
    /// Review state; `None` for received.
    pub review_state: Option<&'a str>,
    /// Deletion time, ms.
    pub deleted_at: Option<i64>,
}

impl Filter {
    /// Parses a `$filter` value.
    pub fn parse(text: &str) -> Result<Filter, CoreError> {
        if text.len() > MAX_FILTER_BYTES {
            return Err(CoreError::invalid(
                FIELD,
                format!("the filter is longer than {MAX_FILTER_BYTES} bytes"),
            ));
        }
        let tokens = tokenize(text)?;
        let mut p = Parser {
            tokens,
            pos: 0,
            depth: 0,
        };
        let f = p.or()?;
        if let Some(t) = p.peek() {
            return Err(CoreError::invalid(
                FIELD,
                format!(
                    "unexpected {} after the end of the expression",
                    t.describe()
                ),
            ));
        }
        Ok(f)
    }

    /// Whether the filter names `__system/deletedAt` (Central then shows deleted rows too).
    pub fn mentions_deleted(&self) -> bool {
        let op = |o: &Operand| {
            matches!(
                o,
                Operand::Field(SystemField::DeletedAt) | Operand::Part(_, SystemField::DeletedAt)
            )
        };
        match self {
            Filter::And(a, b) | Filter::Or(a, b) => a.mentions_deleted() || b.mentions_deleted(),
            Filter::Not(a) => a.mentions_deleted(),
            Filter::Cmp(a, _, b) => op(a) || op(b),
            Filter::Const(_) => false,
        }
    }

    /// Evaluates against one row; `now` is the current time in ms.
    pub fn matches(&self, row: &Row<'_>, now: i64) -> bool {
        match self {
            Filter::And(a, b) => a.matches(row, now) && b.matches(row, now),
            Filter::Or(a, b) => a.matches(row, now) || b.matches(row, now),
            Filter::Not(a) => !a.matches(row, now),
            Filter::Const(b) => *b,
            Filter::Cmp(a, op, b) => compare(&eval(a, row, now), *op, &eval(b, row, now)),
        }
    }
}

fn field_value(f: SystemField, row: &Row<'_>) -> Value {
    match f {
        SystemField::Id => Value::Str(row.id.to_owned()),
        SystemField::SubmissionDate => Value::Time(row.submission_date),
        SystemField::UpdatedAt => row.updated_at.map_or(Value::Null, Value::Time),
        SystemField::SubmitterId => row
            .submitter_id
            .map_or(Value::Null, |n| Value::Num(n as f64)),
        SystemField::ReviewState => row
            .review_state
            .map_or(Value::Null, |s| Value::Str(s.to_owned())),
        SystemField::DeletedAt => row.deleted_at.map_or(Value::Null, Value::Time),
    }
}

fn eval(o: &Operand, row: &Row<'_>, now: i64) -> Value {
    match o {
        Operand::Field(f) => field_value(*f, row),
        Operand::Now => Value::Time(now),
        Operand::Lit(v) => v.clone(),
        Operand::Part(part, f) => match field_value(*f, row) {
            Value::Time(ms) => {
                let (y, mo, d, h, mi, s) = civil(ms);
                Value::Num(match part {
                    DatePart::Year => y as f64,
                    DatePart::Month => mo as f64,
                    DatePart::Day => d as f64,
                    DatePart::Hour => h as f64,
                    DatePart::Minute => mi as f64,
                    DatePart::Second => s as f64,
                })
            }
            _ => Value::Null,
        },
    }
}

/// Compares with coercion: a time against a string parses the string as a date; a number
/// against a string parses the string as a number. Ordering with `null` is false.
fn compare(a: &Value, op: CmpOp, b: &Value) -> bool {
    use std::cmp::Ordering;
    let ord: Option<Ordering> = match (a, b) {
        (Value::Null, Value::Null) => Some(Ordering::Equal),
        (Value::Null, _) | (_, Value::Null) => None,
        (Value::Time(x), Value::Time(y)) => Some(x.cmp(y)),
        (Value::Time(x), Value::Str(s)) => parse_time(s).map(|y| x.cmp(&y)),
        (Value::Str(s), Value::Time(y)) => parse_time(s).map(|x| x.cmp(y)),
        (Value::Num(x), Value::Num(y)) => x.partial_cmp(y),
        (Value::Num(x), Value::Str(s)) => s.parse::<f64>().ok().and_then(|y| x.partial_cmp(&y)),
        (Value::Str(s), Value::Num(y)) => s.parse::<f64>().ok().and_then(|x| x.partial_cmp(y)),
        (Value::Str(x), Value::Str(y)) => Some(x.cmp(y)),
        (Value::Bool(x), Value::Bool(y)) => Some(x.cmp(y)),
        _ => None,
    };
    let null_side = matches!(a, Value::Null) || matches!(b, Value::Null);
    match op {
        CmpOp::Eq => ord == Some(Ordering::Equal),
        CmpOp::Ne => {
            if null_side {
                ord != Some(Ordering::Equal)
            } else {
                ord.is_some_and(|o| o != Ordering::Equal)
            }
        }
        CmpOp::Lt => ord == Some(Ordering::Less),
        CmpOp::Le => matches!(ord, Some(Ordering::Less | Ordering::Equal)) && !null_side,
        CmpOp::Gt => ord == Some(Ordering::Greater),
        CmpOp::Ge => matches!(ord, Some(Ordering::Greater | Ordering::Equal)) && !null_side,
    }
}

#[derive(Debug, Clone, PartialEq)]
enum Token {
    LParen,
    RParen,
    Comma,
    Word(String),
    Str(String),
    Num(f64),
}

impl Token {
    fn describe(&self) -> String {
        match self {
            Token::LParen => "'('".into(),
            Token::RParen => "')'".into(),
            Token::Comma => "','".into(),
            Token::Word(w) => format!("'{w}'"),
            Token::Str(s) => format!("the string '{s}'"),
            Token::Num(n) => format!("the number {n}"),
        }
    }
}

fn tokenize(text: &str) -> Result<Vec<Token>, CoreError> {
    let chars: Vec<char> = text.chars().collect();
    let mut out = Vec::new();
    let mut i = 0;
    while let Some(&c) = chars.get(i) {
        match c {
            c if c.is_whitespace() => i += 1,
            '(' => {
                out.push(Token::LParen);
                i += 1;
            }
            ')' => {
                out.push(Token::RParen);
                i += 1;
            }
            ',' => {
                out.push(Token::Comma);
                i += 1;
            }
            '\'' => {
                let mut s = String::new();
                i += 1;
                loop {
                    match chars.get(i) {
                        None => {
                            return Err(CoreError::invalid(FIELD, "a string is not closed with '"));
                        }
                        Some('\'') if chars.get(i + 1) == Some(&'\'') => {
                            s.push('\'');
                            i += 2;
                        }
                        Some('\'') => {
                            i += 1;
                            break;
                        }
                        Some(ch) => {
                            s.push(*ch);
                            i += 1;
                        }
                    }
                }
                out.push(Token::Str(s));
            }
            _ => {
                let start = i;
                while let Some(&ch) = chars.get(i) {
                    if ch.is_whitespace() || matches!(ch, '(' | ')' | ',' | '\'') {
                        break;
                    }
                    i += 1;
                }
                let word: String = chars.get(start..i).unwrap_or_default().iter().collect();
                let is_date = word.len() >= 10
                    && word.as_bytes().get(4) == Some(&b'-')
                    && word.as_bytes().get(7) == Some(&b'-');
                if is_date {
                    out.push(Token::Str(word));
                } else if let Ok(n) = word.parse::<f64>() {
                    out.push(Token::Num(n));
                } else {
                    out.push(Token::Word(word));
                }
            }
        }
    }
    Ok(out)
}

struct Parser {
    tokens: Vec<Token>,
    pos: usize,
    depth: usize,
}

impl Parser {
    fn peek(&self) -> Option<&Token> {
        self.tokens.get(self.pos)
    }

    fn next(&mut self) -> Option<Token> {
        let t = self.tokens.get(self.pos).cloned();
        self.pos += 1;
        t
    }

    fn keyword(&self, k: &str) -> bool {
        matches!(self.peek(), Some(Token::Word(w)) if w == k)
    }

    fn enter(&mut self) -> Result<(), CoreError> {
        self.depth += 1;
        if self.depth > MAX_NESTING {
            return Err(CoreError::invalid(
                FIELD,
                format!("the filter nests more than {MAX_NESTING} levels"),
            ));
        }
        Ok(())
    }

    fn or(&mut self) -> Result<Filter, CoreError> {
        let mut left = self.and()?;
        while self.keyword("or") {
            self.pos += 1;
            let right = self.and()?;
            left = Filter::Or(Box::new(left), Box::new(right));
        }
        Ok(left)
    }

    fn and(&mut self) -> Result<Filter, CoreError> {
        let mut left = self.not()?;
        while self.keyword("and") {
            self.pos += 1;
            let right = self.not()?;
            left = Filter::And(Box::new(left), Box::new(right));
        }
        Ok(left)
    }

    fn not(&mut self) -> Result<Filter, CoreError> {
        if self.keyword("not") {
            self.pos += 1;
            self.enter()?;
            let inner = self.not()?;
            self.depth -= 1;
            return Ok(Filter::Not(Box::new(inner)));
        }
        self.comparison()
    }

    fn comparison(&mut self) -> Result<Filter, CoreError> {
        if self.peek() == Some(&Token::LParen) {
            self.pos += 1;
            self.enter()?;
            let inner = self.or()?;
            self.depth -= 1;
            return match self.next() {
                Some(Token::RParen) => Ok(inner),
                other => Err(expected("')'", other)),
            };
        }
        let left = self.operand()?;
        let op = match self.peek() {
            Some(Token::Word(w)) => match w.as_str() {
                "eq" => Some(CmpOp::Eq),
                "ne" => Some(CmpOp::Ne),
                "lt" => Some(CmpOp::Lt),
                "le" => Some(CmpOp::Le),
                "gt" => Some(CmpOp::Gt),
                "ge" => Some(CmpOp::Ge),
                _ => None,
            },
            _ => None,
        };
        let Some(op) = op else {
            return match left {
                Operand::Lit(Value::Bool(b)) => Ok(Filter::Const(b)),
                _ => Err(expected(
                    "a comparison operator (eq ne lt le gt ge)",
                    self.peek().cloned(),
                )),
            };
        };
        self.pos += 1;
        let right = self.operand()?;
        Ok(Filter::Cmp(left, op, right))
    }

    fn operand(&mut self) -> Result<Operand, CoreError> {
        match self.next() {
            Some(Token::Str(s)) => Ok(Operand::Lit(Value::Str(s))),
            Some(Token::Num(n)) => Ok(Operand::Lit(Value::Num(n))),
            Some(Token::Word(w)) => {
                if self.peek() == Some(&Token::LParen) {
                    self.pos += 1;
                    return self.function(&w);
                }
                match w.as_str() {
                    "null" => Ok(Operand::Lit(Value::Null)),
                    "true" => Ok(Operand::Lit(Value::Bool(true))),
                    "false" => Ok(Operand::Lit(Value::Bool(false))),
                    _ => field(&w).map(Operand::Field),
                }
            }
            other => Err(expected("a field, a literal or a function", other)),
        }
    }

    fn function(&mut self, name: &str) -> Result<Operand, CoreError> {
        if name == "now" {
            return match self.next() {
                Some(Token::RParen) => Ok(Operand::Now),
                other => Err(expected("')' after now(", other)),
            };
        }
        let part = match name {
            "year" => DatePart::Year,
            "month" => DatePart::Month,
            "day" => DatePart::Day,
            "hour" => DatePart::Hour,
            "minute" => DatePart::Minute,
            "second" => DatePart::Second,
            other => {
                return Err(CoreError::invalid(
                    FIELD,
                    format!(
                        "the function {other}() is not supported; use year month day hour \
                         minute second or now"
                    ),
                ));
            }
        };
        let f = match self.next() {
            Some(Token::Word(w)) => field(&w)?,
            other => return Err(expected("a field inside the function", other)),
        };
        match self.next() {
            Some(Token::RParen) => Ok(Operand::Part(part, f)),
            other => Err(expected("')'", other)),
        }
    }
}

fn expected(what: &str, got: Option<Token>) -> CoreError {
    CoreError::invalid(
        FIELD,
        match got {
            Some(t) => format!("expected {what}, found {}", t.describe()),
            None => format!("expected {what}, found the end of the filter"),
        },
    )
}

fn field(name: &str) -> Result<SystemField, CoreError> {
    let bare = name.strip_prefix("$root/Submissions/").unwrap_or(name);
    match bare {
        "__id" => Ok(SystemField::Id),
        "__system/submissionDate" => Ok(SystemField::SubmissionDate),
        "__system/updatedAt" => Ok(SystemField::UpdatedAt),
        "__system/submitterId" => Ok(SystemField::SubmitterId),
        "__system/reviewState" => Ok(SystemField::ReviewState),
        "__system/deletedAt" => Ok(SystemField::DeletedAt),
        other => Err(CoreError::invalid(
            FIELD,
            format!(
                "'{other}' cannot be filtered on; use __id or __system/submissionDate, \
                 updatedAt, submitterId, reviewState or deletedAt"
            ),
        )),
    }
}

/// Unix ms → (year, month, day, hour, minute, second), UTC.
pub fn civil(ms: i64) -> (i64, i64, i64, i64, i64, i64) {
    let secs = ms.div_euclid(1000);
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d, rem / 3600, rem % 3600 / 60, rem % 60)
}

fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = if m > 2 { m - 3 } else { m + 9 };
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// `2026-01-31`, `2026-01-31T10:00`, `…:05`, `…:05.123`, with `Z` or `±HH:MM` (default UTC) → ms.
pub fn parse_time(s: &str) -> Option<i64> {
    let s = s.trim();
    let num = |a: usize, b: usize| s.get(a..b).and_then(|x| x.parse::<i64>().ok());
    let (y, mo, d) = (num(0, 4)?, num(5, 7)?, num(8, 10)?);
    if !(1..=12).contains(&mo) || !(1..=31).contains(&d) {
        return None;
    }
    let mut ms = days_from_civil(y, mo, d) * 86_400_000;
    let rest = s.get(10..)?;
    if rest.is_empty() {
        return Some(ms);
    }
    let rest = rest.strip_prefix('T').or_else(|| rest.strip_prefix(' '))?;
    let (clock, offset_ms) = split_offset(rest)?;
    let mut parts = clock.split(':');
    let h: i64 = parts.next()?.parse().ok()?;
    let mi: i64 = parts.next()?.parse().ok()?;
    let sec: f64 = parts.next().map_or(Some(0.0), |x| x.parse().ok())?;
    if parts.next().is_some() || !(0..24).contains(&h) || !(0..60).contains(&mi) {
        return None;
    }
    ms += h * 3_600_000 + mi * 60_000 + (sec * 1000.0).round() as i64;
    Some(ms - offset_ms)
}

fn split_offset(clock: &str) -> Option<(&str, i64)> {
    if let Some(c) = clock.strip_suffix('Z').or_else(|| clock.strip_suffix('z')) {
        return Some((c, 0));
    }
    match clock.rfind(['+', '-']) {
        Some(at) => {
            let (c, off) = clock.split_at(at);
            let sign = if off.starts_with('-') { -1 } else { 1 };
            let off = off.get(1..)?;
            let (h, m) = match off.split_once(':') {
                Some((h, m)) => (h.parse::<i64>().ok()?, m.parse::<i64>().ok()?),
                None => (off.parse::<i64>().ok()?, 0),
            };
            Some((c, sign * (h * 3_600_000 + m * 60_000)))
        }
        None => Some((clock, 0)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row<'a>() -> Row<'a> {
        Row {
            id: "uuid:1",
            submission_date: parse_time("2026-08-01T10:15:30.123Z").unwrap(),
            updated_at: None,
            submitter_id: Some(5),
            review_state: Some("approved"),
            deleted_at: None,
        }
    }

    fn m(f: &str) -> bool {
        Filter::parse(f).unwrap().matches(&row(), 0)
    }

    #[test]
    fn comparisons_and_logic() {
        assert!(m("__system/submitterId eq 5"));
        assert!(m("__system/submitterId eq '5'"));
        assert!(!m("__system/submitterId ne 5"));
        assert!(m("__system/reviewState eq 'approved'"));
        assert!(m("__system/submissionDate gt 2026-08-01"));
        assert!(m(
            "__system/submissionDate gt '2026-08-01T11:00:00+01:00' or false"
        ));
        assert!(!m("__system/submissionDate lt 2026-08-01T11:00:00+01:00"));
        assert!(m("__system/submissionDate ge 2026-08-01T10:15:30.123Z"));
        assert!(m(
            "__system/updatedAt eq null and __system/deletedAt eq null"
        ));
        assert!(!m("__system/updatedAt gt 2020-01-01"), "null never orders");
        assert!(m("__system/updatedAt ne 2020-01-01"));
        assert!(m("not (__system/reviewState eq 'rejected')"));
        assert!(m(
            "year(__system/submissionDate) eq 2026 and month(__system/submissionDate) eq 8"
        ));
        assert!(m(
            "day(__system/submissionDate) eq 1 and hour(__system/submissionDate) eq 10"
        ));
        assert!(m("__id eq 'uuid:1'"));
        assert!(m("$root/Submissions/__system/submitterId le 5"));
        assert!(m("true"));
        assert!(m("__system/submissionDate lt now()") == (row().submission_date < 0));
        let f = Filter::parse("__system/deletedAt eq null").unwrap();
        assert!(f.mentions_deleted());
        assert!(!Filter::parse("__id eq 'x'").unwrap().mentions_deleted());
    }

    #[test]
    fn refusals_name_the_problem() {
        let err = |f: &str| Filter::parse(f).unwrap_err().to_string();
        assert!(err("name eq 'x'").contains("cannot be filtered"));
        assert!(err("__id eq").contains("end of the filter"));
        assert!(err("__id like 'x'").contains("comparison operator"));
        assert!(err("(__id eq 'x'").contains("')'"));
        assert!(err("__id eq 'x").contains("not closed"));
        assert!(err("substring(__id) eq 'x'").contains("not supported"));
        assert!(err("__id eq 'x' __id").contains("unexpected"));
        assert!(err(&"(".repeat(40)).contains("nests"));
        assert!(err(&"x".repeat(MAX_FILTER_BYTES + 1)).contains("longer"));
    }

    #[test]
    fn time_parsing() {
        assert_eq!(parse_time("1970-01-01"), Some(0));
        assert_eq!(parse_time("1970-01-01T00:00:01Z"), Some(1000));
        assert_eq!(parse_time("1970-01-01T01:00:00+01:00"), Some(0));
        assert_eq!(parse_time("1970-01-01T00:00:00-01"), Some(3_600_000));
        assert_eq!(parse_time("2026-13-01"), None);
        assert_eq!(parse_time("nope"), None);
        let t = parse_time("2024-02-29T23:59:58.5Z").unwrap();
        assert_eq!(civil(t), (2024, 2, 29, 23, 59, 58));
        assert_eq!(civil(-1), (1969, 12, 31, 23, 59, 59));
    }
}
