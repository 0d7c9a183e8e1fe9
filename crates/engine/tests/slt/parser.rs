//! Parser for sqllogictest scripts in SQLite's format.
//!
//! A script is a sequence of records separated by blank lines:
//!
//! ```text
//! # a comment
//! skipif mysql              <- zero or more conditions
//! statement ok              <- or `statement error`
//! CREATE TABLE t1(a INTEGER)
//!
//! query IT rowsort label-1  <- type letters, sort mode, optional label
//! SELECT a, b FROM t1
//! ----
//! 1                         <- one value per line ...
//! one
//!
//! query I nosort
//! SELECT a FROM t1
//! ----
//! 30 values hashing to 3c13dee48d9356ae19af2515e05e6b54   <- ... or a hash
//!
//! hash-threshold 8
//!
//! onlyif mssql
//! halt
//! ```
//!
//! Parsing is zero-copy: SQL text and expected values borrow from the script.
//! Anything the parser does not understand is an error with its line number:
//! a runner that silently misreads a script would report wrong numbers.

use std::fmt;

/// How a query's result values are ordered before comparison.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[allow(clippy::enum_variant_names)] // named after the keywords nosort/rowsort/valuesort
pub enum SortMode {
    /// Keep the engine's order (the query has its own ORDER BY).
    NoSort,
    /// Sort whole rows, comparing them column by column as strings.
    RowSort,
    /// Sort all values independently, as strings.
    ValueSort,
}

/// A `skipif` / `onlyif` line in front of a record.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Condition<'a> {
    SkipIf(&'a str),
    OnlyIf(&'a str),
}

impl Condition<'_> {
    /// Whether an engine called `engine` runs a record carrying this condition.
    pub fn allows(&self, engine: &str) -> bool {
        match self {
            Condition::SkipIf(e) => !e.eq_ignore_ascii_case(engine),
            Condition::OnlyIf(e) => e.eq_ignore_ascii_case(engine),
        }
    }
}

/// The expected result of a query.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Expected<'a> {
    /// One value per line, in result order (after sorting).
    Values(Vec<&'a str>),
    /// `N values hashing to <md5>`: the count and MD5 of all values, each
    /// followed by a newline.
    Hash { count: usize, md5: &'a str },
}

/// A `query` record.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Query<'a> {
    /// One letter per result column: `I`, `R` or `T`.
    pub types: &'a [u8],
    pub sort: SortMode,
    pub label: Option<&'a str>,
    pub sql: &'a str,
    pub expected: Expected<'a>,
}

/// What a record does.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Kind<'a> {
    /// `statement ok` (`expect_error == false`) or `statement error`.
    Statement {
        expect_error: bool,
        sql: &'a str,
    },
    Query(Query<'a>),
    /// `hash-threshold N`: results of more than N values are given as a hash.
    HashThreshold(usize),
    /// `halt`: stop running the script (when the record's conditions allow).
    Halt,
}

/// One record of a script.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Record<'a> {
    /// 1-based line of the record's directive (`statement`, `query`, ...).
    pub line: usize,
    pub conditions: Vec<Condition<'a>>,
    pub kind: Kind<'a>,
}

impl Record<'_> {
    /// Whether an engine called `engine` runs this record.
    pub fn applies_to(&self, engine: &str) -> bool {
        self.conditions.iter().all(|c| c.allows(engine))
    }

    /// Statements and queries are what gets counted; directives are not.
    pub fn is_test(&self) -> bool {
        matches!(self.kind, Kind::Statement { .. } | Kind::Query(_))
    }
}

/// A script the parser does not understand.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ParseError {
    pub line: usize,
    pub message: String,
}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "line {}: {}", self.line, self.message)
    }
}

fn is_blank(line: &str) -> bool {
    line.trim().is_empty()
}

fn is_comment(line: &str) -> bool {
    line.trim_start().starts_with('#')
}

/// The whitespace-separated words of a directive line, up to a `#` comment.
fn words(line: &str) -> impl Iterator<Item = &str> {
    line.split_whitespace().take_while(|w| !w.starts_with('#'))
}

/// Parse `N values hashing to <32 hex digits>`.
fn parse_hash_line(line: &str) -> Option<(usize, &str)> {
    let mut w = line.split_whitespace();
    let count = w.next()?.parse().ok()?;
    if (w.next()?, w.next()?, w.next()?) != ("values", "hashing", "to") {
        return None;
    }
    let md5 = w.next()?;
    let valid = md5.len() == 32 && md5.bytes().all(|b| b.is_ascii_hexdigit());
    (valid && w.next().is_none()).then_some((count, md5))
}

