//! `@MoveRange`: a range of hashinator tokens moves to another partition
//! with its rows, in one transaction — views follow, range-partitioned and
//! replicated tables stay, calls keyed in the range run on the new owner,
//! calls in flight during moves all land, and a move that cannot finish
//! changes nothing.

mod common;

use common::*;
use joule_common::hashinator::token;
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
         CREATE TABLE r (k BIGINT NOT NULL PRIMARY KEY); PARTITION TABLE r ON COLUMN k USING RANGE (0); \
         CREATE TABLE rep (k BIGINT NOT NULL PRIMARY KEY); \
         CREATE PROCEDURE GetH PARTITION ON TABLE h COLUMN k AS SELECT k, n FROM h WHERE k = ?; \
         CREATE PROCEDURE AddH PARTITION ON TABLE h COLUMN k AS UPDATE h SET n = n + 1 WHERE k = ?",
    );
    (host, c)
}

fn move_range(c: &mut joule_txn::Client, start: i32, end: i32, to: i64) -> joule_txn::Response {
    c.call("@MoveRange", vec![int(i64::from(start)), int(i64::from(end)), int(to)])
}

#[test]
fn a_moved_range_takes_its_rows_and_only_those() {
    let (host, mut c) = setup(4);
    for k in 0..2000 {
        ok(c.adhoc("INSERT INTO h VALUES (?, ?, ?)", vec![int(k), int(k % 7), int(k)]));
    }
    exec(&mut c, "INSERT INTO r VALUES (-5); INSERT INTO r VALUES (5); INSERT INTO rep VALUES (1)");
    let view_before = query(&mut c, "SELECT g, c, s FROM hv ORDER BY g");
    let before = rows_per_partition(&host, "DEFAULT.H");
    // Half of partition 1's ring (tokens -2^30 .. -1) goes to partition 3.
    let (start, end) = (-(1 << 30), -(1 << 29));
    let moving = (0..2000).filter(|k| (start..=end).contains(&tok(*k))).count() as u64;
    assert!(moving > 100, "the range holds rows ({moving})");
    let r = ok(move_range(&mut c, start, end, 3));
    let row = &r.results[0].rows[0];
    assert_eq!(row[3], int(moving as i64), "MOVED_ROWS");
    assert_eq!(row[5], int(2), "the next hashinator version");
    let after = rows_per_partition(&host, "DEFAULT.H");
    assert_eq!(after, vec![before[0], before[1] - moving, before[2], before[3] + moving]);
    assert_eq!(host.hashinator().partition_for_token(start), 3);
    assert_eq!(misplaced(&mut c), 0);
    // The views' totals are the same, now summed from other partitions.
    assert_eq!(query(&mut c, "SELECT g, c, s FROM hv ORDER BY g"), view_before);
    assert_eq!(scalar(&mut c, "SELECT COUNT(*) FROM h"), int(2000));
    assert_eq!(rows_per_partition(&host, "DEFAULT.R"), vec![1, 1, 0, 0]);
    assert_eq!(rows_per_partition(&host, "DEFAULT.REP"), vec![1, 1, 1, 1]);
    // Calls keyed in the moved range run on partition 3 and find their row.
    let k = (0..2000).find(|k| (start..=end).contains(&tok(*k))).unwrap();
    ok(c.call("AddH", vec![int(k)]));
    assert_eq!(ok(c.call("GetH", vec![int(k)])).results[0].rows, vec![vec![int(k), int(k + 1)]]);
    assert_eq!(query(&mut c, &format!("SELECT n FROM h WHERE k = {k}")), vec![vec![int(k + 1)]]);
    // Moving it back restores the first placement exactly.
    ok(move_range(&mut c, start, end, 1));
    assert_eq!(rows_per_partition(&host, "DEFAULT.H"), before);
    assert_eq!(host.hashinator().ring(), joule_common::hashinator::Hashinator::even(4, 1).unwrap().ring());
    // A range nobody else owns moves nothing but still switches the ring.
    let r = ok(move_range(&mut c, 0, 10, 2));
    assert_eq!(r.results[0].rows[0][3], int(0));
}

