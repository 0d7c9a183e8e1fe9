//! Range partitioning: `PARTITION TABLE t ON COLUMN c USING RANGE (...)`
//! places rows by value (range i on partition i mod P, or on the partition
//! `ON PARTITIONS` names) on every write path, pins and routes by it, and
//! multi-partition reads with conditions on the partition column visit only
//! the partitions whose ranges they overlap; declaring other ranges for a
//! table with rows splits and moves its ranges, rows and views with them.

mod common;

use common::*;
use joule_common::{ErrorCode, Value};
use joule_txn::Host;
use std::time::Duration;

/// Range of `k` with boundaries 100, 200, 300, 400, 500; on 4 partitions.
fn partition_of(k: i64) -> usize {
    let range = [100, 200, 300, 400, 500].iter().filter(|b| **b <= k).count();
    range % 4
}

/// Per partition: rows of table `name`, and fragments run so far.
fn per_partition(host: &Host, name: &str) -> (Vec<u64>, Vec<u64>) {
    let mut stats = host.statistics(Duration::from_secs(10));
    stats.retain(|s| s.partition.is_some());
    stats.sort_by_key(|s| s.partition);
    let rows = stats.iter().map(|s| s.tables.iter().filter(|t| t.name == name).map(|t| t.rows).sum()).collect();
    (rows, stats.iter().map(|s| s.fragments).collect())
}

/// Run `what`; its result, and the partitions that were sent a piece of it.
fn reached<T>(host: &Host, what: impl FnOnce() -> T) -> (T, Vec<usize>) {
    let before = per_partition(host, "DEFAULT.R").1;
    let out = what();
    let after = per_partition(host, "DEFAULT.R").1;
    (out, (0..after.len()).filter(|p| after[*p] > before[*p]).collect())
}

fn setup() -> (Host, joule_txn::Client) {
    let host = host(4);
    let mut c = host.client();
    exec(
        &mut c,
        "CREATE TABLE r (k BIGINT NOT NULL PRIMARY KEY, src VARCHAR(10), n INT); \
         PARTITION TABLE r ON COLUMN k USING RANGE (100, 200, 300, 400, 500); \
         CREATE PROCEDURE PutR PARTITION ON TABLE r COLUMN k AS INSERT INTO r VALUES (?, 'proc', 0); \
         CREATE TABLE h (k BIGINT NOT NULL PRIMARY KEY, w INT); PARTITION TABLE h ON COLUMN k",
    );
    (host, c)
}

#[test]
fn every_write_path_puts_rows_in_their_range_partition() {
    let (host, mut c) = setup();
    let keys: Vec<i64> = (-20..620).step_by(7).chain([i64::MIN + 1, i64::MAX, 100, 199, 200, 500]).collect();
    let keys: Vec<i64> = {
        let mut k = keys;
        k.sort_unstable();
        k.dedup();
        k
    };
    for (i, k) in keys.iter().enumerate() {
        match i % 4 {
            0 => ok(c.call("R.insert", vec![int(*k), text("crud"), int(1)])),
            1 => ok(c.call("PutR", vec![int(*k)])),
            2 => ok(c.adhoc("INSERT INTO r VALUES (?, 'adhoc', 2)", vec![int(*k)])),
            _ => ok(c.adhoc(&format!("INSERT INTO r VALUES ({k}, 'literal', 3)"), vec![])),
        };
    }
    // Multi-partition paths: multi-row VALUES and INSERT ... SELECT.
    exec(&mut c, "INSERT INTO r VALUES (1000, 'multi', 4), (1001, 'multi', 4), (-1000, 'multi', 4)");
    exec(&mut c, "INSERT INTO r SELECT k + 10000, 'copy', 5 FROM r WHERE k BETWEEN 0 AND 350");
    assert_eq!(misplaced(&mut c), 0);
    // Counted independently: each partition holds exactly its ranges' keys.
    let all: Vec<i64> =
        query(&mut c, "SELECT k FROM r").iter().map(|r| if let Value::Integer(k) = r[0] { k } else { 0 }).collect();
    let mut expected = vec![0u64; 4];
    for k in &all {
        expected[partition_of(*k)] += 1;
    }
    assert_eq!(per_partition(&host, "DEFAULT.R").0, expected);
    assert!(expected.iter().all(|n| *n > 0), "{expected:?}");
    // A key's row is found by a single-partition read routed by value.
    for k in &all {
        let r = ok(c.adhoc("SELECT src FROM r WHERE k = ?", vec![int(*k)]));
        assert!(!was_multi_partition(&r));
        assert_eq!(r.results[0].rows.len(), 1, "{k} is not on its partition");
    }
    // Keys are cast to the column's type first.
    let r = ok(c.adhoc("SELECT src FROM r WHERE k = ?", vec![text("148")]));
    assert_eq!(r.results[0].rows.len(), 1);
}

