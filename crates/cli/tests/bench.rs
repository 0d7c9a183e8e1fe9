//! `joule bench` against a real node: every workload creates its schema
//! and data, runs in each mode, and reports JSON with the documented keys
//! and no errors.

mod common;

use common::{start_in, TempDir};
use std::process::Command;

fn bench(port: u16, args: &[&str]) -> serde_json::Value {
    let out = Command::new(env!("CARGO_BIN_EXE_joule"))
        .args(["bench"])
        .args(args)
        .args(["--servers", &format!("127.0.0.1:{port}"), "--duration", "1", "--warmup", "0.2", "--json"])
        .output()
        .expect("joule bench runs");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stdout)))
}

#[test]
fn every_workload_in_every_mode_reports_json() {
    let dir = TempDir::new("bench");
    let node = start_in(dir.path(), &[]);
    for args in [
        vec!["voter"],
        vec!["kv", "--records", "2000", "--mix", "a"],
        vec!["kv", "--records", "2000", "--mix", "c", "--sync", "--threads", "2"],
        // pgbench's shape: more clients than threads, one call outstanding each.
        vec!["voter", "--sync", "--clients", "5", "--threads", "2"],
        vec!["tpcb", "--rate", "500"],
        vec!["tpcb"],
        // Scale 2: pgbench's key draw makes most calls multi-partition.
        vec!["tpcb", "--scale", "2"],
    ] {
        let r = bench(node.client, &args);
        assert!(r["tps"].as_f64().unwrap() > 0.0, "{args:?}: {r}");
        assert!(r["calls"].as_u64().unwrap() > 0, "{args:?}: {r}");
        for q in ["p50", "p95", "p99", "p999", "max"] {
            assert!(r["latency_ms"][q].as_f64().is_some(), "{args:?}: {q} in {r}");
        }
        assert_eq!(r["errors"], serde_json::json!({}), "{args:?}: {r}");
    }
    // The data the workloads made is there: tpcb kept its balances consistent.
    let out = Command::new(env!("CARGO_BIN_EXE_joule"))
        .args(["sql", "--servers", "127.0.0.1", "--port", &node.client.to_string(), "--output-format", "csv"])
        .args(["--output-skip-metadata", "--query"])
        .arg("SELECT (SELECT SUM(bbalance) FROM pgbench_branches) - (SELECT SUM(abalance) FROM pgbench_accounts);")
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "0", "{}", String::from_utf8_lossy(&out.stderr));
}

/// Without a terminal (no progress bar), the periodic lines still appear,
/// each with its own interval's figures, then the report.
#[test]
fn progress_lines_print_without_a_terminal() {
    let dir = TempDir::new("bench-lines");
    let node = start_in(dir.path(), &[]);
    let out = Command::new(env!("CARGO_BIN_EXE_joule"))
        .args(["bench", "kv", "--records", "1000", "--mix", "c", "--duration", "1.2", "--warmup", "0.1"])
        .args(["--report-every", "0.3", "--servers", &format!("127.0.0.1:{}", node.client)])
        .output()
        .expect("joule bench runs");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let stderr = String::from_utf8_lossy(&out.stderr);
    let lines = stderr.lines().filter(|l| l.contains(" TPS, p50 ") && l.contains(" max ")).count();
    assert!(lines >= 2, "periodic lines on stderr: {stderr}");
    assert!(String::from_utf8_lossy(&out.stdout).contains("latency ms: p50"));
}

/// `--phase-file`: the calls are counted under the label the file held
/// when they ended; every measured call falls in exactly one phase, and
/// each phase's time adds up to the run.
#[test]
fn calls_are_split_by_the_phase_file() {
    let dir = TempDir::new("bench-phases");
    let node = start_in(dir.path(), &[]);
    let phase = dir.path().join("phase");
    std::fs::write(&phase, "steady\n").unwrap();
    let child = Command::new(env!("CARGO_BIN_EXE_joule"))
        .args(["bench", "voter", "--duration", "2", "--warmup", "0.2", "--json"])
        .args(["--servers", &format!("127.0.0.1:{}", node.client)])
        .arg("--phase-file")
        .arg(&phase)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("joule bench runs");
    // Change the label a second into the measured time.
    std::thread::sleep(std::time::Duration::from_millis(1200));
    std::fs::write(&phase, "  moving  \nignored\n").unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let r: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let phases = r["phases"].as_object().unwrap_or_else(|| panic!("phases in {r}"));
    assert_eq!(phases.keys().collect::<Vec<_>>(), ["moving", "steady"], "{r}");
    let mut calls = 0;
    let mut seconds = 0.0;
    for (label, p) in phases {
        assert!(p["calls"].as_u64().unwrap() > 0, "{label}: {r}");
        assert!(p["tps"].as_f64().unwrap() > 0.0, "{label}: {r}");
        assert!(p["latency_ms"]["p99"].as_f64().unwrap() > 0.0, "{label}: {r}");
        assert!(p["latency_ms"]["max"].as_f64().unwrap() >= p["latency_ms"]["p99"].as_f64().unwrap(), "{r}");
        calls += p["calls"].as_u64().unwrap();
        seconds += p["seconds"].as_f64().unwrap();
    }
    assert_eq!(calls, r["calls"].as_u64().unwrap(), "{r}");
    assert!((seconds - r["seconds"].as_f64().unwrap()).abs() < 0.05, "{r}");
}
