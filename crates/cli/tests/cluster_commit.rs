//! A cluster's multi-partition commit stays atomic when a host dies in the
//! middle of it: real `joule` processes on loopback, each made to die at an
//! exact step of the two-phase commit by a failpoint
//! (`joule_common::failpoint`), as `kill -9` would — a partition's leader
//! after its replicas hold the prepared writes, a leader after it committed
//! but before its replicas heard, the coordinator after one partition
//! committed and before the others were told, and a second coordinator
//! after one partition prepared (its ids must not repeat the first's).
//! And a host stopping (`SIGTERM`) with a site prepared for a transaction
//! the coordinator holds (paused by a failpoint) stops at once; and a
//! replica told to commit writes that failed on its copy (a failpoint
//! fails them) stops its host rather than confirm.
//!
//! After each: every partition took the same outcome (an update of every
//! row leaves every row alike), the client was told success only if it
//! committed, the surviving hosts logged how they settled it, and once the
//! dead host rejoins every partition's copies are identical.

mod common;

use common::cluster::*;
use common::TempDir;
use joule_client::{Options, SyncConnection};
use joule_common::{ErrorCode, Value};
use std::time::Duration;

const ROWS: i64 = 30;

/// Three hosts, k = 1 (three partitions, one led by each host), with a
/// partitioned table whose rows cover every partition.
fn cluster(name: &str) -> (Vec<TempDir>, Vec<Host>) {
    let dirs: Vec<TempDir> = (0..3).map(|i| TempDir::new(&format!("{name}-{i}"))).collect();
    let hosts = form(&dirs, 1);
    let ddl = "CREATE TABLE accounts (id BIGINT NOT NULL PRIMARY KEY, touched BIGINT NOT NULL); \
               PARTITION TABLE accounts ON COLUMN id;";
    sql(&hosts[0].client, ddl, vec![]);
    for id in 0..ROWS {
        sql(&hosts[0].client, "INSERT INTO accounts VALUES (?, 0)", vec![Value::Integer(id)]);
    }
    (dirs, hosts)
}

/// The host coordinating multi-partition transactions (TOPO's last row).
fn coordinator(addr: &str) -> usize {
    let topo = stats(addr, "TOPO");
    topo.last().unwrap()[2].split(':').next().unwrap().parse().unwrap()
}

/// Update every row in one multi-partition transaction, through `addr`.
fn touch_all(addr: &str) -> Result<joule_client::Response, joule_common::Error> {
    let options = Options { call_timeout: Some(Duration::from_secs(60)), ..Default::default() };
    let update = vec![Value::from("UPDATE accounts SET touched = touched + 1")];
    SyncConnection::connect(addr, &options)?.call("@AdHoc", update)
}

/// Whether host `h` holds a copy of partition `p`, and whether it leads
/// it, as `@Statistics TOPO` (`topo`) has them.
fn copy_of(topo: &[Vec<String>], h: usize, p: usize) -> (bool, bool) {
    let copy = format!("{h}:");
    (topo[p][1].split(',').any(|s| s.starts_with(&copy)), topo[p][2].starts_with(&copy))
}

/// `@MoveRange` of tokens `first..=last` to partition `to`, through `addr`.
fn move_range(addr: &str, first: i64, last: i64, to: usize) -> Result<joule_client::Response, joule_common::Error> {
    let options = Options { call_timeout: Some(Duration::from_secs(60)), ..Default::default() };
    let range = vec![Value::Integer(first), Value::Integer(last), Value::Integer(to as i64)];
    SyncConnection::connect(addr, &options)?.call("@MoveRange", range)
}

/// [`touch_all`] until it commits: refused as `Unavailable` (not done),
/// it is called again.
fn touch_all_committed(addr: &str) {
    eventually("a multi-partition update commits", || match touch_all(addr) {
        Ok(_) => true,
        Err(e) if e.code() == ErrorCode::Unavailable => false,
        Err(e) => panic!("a multi-partition update: {e}"),
    });
}