#[test]
fn reads_visit_only_the_partitions_their_conditions_overlap() {
    let (host, mut c) = setup();
    for k in (0..600).step_by(5) {
        ok(c.call("R.insert", vec![int(k), text("x"), int(k % 7)]));
        ok(c.call("H.insert", vec![int(k), int(k % 3)]));
    }
    let count = |c: &mut joule_txn::Client, sql: &str, params: Vec<Value>| -> i64 {
        match &ok(c.adhoc(sql, params)).results[0].rows[0][0] {
            Value::Integer(n) => *n,
            v => panic!("{v:?}"),
        }
    };
    // (conditions, parameters, the partitions that must run the fragment)
    let cases: Vec<(&str, Vec<Value>, Vec<usize>)> = vec![
        ("k >= 100 AND k < 200", vec![], vec![1]),
        ("k BETWEEN ? AND ?", vec![int(150), int(250)], vec![1, 2]),
        ("k < 100", vec![], vec![0]),
        ("k >= 500", vec![], vec![1]),
        ("k > 350 AND k <= 420", vec![], vec![3, 0]),
        ("n = 3", vec![], vec![0, 1, 2, 3]),
        ("k <> 150", vec![], vec![0, 1, 2, 3]),
        ("? <= k", vec![int(420)], vec![0, 1]),
    ];
    for (conditions, params, touched) in cases {
        let sql = format!("SELECT COUNT(*) FROM r WHERE {conditions}");
        let (got, ran) = reached(&host, || count(&mut c, &sql, params.clone()));
        let mut touched = touched;
        touched.sort_unstable();
        assert_eq!(ran, touched, "{conditions}");
        // The same answer as a read that cannot be pruned (the condition
        // hidden behind arithmetic).
        let unpruned = sql.replace("k ", "(k + 0) ").replace("? <= k", "? <= (k + 0)");
        assert_eq!(got, count(&mut c, &unpruned, params), "{conditions}");
    }
    // @Explain says so.
    let r = ok(c.call("@Explain", vec![Value::from("SELECT * FROM r WHERE k >= 100 AND k < 200")]));
    let explained = r.results[0].rows[0][0].to_string();
    assert!(explained.contains("RANGE PRUNED"), "{explained}");
    // UPDATE and DELETE with conditions on the key run only where the rows
    // can be (and change the same rows as without pruning).
    let (r, ran) =
        reached(&host, || ok(c.adhoc("UPDATE r SET n = n + 100 WHERE k >= ? AND k < ?", vec![int(120), int(180)])));
    assert_eq!(r.results[0].rows[0][0], int(12));
    assert_eq!(ran, vec![1]);
    let (r, ran) = reached(&host, || ok(c.adhoc("DELETE FROM r WHERE k < 100 OR n >= 100", vec![])));
    assert_eq!(r.results[0].rows[0][0], int(32), "20 below 100 and the 12 updated");
    assert_eq!(ran, vec![0, 1, 2, 3], "an OR narrows nothing");
    let (_, ran) = reached(&host, || ok(c.adhoc("DELETE FROM r WHERE k >= 580", vec![])));
    assert_eq!(ran, vec![1]);
    assert_eq!(count(&mut c, "SELECT COUNT(*) FROM r", vec![]), 120 - 32 - 4);
    // A join with a hash-partitioned table on the key gives the right rows.
    let joined = count(&mut c, "SELECT COUNT(*) FROM r, h WHERE r.k = h.k AND r.k < 300", vec![]);
    assert_eq!(joined, 28, "keys 100..295 are left but the 12 deleted");
}

