//! Moving hashinator ranges on a cluster of real `joule` processes (3
//! hosts, k = 1, 3 partitions): `@MoveRange` and `@Rebalance` asked of any
//! host move rows between hosts under a voter load with no failed vote and
//! vote totals equal to the votes accepted; every copy of every partition
//! agrees afterwards; and a rebalance whose coordinator is killed with
//! `kill -9` half way carries on under the next coordinator, losing
//! nothing, as does one whose own host is killed once it is asked again.

mod common;

use common::cluster::{
    all_up_and_led, connect, eventually, form_all, http_get, misplaced, replicas_agree, scalar, spawn, stats, Host,
};
use common::voters::{setup, vote_totals, vote_until_stopped};
use common::{elastic_config, TempDir};
use joule_client::{Options, SyncConnection};
use joule_common::Value;

fn int(v: &Value) -> i64 {
    match v {
        Value::Integer(i) => *i,
        v => panic!("not an integer: {v:?}"),
    }
}

/// `@Statistics REBALANCE`'s STATUS on `addr` (empty before its first job).
fn rebalance_status(addr: &str) -> String {
    stats(addr, "REBALANCE").first().map(|r| r[3].clone()).unwrap_or_default()
}

/// Rows the job on `addr` has moved.
fn moved_rows(addr: &str) -> u64 {
    stats(addr, "REBALANCE").first().map_or(0, |r| r[6].parse().unwrap())
}

fn rebalance(host: &Host, params: Vec<Value>) -> Vec<Vec<Value>> {
    let mut admin = SyncConnection::connect(&host.admin, &Options::default()).expect("admin port");
    admin.call("@Rebalance", params).expect("@Rebalance starts").tables[0].rows.clone()
}

/// Rows of `DEFAULT.VOTES` on each partition, as the hosts at `clients`
/// report their copies.
fn votes_on_partitions(clients: &[String]) -> std::collections::BTreeMap<i64, i64> {
    let mut out = std::collections::BTreeMap::new();
    for c in clients {
        for r in stats(c, "TABLE").iter().filter(|r| r[5] == "DEFAULT.VOTES") {
            out.insert(r[4].parse::<i64>().unwrap(), r[7].parse::<i64>().unwrap());
        }
    }
    out
}

#[test]
fn ranges_move_between_hosts_under_a_voter_load_without_a_failed_vote() {
    let dirs: Vec<TempDir> = (0..3).map(|i| TempDir::new(&format!("crebalance-{i}"))).collect();
    let config = TempDir::new("crebalance-config");
    let config = elastic_config(&config, "duration_ms = 5\nthroughput_mb = 0");
    let hosts = form_all(&dirs, 1, &["--config", &config]);
    all_up_and_led(&hosts);
    let clients: Vec<String> = hosts.iter().map(|h| h.client.clone()).collect();
    setup(&clients[0]);
    let voters = vote_until_stopped(&clients, 1, false);
    eventually("votes come in", || vote_totals(&clients[0])[0] > 1000);

    // One move, asked of a host that does not coordinate: forwarded, and
    // its figures come back.
    let r = connect(&clients[2])
        .call("@MoveRange", vec![Value::Integer(i32::MIN as i64), Value::Integer(-(1 << 30)), Value::Integer(2)])
        .expect("@MoveRange");
    let row = &r.tables[0].rows[0];
    assert!(int(&row[3]) > 0, "rows moved: {row:?}");
    assert_eq!(int(&row[5]), 2, "the ring's next version: {row:?}");
    // Every host routes by the new ring (the metadata carries it).
    for h in &hosts {
        eventually("each host hears of the new ring", || {
            http_get(&h.http, "/console/stats").contains("hashinator ring moved to version 2")
        });
    }
    assert_eq!(misplaced(&clients[1]), 0);

    // A rebalance in many pieces, run by host 1; then back to the even
    // ring, run by host 2.
    let moves = rebalance(&hosts[1], vec![Value::Integer(0), Value::Integer(i32::MAX as i64), Value::Integer(1)]);
    assert!(!moves.is_empty());
    eventually("the first rebalance is done", || rebalance_status(&clients[1]) == "DONE");
    let row = &stats(&clients[1], "REBALANCE")[0];
    assert!(row[11].parse::<u64>().unwrap() > 1, "in several pieces: {row:?}");
    let back = rebalance(&hosts[2], vec![]);
    assert!(!back.is_empty());
    eventually("the second rebalance is done", || rebalance_status(&clients[2]) == "DONE");
    let (accepted, unknown) = voters.finish();
    assert_eq!(unknown, 0);
    for c in &clients {
        assert_eq!(vote_totals(c), [accepted; 3], "every accepted vote counted once, as seen from {c}");
    }
    assert_eq!(misplaced(&clients[0]), 0);
    replicas_agree(&clients, 2).unwrap();
    // Back on the even ring: nothing left to move, wherever asked.
    for h in &hosts {
        assert!(rebalance(h, vec![]).is_empty());
    }
}