/// Every row's `touched`, as the lowest and highest, read through `addr`
/// once every partition is led by a live host (and the host routes by it:
/// until then a read is refused as `Unavailable`, and tried again).
fn touched(addr: &str) -> (i64, i64) {
    eventually("every partition is led by a live host", || every_partition_led_by_a_live_host(addr));
    let mut seen = None;
    eventually("the rows can be read", || {
        let query = vec![Value::from("SELECT MIN(touched), MAX(touched) FROM accounts")];
        match connect(addr).call("@AdHoc", query) {
            Ok(r) => {
                let row = &r.tables[0].rows[0];
                if let (Value::Integer(lo), Value::Integer(hi)) = (&row[0], &row[1]) {
                    seen = Some((*lo, *hi));
                }
                true
            }
            Err(e) if e.code() == ErrorCode::Unavailable => false,
            Err(e) => panic!("reading the rows: {e}"),
        }
    });
    seen.expect("two integers")
}

/// Start the dead host `i` again; once it has rejoined, every partition's
/// two copies are identical and a new multi-partition update commits.
fn rejoin_and_check(dirs: &[TempDir], hosts: &mut [Host], i: usize, expected: i64) {
    let _ = hosts[i].child.wait();
    disarm(dirs[i].path());
    hosts[i] = spawn(dirs[i].path(), &["--host-count", "3", "--kfactor", "1"]).ready();
    let first = hosts[(i + 1) % 3].client.clone();
    eventually("the host rejoined", || states(&first).iter().all(|(_, s)| s == "UP"));
    let clients: Vec<String> = hosts.iter().map(|h| h.client.clone()).collect();
    eventually("every copy is level", || replicas_agree(&clients, 2).is_ok());
    assert_eq!(touched(&hosts[i].client), (expected, expected));
    touch_all_committed(&hosts[i].client);
    assert_eq!(touched(&first), (expected + 1, expected + 1));
    replicas_agree(&clients, 2).unwrap();
}

/// A partition's leader dies once its replica holds the prepared writes,
/// before the coordinator hears it prepared: the coordinator rolls back,
/// and settles the rollback with the partition's new leader (the replica,
/// which waits in doubt).
#[test]
fn a_leader_that_dies_prepared_is_rolled_back_by_its_new_leader() {
    let (dirs, mut hosts) = cluster("commit-prepared");
    let c = coordinator(&hosts[0].client);
    let victim = (c + 1) % 3;
    arm(dirs[victim].path(), "leader-after-prepare");
    let answer = touch_all(&hosts[c].client);
    let e = answer.expect_err("a transaction whose partition never said it prepared is not committed");
    assert_eq!(e.code(), ErrorCode::Unavailable, "{e}");
    assert!(e.message().contains("rolled back"), "{e}");
    wait_line(&hosts[c].stderr, "settled (rollback) with its leader");
    assert_eq!(touched(&hosts[c].client), (0, 0));
    rejoin_and_check(&dirs, &mut hosts, victim, 0);
}

/// A partition's leader commits and dies before its replica hears: the
/// coordinator settles the commit with the new leader, which holds the
/// prepared writes, and the client is told the transaction committed.
#[test]
fn a_leader_that_dies_committed_is_committed_by_its_new_leader() {
    let (dirs, mut hosts) = cluster("commit-committed");
    let c = coordinator(&hosts[0].client);
    let victim = (c + 1) % 3;
    arm(dirs[victim].path(), "leader-after-commit");
    touch_all(&hosts[c].client).expect("committed everywhere once the new leader settled it");
    wait_line(&hosts[c].stderr, "settled (commit) with its leader");
    assert_eq!(touched(&hosts[c].client), (1, 1));
    rejoin_and_check(&dirs, &mut hosts, victim, 1);
}

/// The coordinator dies after one partition committed and before the
/// others were told: the next coordinator finds the transaction in doubt,
/// sees that a partition committed it, and commits it everywhere.
#[test]
fn a_coordinator_that_dies_mid_commit_is_finished_by_the_next() {
    let (dirs, mut hosts) = cluster("commit-coordinator");
    let c = coordinator(&hosts[0].client);
    let through = (c + 1) % 3;
    arm(dirs[c].path(), "coordinator-after-first-commit");
    let answer = touch_all(&hosts[through].client);
    assert!(answer.is_err(), "the coordinator died before it could answer: {answer:?}");
    let next = coordinator_after(&hosts[through].client, c);
    wait_line(&hosts[next].stderr, "left in doubt on partitions");
    assert_eq!(touched(&hosts[through].client), (1, 1));
    rejoin_and_check(&dirs, &mut hosts, c, 1);
}

