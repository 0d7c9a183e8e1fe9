//! Adding partitions to a running host: the new partitions start with the
//! schema and the replicated tables' rows, own no token until a range moves
//! to them, take part in every later multi-partition transaction (DDL and
//! replicated writes included), and calls keep landing while they are
//! added and filled. Removing the last ones again, once ranges moved off
//! them.

mod common;

use common::*;
use joule_common::hashinator::{token, Hashinator};
use joule_common::{ErrorCode, Value};
use joule_txn::Host;
use std::time::Duration;

/// Per partition: the rows of table `name` (qualified).
fn rows_per_partition(host: &Host, name: &str) -> Vec<u64> {
    let mut stats = host.statistics(Duration::from_secs(10));
    stats.retain(|s| s.partition.is_some());
    stats.sort_by_key(|s| s.partition);
    stats.iter().map(|s| s.tables.iter().filter(|t| t.name == name).map(|t| t.rows).sum()).collect()
}

fn tok(k: i64) -> i32 {
    token(&Value::Integer(k)).unwrap().unwrap()
}

fn setup(sites: usize) -> (Host, joule_txn::Client) {
    let host = host(sites);
    let mut c = host.client();
    exec(
        &mut c,
        "CREATE TABLE h (k BIGINT NOT NULL PRIMARY KEY, g INT NOT NULL, n INT); PARTITION TABLE h ON COLUMN k; \
         CREATE VIEW hv (g, c, s) AS SELECT g, COUNT(*), SUM(n) FROM h GROUP BY g; \
         CREATE TABLE rep (k INT NOT NULL PRIMARY KEY, label VARCHAR(16)); \
         CREATE VIEW repv (label, c) AS SELECT label, COUNT(*) FROM rep GROUP BY label; \
         CREATE PROCEDURE GetH PARTITION ON TABLE h COLUMN k AS SELECT k, n FROM h WHERE k = ?; \
         CREATE PROCEDURE AddH PARTITION ON TABLE h COLUMN k AS UPDATE h SET n = n + 1 WHERE k = ?; \
         CREATE PROCEDURE Label PARTITION ON TABLE h COLUMN k \
           AS SELECT rep.label FROM h, rep WHERE h.k = ? AND rep.k = h.g",
    );
    (host, c)
}

fn move_range(c: &mut joule_txn::Client, start: i32, end: i32, to: i64) -> joule_txn::Response {
    c.call("@MoveRange", vec![int(i64::from(start)), int(i64::from(end)), int(to)])
}

#[test]
fn added_partitions_start_with_the_schema_and_replicated_rows_and_take_moved_ranges() {
    let (host, mut c) = setup(2);
    for k in 0..2000 {
        ok(c.adhoc("INSERT INTO h VALUES (?, ?, ?)", vec![int(k), int(k % 7), int(k)]));
    }
    for g in 0..7 {
        ok(c.adhoc("INSERT INTO rep VALUES (?, ?)", vec![int(g), text(if g % 2 == 0 { "even" } else { "odd" })]));
    }
    let view_before = query(&mut c, "SELECT g, c, s FROM hv ORDER BY g");

    let r = ok(c.add_partitions(2));
    assert_eq!(r.results[0].rows, vec![vec![int(2)], vec![int(3)]], "the new partitions' ids");
    assert_eq!(host.partitions(), 4);
    // The same ring, one version on, over four partitions.
    assert_eq!(host.hashinator().version(), 2);
    assert_eq!(host.hashinator().partition_count(), 4);
    assert_eq!(host.hashinator().ring(), Hashinator::even(2, 1).unwrap().ring());
    assert_eq!(rows_per_partition(&host, "DEFAULT.REP"), vec![7, 7, 7, 7]);
    assert_eq!(rows_per_partition(&host, "DEFAULT.REPV"), vec![2, 2, 2, 2]);
    let h_before = rows_per_partition(&host, "DEFAULT.H");
    assert_eq!(&h_before[2..], &[0, 0]);
    assert_eq!(scalar(&mut c, "SELECT COUNT(*) FROM h"), int(2000));

    // Half of each old partition's ring goes to a new one.
    let (a, b) = ((i32::MIN, i32::MIN / 2 - 1), (0, i32::MAX / 2));
    ok(move_range(&mut c, a.0, a.1, 2));
    ok(move_range(&mut c, b.0, b.1, 3));
    let in_range = |r: (i32, i32)| (0..2000).filter(|k| (r.0..=r.1).contains(&tok(*k))).count() as u64;
    let after = rows_per_partition(&host, "DEFAULT.H");
    assert_eq!(after, vec![h_before[0] - in_range(a), h_before[1] - in_range(b), in_range(a), in_range(b)]);
    assert!(after[2] > 300 && after[3] > 300, "the new partitions hold rows: {after:?}");
    assert_eq!(misplaced(&mut c), 0);
    assert_eq!(query(&mut c, "SELECT g, c, s FROM hv ORDER BY g"), view_before);
    assert_eq!(scalar(&mut c, "SELECT SUM(n) FROM h"), int((0..2000).sum()));

    // Calls keyed on a new partition run there, and join the replicated
    // rows it was given.
    let k = (0..2000).find(|k| (b.0..=b.1).contains(&tok(*k))).unwrap();
    assert_eq!(host.hashinator().partition_for(&int(k)).unwrap(), 3);
    ok(c.call("AddH", vec![int(k)]));
    assert_eq!(ok(c.call("GetH", vec![int(k)])).results[0].rows, vec![vec![int(k), int(k + 1)]]);
    let label = if (k % 7) % 2 == 0 { "even" } else { "odd" };
    assert_eq!(ok(c.call("Label", vec![int(k)])).results[0].rows, vec![vec![text(label)]]);

    // Later replicated writes and DDL reach the new partitions too.
    exec(&mut c, "INSERT INTO rep VALUES (100, 'odd')");
    assert_eq!(rows_per_partition(&host, "DEFAULT.REP"), vec![8, 8, 8, 8]);
    exec(&mut c, "CREATE TABLE later (k BIGINT NOT NULL PRIMARY KEY, v INT); PARTITION TABLE later ON COLUMN k");
    for k in 0..400 {
        ok(c.adhoc("INSERT INTO later VALUES (?, 1)", vec![int(k)]));
    }
    let later = rows_per_partition(&host, "DEFAULT.LATER");
    assert_eq!(later.len(), 4);
    assert!(later.iter().all(|n| *n > 0), "every partition holds some of the new table: {later:?}");
    assert_eq!(scalar(&mut c, "SELECT SUM(v) FROM later"), int(400));
    assert_eq!(misplaced(&mut c), 0);

    // Every copy of the replicated table is the same.
    let checksums = ok(c.call("@Checksum", Vec::new()));
    let rep: Vec<&Value> =
        checksums.results[0].rows.iter().filter(|r| r[1] == text("DEFAULT.REP")).map(|r| &r[2]).collect();
    assert_eq!(rep.len(), 4, "{:?}", checksums.results[0].rows);
    assert!(rep.iter().all(|v| *v == rep[0]), "{rep:?}");
}