/// Parse a whole script. Records keep their order; line numbers are 1-based.
pub fn parse(text: &str) -> Result<Vec<Record<'_>>, ParseError> {
    let lines: Vec<&str> = text.split('\n').map(|l| l.strip_suffix('\r').unwrap_or(l)).collect();
    let base = text.as_ptr() as usize;
    let offset = |l: &str| l.as_ptr() as usize - base;
    // The text spanning lines[from..to] (to > from), without copying.
    let span = |from: usize, to: usize| {
        let last = lines[to - 1];
        &text[offset(lines[from])..offset(last) + last.len()]
    };
    let err = |i: usize, message: String| ParseError { line: i + 1, message };

    let mut records = Vec::new();
    let mut i = 0;
    while i < lines.len() {
        if is_blank(lines[i]) || is_comment(lines[i]) {
            i += 1;
            continue;
        }
        // Conditions, with comment lines allowed in between.
        let mut conditions = Vec::new();
        loop {
            if i >= lines.len() || is_blank(lines[i]) {
                return Err(err(i.saturating_sub(1), "condition without a record after it".into()));
            }
            if is_comment(lines[i]) {
                i += 1;
                continue;
            }
            let mut w = words(lines[i]);
            let skip = match w.next() {
                Some("skipif") => true,
                Some("onlyif") => false,
                _ => break,
            };
            let engine = w.next().ok_or_else(|| err(i, "condition without an engine name".into()))?;
            conditions.push(if skip { Condition::SkipIf(engine) } else { Condition::OnlyIf(engine) });
            i += 1;
        }

        let line = i;
        let mut w = words(lines[line]);
        let directive = w.next().unwrap_or_default();
        // The record's body: lines up to the next blank line.
        let body_start = line + 1;
        let mut body_end = body_start;
        while body_end < lines.len() && !is_blank(lines[body_end]) {
            body_end += 1;
        }
        i = body_end;

        let kind = match directive {
            "statement" => {
                let expect_error = match w.next() {
                    Some("ok") => false,
                    Some("error") => true,
                    other => return Err(err(line, format!("unknown statement mode {other:?}"))),
                };
                if body_end == body_start {
                    return Err(err(line, "statement without SQL".into()));
                }
                if let Some(k) = (body_start..body_end).find(|&k| lines[k].trim_end() == "----") {
                    return Err(err(k, "`----` in a statement record".into()));
                }
                Kind::Statement { expect_error, sql: span(body_start, body_end) }
            }
            "query" => {
                let types = w.next().ok_or_else(|| err(line, "query without type letters".into()))?;
                if let Some(bad) = types.bytes().find(|b| !matches!(b, b'I' | b'R' | b'T')) {
                    return Err(err(line, format!("unknown column type letter '{}'", bad as char)));
                }
                let sort = match w.next() {
                    None | Some("nosort") => SortMode::NoSort,
                    Some("rowsort") => SortMode::RowSort,
                    Some("valuesort") => SortMode::ValueSort,
                    Some(other) => return Err(err(line, format!("unknown sort mode '{other}'"))),
                };
                let label = w.next();
                if let Some(extra) = w.next() {
                    return Err(err(line, format!("unexpected '{extra}' after the query label")));
                }
                let sep = (body_start..body_end).find(|&k| lines[k].trim_end() == "----").unwrap_or(body_end);
                if sep == body_start {
                    return Err(err(line, "query without SQL".into()));
                }
                let results: Vec<&str> =
                    lines[(sep + 1).min(body_end)..body_end].iter().map(|l| l.trim_end()).collect();
                let expected = match results.as_slice() {
                    [one] => match parse_hash_line(one) {
                        Some((count, md5)) => Expected::Hash { count, md5 },
                        None => Expected::Values(results),
                    },
                    _ => Expected::Values(results),
                };
                Kind::Query(Query { types: types.as_bytes(), sort, label, sql: span(body_start, sep), expected })
            }
            "hash-threshold" => {
                let n = w.next().and_then(|n| n.parse().ok());
                Kind::HashThreshold(n.ok_or_else(|| err(line, "hash-threshold needs a number".into()))?)
            }
            "halt" => Kind::Halt,
            other => return Err(err(line, format!("unknown record type '{other}'"))),
        };
        if matches!(kind, Kind::HashThreshold(_) | Kind::Halt) && body_end > body_start {
            return Err(err(body_start, format!("unexpected text after `{directive}`")));
        }
        records.push(Record { line: line + 1, conditions, kind });
    }
    Ok(records)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SCRIPT: &str = "\
# leading comment
hash-threshold 8

statement ok
CREATE TABLE t1(a INTEGER, b VARCHAR(10))

# comment right before a record
skipif mysql # trailing comment
onlyif postgresql
statement error
INSERT INTO t1 VALUES(1,
  'x', 3)

query IT rowsort label-1
SELECT a, b
  FROM t1
----
1
(empty)

query I nosort
SELECT a FROM t1
----
30 values hashing to 3c13dee48d9356ae19af2515e05e6b54

query R valuesort
SELECT 1.5 WHERE 1 = 0
----

query T
SELECT 'no results line'

