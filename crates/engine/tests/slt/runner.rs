//! Running a parsed script against a database backend and counting outcomes.
//!
//! Every statement and query record that applies to the engine is *run* and
//! either *passes* or *fails*; records excluded by `skipif`/`onlyif` or left
//! behind by a `halt` are *skipped*. A panic inside the backend is caught,
//! counted as a failure and flagged as a PANIC (panics are engine bugs), and
//! the script goes on with the next record, so one bug cannot hide the rest.

use super::format::{render_rows, ResultBuf};
use super::parser::{self, Expected, Kind, Query, Record, SortMode};
use joule_common::Row;
use std::cell::RefCell;
use std::collections::HashMap;
use std::fmt::Write;
use std::panic::{self, AssertUnwindSafe};
use std::sync::Once;
use std::time::{Duration, Instant};

/// What a backend returned for one SQL text.
pub enum Output {
    /// A result set: the column count and the rows.
    Rows { ncols: usize, rows: Vec<Row> },
    /// Success without a result set (DDL, DML).
    Done,
}

/// A database the runner can drive.
pub trait Backend {
    /// Run one SQL text. Errors are returned as their message.
    fn run(&mut self, sql: &str) -> Result<Output, String>;
}

/// Settings of one run.
pub struct Config<'a> {
    /// The name `skipif` / `onlyif` match against.
    pub engine: &'a str,
    /// Failures beyond this many keep being counted but are not detailed.
    pub max_failure_details: usize,
    /// A record taking longer than this is listed as slow.
    pub slow_record: Duration,
}

/// One failed record, ready to print.
pub struct Failure {
    pub line: usize,
    pub panic: bool,
    pub text: String,
}

/// The outcome of one script.
#[derive(Default)]
pub struct FileOutcome {
    /// Statement and query records in the script.
    pub records: usize,
    pub run: usize,
    pub passed: usize,
    pub failed: usize,
    /// Failures that were panics (included in `failed`).
    pub panics: usize,
    pub skipped: usize,
    /// Line of the `halt` record that stopped the script, if any.
    pub halted_at: Option<usize>,
    /// Details of the first failures (see [`Config::max_failure_details`]).
    pub failures: Vec<Failure>,
    /// Slow records: line and time.
    pub slow: Vec<(usize, Duration)>,
    /// Every distinct panic (message and location) with how often it hit.
    pub panic_sites: HashMap<String, usize>,
    pub elapsed: Duration,
}

impl FileOutcome {
    /// Passed records as a percentage of records run (100 when none ran).
    pub fn pass_percent(&self) -> f64 {
        if self.run == 0 {
            100.0
        } else {
            100.0 * self.passed as f64 / self.run as f64
        }
    }
}

thread_local! {
    /// Set while the runner calls into a backend: panics are caught and the
    /// hook only notes their message and location instead of printing.
    static CATCHING: RefCell<Option<Option<String>>> = const { RefCell::new(None) };
}

/// Install (once per process) a panic hook that stays quiet for panics the
/// runner catches and defers to the previous hook for every other panic.
fn install_panic_hook() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let previous = panic::take_hook();
        panic::set_hook(Box::new(move |info| {
            let caught = CATCHING.with(|c| {
                let mut c = c.borrow_mut();
                match c.as_mut() {
                    Some(slot) => {
                        let msg = payload_message(info.payload());
                        *slot = Some(match info.location() {
                            Some(l) => format!("{msg} (at {}:{}:{})", l.file(), l.line(), l.column()),
                            None => msg,
                        });
                        true
                    }
                    None => false,
                }
            });
            if !caught {
                previous(info);
            }
        }));
    });
}

fn payload_message(p: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = p.downcast_ref::<&str>() {
        (*s).to_string()
    } else if let Some(s) = p.downcast_ref::<String>() {
        s.clone()
    } else {
        "non-string panic payload".to_string()
    }
}

