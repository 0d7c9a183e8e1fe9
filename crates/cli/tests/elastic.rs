//! Adding hosts to a running cluster of real `joule` processes. A 2-host
//! k = 0 cluster takes a third host started with `--add --join`: the new
//! host's partitions join the transaction order with the schema and the
//! replicated tables' rows, ranges of the ring move to them in the
//! background while writes go on, and afterwards every row is where the
//! ring says, none lost, none doubled, and calls keyed on the new
//! partitions run there. A 2-host k = 1 cluster under a voter load takes
//! two hosts at once with no failed vote and vote totals equal to the
//! votes accepted, every copy agreeing; an added host killed with
//! `kill -9` comes back with its copies. A host started with `--elastic`
//! grows to three hosts and goes back to two (`joule cluster remove`)
//! under a voter load, with no failed vote and every vote counted.

mod common;

use common::cluster::{
    all_up_and_led, cluster_remove, connect, eventually, form_all, http_get, loopback, misplaced, replicas_agree,
    scalar, spawn, states, stats, Host,
};
use common::voters::{setup, vote_totals, vote_until_stopped, Voters};
use common::{elastic_config, TempDir};
use joule_client::{Options, SyncConnection};
use joule_common::Value;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

/// Rows of table `name` on each partition, as the hosts at `clients`
/// report their copies.
fn rows_on_partitions(clients: &[String], name: &str) -> std::collections::BTreeMap<i64, i64> {
    let mut out = std::collections::BTreeMap::new();
    for c in clients {
        for r in stats(c, "TABLE").iter().filter(|r| r[5] == name) {
            out.insert(r[4].parse::<i64>().unwrap(), r[7].parse::<i64>().unwrap());
        }
    }
    out
}

const ROWS: i64 = 3000;