#[test]
fn several_ranges_move_in_one_transaction_each_with_its_rows() {
    let (host, mut c) = setup(4);
    for k in 0..2000 {
        ok(c.adhoc("INSERT INTO h VALUES (?, ?, ?)", vec![int(k), int(k % 7), int(k)]));
    }
    let view_before = query(&mut c, "SELECT g, c, s FROM hv ORDER BY g");
    let before = rows_per_partition(&host, "DEFAULT.H");
    // Half of partition 1's ring to partition 3, half of partition 2's to
    // partition 0 (given in the other order: answered in token order).
    let a = (-(1 << 30), -(1 << 29), 3i64);
    let b = (1 << 29, (1 << 30) - 1, 0i64);
    let moving = |(s, e, _): (i32, i32, i64)| (0..2000).filter(|k| (s..=e).contains(&tok(*k))).count() as i64;
    let r = ok(c.call(
        "@MoveRange",
        [b.0 as i64, b.1 as i64, b.2, a.0 as i64, a.1 as i64, a.2, 1].into_iter().map(int).collect(),
    ));
    let rows = &r.results[0].rows;
    assert_eq!(rows.len(), 2);
    assert_eq!(rows[0][..4], [int(a.0 as i64), int(a.1 as i64), int(a.2), int(moving(a))]);
    assert_eq!(rows[1][..4], [int(b.0 as i64), int(b.1 as i64), int(b.2), int(moving(b))]);
    assert!(rows.iter().all(|r| r[5] == int(2)), "one version for both: {rows:?}");
    let after = rows_per_partition(&host, "DEFAULT.H");
    let (ma, mb) = (moving(a) as u64, moving(b) as u64);
    assert_eq!(after, vec![before[0] + mb, before[1] - ma, before[2] - mb, before[3] + ma]);
    assert_eq!(misplaced(&mut c), 0);
    assert_eq!(query(&mut c, "SELECT g, c, s FROM hv ORDER BY g"), view_before);
    ok(c.forget_tokens());
    // Both back at once, as a client piece does.
    ok(c.move_ranges_piece(&[(a.0, a.1, 1), (b.0, b.1, 2)]));
    assert_eq!(rows_per_partition(&host, "DEFAULT.H"), before);
    assert_eq!(host.hashinator().version(), 3);
    // Two ranges of one partition (no token index now: its rows are
    // scanned): each range counts its own rows, and each row goes where
    // its range does.
    let c1 = (-(1 << 30), -(3 << 28) - 1, 3i64);
    let c2 = (-(1 << 29), -(1 << 28) - 1, 0i64);
    let r = ok(c.call(
        "@MoveRange",
        [c1.0 as i64, c1.1 as i64, c1.2, c2.0 as i64, c2.1 as i64, c2.2].into_iter().map(int).collect(),
    ));
    let rows = &r.results[0].rows;
    assert_eq!((rows[0][3].clone(), rows[1][3].clone()), (int(moving(c1)), int(moving(c2))));
    assert!(moving(c1) > 0 && moving(c2) > 0);
    let (m1, m2) = (moving(c1) as u64, moving(c2) as u64);
    let after = rows_per_partition(&host, "DEFAULT.H");
    assert_eq!(after, vec![before[0] + m2, before[1] - m1 - m2, before[2], before[3] + m1]);
    assert_eq!(misplaced(&mut c), 0);
    ok(c.move_ranges_piece(&[(c1.0, c1.1, 1), (c2.0, c2.1, 1)]));
    assert_eq!(rows_per_partition(&host, "DEFAULT.H"), before);
    let five = c.call("@MoveRange", [0, 10, 1, 11, 20].into_iter().map(int).collect());
    assert_eq!(fails(five), ErrorCode::WrongParameterCount);
    // Overlapping ranges are refused, and change nothing.
    let overlap = c.call("@MoveRange", [0, 10, 1, 10, 20, 2].into_iter().map(int).collect());
    assert_eq!(fails(overlap), ErrorCode::InvalidArgument);
    assert_eq!(fails(c.move_ranges_piece(&[(0, 10, 1), (5, 6, 2)])), ErrorCode::InvalidArgument);
    assert_eq!(host.hashinator().version(), 5);
    ok(c.forget_tokens());
}

