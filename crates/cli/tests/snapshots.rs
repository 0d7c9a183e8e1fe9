//! Snapshots end to end over real processes: `joule snapshot
//! save|scan|restore|delete` against a node's admin port, restoring into a
//! node with another partition count, recovery after an online restore,
//! and recovery falling back past a corrupt snapshot.

mod common;

use common::{start_in, Node, TempDir};
use joule_client::{BlockingClient, Options};
use joule_common::Value;
use std::process::Command;

const SCHEMA: &str = "CREATE TABLE kv (k BIGINT NOT NULL PRIMARY KEY, v VARCHAR(20) NOT NULL, g INTEGER NOT NULL); \
                      PARTITION TABLE kv ON COLUMN k; \
                      CREATE TABLE regions (id INTEGER NOT NULL PRIMARY KEY, name VARCHAR(20)); \
                      CREATE VIEW per_group (g, n) AS SELECT g, COUNT(*) FROM kv GROUP BY g";

fn connect(addr: &str) -> BlockingClient {
    BlockingClient::connect(&[addr], Options::default()).expect("connect")
}

fn rows(c: &BlockingClient, sql: &str) -> Vec<Vec<Value>> {
    c.execute(sql, vec![]).unwrap_or_else(|e| panic!("{sql}: {e}")).tables[0].rows.clone()
}

/// Run `joule snapshot ...` against `node`'s admin port.
fn snapshot_cmd(node: &Node, args: &[&str]) -> (bool, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_joule"))
        .arg("snapshot")
        .arg(args[0])
        .args(["--host", "127.0.0.1", "--port", &node.admin.to_string()])
        .args(&args[1..])
        .output()
        .expect("joule runs");
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    (out.status.success(), text)
}

fn fill(c: &BlockingClient, n: i64) {
    c.execute(SCHEMA, vec![]).unwrap();
    for k in 0..n {
        c.call("KV.insert", vec![Value::Integer(k), Value::String(format!("v{k}")), Value::Integer(k % 7)]).unwrap();
    }
    for (id, name) in [(1, "north"), (2, "south")] {
        c.call("REGIONS.insert", vec![Value::Integer(id), Value::from(name)]).unwrap();
    }
}

fn summary(c: &BlockingClient) -> Vec<Vec<Value>> {
    let mut out = rows(c, "SELECT COUNT(*), SUM(k), MIN(v), MAX(v) FROM kv");
    out.extend(rows(c, "SELECT g, n FROM per_group ORDER BY g"));
    out.extend(rows(c, "SELECT id, name FROM regions ORDER BY id"));
    out
}

#[test]
fn save_scan_restore_elsewhere_recover_and_delete() {
    let (dir_a, dir_b, backups) = (TempDir::new("snap-a"), TempDir::new("snap-b"), TempDir::new("snap-backups"));
    let backup_dir = backups.path().to_str().unwrap();
    let a = start_in(dir_a.path(), &["--command-log", "sync"]);
    let ca = connect(&a.client_addr());
    fill(&ca, 500);
    let expected = summary(&ca);
    let (ok, out) = snapshot_cmd(&a, &["save", "--dir", backup_dir, "--nonce", "bk1", "--blocking"]);
    assert!(ok && out.contains("SUCCESS") && out.contains("MAX_PAUSE_MICROS"), "{out}");
    let (ok, out) = snapshot_cmd(&a, &["save", "--dir", backup_dir, "--nonce", "bk1"]);
    assert!(!ok && out.contains("J6004") && out.contains("already exists"), "{out}");
    let (ok, out) = snapshot_cmd(&a, &["scan", "--dir", backup_dir]);
    assert!(ok && out.contains("bk1") && out.contains("TRUE"), "{out}");
    let status =
        connect(&a.admin_addr()).call("@Statistics", vec![Value::from("SNAPSHOTSTATUS"), Value::Integer(0)]).unwrap();
    assert!(status.tables[0].rows.iter().any(|r| r[4] == Value::from("bk1") && r[13] == Value::from("SUCCESS")));

    // Restore into a node with another partition count and the same schema.
    let mut b = start_in(dir_b.path(), &["--command-log", "sync", "--sites", "3"]);
    let cb = connect(&b.client_addr());
    cb.execute(SCHEMA, vec![]).unwrap();
    let (ok, out) = snapshot_cmd(&b, &["restore", "--dir", backup_dir, "--nonce", "bk1"]);
    assert!(ok && out.contains("ROWS_LOADED"), "{out}");
    assert_eq!(summary(&cb), expected);
    let misplaced = cb.call("@ValidatePartitioning", vec![]).unwrap();
    assert!(misplaced.tables[0].rows.iter().all(|r| r[2] == Value::Integer(0)), "rows landed where they belong");
    // Restoring again conflicts with the rows now there: refused whole.
    let (ok, out) = snapshot_cmd(&b, &["restore", "--dir", backup_dir, "--nonce", "bk1"]);
    assert!(!ok && out.contains("J2007"), "{out}");
    assert_eq!(summary(&cb), expected);

    // The backup can go: the restore was followed by a snapshot of B's own.
    let (ok, out) = snapshot_cmd(&a, &["delete", "--dir", backup_dir, "--nonce", "bk1"]);
    assert!(ok && out.contains("SUCCESS"), "{out}");
    let (_, out) = snapshot_cmd(&a, &["scan", "--dir", backup_dir]);
    assert!(!out.contains("bk1"), "{out}");
    drop(cb);
    b.kill();
    let b = start_in(dir_b.path(), &["--command-log", "sync", "--sites", "3"]);
    assert!(b.startup.contains("loaded snapshot AUTO_"), "{}", b.startup);
    assert_eq!(summary(&connect(&b.client_addr())), expected);
}