#[test]
fn a_host_added_to_a_running_cluster_joins_and_takes_ranges_under_load() {
    let dirs: Vec<TempDir> = (0..3).map(|i| TempDir::new(&format!("elastic-{i}"))).collect();
    let config_dir = TempDir::new("elastic-config");
    let config = elastic_config(&config_dir, "duration_ms = 20\nthroughput_mb = 0");
    let hosts = form_all(&dirs[..2], 0, &["--config", &config]);
    let clients: Vec<String> = hosts.iter().map(|h| h.client.clone()).collect();
    let mut c = connect(&clients[0]);
    c.execute(
        "CREATE TABLE kv (k BIGINT NOT NULL PRIMARY KEY, v BIGINT NOT NULL); PARTITION TABLE kv ON COLUMN k; \
         CREATE TABLE labels (id INT NOT NULL PRIMARY KEY, name VARCHAR(16)); \
         CREATE PROCEDURE Bump PARTITION ON TABLE kv COLUMN k AS UPDATE kv SET v = v + 1 WHERE k = ?; \
         CREATE PROCEDURE LabelOf PARTITION ON TABLE kv COLUMN k \
           AS SELECT labels.name FROM kv, labels WHERE kv.k = ? AND labels.id = kv.k % 7",
        vec![],
    )
    .expect("schema");
    for id in 0..7 {
        c.execute("INSERT INTO labels VALUES (?, ?)", vec![Value::Integer(id), Value::from(format!("label-{id}"))])
            .unwrap();
    }
    for k in 0..ROWS {
        c.execute("INSERT INTO kv VALUES (?, 0)", vec![Value::Integer(k)]).unwrap();
    }

    // Writers bump counters through both hosts the whole time.
    let stop = Arc::new(AtomicBool::new(false));
    let bumped = Arc::new(AtomicU64::new(0));
    let writers: Vec<_> = clients
        .iter()
        .enumerate()
        .map(|(w, addr)| {
            let (addr, stop, bumped) = (addr.clone(), stop.clone(), bumped.clone());
            std::thread::spawn(move || {
                let mut c = SyncConnection::connect(&addr, &Options::default()).unwrap();
                let mut k = w as i64;
                while !stop.load(Ordering::SeqCst) {
                    let r = c.call("Bump", vec![Value::Integer(k % ROWS)]);
                    assert!(r.is_ok(), "a write failed: {r:?}");
                    bumped.fetch_add(1, Ordering::SeqCst);
                    k += 7;
                }
            })
        })
        .collect();

    // The new host: admitted with two partitions of its own, which join.
    let join = loopback(&hosts[0].internal);
    let added = spawn(dirs[2].path(), &["--add", "--join", &join, "--config", &config]).ready();
    assert_eq!(added.id, 2);
    eventually("the new partitions join", || {
        http_get(&hosts[0].http, "/console/stats").contains("partitions 4..5 joined the cluster's transaction order")
    });
    let events = http_get(&hosts[1].http, "/console/stats");
    assert!(events.contains("was added to the cluster"), "{events}");
    // They hold the schema and the replicated rows before any range moves.
    let all: Vec<String> = vec![clients[0].clone(), clients[1].clone(), added.client.clone()];
    let labels = rows_on_partitions(&all, "DEFAULT.LABELS");
    assert_eq!(labels.len(), 6, "{labels:?}");
    assert!(labels.values().all(|n| *n == 7), "{labels:?}");

    // Ranges move to them, by themselves, while the writers go on.
    eventually("the rebalance is done", || stats(&clients[0], "REBALANCE").first().is_some_and(|r| r[3] == "DONE"));
    stop.store(true, Ordering::SeqCst);
    for w in writers {
        w.join().unwrap();
    }

    let placed = rows_on_partitions(&all, "DEFAULT.KV");
    assert_eq!(placed.values().sum::<i64>(), ROWS, "{placed:?}");
    assert!(placed[&4] > ROWS / 10 && placed[&5] > ROWS / 10, "the new partitions took rows: {placed:?}");
    assert_eq!(scalar(&added.client, "SELECT COUNT(*) FROM kv"), ROWS);
    assert_eq!(scalar(&clients[0], "SELECT SUM(v) FROM kv"), bumped.load(Ordering::SeqCst) as i64);
    assert_eq!(misplaced(&clients[1]), 0);
    // Calls keyed anywhere, through any host, find their row and the
    // replicated rows on its partition.
    for (i, k) in (0..ROWS).step_by(97).enumerate() {
        let mut c = connect(&all[i % 3]);
        let r = c.call("LabelOf", vec![Value::Integer(k)]).unwrap();
        assert_eq!(r.tables[0].rows, vec![vec![Value::from(format!("label-{}", k % 7))]], "key {k}");
    }
}

/// Once `hosts` are up and led: the voter schema, and voters (seeded with
/// `seed`) running through every host until stopped, their first votes in.
fn voting(hosts: &[Host], seed: u64) -> (Vec<String>, Voters) {
    all_up_and_led(hosts);
    let clients: Vec<String> = hosts.iter().map(|h| h.client.clone()).collect();
    setup(&clients[0]);
    let voters = vote_until_stopped(&clients, seed, false);
    eventually("votes come in", || vote_totals(&clients[0])[0] > 2000);
    (clients, voters)
}