#[test]
fn a_rebalance_carries_on_when_its_coordinator_is_killed_and_when_its_host_is() {
    let dirs: Vec<TempDir> = (0..3).map(|i| TempDir::new(&format!("crebalance-kill-{i}"))).collect();
    let config = TempDir::new("crebalance-kill-config");
    // Slow enough that the kills land half way (paced by bytes alone: the
    // sparse ring's empty pieces need no rest, and no p99 target steers).
    let config =
        elastic_config(&config, "duration_ms = 5\nthroughput_mb = 0.02\nbusy_percent = 100\ntarget_p99_ms = 0");
    let args = ["--host-count", "3", "--kfactor", "1", "--config", config.as_str()];
    let mut hosts = form_all(&dirs, 1, &["--config", &config]);
    all_up_and_led(&hosts);
    let clients: Vec<String> = hosts.iter().map(|h| h.client.clone()).collect();
    setup(&clients[0]);
    // Votes go through hosts 1 and 2 (host 0, the coordinator, dies).
    let voters = vote_until_stopped(&clients[1..], 2, true);
    eventually("votes come in", || vote_totals(&clients[1])[0] > 3000);

    // The job runs on host 1; its moves are coordinated by host 0.
    let coordinator = stats(&clients[1], "TOPO").last().unwrap()[2].clone();
    assert!(coordinator.starts_with('0'), "host 0 coordinates: {coordinator}");
    rebalance(&hosts[1], vec![Value::Integer(0), Value::Integer(i32::MAX as i64), Value::Integer(0)]);
    eventually("the rebalance has moved some rows", || moved_rows(&clients[1]) > 0);
    assert_eq!(rebalance_status(&clients[1]), "RUNNING", "killed half way");
    let _ = hosts[0].child.kill();
    // The job's pieces wait out the failover and go on.
    let done = common::cluster::wait_until(std::time::Duration::from_secs(90), || {
        let s = rebalance_status(&clients[1]);
        assert!(s == "RUNNING" || s == "DONE", "{:?}", stats(&clients[1], "REBALANCE"));
        s == "DONE"
    });
    assert!(done, "the rebalance finishes under the next coordinator: {:?}", stats(&clients[1], "REBALANCE"));
    assert_eq!(misplaced(&clients[1]), 0);
    // Partition 2's third of the ring (the top) is all inside 0..=MAX.
    let placed = votes_on_partitions(&clients[1..]);
    assert_eq!(placed.get(&2), Some(&0), "partition 2's tokens went to partition 0: {placed:?}");

    // The votes stop (so that the next job has a bounded amount to move).
    let (accepted, unknown) = voters.finish();

    // The killed host rejoins; then a job on host 2 loses its own host.
    hosts[0] = spawn(dirs[0].path(), &args).ready();
    all_up_and_led(&hosts);
    // (Restarted, a host listens on new ports.)
    let clients: Vec<String> = hosts.iter().map(|h| h.client.clone()).collect();
    rebalance(&hosts[2], vec![]);
    eventually("the second rebalance has moved some rows", || moved_rows(&clients[2]) > 0);
    let _ = hosts[2].child.kill();
    eventually("host 2 is declared failed", || common::cluster::states(&clients[1])[2].1 != "UP");
    // What moved stays moved; asked again elsewhere, the rest moves.
    let left = rebalance(&hosts[1], vec![]);
    assert!(!left.is_empty(), "the job was killed half way");
    let done =
        common::cluster::wait_until(std::time::Duration::from_secs(90), || rebalance_status(&clients[1]) == "DONE");
    assert!(done, "the rest moves: {:?}", stats(&clients[1], "REBALANCE"));
    hosts[2] = spawn(dirs[2].path(), &args).ready();
    all_up_and_led(&hosts);
    let clients: Vec<String> = hosts.iter().map(|h| h.client.clone()).collect();
    let totals = vote_totals(&clients[0]);
    assert!(
        totals[0] >= accepted && totals[0] <= accepted + unknown,
        "accepted {accepted} (and {unknown} unknown), found {totals:?}"
    );
    assert_eq!(totals, [totals[0]; 3]);
    for c in &clients {
        assert_eq!(vote_totals(c), totals, "as seen from {c}");
    }
    assert_eq!(misplaced(&clients[0]), 0);
    eventually("every copy agrees", || replicas_agree(&clients, 2).is_ok());
    for h in &hosts {
        assert!(rebalance(h, vec![]).is_empty(), "back on the even ring");
    }
}