#[test]
fn range_boundaries_are_checked() {
    let host = host(2);
    let mut c = host.client();
    exec(&mut c, "CREATE TABLE t (k INT NOT NULL, s VARCHAR(10) NOT NULL, x INT)");
    let refused = |c: &mut joule_txn::Client, sql: &str| fails(c.adhoc(sql, vec![]));
    use ErrorCode::{InvalidSchemaDefinition as Invalid, SyntaxError, UndefinedColumn};
    for (bounds, code) in [
        ("(20, 10)", Invalid),
        ("(10, 10)", Invalid),
        ("(NULL)", Invalid),
        ("('abc')", Invalid),
        ("(99999999999)", Invalid),
        ("(x)", UndefinedColumn),
        ("5", SyntaxError),
    ] {
        assert_eq!(refused(&mut c, &format!("PARTITION TABLE t ON COLUMN k USING RANGE {bounds}")), code, "{bounds}");
    }
    exec(&mut c, "PARTITION TABLE t ON COLUMN k USING RANGE (-5, 10)");
    // The same again is nothing; hashing instead, or another column, is
    // refused (other ranges re-place the rows: see below).
    exec(&mut c, "PARTITION TABLE t ON COLUMN k USING RANGE (-5, 10)");
    assert_eq!(refused(&mut c, "PARTITION TABLE t ON COLUMN k"), ErrorCode::InvalidSchemaDefinition);
    assert_eq!(refused(&mut c, "PARTITION TABLE t ON COLUMN s USING RANGE ('a')"), ErrorCode::InvalidSchemaDefinition);
    for (owners, why) in [
        ("(0, 1)", "too few"),
        ("(0, 1, 0, 1)", "too many"),
        ("(0, 2, 1)", "no partition 2"),
        ("(0, -1, 1)", "negative"),
        ("(0, x, 1)", "not a constant"),
    ] {
        let sql = format!("PARTITION TABLE t ON COLUMN k USING RANGE (-5, 10) ON PARTITIONS {owners}");
        assert!(c.adhoc(&sql, vec![]).error.is_some(), "{why}: {owners}");
    }
    // Tables placed differently cannot swap rows.
    exec(&mut c, "CREATE TABLE u (k INT NOT NULL, s VARCHAR(10) NOT NULL, x INT); PARTITION TABLE u ON COLUMN k");
    assert_eq!(refused(&mut c, "SWAP TABLE t WITH u"), ErrorCode::InvalidSchemaDefinition);
    exec(
        &mut c,
        "CREATE TABLE v (k INT NOT NULL, s VARCHAR(10) NOT NULL, x INT); PARTITION TABLE v ON COLUMN k USING RANGE (0)",
    );
    assert_eq!(refused(&mut c, "SWAP TABLE t WITH v"), ErrorCode::InvalidSchemaDefinition);
    exec(
        &mut c,
        "CREATE TABLE w (k INT NOT NULL, s VARCHAR(10) NOT NULL, x INT); PARTITION TABLE w ON COLUMN k USING RANGE (-5, 10)",
    );
    exec(&mut c, "SWAP TABLE t WITH w");
    // The same ranges on other partitions are placed differently too.
    exec(&mut c, "PARTITION TABLE w ON COLUMN k USING RANGE (-5, 10) ON PARTITIONS (1, 0, 1)");
    assert_eq!(refused(&mut c, "SWAP TABLE t WITH w"), ErrorCode::InvalidSchemaDefinition);
    // The ranges are dealt out over the partitions: a hashinator over
    // another count would move them all, with no rows moving.
    let two = joule_txn::Hashinator::even(1, 2).unwrap();
    assert_eq!(fails(c.swap_hashinator(two)), ErrorCode::FeatureNotSupported);
    // Strings range too (byte order).
    exec(
        &mut c,
        "CREATE TABLE names (s VARCHAR(10) NOT NULL PRIMARY KEY); PARTITION TABLE names ON COLUMN s USING RANGE ('m')",
    );
    for name in ["adam", "mia", "zoe", "M", "m"] {
        ok(c.call("NAMES.insert", vec![text(name)]));
    }
    assert_eq!(misplaced(&mut c), 0);
    // The catalog shows the ranges (VoltDB's remark, one key more).
    let r = ok(c.call("@SystemCatalog", vec![Value::from("TABLES")]));
    let names = r.results[0].rows.iter().find(|row| row[2] == text("NAMES")).expect("NAMES listed");
    assert_eq!(names[4], text("{\"partitionColumn\":\"S\",\"partitionRanges\":[\"m\"]}"));
    let r = ok(c.call("@SystemCatalog", vec![Value::from("PROCEDURES")]));
    let remarks: Vec<String> =
        r.results[0].rows.iter().map(|row| row.iter().map(|v| v.to_string()).collect()).collect();
    assert!(
        remarks
            .iter()
            .any(|r| r.contains("NAMES.insert") && r.contains("rangePartitioned") && !r.contains("partitionParameter")),
        "clients are not told to hash range keys: {remarks:?}"
    );
}