#[test]
fn a_k1_cluster_takes_two_hosts_at_once_under_a_voter_load_without_a_failed_vote() {
    let dirs: Vec<TempDir> = (0..4).map(|i| TempDir::new(&format!("elastic-k1-{i}"))).collect();
    let config = TempDir::new("elastic-k1-config");
    let config = elastic_config(&config, "duration_ms = 5\nthroughput_mb = 0");
    let mut hosts = form_all(&dirs[..2], 1, &["--config", &config]);
    let (clients, voters) = voting(&hosts, 3);

    // k + 1 = 2 new hosts, started together: admitted together.
    let join = loopback(&hosts[0].internal);
    let add = ["--add", "--join", join.as_str(), "--kfactor", "1", "--config", config.as_str()];
    let starting: Vec<_> = dirs[2..].iter().map(|d| spawn(d.path(), &add)).collect();
    hosts.extend(starting.into_iter().map(|s| s.ready()));
    let mut ids: Vec<u64> = hosts[2..].iter().map(|h| h.id).collect();
    ids.sort_unstable();
    assert_eq!(ids, vec![2, 3]);
    // (The one started from `dirs[3]` is killed below.)
    let victim = hosts[3].id as usize;
    hosts.sort_by_key(|h| h.id);
    let all: Vec<String> = hosts.iter().map(|h| h.client.clone()).collect();
    let joined = common::cluster::wait_until(std::time::Duration::from_secs(30), || {
        http_get(&hosts[0].http, "/console/stats").contains("partitions 2..3 joined the cluster's transaction order")
    });
    if !joined {
        for h in &hosts {
            eprintln!("HOST {}: {:?}", h.id, h.stderr.try_iter().collect::<Vec<_>>());
        }
    }
    assert!(joined, "the new partitions join: {}", http_get(&hosts[0].http, "/console/stats"));
    let done = common::cluster::wait_until(std::time::Duration::from_secs(60), || {
        stats(&clients[0], "REBALANCE").first().is_some_and(|r| r[3] == "DONE")
    });
    if !done {
        for h in &hosts {
            eprintln!("HOST {}: {:?}", h.id, h.stderr.try_iter().collect::<Vec<_>>());
        }
    }
    assert!(done, "the rebalance after the join is done: {:?}", stats(&clients[0], "REBALANCE"));
    let moved: u64 = stats(&clients[0], "REBALANCE")[0][6].parse().unwrap();
    assert!(moved > 0, "rows moved to the new partitions");
    // Votes go on through the new hosts too.
    let more = vote_until_stopped(&all[2..], 4, false);
    let before = vote_totals(&all[0])[0];
    eventually("votes come in through the new hosts", || vote_totals(&all[2])[0] > before + 2000);
    let (accepted, unknown) = voters.finish();
    let (accepted_later, unknown_later) = more.finish();
    let accepted = accepted + accepted_later;
    assert_eq!(unknown + unknown_later, 0);
    for c in &all {
        assert_eq!(vote_totals(c), [accepted; 3], "every accepted vote counted once, as seen from {c}");
    }
    assert_eq!(misplaced(&all[3]), 0);
    let placed = rows_on_partitions(&all, "DEFAULT.VOTES");
    assert_eq!(placed.len(), 4, "{placed:?}");
    assert!(placed[&2] > 0 && placed[&3] > 0, "the new partitions took votes: {placed:?}");
    assert_eq!(replicas_agree(&all, 2).unwrap(), 4 * 5, "4 partitions, 5 tables and views, 2 copies each");

    // An added host killed and restarted rejoins with its copies.
    let _ = hosts[victim].child.kill();
    eventually("the added host is declared failed", || states(&all[0])[victim].1 != "UP");
    hosts[victim] = spawn(dirs[3].path(), &add).ready();
    all_up_and_led(&hosts);
    let all: Vec<String> = hosts.iter().map(|h| h.client.clone()).collect();
    eventually("every copy agrees", || replicas_agree(&all, 2).is_ok());
    assert_eq!(vote_totals(&all[victim]), [accepted; 3]);

    // Both added hosts leave again together (k + 1 = 2, holding every copy
    // of partitions 2 and 3): the metadata group loses two of its four
    // voters and keeps a quorum; the votes drain back to partitions 0..1.
    let more = vote_until_stopped(&all[..2], 5, false);
    eventually("votes come in", || vote_totals(&all[0])[0] > accepted + 1000);
    let (ok, out, err) = cluster_remove(&hosts[1].admin, &["2", "3"]);
    assert!(ok && out.contains("hosts [2, 3] left the cluster"), "joule cluster remove 2 3: {out}\n{err}");
    for h in &mut hosts[2..] {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
        let exit = loop {
            if let Some(status) = h.child.try_wait().unwrap() {
                break status;
            }
            assert!(std::time::Instant::now() < deadline, "removed host {} did not stop within 60 s", h.id);
            std::thread::sleep(std::time::Duration::from_millis(100));
        };
        assert!(exit.success(), "removed host {} exits cleanly: {exit:?}", h.id);
    }
    let (accepted_last, unknown_last) = more.finish();
    assert_eq!(unknown_last, 0);
    let accepted = accepted + accepted_last;
    assert_eq!(states(&all[0]), vec![(0, "UP".to_string()), (1, "UP".to_string())]);
    for c in &all[..2] {
        assert_eq!(vote_totals(c), [accepted; 3], "every accepted vote counted once, as seen from {c}");
    }
    assert_eq!(rows_on_partitions(&all[..2], "DEFAULT.VOTES").keys().copied().collect::<Vec<_>>(), vec![0, 1]);
    assert_eq!(replicas_agree(&all[..2], 2).unwrap(), 2 * 5, "2 partitions, 5 tables and views, 2 copies each");
    // The metadata group still commits with its two voters: a change to
    // the cluster goes through.
    let (ok, _, err) = cluster_remove(&hosts[1].admin, &["--cancel"]);
    assert!(!ok && err.contains("no hosts are being removed"), "{err}");
}