/// Three hosts (k = 1), a table with `rows` keys on every partition, and
/// the host coordinating multi-partition transactions.
fn keyed_cluster(name: &str, rows: i64) -> (Vec<TempDir>, Vec<Host>, usize) {
    let dirs: Vec<TempDir> = (0..3).map(|i| TempDir::new(&format!("{name}-{i}"))).collect();
    let hosts = common::cluster::form(&dirs, 1);
    all_up_and_led(&hosts);
    let ddl = "CREATE TABLE kv (k BIGINT NOT NULL PRIMARY KEY, v BIGINT NOT NULL); PARTITION TABLE kv ON COLUMN k;";
    common::cluster::sql(&hosts[0].client, ddl, vec![]);
    for k in 0..rows {
        common::cluster::sql(
            &hosts[0].client,
            "INSERT INTO kv VALUES (?, ?)",
            vec![Value::Integer(k), Value::Integer(k)],
        );
    }
    let topo = stats(&hosts[0].client, "TOPO");
    let coordinator = topo.last().unwrap()[2].split(':').next().unwrap().parse().unwrap();
    (dirs, hosts, coordinator)
}

/// Rows of `kv` per partition, as the hosts at `addrs` count their copies
/// (the larger count where two copies are seen).
fn kv_per_partition(addrs: &[&str]) -> std::collections::BTreeMap<i64, i64> {
    kv_table_rows(addrs, "DEFAULT.KV")
}

/// Rows of `table` per partition, as [`kv_per_partition`] counts them.
fn kv_table_rows(addrs: &[&str], table: &str) -> std::collections::BTreeMap<i64, i64> {
    eventually("every partition is led", || common::cluster::every_partition_led_by_a_live_host(addrs[0]));
    let mut out = std::collections::BTreeMap::new();
    for addr in addrs {
        for r in stats(addr, "TABLE").iter().filter(|r| r[5] == table) {
            let n = r[7].parse::<i64>().unwrap();
            let e = out.entry(r[4].parse::<i64>().unwrap()).or_insert(n);
            *e = (*e).max(n);
        }
    }
    out
}