/// Run `f`, turning a panic into `Err(message with location)`.
pub fn catch<T>(f: impl FnOnce() -> T) -> Result<T, String> {
    install_panic_hook();
    CATCHING.with(|c| *c.borrow_mut() = Some(None));
    let r = panic::catch_unwind(AssertUnwindSafe(f));
    let noted = CATCHING.with(|c| c.borrow_mut().take()).flatten();
    r.map_err(|p| noted.unwrap_or_else(|| payload_message(p.as_ref())))
}

/// Outcome of running one record.
enum Verdict {
    Pass,
    Fail(String),
    Panic(String),
}

/// Truncate long text for failure reports.
fn clip(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_string();
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{} ... ({} more bytes)", &s[..end], s.len() - end)
}

/// Rows shown per side in a failure report.
const SHOWN_ROWS: usize = 12;

/// Runs the records of one script against one backend.
struct ScriptRun<'s, 'c, B> {
    backend: &'s mut B,
    config: &'c Config<'c>,
    file: &'s str,
    hash_threshold: usize,
    buf: ResultBuf,
    labels: HashMap<&'s str, (String, usize)>,
}

impl<'s, B: Backend> ScriptRun<'s, '_, B> {
    fn statement(&mut self, expect_error: bool, sql: &str) -> Verdict {
        match catch(|| self.backend.run(sql)) {
            Err(p) => Verdict::Panic(p),
            Ok(Ok(_)) if expect_error => Verdict::Fail("statement succeeded, but an error was expected".into()),
            Ok(Err(e)) if !expect_error => Verdict::Fail(format!("statement failed: {}", clip(&e, 500))),
            Ok(_) => Verdict::Pass,
        }
    }

    fn query(&mut self, q: &Query<'s>, line: usize) -> Verdict {
        let (ncols, rows) = match catch(|| self.backend.run(q.sql)) {
            Err(p) => return Verdict::Panic(p),
            Ok(Err(e)) => return Verdict::Fail(format!("query failed: {}", clip(&e, 500))),
            Ok(Ok(Output::Done)) => return Verdict::Fail("query returned no result set".into()),
            Ok(Ok(Output::Rows { ncols, rows })) => (ncols, rows),
        };
        let want = q.types.len();
        if ncols != want {
            return Verdict::Fail(format!(
                "expected {want} columns ({}), got {ncols}",
                String::from_utf8_lossy(q.types)
            ));
        }
        if let Some(r) = rows.iter().position(|r| r.len() != want) {
            return Verdict::Fail(format!("row {r} has {} values, the result has {want} columns", rows[r].len()));
        }
        self.buf.clear(want);
        for row in &rows {
            for (&ty, v) in q.types.iter().zip(row) {
                self.buf.push(ty, v);
            }
        }
        drop(rows);
        self.buf.sort(q.sort);

        // The expected form decides the comparison: a hash line by count and
        // MD5, a value list value by value. For SQLite-generated scripts this
        // is the hash-threshold rule (bigger results were written as hashes),
        // and it also copes with select1.test, which hashes results without
        // declaring a threshold (SQLite's runner defaults to 8).
        let ok = match &q.expected {
            Expected::Values(v) => self.buf.matches(v),
            Expected::Hash { count, md5 } => self.buf.len() == *count && self.buf.md5_hex() == *md5,
        };
        if !ok {
            let expected = match &q.expected {
                Expected::Values(v) => render_rows(v, want, SHOWN_ROWS),
                Expected::Hash { count, md5 } => format!("    {count} values hashing to {md5}\n"),
            };
            let mut actual = String::new();
            let hashed = self.hash_threshold > 0 && self.buf.len() > self.hash_threshold;
            if hashed || matches!(q.expected, Expected::Hash { .. }) {
                let _ = writeln!(actual, "    {}", self.buf.hash_line());
            }
            actual.push_str(&self.buf.render(SHOWN_ROWS));
            return Verdict::Fail(format!("wrong result\n  expected:\n{expected}  actual:\n{actual}"));
        }
        if let Some(label) = q.label {
            let hash = self.buf.md5_hex();
            match self.labels.get(label) {
                Some((prev, first)) if *prev != hash => {
                    return Verdict::Fail(format!(
                        "result of label [{label}] differs from the one at line {first}: {} vs {prev}",
                        self.buf.hash_line()
                    ));
                }
                Some(_) => {}
                None => {
                    self.labels.insert(label, (hash, line));
                }
            }
        }
        Verdict::Pass
    }

    /// Run one applicable statement/query record.
    fn record(&mut self, rec: &Record<'s>) -> Verdict {
        match &rec.kind {
            Kind::Statement { expect_error, sql } => self.statement(*expect_error, sql),
            Kind::Query(q) => self.query(q, rec.line),
            Kind::HashThreshold(_) | Kind::Halt => Verdict::Pass,
        }
    }

    fn describe(&self, rec: &Record<'_>, what: &str) -> String {
        let sql = match &rec.kind {
            Kind::Statement { sql, .. } => *sql,
            Kind::Query(q) => q.sql,
            _ => "",
        };
        let head = match &rec.kind {
            Kind::Statement { expect_error: false, .. } => "statement ok".to_string(),
            Kind::Statement { expect_error: true, .. } => "statement error".to_string(),
            Kind::Query(q) => {
                let sort = match q.sort {
                    SortMode::NoSort => "nosort",
                    SortMode::RowSort => "rowsort",
                    SortMode::ValueSort => "valuesort",
                };
                let label = q.label.map_or(String::new(), |l| format!(" {l}"));
                format!("query {} {sort}{label}", String::from_utf8_lossy(q.types))
            }
            _ => String::new(),
        };
        let sql = clip(sql, 800).replace('\n', "\n       ");
        let (summary, details) = what.split_once('\n').unwrap_or((what, ""));
        let details = if details.is_empty() { String::new() } else { format!("{}\n", details.trim_end()) };
        format!("{}:{}: [{head}] {summary}\n  SQL: {sql}\n{details}", self.file, rec.line)
    }
}

