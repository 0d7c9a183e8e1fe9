//! `@AdHoc`: routing (single- or multi-partition), DDL applied on every
//! partition at once with the data kept, and its errors.

mod common;

use common::*;
use joule_common::{ErrorCode, Value};

#[test]
fn routes_single_partition_only_when_pinned() {
    let host = host(3);
    let mut c = host.client();
    exec(
        &mut c,
        "CREATE TABLE t (id INT NOT NULL PRIMARY KEY, v INT); PARTITION TABLE t ON COLUMN id; CREATE TABLE r (k INT)",
    );
    let single =
        |c: &mut joule_txn::Client, sql: &str, params: Vec<Value>| !was_multi_partition(&ok(c.adhoc(sql, params)));
    assert!(single(&mut c, "INSERT INTO t VALUES (1, 10)", vec![]));
    assert!(single(&mut c, "INSERT INTO t VALUES (?, ?)", vec![int(2), int(20)]));
    assert!(single(&mut c, "SELECT v FROM t WHERE id = ?", vec![int(1)]));
    assert!(single(&mut c, "UPDATE t SET v = v + 1 WHERE id = 2", vec![]));
    assert!(single(&mut c, "SELECT * FROM r", vec![]));
    // Two statements pinned to the same partition stay single-partition.
    let h = host.hashinator();
    let p1 = h.partition_for(&int(1)).unwrap();
    let same = (3..500).find(|k| h.partition_for(&int(*k)).unwrap() == p1).unwrap();
    let other = (3..500).find(|k| h.partition_for(&int(*k)).unwrap() != p1).unwrap();
    assert!(single(&mut c, "SELECT v FROM t WHERE id = ?; SELECT v FROM t WHERE id = ?", vec![int(1), int(same)]));
    assert!(!single(&mut c, "SELECT v FROM t WHERE id = ?; SELECT v FROM t WHERE id = ?", vec![int(1), int(other)]));
    assert!(!single(&mut c, "SELECT COUNT(*) FROM t", vec![]));
    assert!(!single(&mut c, "INSERT INTO r VALUES (1)", vec![]));
    assert!(!single(&mut c, "SELECT * FROM t WHERE v = 10", vec![]));
    // A computed key pins its partition like a literal does.
    let r = ok(c.adhoc("SELECT v FROM t WHERE id = 1 + 1", vec![]));
    assert!(!was_multi_partition(&r));
    assert_eq!(r.results[0].rows, vec![vec![int(21)]]);
    let r = ok(c.adhoc("DELETE FROM t WHERE id = ? + 0", vec![int(2)]));
    assert_eq!(r.results[0].as_i64(), Some(1));
    // The rows went where the hashinator says, whatever path wrote them.
    assert_eq!(misplaced(&mut c), 0);
    // Parameters are checked against the statements' `?`s.
    assert_eq!(fails(c.adhoc("SELECT v FROM t WHERE id = ?", vec![])), ErrorCode::WrongParameterCount);
    assert_eq!(fails(c.adhoc("SELECT 1", vec![int(1)])), ErrorCode::WrongParameterCount);
    assert_eq!(fails(c.call("@AdHoc", vec![])), ErrorCode::WrongParameterCount);
    assert_eq!(fails(c.call("@AdHoc", vec![int(5)])), ErrorCode::DatatypeMismatch);
    assert_eq!(fails(c.adhoc("", vec![])), ErrorCode::SyntaxError);
    assert_eq!(fails(c.adhoc("SELEC 1", vec![])), ErrorCode::SyntaxError);
    assert_eq!(fails(c.adhoc("CREATE TABLE x (a INT); SELECT 1", vec![])), ErrorCode::FeatureNotSupported);
}