/// The coordinator of a move of ranges dies at `failpoint` (prepared
/// everywhere; then before or after the ring's record in the metadata).
/// The next coordinator commits the move if and only if the metadata holds
/// its ring; either way no row is lost or found twice, every host routes by
/// the metadata's ring, and once the dead host rejoins every copy agrees.
fn coordinator_dies_moving(name: &str, failpoint: &str, committed: bool) {
    const ROWS: i64 = 300;
    let (dirs, mut hosts, c) = keyed_cluster(name, ROWS);
    let through = (c + 1) % 3;
    let other = (c + 2) % 3;
    let survivors = [hosts[through].client.as_str(), hosts[other].client.as_str()];
    let before = kv_per_partition(&survivors);
    assert_eq!(before.values().sum::<i64>(), ROWS, "{before:?}");
    common::cluster::arm(dirs[c].path(), failpoint);
    // Partition 0's whole slice of the ring to partition 2.
    let ring = joule_common::hashinator::Hashinator::even(3, 1).unwrap();
    let last = ring.ring()[1].0 - 1;
    let answer = connect(&hosts[through].client)
        .call("@MoveRange", vec![Value::Integer(i32::MIN as i64), Value::Integer(last as i64), Value::Integer(2)]);
    assert!(answer.is_err(), "the coordinator died before it answered: {answer:?}");
    let _ = hosts[c].child.wait();
    let decision = if committed { "committing it" } else { "rolling back" };
    common::cluster::wait_line(&hosts[through].stderr, decision);
    let survivors = [hosts[through].client.as_str(), hosts[other].client.as_str()];
    let after = kv_per_partition(&survivors);
    assert_eq!(after.values().sum::<i64>(), ROWS, "{after:?}");
    let on_0 = |m: &std::collections::BTreeMap<i64, i64>| m.get(&0).copied().unwrap_or(0);
    if committed {
        assert_eq!(on_0(&after), 0, "partition 0's rows moved: {after:?}");
    } else {
        assert_eq!(after, before, "nothing moved");
    }
    for h in [through, other] {
        assert_eq!(misplaced(&hosts[h].client), 0);
        assert_eq!(scalar(&hosts[h].client, "SELECT COUNT(*) FROM kv"), ROWS);
        assert_eq!(scalar(&hosts[h].client, "SELECT SUM(v) FROM kv"), ROWS * (ROWS - 1) / 2);
    }
    // Every key is found where the surviving hosts route it.
    for k in (0..ROWS).step_by(7) {
        let r = connect(&hosts[other].client).call("KV.select", vec![Value::Integer(k)]).expect("KV.select");
        assert_eq!(r.tables[0].rows.len(), 1, "key {k}");
    }
    common::cluster::disarm(dirs[c].path());
    hosts[c] = spawn(dirs[c].path(), &["--host-count", "3", "--kfactor", "1"]).ready();
    all_up_and_led(&hosts);
    let clients: Vec<String> = hosts.iter().map(|h| h.client.clone()).collect();
    eventually("every copy agrees", || replicas_agree(&clients, 2).is_ok());
    assert_eq!(misplaced(&clients[c]), 0);
    assert_eq!(scalar(&clients[c], "SELECT COUNT(*) FROM kv"), ROWS);
    // And the next move goes through.
    let r = connect(&clients[c])
        .call("@MoveRange", vec![Value::Integer(i32::MIN as i64), Value::Integer(last as i64), Value::Integer(1)])
        .expect("@MoveRange after the rejoin");
    assert_eq!(int(&r.tables[0].rows[0][5]), if committed { 3 } else { 2 }, "ring versions: {r:?}");
    assert_eq!(misplaced(&clients[through]), 0);
    replicas_agree(&clients, 2).unwrap();
}

#[test]
fn a_move_whose_coordinator_dies_before_the_metadata_has_its_ring_is_rolled_back() {
    coordinator_dies_moving("move-before-record", "coordinator-before-ring-recorded", false);
}

#[test]
fn a_move_whose_coordinator_dies_after_the_metadata_has_its_ring_is_committed() {
    coordinator_dies_moving("move-after-record", "coordinator-after-ring-recorded", true);
}