#[test]
fn recovery_falls_back_past_a_corrupt_snapshot() {
    let dir = TempDir::new("snap-fallback");
    let mut node = start_in(dir.path(), &["--command-log", "sync"]);
    let c = connect(&node.client_addr());
    fill(&c, 300);
    let admin = connect(&node.admin_addr());
    for nonce in ["first", "second"] {
        admin.call("@SnapshotSave", vec![Value::from(""), Value::from(nonce), Value::Integer(1)]).unwrap();
        c.call("KV.insert", vec![Value::Integer(10_000), Value::from(nonce), Value::Integer(0)]).ok();
        c.execute("UPDATE kv SET v = ? WHERE k = 10000", vec![Value::from(nonce)]).unwrap();
    }
    let expected = summary(&c);
    drop((c, admin));
    node.kill();
    // Damage the newest snapshot's first partition file.
    let file = dir.path().join("snapshots/second/p0000.jsnap");
    let mut bytes = std::fs::read(&file).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x55;
    std::fs::write(&file, &bytes).unwrap();
    let node = start_in(dir.path(), &["--command-log", "sync"]);
    assert!(node.startup.contains("skipped") && node.startup.contains("loaded snapshot first"), "{}", node.startup);
    assert_eq!(summary(&connect(&node.client_addr())), expected);
}

/// Automatic snapshots every second keep `retain` of themselves and
/// truncate the log; recovery starts from the newest. Another partition
/// count is refused with what to do.
#[test]
fn automatic_snapshots_truncate_the_log_and_keep_retain() {
    let dir = TempDir::new("snap-auto");
    let conf = dir.path().with_extension("toml");
    std::fs::write(&conf, "[snapshot]\nfrequency_s = 1\nretain = 2\n[command_log]\nmode = \"sync\"\nsegment_mb = 1\n")
        .unwrap();
    let mut node = start_in(dir.path(), &["--config", conf.to_str().unwrap()]);
    let c = connect(&node.client_addr());
    c.execute(SCHEMA, vec![]).unwrap();
    // Wide rows, so that the 1 MiB log segments fill and rotate.
    c.execute("CREATE TABLE wide (k BIGINT NOT NULL PRIMARY KEY, pad VARCHAR(2000))", vec![]).unwrap();
    // Write until three automatic snapshots have completed and one of them
    // truncated the first log segment (30 s at most: a loaded machine
    // writes and snapshots more slowly).
    let started = std::time::Instant::now();
    let mut k = 0i64;
    let automatic = |c: &BlockingClient| {
        let status = c.call("@Statistics", vec![Value::from("SNAPSHOTSTATUS"), Value::Integer(0)]).unwrap();
        status.tables[0].rows.iter().filter(|r| r[14] == Value::from("AUTO") && r[13] == Value::from("SUCCESS")).count()
    };
    let first_segment = dir.path().join("log/0000000000000001.jlog");
    while automatic(&c) < 3 || first_segment.exists() {
        assert!(
            started.elapsed() < std::time::Duration::from_secs(30),
            "three automatic snapshots and a truncation in 30 s"
        );
        for _ in 0..50 {
            c.call("KV.insert", vec![Value::Integer(k), Value::String(format!("v{k}")), Value::Integer(k % 7)])
                .unwrap();
            c.call("WIDE.insert", vec![Value::Integer(k), Value::String("p".repeat(1500))]).unwrap();
            k += 1;
        }
    }
    let expected = summary(&c);
    drop(c);
    node.kill();
    let kept: Vec<String> = std::fs::read_dir(dir.path().join("snapshots"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().to_string())
        .collect();
    assert!(kept.len() <= 3 && kept.iter().all(|n| n.starts_with("AUTO_")), "{kept:?}");
    let segments: Vec<String> = std::fs::read_dir(dir.path().join("log"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().to_string())
        .collect();
    assert!(!segments.contains(&"0000000000000001.jlog".to_string()), "the first segment was truncated: {segments:?}");
    // Another partition count: refused, saying what to do.
    let out = Command::new(env!("CARGO_BIN_EXE_joule"))
        .args(["start", "--client-port", "0", "--admin-port", "0", "--http-port", "0", "--sites", "3", "--dir"])
        .arg(dir.path())
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("J6003") && err.contains("--sites 2"), "{err}");
    let node = start_in(dir.path(), &["--config", conf.to_str().unwrap()]);
    let _ = std::fs::remove_file(&conf);
    assert!(node.startup.contains("loaded snapshot AUTO_"), "{}", node.startup);
    assert_eq!(summary(&connect(&node.client_addr())), expected);
}