/// A range move ships its last round's writes to the replicas before the
/// leaders run them, and a replica holds such writes even when they fail
/// on it (its leader most likely failed them too, and a rollback follows).
/// Here a failpoint fails them on one replica only — a copy that no longer
/// matches its leader's — so the move commits, and that replica, told to
/// commit writes that failed on it, stops its host rather than confirm.
/// The rows are where the move put them on the surviving copies, and the
/// host rejoins with fresh copies.
#[test]
fn a_replica_told_to_commit_writes_that_failed_on_it_stops_its_host() {
    let (dirs, mut hosts) = cluster("commit-diverged");
    let c = coordinator(&hosts[0].client);
    // Partition 0's slice of the ring goes to partition 2: a host other
    // than the coordinator's holding a replica (not the leader) of either.
    let topo = stats(&hosts[0].client, "TOPO");
    let replicates = |h: usize, p: usize| copy_of(&topo, h, p) == (true, false);
    let victim = (0..3).find(|h| *h != c && (replicates(*h, 0) || replicates(*h, 2))).expect("such a host");
    arm(dirs[victim].path(), "replica-round-fails");
    let ring = joule_common::hashinator::Hashinator::even(3, 1).unwrap();
    let last_of_0 = ring.ring()[1].0 as i64 - 1;
    let moved = move_range(&hosts[c].client, i32::MIN as i64, last_of_0, 2).expect("the move commits on the leaders");
    assert!(moved.tables[0].rows[0][3] != Value::Integer(0), "rows moved: {moved:?}");
    wait_line(&hosts[victim].stderr, "it no longer follows its leader");
    assert!(
        wait_until(Duration::from_secs(30), || hosts[victim].child.try_wait().ok().flatten().is_some()),
        "the diverged host did not stop"
    );
    let through = hosts[c].client.clone();
    assert_eq!(touched(&through), (0, 0));
    eventually("every row is counted", || scalar(&through, "SELECT COUNT(*) FROM accounts") == ROWS);
    assert_eq!(misplaced(&through), 0);
    rejoin_and_check(&dirs, &mut hosts, victim, 0);
}

/// As above, but the diverged replica learns the outcome as the
/// partition's new leader: the taking partition's leader commits the move
/// and dies before its replica hears (failpoint `leader-after-commit`), and
/// the coordinator settles the commit with that replica, whose copy of the
/// writes failed (failpoint `replica-round-fails`). It refuses the commit
/// and its host stops, rather than commit writes that failed on it and
/// serve the partition from a copy unlike the one that committed.
#[test]
fn a_diverged_replica_settled_as_the_new_leader_stops_rather_than_commit() {
    let (dirs, mut hosts) = cluster("commit-diverged-settled");
    let c = coordinator(&hosts[0].client);
    let topo = stats(&hosts[0].client, "TOPO");
    // The partition with no copy on the coordinator's host takes the rows.
    let taker = (0..3).find(|p| !copy_of(&topo, c, *p).0).expect("a partition the coordinator's host holds no copy of");
    let leader = (0..3).find(|h| *h != c && copy_of(&topo, *h, taker).1).unwrap();
    let victim = (0..3).find(|h| *h != c && *h != leader).unwrap();
    arm(dirs[leader].path(), "leader-after-commit");
    arm(dirs[victim].path(), "replica-round-fails");
    // Another partition's slice to the taker.
    let ring = joule_common::hashinator::Hashinator::even(3, 1).unwrap();
    let entries = ring.ring();
    let giver = (0..entries.len()).find(|i| entries[*i].1 as usize != taker).unwrap();
    let (first, last) =
        (entries[giver].0 as i64, entries.get(giver + 1).map_or(i32::MAX as i64, |(t, _)| *t as i64 - 1));
    let via = hosts[c].client.clone();
    let mover = std::thread::spawn(move || move_range(&via, first, last, taker));
    wait_line(&hosts[victim].stderr, "no longer follows the partition's");
    let mut stopped = |h: usize| hosts[h].child.try_wait().ok().flatten().is_some();
    assert!(
        wait_until(Duration::from_secs(30), || stopped(leader) && stopped(victim)),
        "the leader and the diverged replica stop"
    );
    let answer = mover.join().unwrap();
    assert!(answer.as_ref().is_err_and(|e| e.code() == ErrorCode::OutcomeUnknown), "{answer:?}");
}