#[test]
fn a_cluster_grows_from_one_host_to_three_and_back_to_two_under_a_voter_load_without_a_failed_vote() {
    let dirs: Vec<TempDir> = (0..4).map(|i| TempDir::new(&format!("elastic-rm-{i}"))).collect();
    let config = TempDir::new("elastic-rm-config");
    let config = elastic_config(&config, "duration_ms = 5\nthroughput_mb = 0");
    // One host, started to grow: a metadata group of one.
    let mut hosts = form_all(&dirs[..1], 0, &["--elastic", "--config", &config]);
    setup(&hosts[0].client);
    let voters = vote_until_stopped(std::slice::from_ref(&hosts[0].client), 5, false);
    eventually("votes come in", || vote_totals(&hosts[0].client)[0] > 2000);

    // 1 → 2 → 3: each added host's partitions join and take ranges.
    let join = loopback(&hosts[0].internal);
    let add = ["--add", "--join", join.as_str(), "--config", config.as_str()];
    hosts.push(spawn(dirs[1].path(), &add).ready());
    assert_eq!(hosts[1].id, 1);
    eventually("the second host's partitions join", || {
        http_get(&hosts[0].http, "/console/stats").contains("partitions 2..3 joined the cluster's transaction order")
    });
    let clients: Vec<String> = hosts.iter().map(|h| h.client.clone()).collect();
    let more = vote_until_stopped(&clients[1..], 6, false);
    let mut added = spawn(dirs[2].path(), &add).ready();
    assert_eq!(added.id, 2);
    eventually("the third host's partitions join", || {
        http_get(&hosts[0].http, "/console/stats").contains("partitions 4..5 joined the cluster's transaction order")
    });
    let all = vec![clients[0].clone(), clients[1].clone(), added.client.clone()];
    eventually("ranges move to every added partition", || {
        let placed = rows_on_partitions(&all, "DEFAULT.VOTES");
        (2..6).all(|p| placed.get(&p).is_some_and(|n| *n > 0))
            && stats(&clients[0], "REBALANCE").first().is_some_and(|r| r[3] == "DONE")
    });

    // 3 → 2, the host added last leaving with its partitions.
    let e = connect(&hosts[1].admin).call("@ElasticRemove", vec![Value::from("x")]).unwrap_err().to_string();
    assert!(e.contains("takes host ids"), "{e}");
    let (ok, _, err) = cluster_remove(&hosts[1].admin, &["0", "1", "2"]);
    assert!(!ok && err.contains("cannot remove every host"), "{err}");
    let (ok, out, err) = cluster_remove(&hosts[1].admin, &["2"]);
    assert!(ok, "joule cluster remove 2: {out}\n{err}");
    assert!(out.contains("hosts [2] left the cluster"), "{out}");
    // The removed host shuts down by itself, cleanly.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    let exit = loop {
        if let Some(status) = added.child.try_wait().unwrap() {
            break status;
        }
        assert!(std::time::Instant::now() < deadline, "the removed host did not stop within 60 s");
        std::thread::sleep(std::time::Duration::from_millis(100));
    };
    assert!(exit.success(), "the removed host exits cleanly: {exit:?}");
    // (The console keeps the newest events; standard error has them all.)
    let said: Vec<String> = hosts[0].stderr.try_iter().collect();
    for line in
        ["hosts {2} are being removed", "was removed from the cluster", "partitions 4..5 left the transaction order"]
    {
        assert!(said.iter().any(|l| l.contains(line)), "{line}: {said:?}");
    }
    assert_eq!(states(&clients[1]), vec![(0, "UP".to_string()), (1, "UP".to_string())]);

    let (accepted, unknown) = voters.finish();
    let (accepted_later, unknown_later) = more.finish();
    let accepted = accepted + accepted_later;
    assert_eq!(unknown + unknown_later, 0, "no vote's outcome was left unknown");
    for c in &clients {
        assert_eq!(vote_totals(c), [accepted; 3], "every accepted vote counted once, as seen from {c}");
    }
    let placed = rows_on_partitions(&clients, "DEFAULT.VOTES");
    assert_eq!(placed.keys().copied().collect::<Vec<_>>(), vec![0, 1, 2, 3], "{placed:?}");
    assert_eq!(misplaced(&clients[0]), 0);

    // The cluster grows again; the removed host's id is not given again.
    let again = spawn(dirs[3].path(), &add).ready();
    assert_eq!(again.id, 3);
    // Its partitions join and take ranges (the events scroll by: the
    // votes on its partitions tell).
    eventually("the partitions added again take votes", || {
        let placed = rows_on_partitions(std::slice::from_ref(&again.client), "DEFAULT.VOTES");
        placed.get(&4).is_some_and(|n| *n > 0) && placed.get(&5).is_some_and(|n| *n > 0)
    });
    assert_eq!(vote_totals(&again.client), [accepted; 3]);
}