#[test]
fn ddl_changes_every_partition_and_keeps_data() {
    let host = host(3);
    let mut c = host.client();
    exec(&mut c, "CREATE TABLE t (id INT NOT NULL PRIMARY KEY, v INT); PARTITION TABLE t ON COLUMN id");
    for i in 0..60 {
        exec(&mut c, &format!("INSERT INTO t VALUES ({i}, {})", i % 7));
    }
    // ALTER keeps every row on every partition.
    exec(&mut c, "ALTER TABLE t ADD COLUMN note VARCHAR(5) DEFAULT 'x'");
    assert_eq!(
        query(&mut c, "SELECT COUNT(*), SUM(v), MIN(note), MAX(note) FROM t"),
        vec![vec![int(60), int((0..60).map(|i| i % 7).sum()), text("x"), text("x")]]
    );
    // CREATE INDEX on a filled table.
    exec(&mut c, "CREATE INDEX t_v ON t (v)");
    assert_eq!(scalar(&mut c, "SELECT COUNT(*) FROM t WHERE v = 3"), int(9));
    let plan = query(&mut c, "EXPLAIN SELECT id FROM t WHERE v = 3");
    assert!(format!("{plan:?}").contains("T_V"), "{plan:?}");
    // A unique index that one partition violates fails on all: none keeps it.
    let h = host.hashinator();
    let p = |k: i64| h.partition_for(&int(k)).unwrap();
    let mate = (1..60).find(|k| p(*k) == p(0)).unwrap();
    let elsewhere: Vec<i64> = (100..1000).filter(|k| p(*k) != p(0)).take(2).filter(|k| p(*k) == p(100)).collect();
    exec(&mut c, "ALTER TABLE t ADD COLUMN w INT");
    exec(&mut c, "UPDATE t SET w = id");
    exec(&mut c, &format!("UPDATE t SET w = 1000 WHERE id = 0 OR id = {mate}"));
    assert_eq!(fails(c.adhoc("CREATE UNIQUE INDEX t_w ON t (w)", vec![])), ErrorCode::UniqueViolation);
    assert_eq!(fails(c.adhoc("DROP INDEX t_w", vec![])), ErrorCode::UndefinedObject);
    let (a, b) = (100, (101..1000).find(|k| p(*k) == p(100)).unwrap());
    exec(&mut c, &format!("INSERT INTO t (id, w) VALUES ({a}, 5000), ({b}, 5000)"));
    exec(&mut c, &format!("DELETE FROM t WHERE id IN ({a}, {b})"));
    let _ = elsewhere;
    // With the duplicate gone it is created everywhere and enforced.
    exec(&mut c, &format!("UPDATE t SET w = {mate} WHERE id = {mate}"));
    exec(&mut c, "CREATE UNIQUE INDEX t_w ON t (w)");
    assert_eq!(
        fails(c.adhoc(&format!("INSERT INTO t (id, w) VALUES ({a}, 5000), ({b}, 5000)"), vec![])),
        ErrorCode::UniqueViolation
    );
    assert_eq!(scalar(&mut c, "SELECT COUNT(*) FROM t"), int(60));
    // PARTITION TABLE needs an empty table, on every partition.
    exec(&mut c, "CREATE TABLE later (k INT NOT NULL, w INT)");
    exec(&mut c, "PARTITION TABLE later ON COLUMN k");
    exec(&mut c, "INSERT INTO later VALUES (1, 1)");
    exec(&mut c, "CREATE TABLE filled (k INT NOT NULL)");
    exec(&mut c, "INSERT INTO filled VALUES (1), (2)");
    assert_eq!(fails(c.adhoc("PARTITION TABLE filled ON COLUMN k", vec![])), ErrorCode::SchemaChangeConflict);
    assert_eq!(scalar(&mut c, "SELECT COUNT(*) FROM filled"), int(2));
    // A failed batch of DDL leaves none of its statements behind.
    let r = c.adhoc("CREATE TABLE a1 (x INT); CREATE TABLE a1 (y INT)", vec![]);
    assert_eq!(fails(r), ErrorCode::DuplicateObject);
    assert_eq!(fails(c.adhoc("SELECT * FROM a1", vec![])), ErrorCode::UndefinedTable);
    exec(&mut c, "CREATE TABLE a1 (x INT)");
    assert_eq!(misplaced(&mut c), 0);
}

#[test]
fn sessions_keep_their_database() {
    let host = host(2);
    let mut a = host.client();
    let mut b = host.client();
    exec(&mut a, "CREATE DATABASE sales");
    assert_eq!(fails(a.adhoc("USE sales; SELECT 1", vec![])), ErrorCode::FeatureNotSupported);
    assert_eq!(fails(a.adhoc("USE nowhere", vec![])), ErrorCode::UndefinedObject);
    exec(&mut a, "USE sales");
    assert_eq!(a.database(), "SALES");
    exec(&mut a, "CREATE TABLE t (id INT NOT NULL PRIMARY KEY); PARTITION TABLE t ON COLUMN id");
    exec(&mut a, "INSERT INTO t VALUES (1)");
    assert_eq!(scalar(&mut a, "SELECT COUNT(*) FROM t"), int(1));
    assert_eq!(fails(b.adhoc("SELECT * FROM t", vec![])), ErrorCode::UndefinedTable);
    assert_eq!(scalar(&mut b, "SELECT COUNT(*) FROM sales.t"), int(1));
    ok(b.call("SALES.T.insert", vec![int(2)]));
    assert_eq!(scalar(&mut a, "SELECT COUNT(*) FROM t"), int(2));
}

#[test]
fn now_is_the_transaction_timestamp_on_every_partition() {
    let host = host(3);
    let mut c = host.client();
    exec(&mut c, "CREATE TABLE t (id INT NOT NULL, at TIMESTAMP, r FLOAT); PARTITION TABLE t ON COLUMN id");
    // One multi-partition INSERT ... SELECT writes rows on every partition:
    // all carry the same NOW().
    for i in 0..30 {
        exec(&mut c, &format!("INSERT INTO t VALUES ({i}, NULL, NULL)"));
    }
    let r = ok(c.adhoc("UPDATE t SET at = NOW()", vec![]));
    let micros = r.ids.unwrap().unique_id.timestamp_micros();
    assert_eq!(query(&mut c, "SELECT COUNT(DISTINCT at) FROM t"), vec![vec![int(1)]]);
    assert_eq!(query(&mut c, "SELECT MIN(at) FROM t"), vec![vec![Value::Timestamp(micros)]]);
}