/// Parse and run `script` (named `file` in reports) against `backend`.
pub fn run_script<B: Backend>(
    backend: &mut B,
    file: &str,
    script: &str,
    config: &Config<'_>,
) -> Result<FileOutcome, parser::ParseError> {
    let records = parser::parse(script)?;
    let started = Instant::now();
    let mut out = FileOutcome { records: records.iter().filter(|r| r.is_test()).count(), ..FileOutcome::default() };
    let mut run =
        ScriptRun { backend, config, file, hash_threshold: 8, buf: ResultBuf::default(), labels: HashMap::new() };
    for (idx, rec) in records.iter().enumerate() {
        if !rec.applies_to(config.engine) {
            out.skipped += usize::from(rec.is_test());
            continue;
        }
        match rec.kind {
            Kind::Halt => {
                out.halted_at = Some(rec.line);
                out.skipped += records[idx + 1..].iter().filter(|r| r.is_test()).count();
                break;
            }
            Kind::HashThreshold(n) => {
                run.hash_threshold = n;
                continue;
            }
            Kind::Statement { .. } | Kind::Query(_) => {}
        }
        let t = Instant::now();
        let verdict = run.record(rec);
        let took = t.elapsed();
        if took >= run.config.slow_record {
            out.slow.push((rec.line, took));
        }
        out.run += 1;
        let (panic, what) = match verdict {
            Verdict::Pass => {
                out.passed += 1;
                continue;
            }
            Verdict::Fail(what) => (false, what),
            Verdict::Panic(msg) => {
                let text = format!("PANIC: {}", clip(&msg, 1000));
                *out.panic_sites.entry(msg).or_default() += 1;
                (true, text)
            }
        };
        out.failed += 1;
        out.panics += usize::from(panic);
        if out.failures.len() < run.config.max_failure_details {
            out.failures.push(Failure { line: rec.line, panic, text: run.describe(rec, &what) });
        }
    }
    out.elapsed = started.elapsed();
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use joule_common::Value;

    /// A fake backend: answers from a fixed table of SQL texts.
    struct Fake;

    impl Backend for Fake {
        fn run(&mut self, sql: &str) -> Result<Output, String> {
            let int_rows = |v: &[i64]| v.iter().map(|&i| vec![Value::Integer(i)]).collect();
            match sql {
                "CREATE TABLE t(a INTEGER)" | "INSERT INTO t VALUES(1)" => Ok(Output::Done),
                "BAD" => Err("syntax error".into()),
                "SELECT a FROM t" => Ok(Output::Rows { ncols: 1, rows: int_rows(&[3, 1, 2]) }),
                "SELECT many" => Ok(Output::Rows { ncols: 1, rows: int_rows(&[1, 2, 3, 4, 5, 6, 7, 8, 9, 10]) }),
                "SELECT 2 cols" => Ok(Output::Rows { ncols: 2, rows: vec![] }),
                "BOOM" => panic!("engine bug"),
                other => Err(format!("unknown: {other}")),
            }
        }
    }

    fn cfg() -> Config<'static> {
        Config { engine: "postgresql", max_failure_details: 30, slow_record: Duration::from_secs(60) }
    }

    const SCRIPT: &str = "\
statement ok
CREATE TABLE t(a INTEGER)