#[test]
fn bad_moves_are_refused_with_their_reason() {
    let (_host, mut c) = setup(2);
    assert_eq!(fails(c.call("@MoveRange", vec![int(0), int(1)])), ErrorCode::WrongParameterCount);
    let five = c.call("@MoveRange", [0, 1, 0, 2, 3].into_iter().map(int).collect());
    assert_eq!(fails(five), ErrorCode::WrongParameterCount);
    assert_eq!(fails(c.call("@MoveRange", vec![text("a"), int(1), int(0)])), ErrorCode::DatatypeMismatch);
    assert_eq!(fails(move_range(&mut c, 5, 4, 0)), ErrorCode::InvalidArgument);
    assert_eq!(fails(move_range(&mut c, 0, 4, 2)), ErrorCode::InvalidArgument);
    assert_eq!(fails(move_range(&mut c, 0, 4, -1)), ErrorCode::InvalidArgument);
    let too_big = c.call("@MoveRange", vec![int(0), int(1 << 40), int(0)]);
    assert_eq!(fails(too_big), ErrorCode::InvalidArgument);
    assert_eq!(_host.hashinator().version(), 1, "nothing was installed");
}

#[test]
fn a_move_that_cannot_finish_changes_nothing() {
    // A unique index without the partition column is unique per partition
    // only: two rows with one code can live on two partitions, and cannot
    // be moved onto the same one.
    let host = host(2);
    let mut c = host.client();
    exec(&mut c, "CREATE TABLE u (k BIGINT NOT NULL, code INT NOT NULL, UNIQUE (code)); PARTITION TABLE u ON COLUMN k");
    let (a, b) = {
        let ring = host.hashinator();
        let on = |p: u32| (0..).find(|k| ring.partition_for_token(tok(*k)) == p).unwrap();
        (on(0), on(1))
    };
    ok(c.adhoc("INSERT INTO u VALUES (?, 7)", vec![int(a)]));
    ok(c.adhoc("INSERT INTO u VALUES (?, 7)", vec![int(b)]));
    let before = rows_per_partition(&host, "DEFAULT.U");
    let e = fails(move_range(&mut c, tok(b), tok(b), 0));
    assert_eq!(e, ErrorCode::UniqueViolation);
    assert_eq!(rows_per_partition(&host, "DEFAULT.U"), before);
    assert_eq!(host.hashinator().version(), 1);
    assert_eq!(scalar(&mut c, "SELECT COUNT(*) FROM u"), int(2));
    assert_eq!(misplaced(&mut c), 0);
}

#[test]
fn calls_in_flight_while_ranges_move_all_land() {
    let (host, mut c) = setup(4);
    for k in 0..400 {
        ok(c.adhoc("INSERT INTO h VALUES (?, 0, 0)", vec![int(k)]));
    }
    let writers = three_writers(&host);
    // Slices of the ring hop around the partitions meanwhile.
    let slice = 1i64 << 28;
    for step in 0..24i64 {
        let start = i32::MIN as i64 + (step % 16) * slice;
        ok(move_range(&mut c, start as i32, (start + slice - 1) as i32, step % 4));
    }
    for w in writers {
        w.join().unwrap();
    }
    assert_eq!(scalar(&mut c, "SELECT SUM(n) FROM h"), int(3 * 1500));
    assert_eq!(scalar(&mut c, "SELECT COUNT(*) FROM h"), int(400));
    assert_eq!(misplaced(&mut c), 0);
}

#[test]
fn pieces_that_keep_rows_by_token_move_exactly_the_rows_of_their_range() {
    pieces_under_writers(false);
}

#[test]
fn a_token_index_built_in_steps_under_writers_finds_every_row_of_the_pieces() {
    pieces_under_writers(true);
}