#[test]
fn a_removal_cancelled_while_it_drains_leaves_the_host_serving_with_nothing_lost() {
    let dirs: Vec<TempDir> = (0..2).map(|i| TempDir::new(&format!("elastic-cancel-{i}"))).collect();
    let config = TempDir::new("elastic-cancel-config");
    // 50 KB/s: the drain below (about 450 KB) takes about 9 s.
    let config = elastic_config(&config, "duration_ms = 5\nthroughput_mb = 0.05");
    let mut hosts = form_all(&dirs[..1], 0, &["--elastic", "--config", &config]);
    let join = loopback(&hosts[0].internal);
    hosts.push(spawn(dirs[1].path(), &["--add", "--join", &join, "--config", &config]).ready());
    eventually("the added host's partitions join", || {
        http_get(&hosts[0].http, "/console/stats").contains("partitions 2..3 joined the cluster's transaction order")
    });
    eventually("the rebalance after the join is done", || {
        stats(&hosts[0].client, "REBALANCE").first().is_some_and(|r| r[3] == "DONE")
    });
    let clients: Vec<String> = hosts.iter().map(|h| h.client.clone()).collect();
    let mut c = connect(&clients[0]);
    c.execute(
        "CREATE TABLE kv (k BIGINT NOT NULL PRIMARY KEY, v VARCHAR(400)); PARTITION TABLE kv ON COLUMN k",
        vec![],
    )
    .expect("schema");
    let value = "x".repeat(300);
    for k in 0..ROWS {
        c.execute("INSERT INTO kv VALUES (?, ?)", vec![Value::Integer(k), Value::from(value.as_str())]).unwrap();
    }
    let before = rows_on_partitions(&clients, "DEFAULT.KV");
    assert!(before[&2] + before[&3] > ROWS / 4, "{before:?}");

    let (ok, out, err) = cluster_remove(&hosts[0].admin, &["1", "--no-wait"]);
    assert!(ok && out.contains("removing hosts [1]"), "{out}\n{err}");
    eventually("the drain starts", || stats(&clients[0], "REBALANCE").first().is_some_and(|r| r[3] == "RUNNING"));
    let (ok, out, err) = cluster_remove(&hosts[0].admin, &["--cancel"]);
    assert!(ok && out.contains("the removal was cancelled"), "{out}\n{err}");
    // The drain job stops after its piece in flight, well before it ends.
    eventually("the drain stops", || stats(&clients[0], "REBALANCE").first().is_some_and(|r| r[3] != "RUNNING"));
    let job = stats(&clients[0], "REBALANCE").remove(0);
    assert_eq!(job[3], "STOPPED", "{job:?}");
    // Nothing is removing any more: a second cancel is refused, and the
    // host stays, serving its partitions.
    let (ok, _, err) = cluster_remove(&hosts[0].admin, &["--cancel"]);
    assert!(!ok && err.contains("no hosts are being removed"), "{err}");
    std::thread::sleep(std::time::Duration::from_secs(2));
    assert!(hosts[1].child.try_wait().unwrap().is_none(), "the host whose removal was cancelled keeps running");
    assert_eq!(states(&clients[1]), vec![(0, "UP".to_string()), (1, "UP".to_string())]);
    let after = rows_on_partitions(&clients, "DEFAULT.KV");
    assert_eq!(after.values().sum::<i64>(), ROWS, "{after:?}");
    assert!(after[&2] + after[&3] > 0, "the cancelled drain left rows on the host: {after:?}");
    assert!(after[&2] + after[&3] < before[&2] + before[&3], "some rows had drained: {before:?} {after:?}");
    for addr in &clients {
        assert_eq!(scalar(addr, "SELECT COUNT(*) FROM kv"), ROWS);
    }
    assert_eq!(misplaced(&clients[1]), 0);
    // Writes keyed anywhere land, through either host.
    for (i, k) in (0..ROWS).step_by(101).enumerate() {
        let r = connect(&clients[i % 2]).execute("UPDATE kv SET v = 'y' WHERE k = ?", vec![Value::Integer(k)]).unwrap();
        assert_eq!(r.tables[0].rows[0][0], Value::Integer(1), "key {k}");
    }
    // The host can be asked to leave again.
    let (ok, out, err) = cluster_remove(&hosts[0].admin, &["1", "--no-wait"]);
    assert!(ok && out.contains("removing hosts [1]"), "{out}\n{err}");
}