/// A transaction that writes on one partition commits in one phase: its
/// leader commits and dies before its replica hears. Nothing can be partial,
/// but the client must not be told it committed: the new leader (the
/// replica) never had it.
#[test]
fn a_single_writer_whose_leader_dies_committed_is_not_reported_committed() {
    let (dirs, mut hosts) = cluster("commit-one-phase");
    let c = coordinator(&hosts[0].client);
    let victim = (c + 1) % 3;
    let topo = stats(&hosts[0].client, "TOPO");
    let led = (0..3).find(|p| topo[*p][2].starts_with(&format!("{victim}:"))).expect("the victim leads a partition");
    let ring = joule_common::hashinator::Hashinator::even(3, 1).unwrap();
    let key = (0..ROWS).find(|k| ring.partition_for(&Value::Integer(*k)).unwrap() as usize == led).unwrap();
    arm(dirs[victim].path(), "leader-after-commit");
    // A multi-partition read, then a write on one partition.
    let batch = vec![
        Value::from("SELECT COUNT(*) FROM accounts; UPDATE accounts SET touched = 7 WHERE id = ?"),
        Value::Integer(key),
    ];
    let options = Options { call_timeout: Some(Duration::from_secs(60)), ..Default::default() };
    let answer = SyncConnection::connect(&hosts[c].client, &options).unwrap().call("@AdHoc", batch);
    let e = answer.expect_err("the only writer died before its replica had the write");
    assert_eq!(e.code(), ErrorCode::OutcomeUnknown, "{e}");
    // The new leader never had it.
    assert_eq!(touched(&hosts[c].client), (0, 0));
    rejoin_and_check(&dirs, &mut hosts, victim, 0);
}

/// Every host's coordinator counts its own transaction ids, and a
/// partition remembers the outcomes of the last prepared ones by id. A
/// host that takes coordination over must issue ids above every one a
/// partition knows of: here the second coordinator dies with one partition
/// prepared and the others never asked, so the third must roll the
/// transaction back. When the second counted from zero, its transaction
/// had the id of one the first had committed, the third found that
/// outcome in the partitions' memory and committed the transaction on the
/// one partition that held it (the fault run's partial commit).
#[test]
fn a_new_coordinator_never_reuses_a_transaction_id() {
    let (dirs, mut hosts) = cluster("commit-ids");
    let first = coordinator(&hosts[0].client);
    // Enough that the second's ids, counted from zero, would meet these.
    for _ in 0..40 {
        touch_all_committed(&hosts[first].client);
    }
    let _ = hosts[first].child.kill();
    let through = (first + 1) % 3;
    let second = coordinator_after(&hosts[through].client, first);
    // Each partition keeps a copy on a live host once the first rejoins.
    rejoin_and_check(&dirs, &mut hosts, first, 40);
    for _ in 0..3 {
        touch_all_committed(&hosts[second].client);
    }
    arm(dirs[second].path(), "coordinator-after-first-prepare");
    let through = (second + 1) % 3;
    let answer = touch_all(&hosts[through].client);
    assert!(answer.is_err(), "the coordinator died before it could answer: {answer:?}");
    let third = coordinator_after(&hosts[through].client, second);
    wait_line(&hosts[third].stderr, "left in doubt on partitions");
    assert_eq!(touched(&hosts[through].client), (44, 44), "one partition prepared, none committed: rolled back");
    rejoin_and_check(&dirs, &mut hosts, second, 44);
}

/// The coordinator once the metadata has moved it off host `old`.
fn coordinator_after(addr: &str, old: usize) -> usize {
    let mut now = old;
    eventually("another host coordinates", || {
        now = coordinator(addr);
        now != old
    });
    now
}