statement error
BAD

query I rowsort
SELECT a FROM t
----
1
2
3

query I nosort label-x
SELECT a FROM t
----
3
1
2

query I valuesort label-x
SELECT a FROM t
----
1
2
3

query I rowsort
SELECT many
----
10 values hashing to ff2650590d3f27ea6644b5573ccc37ba

skipif postgresql
statement ok
BAD

onlyif sqlite
statement ok
BAD

statement ok
BOOM

statement error
INSERT INTO t VALUES(1)

query I nosort
SELECT a FROM t
----
1
2
3

query I nosort
SELECT 2 cols
----

skipif postgresql
halt

statement ok
INSERT INTO t VALUES(1)

onlyif postgresql
halt

statement ok
BAD

query I nosort
BAD
----
";

    #[test]
    fn counts_and_details() {
        let out = run_script(&mut Fake, "fake.test", SCRIPT, &cfg()).unwrap();
        assert_eq!(out.records, 15);
        assert_eq!(out.run, 11);
        assert_eq!(out.skipped, 4);
        assert_eq!(out.halted_at, Some(65));
        // Failures: label-x hashing differently from its first use (another
        // order of the same values), the panic, a statement expected to fail,
        // an unsorted result and a column count mismatch.
        let lines: Vec<usize> = out.failures.iter().map(|f| f.line).collect();
        assert_eq!(lines, [21, 41, 44, 47, 54]);
        assert_eq!((out.passed, out.failed, out.panics), (6, 5, 1));
        assert!(out.failures[1].panic);
        assert_eq!(out.panic_sites.values().sum::<usize>(), 1);
        assert!(out.failures[1].text.contains("PANIC: engine bug (at "), "{}", out.failures[1].text);
        assert!(out.failures[0].text.contains("label [label-x]"), "{}", out.failures[0].text);
        assert!(out.failures[2].text.starts_with("fake.test:44: [statement error]"));
        assert!(out.failures[3].text.contains("wrong result"));
        assert!(out.failures[4].text.contains("expected 1 columns (I), got 2"));
        assert!((out.pass_percent() - 600.0 / 11.0).abs() < 1e-9);
    }

    #[test]
    fn failure_details_are_capped() {
        let script = "statement ok\nBAD\n\n".repeat(50);
        let out = run_script(&mut Fake, "f", &script, &Config { max_failure_details: 3, ..cfg() }).unwrap();
        assert_eq!((out.run, out.failed, out.failures.len()), (50, 50, 3));
    }

    #[test]
    fn catch_reports_message_and_location() {
        let e = catch(|| -> u32 { panic!("oops {}", 7) }).unwrap_err();
        assert!(e.starts_with("oops 7 (at "), "{e}");
        assert!(e.contains("runner.rs"), "{e}");
        assert_eq!(catch(|| 5).unwrap(), 5);
    }
}
