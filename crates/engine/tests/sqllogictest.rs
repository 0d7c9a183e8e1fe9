//! The sqllogictest conformance suite: SQLite's sqllogictest scripts run
//! against JouleDB, one test per script.
//!
//! ```text
//! cargo test -p joule-engine --test sqllogictest                 # all scripts
//! cargo test -p joule-engine --test sqllogictest select1         # one script
//! cargo test -p joule-engine --test sqllogictest -- --nocapture  # show every table row
//! ```
//!
//! Scripts come from `$JOULE_SLT_DIR`, else from
//! `../shared/conformance/sqllogictest` beside the repository; a missing
//! corpus fails the tests. Each script runs on a fresh `Database::new()`; the
//! engine calls itself `postgresql` for `skipif`/`onlyif`. A script's test
//! fails when fewer than 99% of the records it runs pass
//! (`JOULE_SLT_MIN_PASS=100` makes it strict), printing the first 30
//! failing records (`JOULE_SLT_MAX_FAILURES` changes that) with file:line,
//! SQL, expected and actual; engine panics are caught and marked PANIC.
//! Every test also updates `target/sqllogictest-report.md`.
//!
//! Besides the scripts, three tests need no engine: `corpus_parses` (every
//! script parses), `every_corpus_file_is_listed` (new scripts cannot be
//! forgotten) and `runner_agrees_with_sqlite` (the runner passes the corpus
//! on SQLite, which generated it — so a failure against JouleDB is JouleDB's).

mod slt;

use joule_engine::{Database, ExecResult};
use slt::runner::{Backend, Output};

/// JouleDB as a sqllogictest backend.
struct Joule(Database);

impl Backend for Joule {
    fn run(&mut self, sql: &str) -> Result<Output, String> {
        match self.0.execute(sql) {
            Ok(ExecResult::Rows { columns, rows }) => Ok(Output::Rows { ncols: columns.len(), rows }),
            Ok(ExecResult::Modified(_) | ExecResult::Done) => Ok(Output::Done),
            Err(e) => Err(e.to_string()),
        }
    }
}

/// One test per script (`name => path`), one per skipped script
/// (`name => path: reason`), and `LISTED`/`SKIPPED` for the checks below.
macro_rules! scripts {
    (
        run { $($name:ident => $path:literal,)* }
        skip { $($skip_name:ident => $skip_path:literal: $reason:literal,)* }
    ) => {
        $(
            #[test]
            fn $name() {
                slt::check_file($path, &divergences($path), || Joule(Database::new()));
            }
        )*
        $(
            #[test]
            fn $skip_name() {
                slt::skip_file($skip_path, $reason);
            }
        )*
        /// Scripts run against the engine.
        const LISTED: &[&str] = &[$($path),*];
        /// Scripts deliberately not run.
        const SKIPPED: &[&str] = &[$($skip_path),*];
    };
}

/// Records where JouleDB deliberately differs from SQLite, which generated the
/// expected results: (script, line, reason). See docs/compatibility.md.
const DIVERGENCES: &[(&str, usize, &str)] = &[
    ("evidence/slt_lang_replace.test", 38, VARCHAR_LIMIT),
    ("evidence/slt_lang_replace.test", 42, VARCHAR_LIMIT),
    ("evidence/slt_lang_replace.test", 58, VARCHAR_LIMIT),
    ("evidence/slt_lang_replace.test", 62, VARCHAR_LIMIT),
];

const VARCHAR_LIMIT: &str = "VARCHAR(n) limits are enforced (VoltDB); SQLite ignores them";

fn divergences(script: &str) -> Vec<(usize, &'static str)> {
    DIVERGENCES.iter().filter(|(f, _, _)| *f == script).map(|(_, line, reason)| (*line, *reason)).collect()
}

scripts! {
    run {
        select1 => "select1.test",
        select2 => "select2.test",
        select3 => "select3.test",
        evidence_in1 => "evidence/in1.test",
        evidence_in2 => "evidence/in2.test",
        evidence_slt_lang_aggfunc => "evidence/slt_lang_aggfunc.test",
        evidence_slt_lang_createview => "evidence/slt_lang_createview.test",
        evidence_slt_lang_dropindex => "evidence/slt_lang_dropindex.test",
        evidence_slt_lang_droptable => "evidence/slt_lang_droptable.test",
        evidence_slt_lang_dropview => "evidence/slt_lang_dropview.test",
        evidence_slt_lang_replace => "evidence/slt_lang_replace.test",
        evidence_slt_lang_update => "evidence/slt_lang_update.test",
    }
    skip {
        skipped_evidence_slt_lang_createtrigger => "evidence/slt_lang_createtrigger.test": "triggers are not a feature",
        skipped_evidence_slt_lang_droptrigger => "evidence/slt_lang_droptrigger.test": "triggers are not a feature",
        skipped_evidence_slt_lang_reindex => "evidence/slt_lang_reindex.test": "REINDEX is not a feature",
    }
}

/// Every script in the corpus parses (needs no engine).
#[test]
fn corpus_parses() {
    for rel in LISTED.iter().chain(SKIPPED) {
        let text = slt::read_script(rel);
        let records = slt::parser::parse(&text).unwrap_or_else(|e| panic!("{rel}: {e}"));
        assert!(records.iter().any(|r| r.is_test()), "{rel}: no statements or queries");
    }
}

/// Every `*.test` file of the corpus is either run or explicitly skipped.
#[test]
fn every_corpus_file_is_listed() {
    let unlisted: Vec<String> = slt::corpus_files()
        .into_iter()
        .filter(|f| !LISTED.contains(&f.as_str()) && !SKIPPED.contains(&f.as_str()))
        .collect();
    assert!(
        unlisted.is_empty(),
        "corpus scripts missing from the scripts! list in tests/sqllogictest.rs: {unlisted:?}"
    );
}

/// Records SQLite itself fails: `sum()` of integers that overflow is an
/// error in SQLite, while the script (run by other engines) expects no rows.
const SQLITE_KNOWN_FAILURES: &[(&str, usize)] = &[("evidence/slt_lang_aggfunc.test", 480)];

/// The runner passes every script on SQLite (as engine `sqlite`), which
/// generated the expected results: this checks parsing, printing, sorting
/// and hashing independently of JouleDB.
#[test]
fn runner_agrees_with_sqlite() {
    let mut problems = Vec::new();
    for rel in LISTED {
        match slt::run_file(rel, "sqlite", slt::sqlite::Sqlite::new) {
            Err(e) => problems.push(e),
            Ok(out) => {
                println!("{rel}: {}/{} passed on SQLite, {} skipped", out.passed, out.run, out.skipped);
                let unexpected = out.failures.into_iter().filter(|f| !SQLITE_KNOWN_FAILURES.contains(&(*rel, f.line)));
                problems.extend(unexpected.map(|f| f.text));
            }
        }
    }
    assert!(problems.is_empty(), "the runner disagrees with SQLite:\n{}", problems.join("\n"));
}