/// As @Rebalance moves: the partitions giving rows up keep them by token
/// between pieces, while writers insert, update and delete meanwhile.
/// Partitions 1 and 2 give their slices to partition 0, a span of each per
/// piece. With `stepped`, both build their token indexes first, side by
/// side, in steps of 100 row ids (`@IndexTokens`, as @Rebalance does), the
/// writers running between the steps; else the first piece builds them.
fn pieces_under_writers(stepped: bool) {
    let (host, mut c) = setup(3);
    for k in 0..3000 {
        ok(c.adhoc("INSERT INTO h VALUES (?, ?, 0)", vec![int(k), int(k % 5)]));
    }
    let writers: Vec<_> = (0..2i64)
        .map(|w| {
            let mut c = host.client();
            std::thread::spawn(move || {
                for i in 0..1500i64 {
                    let k = 3000 + w * 10_000 + i;
                    ok(c.adhoc("INSERT INTO h VALUES (?, 1, 0)", vec![int(k)]));
                    ok(c.call("AddH", vec![int(i * 2 + w)]));
                    if i % 3 == 0 {
                        ok(c.adhoc("DELETE FROM h WHERE k = ?", vec![int(k)]));
                    }
                }
            })
        })
        .collect();
    if stepped {
        let left = |r: joule_txn::Response| match ok(r).results[0].rows[0][0] {
            Value::Integer(n) => n,
            ref v => panic!("ROWS_LEFT {v:?}"),
        };
        // Both giving partitions at once, as an unthrottled @Rebalance does.
        let mut lefts = vec![left(c.index_tokens(&[2, 1], 100))];
        while *lefts.last().unwrap() > 0 {
            std::thread::sleep(Duration::from_millis(1));
            lefts.push(left(c.index_tokens(&[1, 2], 100)));
            assert!(lefts.len() < 10_000, "the index steps end");
        }
        // About a thousand rows on each of partitions 1 and 2, and more
        // arriving: at least ten steps, each looking at a hundred more ids
        // of each than rows arrived.
        assert!(lefts.len() >= 10, "{lefts:?}");
        // Both indexes are complete: neither partition has anything left on
        // its own, asked as another host forwards a step too (the count of
        // rows, then the partitions).
        assert_eq!(left(c.index_tokens(&[1], 100)), 0);
        assert_eq!(left(c.index_tokens(&[2], 100)), 0);
        let mut forwarded = host.client();
        forwarded.set_hops(1);
        assert_eq!(left(forwarded.call("@IndexTokens", vec![int(100), int(2), int(1)])), 0);
        for bad in [vec![], vec![int(100)], vec![int(0), int(1)], vec![int(100), int(-1)], vec![int(100), int(3)]] {
            assert_eq!(fails(forwarded.call("@IndexTokens", bad)), ErrorCode::InvalidArgument);
        }
        assert_eq!(fails(forwarded.call("@IndexTokens", vec![int(100), Value::from("x")])), ErrorCode::InvalidArgument);
        assert!(c.call("@IndexTokens", vec![int(100), int(1)]).error.is_some(), "not a client's procedure");
        // Bad requests are refused.
        assert_eq!(fails(c.index_tokens(&[3], 100)), ErrorCode::InvalidArgument);
        assert_eq!(fails(c.index_tokens(&[0, 3], 100)), ErrorCode::InvalidArgument);
        assert_eq!(fails(c.index_tokens(&[0], 0)), ErrorCode::InvalidArgument);
        assert_eq!(fails(c.index_tokens(&[], 100)), ErrorCode::InvalidArgument);
    }
    // Partitions 1's and 2's slices of the ring to partition 0, in 40
    // pieces that each take the next span of both.
    let ring = host.hashinator();
    let (first, second) = (ring.ring()[1].0 as i64, ring.ring()[2].0 as i64);
    let step = (i32::MAX as i64 - second) / 40 + 1;
    let (mut at1, mut at2) = (first, second);
    while at1 < second || at2 <= i32::MAX as i64 {
        let mut ranges = Vec::new();
        if at1 < second {
            let last = (at1 + step - 1).min(second - 1);
            ranges.push((at1 as i32, last as i32, 0));
            at1 = last + 1;
        }
        if at2 <= i32::MAX as i64 {
            let last = (at2 + step - 1).min(i32::MAX as i64);
            ranges.push((at2 as i32, last as i32, 0));
            at2 = last + 1;
        }
        ok(c.move_ranges_piece(&ranges));
    }
    for w in writers {
        w.join().unwrap();
    }
    ok(c.forget_tokens());
    let rows = rows_per_partition(&host, "DEFAULT.H");
    assert_eq!((rows[1], rows[2]), (0, 0), "partitions 1 and 2 gave every row up");
    assert_eq!(misplaced(&mut c), 0);
    assert_eq!(scalar(&mut c, "SELECT COUNT(*) FROM h"), int(3000 + 2 * 1000));
    assert_eq!(scalar(&mut c, "SELECT SUM(n) FROM h"), int(3000));
    assert_eq!(scalar(&mut c, "SELECT SUM(c) FROM hv"), int(5000));
    // Pieces are refused outside the ring's partitions.
    assert_eq!(fails(c.move_range_piece(0, 1, 3)), ErrorCode::InvalidArgument);
}

