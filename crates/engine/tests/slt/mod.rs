//! A sqllogictest runner of our own (no external sqllogictest crate).
//!
//! * [`parser`] reads SQLite-format scripts into records;
//! * [`format`] prints values by column type letter, sorts and hashes them;
//! * [`runner`] runs records against a [`runner::Backend`], catching panics;
//! * [`report`] prints the per-file table and keeps
//!   `target/sqllogictest-report.md` up to date;
//! * [`sqlite`] is SQLite as a reference backend, to check the runner itself.
//!
//! This module ties them together for the tests in `tests/sqllogictest.rs`:
//! where the corpus lives ([`corpus_dir`]), and [`check_file`], which runs one
//! script, reports it and fails the test below the pass bar.

pub mod format;
pub mod parser;
pub mod report;
pub mod runner;
pub mod sqlite;

use report::ReportRow;
use runner::{Backend, Config, FileOutcome};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// The name JouleDB answers to in `skipif` / `onlyif`.
pub const ENGINE: &str = "postgresql";

/// Failures detailed per file (all are counted): `$JOULE_SLT_MAX_FAILURES`,
/// default 30.
pub fn max_failure_details() -> usize {
    std::env::var("JOULE_SLT_MAX_FAILURES").ok().and_then(|v| v.parse().ok()).unwrap_or(30)
}

/// The corpus: `$JOULE_SLT_DIR`, else `shared/conformance/sqllogictest` next
/// to the repository.
pub fn corpus_dir() -> PathBuf {
    match std::env::var_os("JOULE_SLT_DIR") {
        Some(dir) => PathBuf::from(dir),
        None => PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../../../shared/conformance/sqllogictest")),
    }
}

/// Panic (failing the test) when the corpus directory is missing: a missing
/// corpus must never look like a passing suite.
pub fn require_corpus() -> PathBuf {
    let dir = corpus_dir();
    assert!(
        dir.is_dir(),
        "sqllogictest corpus not found at {} — clone the shared repository next to this one \
         (so that ../shared/conformance/sqllogictest exists) or set JOULE_SLT_DIR to the directory \
         holding select1.test and evidence/",
        dir.display()
    );
    dir
}

/// Every `*.test` file under the corpus, as sorted `/`-separated relative paths.
pub fn corpus_files() -> Vec<String> {
    fn walk(root: &Path, dir: &Path, out: &mut Vec<String>) {
        let entries = std::fs::read_dir(dir).unwrap_or_else(|e| panic!("cannot list {}: {e}", dir.display()));
        for entry in entries {
            let path = entry.expect("directory entry").path();
            if path.is_dir() {
                walk(root, &path, out);
            } else if path.extension().is_some_and(|e| e == "test") {
                let rel = path.strip_prefix(root).expect("under the root");
                out.push(rel.components().map(|c| c.as_os_str().to_string_lossy()).collect::<Vec<_>>().join("/"));
            }
        }
    }
    let root = require_corpus();
    let mut out = Vec::new();
    walk(&root, &root, &mut out);
    out.sort();
    out
}

/// The text of one corpus script; panics with a clear message when missing.
pub fn read_script(rel: &str) -> String {
    let path = require_corpus().join(rel);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("cannot read sqllogictest script {}: {e}", path.display()))
}

/// The pass bar in percent of records run: `$JOULE_SLT_MIN_PASS`, default 99.
pub fn min_pass_percent() -> f64 {
    std::env::var("JOULE_SLT_MIN_PASS").ok().and_then(|v| v.parse().ok()).unwrap_or(99.0)
}

/// Run one script against a fresh backend from `make`, without reporting.
pub fn run_file<B: Backend>(rel: &str, engine: &str, make: impl FnOnce() -> B) -> Result<FileOutcome, String> {
    let script = read_script(rel);
    let mut backend = runner::catch(make).map_err(|p| format!("PANIC while creating the database: {p}"))?;
    let config = Config { engine, max_failure_details: max_failure_details(), slow_record: Duration::from_secs(1) };
    runner::run_script(&mut backend, rel, &script, &config).map_err(|e| format!("cannot parse {rel}: {e}"))
}

fn notes(out: &FileOutcome) -> String {
    let mut notes = Vec::new();
    if let Some(line) = out.halted_at {
        notes.push(format!("halt at line {line}"));
    }
    if out.run == 0 {
        notes.push("no records run".to_string());
    }
    if let Some((line, took)) = out.slow.iter().max_by_key(|(_, t)| *t) {
        notes.push(format!("{} slow records (slowest {:.1} s, line {line})", out.slow.len(), took.as_secs_f64()));
    }
    notes.join("; ")
}