#[test]
fn adding_partitions_refuses_what_it_cannot_do_and_changes_nothing() {
    let (host, mut c) = setup(2);
    assert_eq!(fails(c.add_partitions(0)), ErrorCode::InvalidArgument);
    assert_eq!(fails(c.add_partitions(1023)), ErrorCode::InvalidArgument);
    exec(&mut c, "CREATE TABLE r (k BIGINT NOT NULL PRIMARY KEY); PARTITION TABLE r ON COLUMN k USING RANGE (0)");
    assert_eq!(fails(c.add_partitions(1)), ErrorCode::FeatureNotSupported);
    assert_eq!(host.partitions(), 2);
    assert_eq!(host.hashinator().version(), 1);
    // The host goes on as before.
    exec(&mut c, "INSERT INTO rep VALUES (1, 'odd'); INSERT INTO r VALUES (-1); INSERT INTO r VALUES (1)");
    assert_eq!(rows_per_partition(&host, "DEFAULT.REP"), vec![1, 1]);
    assert_eq!(scalar(&mut c, "SELECT COUNT(*) FROM r"), int(2));
    exec(&mut c, "DROP TABLE r");
    ok(c.add_partitions(1));
    assert_eq!(host.partitions(), 3);
    assert_eq!(rows_per_partition(&host, "DEFAULT.REP"), vec![1, 1, 1]);
}

#[test]
fn calls_in_flight_while_partitions_are_added_and_filled_all_land() {
    let (host, mut c) = setup(2);
    for k in 0..400 {
        ok(c.adhoc("INSERT INTO h VALUES (?, 0, 0)", vec![int(k)]));
    }
    let writers = three_writers(&host);
    // Two partitions at a time, each given slices of the ring at once.
    let slice = 1i64 << 28;
    for round in 0..3i64 {
        ok(c.add_partitions(2));
        for step in 0..8i64 {
            let start = i32::MIN as i64 + ((round * 8 + step) % 16) * slice;
            ok(move_range(&mut c, start as i32, (start + slice - 1) as i32, 2 + round * 2 + step % 2));
        }
    }
    for w in writers {
        w.join().unwrap();
    }
    assert_eq!(host.partitions(), 8);
    assert_eq!(scalar(&mut c, "SELECT SUM(n) FROM h"), int(3 * 1500));
    assert_eq!(scalar(&mut c, "SELECT COUNT(*) FROM h"), int(400));
    assert_eq!(misplaced(&mut c), 0);
    // The last two rounds' slices cover the ring: every row now lives on
    // one of the last four partitions added.
    let placed = rows_per_partition(&host, "DEFAULT.H");
    assert_eq!(&placed[..4], &[0, 0, 0, 0], "{placed:?}");
    assert!(placed[4..].iter().all(|n| *n > 0), "{placed:?}");
}