onlyif mssql
halt
";

    #[test]
    fn parses_every_record_kind() {
        let recs = parse(SCRIPT).unwrap();
        assert_eq!(recs.len(), 8);
        assert_eq!(recs[0], Record { line: 2, conditions: vec![], kind: Kind::HashThreshold(8) });
        assert_eq!(
            recs[1].kind,
            Kind::Statement { expect_error: false, sql: "CREATE TABLE t1(a INTEGER, b VARCHAR(10))" }
        );
        assert_eq!(recs[2].line, 10);
        assert_eq!(recs[2].conditions, vec![Condition::SkipIf("mysql"), Condition::OnlyIf("postgresql")]);
        assert_eq!(recs[2].kind, Kind::Statement { expect_error: true, sql: "INSERT INTO t1 VALUES(1,\n  'x', 3)" });
        let Kind::Query(q) = &recs[3].kind else { panic!("not a query: {:?}", recs[3]) };
        assert_eq!((q.types, q.sort, q.label), (&b"IT"[..], SortMode::RowSort, Some("label-1")));
        assert_eq!(q.sql, "SELECT a, b\n  FROM t1");
        assert_eq!(q.expected, Expected::Values(vec!["1", "(empty)"]));
        let Kind::Query(q) = &recs[4].kind else { panic!() };
        assert_eq!(q.expected, Expected::Hash { count: 30, md5: "3c13dee48d9356ae19af2515e05e6b54" });
        assert_eq!((q.sort, q.label), (SortMode::NoSort, None));
        let Kind::Query(q) = &recs[5].kind else { panic!() };
        assert_eq!((q.types, q.sort, &q.expected), (&b"R"[..], SortMode::ValueSort, &Expected::Values(vec![])));
        let Kind::Query(q) = &recs[6].kind else { panic!() };
        assert_eq!(
            (q.sql, q.sort, &q.expected),
            ("SELECT 'no results line'", SortMode::NoSort, &Expected::Values(vec![]))
        );
        assert_eq!(recs[7].kind, Kind::Halt);
        assert_eq!(recs[7].conditions, vec![Condition::OnlyIf("mssql")]);
        assert_eq!(recs.iter().filter(|r| r.is_test()).count(), 6);
    }

    #[test]
    fn query_without_separator_expects_nothing() {
        let recs = parse("query T\nSELECT 'x'\n").unwrap();
        let Kind::Query(q) = &recs[0].kind else { panic!() };
        assert_eq!((q.sql, &q.expected), ("SELECT 'x'", &Expected::Values(vec![])));
    }

    #[test]
    fn conditions_select_engines() {
        assert!(Condition::SkipIf("mysql").allows("postgresql"));
        assert!(!Condition::SkipIf("postgresql").allows("postgresql"));
        assert!(Condition::OnlyIf("postgresql").allows("postgresql"));
        assert!(!Condition::OnlyIf("sqlite").allows("postgresql"));
        let recs = parse(SCRIPT).unwrap();
        assert!(recs[2].applies_to("postgresql"));
        assert!(!recs[2].applies_to("mysql"));
        assert!(!recs[7].applies_to("postgresql"));
    }

    #[test]
    fn crlf_and_trailing_spaces() {
        let recs = parse("statement ok\r\nSELECT 1\r\n\r\nquery I nosort\r\nSELECT 1\r\n----\r\n1  \r\n").unwrap();
        assert_eq!(recs[0].kind, Kind::Statement { expect_error: false, sql: "SELECT 1" });
        let Kind::Query(q) = &recs[1].kind else { panic!() };
        assert_eq!(q.expected, Expected::Values(vec!["1"]));
    }

    #[test]
    fn hash_lines() {
        assert_eq!(
            parse_hash_line("3 values hashing to d41d8cd98f00b204e9800998ecf8427e"),
            Some((3, "d41d8cd98f00b204e9800998ecf8427e"))
        );
        assert_eq!(parse_hash_line("3 values hashing to xyz"), None);
        assert_eq!(parse_hash_line("3 values"), None);
        assert_eq!(parse_hash_line("hello"), None);
    }

    #[test]
    fn errors_carry_line_numbers() {
        let e = parse("statement ok\nSELECT 1\n\nstatement maybe\nSELECT 2\n").unwrap_err();
        assert_eq!(e.line, 4);
        assert_eq!(parse("query X nosort\nSELECT 1\n").unwrap_err().line, 1);
        assert_eq!(parse("query I upsidedown\nSELECT 1\n").unwrap_err().line, 1);
        assert_eq!(parse("frobnicate\n").unwrap_err().line, 1);
        assert_eq!(parse("statement ok\n\n").unwrap_err().line, 1);
        assert_eq!(parse("skipif mysql\n\nstatement ok\nSELECT 1\n").unwrap_err().line, 1);
        assert_eq!(parse("halt\nSELECT 1\n").unwrap_err().line, 2);
        assert!(parse("").unwrap().is_empty());
    }
}