fn publish(row: &ReportRow) {
    println!("{}\n{}", report::TABLE_HEADER, row.markdown());
    match report::record(row) {
        Ok(path) => println!("(report: {})", path.display()),
        Err(e) => println!("(could not write the report under {}: {e})", report::target_dir().display()),
    }
}

/// Run one corpus file against JouleDB (or any backend), print its table row
/// and failures, record it in the report, and fail the test when fewer than
/// [`min_pass_percent`] of the records run pass.
///
/// `divergences` lists records (by line) where JouleDB deliberately differs
/// from the engine that generated the script, with the reason. They still
/// count as failed in the report, but not against the pass bar; a listed
/// record that starts passing fails the test, so the list stays true.
pub fn check_file<B: Backend>(rel: &str, divergences: &[(usize, &str)], make: impl FnOnce() -> B) {
    let started = Instant::now();
    let out = match run_file(rel, ENGINE, make) {
        Ok(out) => out,
        Err(e) => {
            let mut row = ReportRow::new(rel, "ERROR");
            row.seconds = started.elapsed().as_secs_f64();
            row.notes = e.clone();
            publish(&row);
            panic!("{rel}: {e}");
        }
    };
    let bar = min_pass_percent();
    let pct = out.pass_percent();
    let failed_lines: Vec<usize> = out.failures.iter().map(|f| f.line).collect();
    for (line, reason) in divergences {
        assert!(
            failed_lines.contains(line),
            "{rel}:{line} is listed as a deliberate divergence ({reason}) but did not fail: remove it from the list"
        );
    }
    let divergent = divergences.len();
    let bar_pct = if out.run > divergent { 100.0 * out.passed as f64 / (out.run - divergent) as f64 } else { 100.0 };
    let mut row = ReportRow::new(rel, if bar_pct >= bar { "pass" } else { "FAIL" });
    row.records = out.records;
    row.run = out.run;
    row.passed = out.passed;
    row.failed = out.failed;
    row.panics = out.panics;
    row.skipped = out.skipped;
    row.seconds = out.elapsed.as_secs_f64();
    row.notes = notes(&out);
    if divergent > 0 {
        let reasons: Vec<&str> =
            divergences.iter().map(|(_, r)| *r).collect::<std::collections::BTreeSet<_>>().into_iter().collect();
        let extra = format!("{divergent} documented divergences: {}", reasons.join("; "));
        row.notes = if row.notes.is_empty() { extra } else { format!("{}; {extra}", row.notes) };
    }
    publish(&row);

    if !out.failures.is_empty() {
        println!("\nfailures ({} shown of {}):\n", out.failures.len(), out.failed);
        for f in &out.failures {
            println!("{}", f.text);
        }
        if out.failed > out.failures.len() {
            println!("... and {} more failures not shown\n", out.failed - out.failures.len());
        }
    }
    if !out.panic_sites.is_empty() {
        let mut sites: Vec<_> = out.panic_sites.iter().collect();
        sites.sort_by(|a, b| b.1.cmp(a.1).then(a.0.cmp(b.0)));
        println!("PANICs by site ({} records):", out.panics);
        for (msg, n) in sites.iter().take(10) {
            println!("  {n:>6} x {msg}");
        }
        if sites.len() > 10 {
            println!("  ... and {} more distinct panics", sites.len() - 10);
        }
    }
    for (line, took) in &out.slow {
        println!("slow: {rel}:{line} took {:.2} s", took.as_secs_f64());
    }
    assert!(
        bar_pct >= bar,
        "{rel}: {}/{} records passed ({pct:.2}%; {bar_pct:.2}% without {divergent} documented divergences), below the \
         {bar}% bar; {} failed, {} of them PANICs (first failure at line {}). Details above.",
        out.passed,
        out.run,
        out.failed,
        out.panics,
        out.failures.first().map_or(0, |f| f.line),
    );
}

/// Record a corpus file that is deliberately not run, with the reason.
pub fn skip_file(rel: &str, reason: &str) {
    let records = match parser::parse(&read_script(rel)) {
        Ok(recs) => recs.iter().filter(|r| r.is_test()).count(),
        Err(e) => panic!("cannot parse {rel}: {e}"),
    };
    let mut row = ReportRow::new(rel, "skipped");
    row.records = records;
    row.skipped = records;
    row.notes = reason.to_string();
    println!("SKIPPED {rel}: {reason}");
    publish(&row);
}