/// k = 2: the prepared writes reach one replica and not the other (its
/// link hangs), then the partition's leader dies. The new leader's repair
/// step brings the prepare to both copies, and the coordinator — which
/// never heard the partition prepared — rolls the transaction back through
/// the new leader, on both.
#[test]
fn a_prepare_that_reached_one_replica_is_rolled_back_on_both() {
    use common::fault_proxy::Link;
    let dirs: Vec<TempDir> = (0..3).map(|i| TempDir::new(&format!("commit-k2-{i}"))).collect();
    let (mut hosts, mesh) = form_meshed(&dirs, 2, &[]);
    let ddl = "CREATE TABLE accounts (id BIGINT NOT NULL PRIMARY KEY, touched BIGINT NOT NULL); \
               PARTITION TABLE accounts ON COLUMN id;";
    sql(&hosts[0].client, ddl, vec![]);
    for id in 0..ROWS {
        sql(&hosts[0].client, "INSERT INTO accounts VALUES (?, 0)", vec![Value::Integer(id)]);
    }
    let c = coordinator(&hosts[0].client);
    // A partition led by another host than the coordinator's (two
    // partitions, three copies each).
    let topo = stats(&hosts[0].client, "TOPO");
    let leader_of = |p: usize| -> usize { topo[p][2].split(':').next().unwrap().parse().unwrap() };
    let p = (0..2).find(|p| leader_of(*p) != c).expect("a partition led away from the coordinator");
    let leader = leader_of(p);
    let behind = (0..3).find(|h| *h != leader && *h != c).unwrap();
    mesh.set(leader, behind, Link::Hang);
    let through = hosts[c].client.clone();
    let pending = std::thread::spawn(move || touch_all(&through));
    // The prepare reaches the coordinator's copy and waits for `behind`'s.
    std::thread::sleep(Duration::from_millis(400));
    let _ = hosts[leader].child.kill();
    let _ = hosts[leader].child.wait();
    let e = pending.join().unwrap().expect_err("a partition never said it prepared");
    assert_eq!(e.code(), ErrorCode::Unavailable, "{e}");
    wait_line(&hosts[c].stderr, "settled (rollback) with its leader");
    mesh.heal();
    let live = [hosts[c].client.clone(), hosts[behind].client.clone()];
    eventually("every copy is level", || replicas_agree(&live, 2).is_ok());
    assert_eq!(touched(&live[1]), (0, 0));
    touch_all_committed(&live[1]);
    assert_eq!(touched(&live[0]), (1, 1));
    replicas_agree(&live, 2).unwrap();
}

/// A host that stops while one of its sites is prepared for a transaction
/// another host coordinates — that coordinator alive and holding it, the
/// outcome not yet sent (failpoint `coordinator-paused-after-prepare`) —
/// does not wait for the outcome: the site is told none will reach it
/// here, rolls back and goes (its replica keeps the prepared writes), and
/// the host exits. The transaction then ends the same on every partition.
#[test]
fn a_host_stopping_with_a_site_prepared_for_another_coordinator_exits_without_its_outcome() {
    let (dirs, mut hosts) = cluster("commit-stop");
    let c = coordinator(&hosts[0].client);
    let stopping = (c + 1) % 3;
    arm(dirs[c].path(), "coordinator-paused-after-prepare");
    let through = hosts[c].client.clone();
    let pending = std::thread::spawn(move || touch_all(&through));
    wait_line(&hosts[c].stderr, "failpoint coordinator-paused-after-prepare is armed");
    let pid = hosts[stopping].child.id() as libc::pid_t;
    // SAFETY: signalling a child process this test started.
    unsafe { libc::kill(pid, libc::SIGTERM) };
    // It stops while the coordinator still holds the transaction (the
    // pause lasts 60 s at most), at once: without the word to its site,
    // the stop waited out its 5 s bound on work for other hosts.
    let mut said = Vec::new();
    while !said.last().is_some_and(|l: &String| l.contains("JouleDB stopped")) {
        said.push(hosts[stopping].stderr.recv_timeout(Duration::from_secs(30)).expect("the host stops"));
    }
    assert!(!said.iter().any(|l| l.contains("did not finish")), "{said:#?}");
    let exited = hosts[stopping].child.wait().unwrap();
    disarm(dirs[c].path());
    let answer = pending.join().unwrap();
    let (lo, hi) = touched(&hosts[c].client);
    assert_eq!(lo, hi, "the transaction ended differently on its partitions: {answer:?}, {exited:?}");
    rejoin_and_check(&dirs, &mut hosts, stopping, lo);
}
