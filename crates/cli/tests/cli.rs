//! The `joule` binary, run as a real process.

use std::io::Write;
use std::process::{Command, Stdio};

fn joule() -> Command {
    Command::new(env!("CARGO_BIN_EXE_joule"))
}

#[test]
fn sql_runs_a_script_and_prints_rows() {
    let out = joule()
        .args(["sql", "--embedded", "-e", "CREATE TABLE t (id INTEGER PRIMARY KEY, v VARCHAR(5)); INSERT INTO t VALUES (1, 'a'), (2, 'b'); SELECT * FROM t ORDER BY id DESC;"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let stdout = String::from_utf8(out.stdout).unwrap();
    assert!(stdout.contains("ID\tV\n2\tb\n1\ta\n(2 rows)"), "{stdout}");
}

#[test]
fn sql_reads_standard_input_and_reports_errors_with_codes() {
    let mut child = joule()
        .args(["sql", "--embedded"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(b"CREATE TABLE t (a TINYINT); INSERT INTO t VALUES (300);").unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert!(stderr.contains("J2001") && stderr.contains("TINYINT"), "{stderr}");
}

#[test]
fn start_refuses_a_bad_configuration_file() {
    let path = std::env::temp_dir().join(format!("joule-bad-{}.toml", std::process::id()));
    std::fs::write(&path, "client_port = \"not a number\"\n").unwrap();
    let out = joule().args(["start", "--config"]).arg(&path).output().unwrap();
    let _ = std::fs::remove_file(&path);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("configuration"), "{}", String::from_utf8_lossy(&out.stderr));
    let out = joule().args(["start", "--config", "/nonexistent/joule.toml"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
}