/// Holds its partition's site until the test lets it go.
struct Hold {
    started: std::sync::Mutex<std::sync::mpsc::Sender<()>>,
    gates: std::sync::Mutex<std::collections::BTreeMap<i64, std::sync::mpsc::Receiver<()>>>,
}

impl joule_txn::Procedure for Hold {
    fn statements(&self) -> &[&'static str] {
        &[]
    }

    fn run(
        &self,
        _ctx: &mut joule_txn::ProcedureContext<'_>,
        params: &[Value],
    ) -> joule_common::Result<Vec<joule_txn::ResultTable>> {
        let k = joule_txn::procedure::param_i64(params, 0)?;
        let gate = self.gates.lock().unwrap().remove(&k).expect("a gate for the key");
        self.started.lock().unwrap().send(()).unwrap();
        let _ = gate.recv();
        Ok(Vec::new())
    }
}

/// Three partitions, table `h (k, n)` partitioned on `k`, `GetH(k)`, and
/// `Hold(k)` holding its site until `gates[k]` is sent to.
fn hold_host(
    started: std::sync::mpsc::Sender<()>,
    gates: std::collections::BTreeMap<i64, std::sync::mpsc::Receiver<()>>,
) -> (Host, joule_txn::Client) {
    let mut registry = joule_txn::ProcedureRegistry::new();
    registry
        .register("test.Hold", Hold { started: std::sync::Mutex::new(started), gates: std::sync::Mutex::new(gates) });
    let host = host_with(3, registry);
    let mut c = host.client();
    exec(
        &mut c,
        "CREATE TABLE h (k BIGINT NOT NULL PRIMARY KEY, n INT); PARTITION TABLE h ON COLUMN k; \
         CREATE PROCEDURE GetH PARTITION ON TABLE h COLUMN k AS SELECT k, n FROM h WHERE k = ?; \
         CREATE PROCEDURE PARTITION ON TABLE h COLUMN k FROM CLASS test.Hold",
    );
    (host, c)
}

/// Run `f` with a new client of `host` on its own thread; its answer
/// arrives on the receiver.
fn in_thread(
    host: &Host,
    f: impl FnOnce(&mut joule_txn::Client) -> joule_txn::Response + Send + 'static,
) -> std::sync::mpsc::Receiver<joule_txn::Response> {
    let mut c = host.client();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || tx.send(f(&mut c)));
    rx
}

