//! Golden script tests: each `golden/*.sql` script runs statement by
//! statement against a fresh database, and its transcript (statements,
//! results, plans, errors with their codes) must equal `golden/*.out`.
//!
//! After an intended change, regenerate with `UPDATE_GOLDEN=1 cargo test -p
//! joule-engine --test golden` and review the diff like code.

use joule_engine::{Database, ExecResult};
use std::fmt::Write;
use std::path::Path;

fn transcript(script: &str) -> String {
    let mut db = Database::new();
    let mut out = String::new();
    for stmt in joule_engine::split_statements(script).expect("golden scripts parse") {
        let _ = writeln!(out, "> {stmt}");
        match db.execute(&stmt) {
            Ok(ExecResult::Rows { columns, rows }) => {
                let names: Vec<&str> = columns.iter().map(|c| c.name.as_str()).collect();
                let _ = writeln!(out, "{}", names.join(" | "));
                for r in rows {
                    let vals: Vec<String> = r.iter().map(|v| v.to_string()).collect();
                    let _ = writeln!(out, "{}", vals.join(" | "));
                }
            }
            Ok(ExecResult::Modified(n)) => {
                let _ = writeln!(out, "modified {n}");
            }
            Ok(ExecResult::Done) => {
                let _ = writeln!(out, "ok");
            }
            Err(e) => {
                let _ = writeln!(out, "error {e}");
            }
        }
        out.push('\n');
    }
    out
}

#[test]
fn golden_scripts() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden");
    let update = std::env::var_os("UPDATE_GOLDEN").is_some();
    let mut scripts: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "sql"))
        .collect();
    scripts.sort();
    assert!(!scripts.is_empty(), "no golden scripts in {}", dir.display());
    let mut mismatched = Vec::new();
    for script in scripts {
        let got = transcript(&std::fs::read_to_string(&script).unwrap());
        let golden = script.with_extension("out");
        if update {
            std::fs::write(&golden, &got).unwrap();
            continue;
        }
        let want = std::fs::read_to_string(&golden).unwrap_or_default();
        if got != want {
            println!("=== {} differs; got:\n{got}", script.display());
            mismatched.push(script.display().to_string());
        }
    }
    assert!(mismatched.is_empty(), "golden transcripts differ (UPDATE_GOLDEN=1 to accept): {mismatched:?}");
}
