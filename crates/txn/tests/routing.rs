//! Routing: every row lives on the partition the hashinator names, however
//! it was written; the hashinator can be replaced atomically.

mod common;

use common::*;
use joule_common::{ErrorCode, Value};
use joule_txn::Hashinator;

#[test]
fn every_write_path_puts_rows_where_the_hashinator_says() {
    let host = host(4);
    let mut c = host.client();
    exec(
        &mut c,
        "CREATE TABLE ints (k BIGINT NOT NULL PRIMARY KEY, src VARCHAR(10)); PARTITION TABLE ints ON COLUMN k; \
         CREATE TABLE strs (k VARCHAR(20) NOT NULL PRIMARY KEY, n INT); PARTITION TABLE strs ON COLUMN k; \
         CREATE TABLE small (k TINYINT NOT NULL, n INT); PARTITION TABLE small ON COLUMN k; \
         CREATE PROCEDURE Put PARTITION ON TABLE ints COLUMN k AS INSERT INTO ints VALUES (?, 'proc')",
    );
    let keys: Vec<i64> = (-50..50).chain([i64::MAX, i64::MIN + 1, 1 << 40, -(1 << 33)]).collect();
    for (i, k) in keys.iter().enumerate() {
        match i % 4 {
            0 => ok(c.call("INTS.insert", vec![int(*k), text("crud")])),
            1 => ok(c.call("Put", vec![int(*k)])),
            2 => ok(c.adhoc("INSERT INTO ints VALUES (?, 'adhoc')", vec![int(*k)])),
            _ => ok(c.adhoc(&format!("INSERT INTO ints VALUES ({k}, 'literal')"), vec![])),
        };
    }
    // Multi-partition paths: multi-row VALUES and INSERT ... SELECT.
    exec(&mut c, "INSERT INTO ints VALUES (1000, 'multi'), (1001, 'multi'), (1002, 'multi')");
    exec(&mut c, "INSERT INTO ints SELECT k + 5000, 'copy' FROM ints WHERE k BETWEEN 0 AND 40");
    for i in 0..200 {
        ok(c.call("STRS.insert", vec![text(&format!("key-{i}")), int(i)]));
    }
    exec(&mut c, "INSERT INTO strs SELECT k || '-copy', n FROM strs WHERE n < 30");
    exec(&mut c, "INSERT INTO small VALUES (-128 + 1, 1), (0, 2), (127, 3)");
    assert_eq!(misplaced(&mut c), 0);
    // Independently of that check: a single-partition read routed by key
    // finds every row, so each row is on its key's partition.
    let all = query(&mut c, "SELECT k FROM ints");
    assert_eq!(all.len(), keys.len() + 3 + 41);
    for row in &all {
        let r = ok(c.adhoc("SELECT src FROM ints WHERE k = ?", vec![row[0].clone()]));
        assert!(!was_multi_partition(&r));
        assert_eq!(r.results[0].rows.len(), 1, "{row:?} is not on its partition");
    }
    for row in query(&mut c, "SELECT k FROM strs") {
        let r = ok(c.adhoc("SELECT n FROM strs WHERE k = ?", vec![row[0].clone()]));
        assert_eq!(r.results[0].rows.len(), 1, "{row:?} is not on its partition");
    }
    // Keys are cast to the column's type before hashing.
    let r = ok(c.adhoc("SELECT src FROM ints WHERE k = ?", vec![text("7")]));
    assert_eq!(r.results[0].rows.len(), 1);
    // Every partition got some of the rows.
    let r = ok(c.call("@Checksum", vec![]));
    assert_eq!(r.results[0].rows.len(), 4 * 3);
}

#[test]
fn the_hashinator_is_swapped_atomically() {
    let host = host(3);
    let mut c = host.client();
    exec(&mut c, "CREATE TABLE t (k BIGINT NOT NULL PRIMARY KEY); PARTITION TABLE t ON COLUMN k");
    let old = host.hashinator();
    assert_eq!(old.version(), 1);
    // Versions only go up; partitions must exist.
    assert_eq!(fails(c.swap_hashinator(Hashinator::even(3, 1).unwrap())), ErrorCode::InvalidArgument);
    assert_eq!(fails(c.swap_hashinator(Hashinator::even(5, 9).unwrap())), ErrorCode::InvalidArgument);
    // A ring that gives every token range to a different owner.
    let ring: Vec<(i32, u32)> = old.ring().iter().map(|(t, p)| (*t, (p + 1) % 3)).collect();
    let new = Hashinator::from_ring(2, ring).unwrap();
    for k in 0..100 {
        exec(&mut c, &format!("INSERT INTO t VALUES ({k})"));
    }
    assert_eq!(misplaced(&mut c), 0);
    ok(c.swap_hashinator(new.clone()));
    assert_eq!(host.hashinator().version(), 2);
    // The rows did not move (that is elastic scaling's job), so the check
    // now finds every one of them on the wrong partition.
    assert_eq!(misplaced(&mut c), 100);
    exec(&mut c, "DELETE FROM t");
    for k in 0..100 {
        exec(&mut c, &format!("INSERT INTO t VALUES ({k})"));
        ok(c.call("T.select", vec![int(k)]));
    }
    assert_eq!(misplaced(&mut c), 0);
    for k in 0..100 {
        let r = ok(c.adhoc("SELECT k FROM t WHERE k = ?", vec![int(k)]));
        assert_eq!(r.results[0].rows, vec![vec![Value::Integer(k)]]);
    }
}