#[test]
fn the_last_partitions_leave_once_their_ranges_moved_off_and_can_come_back() {
    let (host, mut c) = setup(2);
    for k in 0..1000 {
        ok(c.adhoc("INSERT INTO h VALUES (?, ?, ?)", vec![int(k), int(k % 7), int(k)]));
    }
    exec(&mut c, "INSERT INTO rep VALUES (1, 'odd'); INSERT INTO rep VALUES (2, 'even')");
    ok(c.add_partitions(2));
    let (a, b) = ((i32::MIN, i32::MIN / 2 - 1), (0, i32::MAX / 2));
    ok(move_range(&mut c, a.0, a.1, 2));
    ok(move_range(&mut c, b.0, b.1, 3));
    let grown = rows_per_partition(&host, "DEFAULT.H");
    assert!(grown[2] > 0 && grown[3] > 0, "{grown:?}");

    // Refused while the leaving partitions own ranges (and nothing changes).
    assert_eq!(fails(c.remove_partitions(2)), ErrorCode::InvalidArgument);
    assert_eq!(fails(c.remove_partitions(0)), ErrorCode::InvalidArgument);
    assert_eq!(fails(c.remove_partitions(4)), ErrorCode::InvalidArgument);
    assert_eq!(host.partitions(), 4);
    // Partition 3's ranges go back: partition 2 still owns some.
    ok(move_range(&mut c, b.0, b.1, 1));
    let version = host.hashinator().version();
    let r = ok(c.remove_partitions(3));
    assert_eq!(r.results[0].rows, vec![vec![int(3)]]);
    assert_eq!(fails(c.remove_partitions(2)), ErrorCode::InvalidArgument);
    ok(move_range(&mut c, a.0, a.1, 0));
    let r = ok(c.remove_partitions(2));
    assert_eq!(r.results[0].rows, vec![vec![int(2)]]);
    assert_eq!(host.partitions(), 2);
    assert_eq!(host.hashinator().version(), version + 3, "a move, a removal, a move and a removal");
    assert_eq!(host.hashinator().partition_count(), 2);
    assert_eq!(rows_per_partition(&host, "DEFAULT.H").len(), 2, "the leaving sites stopped");
    assert_eq!(scalar(&mut c, "SELECT COUNT(*) FROM h"), int(1000));
    assert_eq!(scalar(&mut c, "SELECT SUM(n) FROM h"), int((0..1000).sum()));
    assert_eq!(rows_per_partition(&host, "DEFAULT.REP"), vec![2, 2]);
    assert_eq!(misplaced(&mut c), 0);
    for k in 0..1000 {
        ok(c.call("AddH", vec![int(k)]));
    }
    assert_eq!(scalar(&mut c, "SELECT SUM(n) FROM h"), int((0..1000).sum::<i64>() + 1000));

    // Partitions come back at the same ids, empty but for replicated rows.
    let r = ok(c.add_partitions(1));
    assert_eq!(r.results[0].rows, vec![vec![int(2)]]);
    assert_eq!(rows_per_partition(&host, "DEFAULT.REP"), vec![2, 2, 2]);
    assert_eq!(rows_per_partition(&host, "DEFAULT.H")[2], 0);
    ok(move_range(&mut c, b.0, b.1, 2));
    assert_eq!(scalar(&mut c, "SELECT COUNT(*) FROM h"), int(1000));
    assert_eq!(misplaced(&mut c), 0);
}

#[test]
fn calls_in_flight_while_partitions_are_drained_and_removed_all_land() {
    let (host, mut c) = setup(2);
    for k in 0..400 {
        ok(c.adhoc("INSERT INTO h VALUES (?, 0, 0)", vec![int(k)]));
    }
    ok(c.add_partitions(2));
    let slice = 1i64 << 30;
    for step in 0..4i64 {
        let start = i32::MIN as i64 + step * slice;
        ok(move_range(&mut c, start as i32, (start + slice - 1) as i32, 2 + step % 2));
    }
    let writers = three_writers(&host);
    // Drain the new partitions to the first two, then remove them.
    for step in 0..4i64 {
        let start = i32::MIN as i64 + step * slice;
        ok(move_range(&mut c, start as i32, (start + slice - 1) as i32, step % 2));
    }
    ok(c.remove_partitions(2));
    for w in writers {
        w.join().unwrap();
    }
    assert_eq!(host.partitions(), 2);
    assert_eq!(scalar(&mut c, "SELECT SUM(n) FROM h"), int(3 * 1500));
    assert_eq!(scalar(&mut c, "SELECT COUNT(*) FROM h"), int(400));
    assert_eq!(misplaced(&mut c), 0);
}