#[test]
fn partitions_a_move_leaves_alone_serve_while_it_waits() {
    // Partition 2 neither gives nor takes tokens when partition 0's slice
    // moves to partition 1: it must answer its own calls while the move
    // waits on partition 1, not after.
    let (started, started_rx) = std::sync::mpsc::channel();
    let (gate1, gate1_rx) = std::sync::mpsc::channel::<()>();
    let (gate2, gate2_rx) = std::sync::mpsc::channel::<()>();
    let h = joule_txn::Hashinator::even(3, 1).unwrap();
    let on = |p: u32| (0..10_000).find(|k| h.partition_for(&int(*k)).unwrap() == p).unwrap();
    let (k0, k1, k2) = (on(0), on(1), on(2));
    let gates = [(k1, gate1_rx), (k2, gate2_rx)].into_iter().collect();
    let (host, mut c) = hold_host(started, gates);
    for k in [k0, k1, k2] {
        ok(c.adhoc("INSERT INTO h VALUES (?, 1)", vec![int(k)]));
    }
    // Partitions 1 and 2 busy with a held call each.
    let call = |proc: &'static str, k: i64| in_thread(&host, move |c| c.call(proc, vec![int(k)]));
    let held1 = call("Hold", k1);
    let held2 = call("Hold", k2);
    for _ in 0..2 {
        started_rx.recv_timeout(Duration::from_secs(10)).expect("both holds started");
    }
    // The move: its start marker queues behind each hold.
    // The first half of partition 0's slice.
    let slice = h.ring()[0].0;
    let end = slice + (h.ring()[1].0 - slice) / 2;
    assert_eq!(h.partition_for_token(slice), 0);
    let moved = in_thread(&host, move |c| move_range(c, slice, end, 1));
    // Time for the coordinator to queue its start markers, so that the
    // call below comes after the move at partition 2 (were the markers
    // slower, the call would come first and pass without testing this).
    std::thread::sleep(Duration::from_millis(300));
    let read2 = call("GetH", k2);
    gate2.send(()).unwrap();
    ok(held2.recv_timeout(Duration::from_secs(10)).expect("partition 2's hold ends"));
    let answered = read2.recv_timeout(Duration::from_secs(10));
    let waiting = moved.try_recv().is_err();
    // Let partition 1 go before any assertion (a failed one would leave
    // the host's threads waiting on it).
    gate1.send(()).unwrap();
    let r = answered.expect("partition 2 answers while the move still waits on partition 1");
    assert_eq!(ok(r).results[0].rows, vec![vec![int(k2), int(1)]]);
    assert!(waiting, "the move still waited on partition 1");
    ok(held1.recv_timeout(Duration::from_secs(10)).expect("partition 1's hold ends"));
    ok(moved.recv_timeout(Duration::from_secs(10)).expect("the move ends"));
    // The slice and its row are partition 1's; partition 2's calls, routed
    // by the next ring, still find theirs.
    assert_eq!(host.hashinator().partition_for_token(slice), 1);
    for k in [k0, k1, k2] {
        assert_eq!(ok(c.call("GetH", vec![int(k)])).results[0].rows, vec![vec![int(k), int(1)]]);
    }
    assert_eq!(misplaced(&mut c), 0);
}

#[test]
fn a_partition_that_only_takes_rows_serves_until_they_come() {
    // Partition 0's slice moves to partition 1 while partition 0 is busy:
    // the move waits there to evict, and partition 1, which only takes
    // rows, joins the move when they come — until then it answers its own
    // calls.
    let (started, started_rx) = std::sync::mpsc::channel();
    let (gate0, gate0_rx) = std::sync::mpsc::channel::<()>();
    let h = joule_txn::Hashinator::even(3, 1).unwrap();
    let on = |p: u32| (0..10_000).find(|k| h.partition_for(&int(*k)).unwrap() == p).unwrap();
    let (k0, k1) = (on(0), on(1));
    let (host, mut c) = hold_host(started, [(k0, gate0_rx)].into_iter().collect());
    for k in [k0, k1] {
        ok(c.adhoc("INSERT INTO h VALUES (?, 1)", vec![int(k)]));
    }
    let held = in_thread(&host, move |c| c.call("Hold", vec![int(k0)]));
    started_rx.recv_timeout(Duration::from_secs(10)).expect("the hold started");
    let slice = h.ring()[0].0;
    let end = slice + (h.ring()[1].0 - slice) / 2;
    let moved = in_thread(&host, move |c| move_range(c, slice, end, 1));
    // Time for the coordinator to send its start markers (were they
    // slower, the call below would come before the move and pass without
    // testing this).
    std::thread::sleep(Duration::from_millis(300));
    let read1 = in_thread(&host, move |c| c.call("GetH", vec![int(k1)]));
    let answered = read1.recv_timeout(Duration::from_secs(10));
    let waiting = moved.try_recv().is_err();
    // Let partition 0 go before any assertion (a failed one would leave
    // the host's threads waiting on it).
    gate0.send(()).unwrap();
    let r = answered.expect("partition 1 answers while the move still waits on partition 0");
    assert_eq!(ok(r).results[0].rows, vec![vec![int(k1), int(1)]]);
    assert!(waiting, "the move still waited on partition 0");
    ok(held.recv_timeout(Duration::from_secs(10)).expect("the hold ends"));
    let r = ok(moved.recv_timeout(Duration::from_secs(10)).expect("the move ends"));
    assert_eq!(r.results[0].rows[0][2], int(1));
    assert_eq!(host.hashinator().partition_for_token(slice), 1);
    for k in [k0, k1] {
        assert_eq!(ok(c.call("GetH", vec![int(k)])).results[0].rows, vec![vec![int(k), int(1)]]);
    }
    assert_eq!(misplaced(&mut c), 0);
}