/// A move refused after its evictions (it carries more than one move
/// between hosts may: 64 MiB) leaves every copy as it was. The partitions
/// that only give rows were told to prepare right behind their evict round,
/// so their replicas held the evictions when the move failed: the rollback
/// reaches them too, and every copy still agrees. A move within the bound
/// then goes through (nothing was left in doubt).
#[test]
fn a_move_refused_after_its_prepared_evictions_leaves_every_copy_as_it_was() {
    const ROWS: i64 = 120;
    let dirs: Vec<TempDir> = (0..3).map(|i| TempDir::new(&format!("move-refused-{i}"))).collect();
    let hosts = common::cluster::form(&dirs, 1);
    all_up_and_led(&hosts);
    let ddl = "CREATE TABLE big (k BIGINT NOT NULL PRIMARY KEY, v VARCHAR(1048576) NOT NULL); \
               PARTITION TABLE big ON COLUMN k;";
    common::cluster::sql(&hosts[0].client, ddl, vec![]);
    for k in 0..ROWS {
        let insert = "INSERT INTO big VALUES (?, REPEAT('x', 1000000))";
        common::cluster::sql(&hosts[0].client, insert, vec![Value::Integer(k)]);
    }
    let clients: Vec<String> = hosts.iter().map(|h| h.client.clone()).collect();
    let addrs: Vec<&str> = clients.iter().map(String::as_str).collect();
    let before = kv_table_rows(&addrs, "DEFAULT.BIG");
    let given = before.get(&0).copied().unwrap_or(0) + before.get(&1).copied().unwrap_or(0);
    assert!(given * 1_000_000 > 64 << 20, "partitions 0 and 1 hold {given} rows of 1 MB: {before:?}");
    // Partitions 0 and 1 give their slices of the ring to partition 2.
    let ring = joule_common::hashinator::Hashinator::even(3, 1).unwrap();
    let first_of_2 = ring.ring()[2].0;
    let whole = vec![Value::Integer(i32::MIN as i64), Value::Integer(first_of_2 as i64 - 1), Value::Integer(2)];
    let refused = connect(&clients[1]).call("@MoveRange", whole).expect_err("a move of over 64 MiB");
    assert!(refused.to_string().contains("carries at most"), "{refused}");
    assert_eq!(kv_table_rows(&addrs, "DEFAULT.BIG"), before, "no row moved");
    eventually("every copy agrees", || replicas_agree(&clients, 2).is_ok());
    assert_eq!(scalar(&clients[2], "SELECT COUNT(*) FROM big"), ROWS);
    assert_eq!(scalar(&clients[0], "SELECT SUM(CHAR_LENGTH(v)) FROM big"), ROWS * 1_000_000);
    assert_eq!(misplaced(&clients[0]), 0);
    // Partition 0's slice alone is within the bound, and moves.
    let first_of_1 = ring.ring()[1].0;
    let part = vec![Value::Integer(i32::MIN as i64), Value::Integer(first_of_1 as i64 - 1), Value::Integer(2)];
    let r = connect(&clients[2]).call("@MoveRange", part).expect("a move of partition 0's slice");
    assert_eq!(int(&r.tables[0].rows[0][3]), before[&0], "{r:?}");
    let after = kv_table_rows(&addrs, "DEFAULT.BIG");
    assert_eq!(after.get(&0).copied().unwrap_or(0), 0, "{after:?}");
    assert_eq!(after.values().sum::<i64>(), ROWS, "{after:?}");
    assert_eq!(misplaced(&clients[1]), 0);
    eventually("every copy agrees after the move", || replicas_agree(&clients, 2).is_ok());
}