#[test]
fn ranges_split_and_move_with_their_rows() {
    let (host, mut c) = setup();
    exec(
        &mut c,
        "CREATE VIEW rv (k, c) AS SELECT k, COUNT(*) FROM r GROUP BY k; \
         CREATE VIEW rn (n, c) AS SELECT n, COUNT(*) FROM r GROUP BY n",
    );
    for k in (-50..650).step_by(10) {
        ok(c.call("PutR", vec![int(k)]));
    }
    let total = query(&mut c, "SELECT COUNT(*) FROM r")[0][0].clone();
    let by_n = query(&mut c, "SELECT n, c FROM rn ORDER BY n");
    // Split range [100, 200) at 150 and send [150, 200) and [500, ...) to
    // partition 3; the rest stays where it was (ranges 0..=5 were on
    // partitions 0, 1, 2, 3, 0, 1).
    let r = ok(c.adhoc(
        "PARTITION TABLE r ON COLUMN k USING RANGE (100, 150, 200, 300, 400, 500) ON PARTITIONS (0, 1, 3, 2, 3, 0, 3)",
        vec![],
    ));
    assert!(was_multi_partition(&r));
    let place = |k: i64| -> usize {
        let range = [100, 150, 200, 300, 400, 500].iter().filter(|b| **b <= k).count();
        [0, 1, 3, 2, 3, 0, 3][range]
    };
    let mut expected = vec![0u64; 4];
    for k in (-50..650).step_by(10) {
        expected[place(k)] += 1;
    }
    assert_eq!(per_partition(&host, "DEFAULT.R").0, expected);
    assert_eq!(per_partition(&host, "DEFAULT.RV").0, expected, "the view grouped by the key moved along");
    assert_eq!(misplaced(&mut c), 0);
    assert_eq!(query(&mut c, "SELECT COUNT(*) FROM r")[0][0], total);
    assert_eq!(query(&mut c, "SELECT n, c FROM rn ORDER BY n"), by_n);
    // Calls route by the new placement, and pruning follows it.
    ok(c.call("PutR", vec![int(155)]));
    assert_eq!(per_partition(&host, "DEFAULT.R").0[3], expected[3] + 1);
    let (_, ran) = reached(&host, || query(&mut c, "SELECT COUNT(*) FROM r WHERE k >= 150 AND k < 200"));
    assert_eq!(ran, vec![3]);
    // The catalog shows where each range lives.
    let r = ok(c.call("@SystemCatalog", vec![Value::from("TABLES")]));
    let row = r.results[0].rows.iter().find(|row| row[2] == text("R")).expect("R listed");
    assert!(row[4].to_string().contains("\"rangePartitions\":[0,1,3,2,3,0,3]"), "{:?}", row[4]);
    // Merging back to the first ranges restores the first placement.
    exec(&mut c, "PARTITION TABLE r ON COLUMN k USING RANGE (100, 200, 300, 400, 500)");
    let mut first = vec![0u64; 4];
    for k in (-50..650).step_by(10).chain([155]) {
        first[partition_of(k)] += 1;
    }
    assert_eq!(per_partition(&host, "DEFAULT.R").0, first);
    assert_eq!(misplaced(&mut c), 0);
}

#[test]
fn a_range_move_that_cannot_finish_changes_nothing() {
    let host = host(2);
    let mut c = host.client();
    // Unique per partition only (no partition column in it): two rows with
    // one code on two partitions cannot come together.
    exec(
        &mut c,
        "CREATE TABLE u (k INT NOT NULL, code INT NOT NULL, UNIQUE (code)); \
         PARTITION TABLE u ON COLUMN k USING RANGE (10)",
    );
    exec(&mut c, "INSERT INTO u VALUES (1, 7); INSERT INTO u VALUES (20, 7)");
    let e = fails(c.adhoc("PARTITION TABLE u ON COLUMN k USING RANGE (10) ON PARTITIONS (0, 0)", vec![]));
    assert_eq!(e, ErrorCode::UniqueViolation);
    assert_eq!(per_partition(&host, "DEFAULT.U").0, vec![1, 1]);
    let r = ok(c.call("@SystemCatalog", vec![Value::from("TABLES")]));
    let row = r.results[0].rows.iter().find(|row| row[2] == text("U")).expect("U listed");
    assert!(!row[4].to_string().contains("rangePartitions"), "the placement did not change: {:?}", row[4]);
    assert_eq!(misplaced(&mut c), 0);
}