#[test]
fn a_join_whose_new_host_dies_first_is_given_up_and_the_cluster_grows_again() {
    let dirs: Vec<TempDir> = (0..4).map(|i| TempDir::new(&format!("elastic-abandon-{i}"))).collect();
    let hosts = form_all(&dirs[..2], 0, &[]);
    let (clients, voters) = voting(&hosts, 8);

    // The new host is admitted, then dies as its partitions are brought in.
    let join = loopback(&hosts[0].internal);
    let add = ["--add", "--join", join.as_str()];
    common::cluster::arm(dirs[2].path(), "partition-joining");
    let mut doomed = spawn(dirs[2].path(), &add);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while doomed.child.try_wait().unwrap().is_none() {
        assert!(std::time::Instant::now() < deadline, "the new host did not die at its failpoint");
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    // Declared failed, its join is given up: the cluster is as before.
    eventually("the join is given up", || {
        http_get(&hosts[0].http, "/console/stats").contains("the join of hosts {2} was given up")
    });
    assert_eq!(states(&clients[1]), vec![(0, "UP".to_string()), (1, "UP".to_string())]);
    assert_eq!(rows_on_partitions(&clients, "DEFAULT.VOTES").keys().copied().collect::<Vec<_>>(), vec![0, 1, 2, 3]);

    // Another host joins: a new id, partitions 4..5 again, ranges move.
    let added = spawn(dirs[3].path(), &add).ready();
    assert_eq!(added.id, 3, "the given-up host's id is not given again");
    let all = vec![clients[0].clone(), clients[1].clone(), added.client.clone()];
    eventually("the new partitions take votes and the rebalance ends", || {
        let placed = rows_on_partitions(&all, "DEFAULT.VOTES");
        (4..6).all(|p| placed.get(&p).is_some_and(|n| *n > 0))
            && stats(&clients[0], "REBALANCE").first().is_some_and(|r| r[3] == "DONE")
    });
    let (accepted, unknown) = voters.finish();
    assert_eq!(unknown, 0, "no vote's outcome was left unknown");
    for c in &all {
        assert_eq!(vote_totals(c), [accepted; 3], "every accepted vote counted once, as seen from {c}");
    }
    assert_eq!(misplaced(&all[2]), 0);
}

/// A host of another build (the failpoint `data-protocol-next`: it speaks
/// the next data-plane protocol) is refused before it becomes a member,
/// whether it joins a cluster being formed or is added to a running one,
/// and the refusal names both versions; started again as the cluster's
/// build, it joins (the refused start left a data directory behind, which
/// must not be taken for a member's: such a host once tried to recover
/// copies it never had).
#[test]
fn a_host_of_another_build_is_refused_when_it_joins_or_is_added() {
    let dirs: Vec<TempDir> = (0..3).map(|i| TempDir::new(&format!("elastic-build-{i}"))).collect();
    // Both ways end the same: the host stops, saying why.
    let refused = |dir: &std::path::Path, args: &[&str]| -> String {
        common::cluster::arm(dir, "data-protocol-next");
        let mut newer = spawn(dir, args);
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
        while newer.child.try_wait().unwrap().is_none() {
            assert!(std::time::Instant::now() < deadline, "a host of another build kept running");
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        assert!(!newer.child.wait().unwrap().success());
        common::cluster::disarm(dir);
        newer.stderr.iter().collect::<Vec<_>>().join("\n")
    };
    let protocol = |said: &str| {
        let at = said.find("data-plane protocol ").unwrap_or_else(|| panic!("no protocol named:\n{said}"));
        said[at..].split_whitespace().nth(2).unwrap().parse::<u16>().unwrap()
    };

    // Formation: the joiner of a 2-host cluster.
    let first = spawn(dirs[0].path(), &["--host-count", "2", "--kfactor", "0"]);
    let join = format!("127.0.0.1:{}", common::cluster::forming_port(&first));
    let said = refused(dirs[1].path(), &["--host-count", "2", "--kfactor", "0", "--join", &join]);
    assert!(said.contains("did not let this host join: the joining host cannot join"), "{said}");
    let ours = protocol(&said) - 1;
    assert!(said.contains(&format!("protocol {} and this cluster {ours}", ours + 1)), "{said}");
    let second = spawn(dirs[1].path(), &["--host-count", "2", "--kfactor", "0", "--join", &join]);
    let hosts = [first.ready(), second.ready()];
    all_up_and_led(&hosts);

    // Admission: a third host added to the running cluster.
    let join = loopback(&hosts[0].internal);
    let said = refused(dirs[2].path(), &["--add", "--join", &join, "--kfactor", "0"]);
    assert!(said.contains("the new host cannot be added"), "{said}");
    assert!(said.contains(&format!("protocol {} and this cluster {ours}", ours + 1)), "{said}");
    assert_eq!(states(&hosts[0].client).len(), 2, "the refused host became a member");
    let added = spawn(dirs[2].path(), &["--add", "--join", &join, "--kfactor", "0"]).ready();
    assert_eq!(added.id, 2);
    eventually("the added host is up", || states(&hosts[0].client).iter().all(|(_, s)| s == "UP"));
}