/// A move whose rows the taking partition refuses (a unique index without
/// the partition column is unique per partition only) fails on its admit
/// round. The taking site was told to prepare behind that round, so it
/// shipped the rows to its replica before running them: the replica fails
/// them too, holds the failure, and the rollback undoes it (it is not taken
/// for a copy that diverged). Nothing moves, every host stays up, every
/// copy agrees, the next move goes through, and every copy's log (with
/// the failed prepare and its rollback in it) replays after a restart of
/// the whole cluster.
#[test]
fn a_move_whose_admit_fails_on_a_cluster_changes_nothing_and_stops_no_host() {
    let dirs: Vec<TempDir> = (0..3).map(|i| TempDir::new(&format!("move-unique-{i}"))).collect();
    let logged = ["--command-log", "async"];
    let mut hosts = form_all(&dirs, 1, &logged);
    all_up_and_led(&hosts);
    let ddl = "CREATE TABLE u (k BIGINT NOT NULL, code INT NOT NULL, UNIQUE (code)); PARTITION TABLE u ON COLUMN k;";
    common::cluster::sql(&hosts[0].client, ddl, vec![]);
    let ring = joule_common::hashinator::Hashinator::even(3, 1).unwrap();
    let tok = |k: i64| joule_common::hashinator::token(&Value::Integer(k)).unwrap().unwrap();
    let on = |p: u32| (0..).find(|k| ring.partition_for_token(tok(*k)) == p).unwrap();
    let (a, b) = (on(0), on(1));
    for k in [a, b] {
        common::cluster::sql(&hosts[0].client, "INSERT INTO u VALUES (?, 7)", vec![Value::Integer(k)]);
    }
    let clients: Vec<String> = hosts.iter().map(|h| h.client.clone()).collect();
    let addrs: Vec<&str> = clients.iter().map(String::as_str).collect();
    let before = kv_table_rows(&addrs, "DEFAULT.U");
    let one = vec![Value::Integer(tok(b) as i64), Value::Integer(tok(b) as i64), Value::Integer(0)];
    let refused = connect(&clients[1]).call("@MoveRange", one).expect_err("code 7 twice on partition 0");
    assert_eq!(refused.code(), joule_common::ErrorCode::UniqueViolation, "{refused}");
    assert_eq!(kv_table_rows(&addrs, "DEFAULT.U"), before, "no row moved");
    for host in &mut hosts {
        assert!(host.child.try_wait().unwrap().is_none(), "a host stopped");
    }
    eventually("every copy agrees", || replicas_agree(&clients, 2).is_ok());
    assert_eq!(scalar(&clients[2], "SELECT COUNT(*) FROM u"), 2);
    // Key a's row moves to partition 2 (no code 7 there).
    let other = vec![Value::Integer(tok(a) as i64), Value::Integer(tok(a) as i64), Value::Integer(2)];
    let r = connect(&clients[0]).call("@MoveRange", other).expect("a move the index allows");
    assert_eq!(int(&r.tables[0].rows[0][3]), 1, "{r:?}");
    assert_eq!(misplaced(&clients[1]), 0);
    eventually("every copy agrees after the move", || replicas_agree(&clients, 2).is_ok());
    for host in &mut hosts {
        assert!(host.child.try_wait().unwrap().is_none(), "a host stopped");
        let _ = host.child.kill();
        let _ = host.child.wait();
    }
    drop(hosts);
    let args = ["--host-count", "3", "--kfactor", "1", logged[0], logged[1]];
    let starting: Vec<common::cluster::Starting> = dirs.iter().map(|d| spawn(d.path(), &args)).collect();
    let hosts: Vec<Host> = starting.into_iter().map(common::cluster::Starting::ready).collect();
    all_up_and_led(&hosts);
    let clients: Vec<String> = hosts.iter().map(|h| h.client.clone()).collect();
    eventually("every copy agrees after the restart", || replicas_agree(&clients, 2).is_ok());
    assert_eq!(scalar(&clients[1], "SELECT COUNT(*) FROM u"), 2);
    assert_eq!(misplaced(&clients[2]), 0);
}

/// Copies in `dir` whose copy log has a compacted base.
fn compacted_copies(dir: &TempDir) -> usize {
    let Ok(parts) = std::fs::read_dir(dir.path().join("copies")) else { return 0 };
    parts
        .filter_map(|p| std::fs::read_dir(p.ok()?.path()).ok())
        .map(|files| files.filter_map(|f| f.ok()?.file_name().into_string().ok()).any(|n| n.ends_with(".base")))
        .filter(|based| *based)
        .count()
}