#[test]
fn ad_hoc_calls_routed_by_the_previous_ring_follow_their_rows() {
    // Ad hoc single-partition calls queued at a partition behind a move
    // that takes their keys away: each runs where its key went, and a
    // batch the move split between two partitions is refused, to be made
    // again, rather than run half-placed.
    let (started, started_rx) = std::sync::mpsc::channel();
    let (gate, gate_rx) = std::sync::mpsc::channel::<()>();
    let h = joule_txn::Hashinator::even(3, 1).unwrap();
    let (slice, next) = (h.ring()[0].0, h.ring()[1].0);
    let end = slice + (next - slice) / 2;
    let on0 = |range: std::ops::RangeInclusive<i32>| (0..100_000).filter(move |k| range.contains(&tok(*k)));
    let hold_key = on0(slice..=next - 1).next().unwrap();
    let moving: Vec<i64> = on0(slice..=end).filter(|k| *k != hold_key).take(2).collect();
    let staying = on0(end + 1..=next - 1).find(|k| *k != hold_key).unwrap();
    let gates = [(hold_key, gate_rx)].into_iter().collect();
    let (host, mut c) = hold_host(started, gates);
    let held = in_thread(&host, move |c| c.call("Hold", vec![int(hold_key)]));
    started_rx.recv_timeout(Duration::from_secs(10)).expect("the hold started");
    let moved = in_thread(&host, move |c| move_range(c, slice, end, 1));
    // Time for the move's start marker to queue at partition 0 (were it
    // slower, the calls below would run before the move and pass without
    // testing this).
    std::thread::sleep(Duration::from_millis(300));
    let (a, b) = (moving[0], moving[1]);
    let one = in_thread(&host, move |c| c.adhoc("INSERT INTO h VALUES (?, 1)", vec![int(a)]));
    let split = in_thread(&host, move |c| {
        c.adhoc("INSERT INTO h VALUES (?, 2); INSERT INTO h VALUES (?, 2)", vec![int(b), int(staying)])
    });
    std::thread::sleep(Duration::from_millis(100));
    gate.send(()).unwrap();
    let wait = |rx: std::sync::mpsc::Receiver<joule_txn::Response>| rx.recv_timeout(Duration::from_secs(10)).unwrap();
    ok(wait(held));
    ok(wait(moved));
    ok(wait(one));
    let r = wait(split);
    assert_eq!(fails(r), ErrorCode::Mispartitioned);
    // Made again, the batch runs across both partitions.
    ok(c.adhoc("INSERT INTO h VALUES (?, 2); INSERT INTO h VALUES (?, 2)", vec![int(b), int(staying)]));
    assert_eq!(rows_per_partition(&host, "DEFAULT.H"), vec![1, 2, 0]);
    assert_eq!(misplaced(&mut c), 0);
}
