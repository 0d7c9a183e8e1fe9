//! The advisor on a real node: quiet on a healthy workload, then each rule
//! that a workload can trigger firing on one built for it — a
//! multi-partition procedure that could be partitioned, a full scan
//! without an index, a hot partition — and on a node with no command log.
//! (The sites-versus-cores and memory rules depend on the machine; their
//! unit tests feed them figures.)

mod common;

use common::{start_in, TempDir};
use joule_client::{Options, SyncConnection};
use joule_common::Value;
use std::process::Command;

fn advise_cli(port: u16) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_joule"))
        .args(["advise", "--servers", &format!("127.0.0.1:{port}")])
        .output()
        .expect("joule advise runs");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).to_string()
}

fn rules(c: &mut SyncConnection) -> Vec<(String, String)> {
    let r = c.call("@Advise", vec![]).unwrap();
    r.tables[0].rows.iter().map(|row| (row[0].to_string(), row[2].to_string())).collect()
}

#[test]
fn the_advisor_is_quiet_when_healthy_and_fires_on_what_triggers_it() {
    let dir = TempDir::new("advise");
    let node = start_in(dir.path(), &[]);
    let mut c = SyncConnection::connect(&node.client_addr(), &Options::default()).unwrap();
    c.execute("CREATE TABLE kv (k BIGINT NOT NULL PRIMARY KEY, v VARCHAR(20)); PARTITION TABLE kv ON COLUMN k", vec![])
        .unwrap();
    for k in 0..2000i64 {
        c.call("KV.insert", vec![Value::Integer(k), Value::from("v")]).unwrap();
    }
    assert_eq!(rules(&mut c), Vec::new(), "a healthy workload gets no advice");
    assert!(advise_cli(node.client).contains("No recommendations"));

    // A multi-partition procedure that pins the partition column to a parameter.
    c.execute("CREATE PROCEDURE GetV AS SELECT v FROM kv WHERE k = ?", vec![]).unwrap();
    for k in 0..20i64 {
        c.call("GetV", vec![Value::Integer(k)]).unwrap();
    }
    // A full scan of a sizeable table to filter on an unindexed column.
    c.execute("CREATE TABLE big (a INTEGER NOT NULL, b INTEGER)", vec![]).unwrap();
    for a in 0..1500i64 {
        c.execute("INSERT INTO big VALUES (?, ?)", vec![Value::Integer(a), Value::Integer(a % 10)]).unwrap();
    }
    c.execute("CREATE PROCEDURE FindB AS SELECT a FROM big WHERE b = ?", vec![]).unwrap();
    c.call("FindB", vec![Value::Integer(3)]).unwrap();
    // One hot key: every call on one partition.
    c.execute("CREATE TABLE hot (k BIGINT NOT NULL PRIMARY KEY, n BIGINT); PARTITION TABLE hot ON COLUMN k", vec![])
        .unwrap();
    for n in 0..6000i64 {
        c.call("HOT.upsert", vec![Value::Integer(42), Value::Integer(n)]).unwrap();
    }
    let advice = rules(&mut c);
    let has = |rule: &str, text: &str| advice.iter().any(|(r, rec)| r == rule && rec.contains(text));
    assert!(has("partition-procedure", "PARTITION PROCEDURE GetV ON TABLE KV COLUMN K PARAMETER 0"), "{advice:?}");
    assert!(has("missing-index", "ON BIG (B)"), "{advice:?}");
    assert!(has("partition-skew", "is hot"), "{advice:?}");
    let out = advise_cli(node.client);
    assert!(out.contains("[high] partition-procedure") && out.contains("evidence:"), "{out}");

    // No command log at all.
    let dir2 = TempDir::new("advise-off");
    let off = start_in(dir2.path(), &["--command-log", "off"]);
    let mut c2 = SyncConnection::connect(&off.client_addr(), &Options::default()).unwrap();
    assert!(rules(&mut c2).iter().any(|(r, _)| r == "command-log"));
}