/// A move, then enough writes that every copy log compacts (its base, a
/// frozen copy, carries the ring it was taken under), then writes to the
/// moved range on top; then every host killed at once and started again:
/// the copies come back from their logs with the moved rows where the
/// moved ring puts them, later writes replay against it, and the cluster
/// routes by the ring its metadata kept.
#[test]
fn moved_ranges_survive_a_whole_cluster_restart_from_compacted_copy_logs() {
    let config_dir = TempDir::new("crebalance-restart-config");
    let config = elastic_config(&config_dir, "throughput_mb = 0\n[command_log]\nsegment_mb = 1");
    let args =
        ["--host-count", "3", "--kfactor", "1", "--command-log", "async", "--heartbeat-timeout", "3000", "--config"];
    let args: Vec<&str> = args.iter().copied().chain([config.as_str()]).collect();
    let dirs: Vec<TempDir> = (0..3).map(|i| TempDir::new(&format!("crebalance-restart-{i}"))).collect();
    let mut hosts = form_all(&dirs, 1, &args[4..]);
    all_up_and_led(&hosts);
    let ddl = "CREATE TABLE blob (k BIGINT NOT NULL PRIMARY KEY, v VARCHAR(20000) NOT NULL); \
               PARTITION TABLE blob ON COLUMN k;";
    common::cluster::sql(&hosts[0].client, ddl, vec![]);
    let insert = |c: &mut SyncConnection, k: i64, v: &str| {
        c.call("@AdHoc", vec![Value::from("INSERT INTO blob VALUES (?, ?)"), Value::Integer(k), Value::from(v)])
            .unwrap_or_else(|e| panic!("key {k}: {e}"));
    };
    let mut c = connect(&hosts[1].client);
    for k in 0..60 {
        insert(&mut c, k, "before");
    }
    // Partition 0's slice of the ring to partition 2.
    let ring = joule_common::hashinator::Hashinator::even(3, 1).unwrap();
    let last = ring.ring()[1].0 - 1;
    let r = c
        .call("@MoveRange", vec![Value::Integer(i32::MIN as i64), Value::Integer(last as i64), Value::Integer(2)])
        .expect("@MoveRange");
    assert!(int(&r.tables[0].rows[0][3]) > 0, "rows moved: {r:?}");
    // About 3 MB of records per partition that owns tokens: their logs compact.
    let big = "x".repeat(10_000);
    for k in 1000..1600 {
        insert(&mut c, k, &big);
    }
    // (Partition 0 owns no token now and takes no write: its two copies'
    // logs stay small; the other four compact.)
    eventually("the written copies' logs compacted", || dirs.iter().map(compacted_copies).sum::<usize>() >= 4);
    // Then writes on top of the bases, in the moved range among others.
    for k in 2000..2060 {
        insert(&mut c, k, "after");
    }
    drop(c);
    for h in &mut hosts {
        let _ = h.child.kill();
        let _ = h.child.wait();
    }
    drop(hosts);
    let starting: Vec<common::cluster::Starting> = dirs.iter().map(|d| spawn(d.path(), &args)).collect();
    let hosts: Vec<Host> = starting.into_iter().map(common::cluster::Starting::ready).collect();
    all_up_and_led(&hosts);
    let clients: Vec<String> = hosts.iter().map(|h| h.client.clone()).collect();
    eventually("the copies agree", || replicas_agree(&clients, 2).is_ok());
    for c in &clients {
        assert_eq!(scalar(c, "SELECT COUNT(*) FROM blob"), 60 + 600 + 60, "through {c}");
        assert_eq!(misplaced(c), 0);
    }
    let survivors: Vec<&str> = clients.iter().map(String::as_str).collect();
    assert_eq!(
        kv_table_rows(&survivors, "DEFAULT.BLOB").get(&0).copied().unwrap_or(0),
        0,
        "partition 0 gave its slice up"
    );
    // The ring came back from the metadata: the next move is version 3.
    let r = connect(&clients[0])
        .call("@MoveRange", vec![Value::Integer(i32::MIN as i64), Value::Integer(last as i64), Value::Integer(0)])
        .expect("@MoveRange after the restart");
    assert_eq!(int(&r.tables[0].rows[0][5]), 3);
    assert_eq!(misplaced(&clients[2]), 0);
    eventually("the copies agree", || replicas_agree(&clients, 2).is_ok());
}
