//! Copies of partitions made on running hosts: real `joule` processes on
//! loopback. A copy added with `@AddCopy` is taken while writes go on
//! (none fails), ends identical to the others, follows the stream, leads
//! once the partition's leader is killed with `kill -9`, and is in the
//! copy logs a whole-cluster restart comes back from. A host of the
//! formation is removed (`joule cluster remove`) by making its copies
//! again on the hosts that stay. A copy on its way holds no write back,
//! and counts only once level with the stream. A pipelined writer whose
//! calls enter through one host sees them run in order while a host
//! leaves.

mod common;

use common::cluster::*;
use common::TempDir;
use joule_common::{ErrorCode, Value};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

/// Per partition (from `TOPO` on `addr`): its copies' hosts and its leader.
fn placement(addr: &str) -> Vec<(Vec<usize>, usize)> {
    let host = |s: &str| s.split(':').next().unwrap().parse::<usize>().unwrap();
    let topo = stats(addr, "TOPO");
    topo[..topo.len() - 1].iter().map(|r| (r[1].split(',').map(host).collect(), host(&r[2]))).collect()
}

/// Every copy `clients` report of each (partition, table) has the same
/// checksum: the number of copies of each partition.
fn copies_agree(clients: &[String]) -> BTreeMap<String, usize> {
    let mut seen: BTreeMap<(String, String), Vec<(String, String)>> = BTreeMap::new();
    for addr in clients {
        for r in stats(addr, "REPLICACHECKSUM") {
            seen.entry((r[3].clone(), r[5].clone())).or_default().push((r[1].clone(), r[6].clone()));
        }
    }
    let mut copies = BTreeMap::new();
    for ((partition, table), seen) in &seen {
        assert!(seen.iter().all(|(_, c)| *c == seen[0].1), "partition {partition} table {table}: {seen:?}");
        copies.insert(partition.clone(), seen.len());
    }
    copies
}

#[test]
fn a_copy_added_to_a_running_host_follows_the_stream_and_leads_after_a_failure() {
    let dirs: Vec<TempDir> = (0..3).map(|i| TempDir::new(&format!("copies-{i}"))).collect();
    let mut hosts = form(&dirs, 1);
    let ddl = "CREATE TABLE kv (k BIGINT NOT NULL PRIMARY KEY, v VARCHAR(40)); PARTITION TABLE kv ON COLUMN k; \
               CREATE TABLE colors (name VARCHAR(10) NOT NULL PRIMARY KEY);";
    sql(&hosts[0].client, ddl, vec![]);
    sql(&hosts[0].client, "INSERT INTO colors VALUES ('red')", vec![]);
    for k in 0..300i64 {
        let v = Value::from(format!("value {k}").as_str());
        sql(&hosts[k as usize % 3].client, "INSERT INTO kv VALUES (?, ?)", vec![Value::Integer(k), v]);
    }
    // A partition whose copy goes to the host holding none of it, chosen so
    // that the new copy is the one to lead once the leader dies: every host
    // leads one partition, and a tie goes to the lowest id.
    let before = placement(&hosts[0].client);
    let (p, (holders, leader)) = before
        .iter()
        .enumerate()
        .find(|(_, (h, l))| {
            let other = h.iter().find(|x| *x != l).unwrap();
            (0..3).find(|x| !h.contains(x)).unwrap() < *other
        })
        .expect("with three hosts, some partition's third host has the lowest id");
    let (holders, leader) = (holders.clone(), *leader);
    let taker = (0..3).find(|x| !holders.contains(x)).unwrap();
    let admin = |h: usize| connect(&hosts[h].admin);

    // Bad requests are refused with their reason.
    let call = |args: Vec<Value>| admin(taker).call("@AddCopy", args).unwrap_err();
    let e = call(vec![Value::Integer(p as i64), Value::Integer(leader as i64)]);
    assert!(e.to_string().contains("holds a copy of partition"), "{e}");
    let e = call(vec![Value::Integer(9), Value::Integer(taker as i64)]);
    assert!(e.to_string().contains("no partition 9"), "{e}");
    let e = call(vec![Value::from("zero"), Value::Integer(taker as i64)]);
    assert_eq!(e.code(), ErrorCode::DatatypeMismatch, "{e}");
    let e = call(vec![Value::Integer(p as i64)]);
    assert_eq!(e.code(), ErrorCode::WrongParameterCount, "{e}");

    // Writes go on, through every host, while the copy is taken.
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let (stop, clients) = (stop.clone(), hosts.iter().map(|h| h.client.clone()).collect::<Vec<_>>());
        std::thread::spawn(move || {
            let mut conns: Vec<_> = clients.iter().map(|c| connect(c)).collect();
            let mut k = 1000i64;
            while !stop.load(Ordering::SeqCst) || k < 1300 {
                let v = Value::from(format!("during {k}").as_str());
                let args = vec![Value::from("INSERT INTO kv VALUES (?, ?)"), Value::Integer(k), v];
                conns[k as usize % 3].call("@AdHoc", args).unwrap_or_else(|e| panic!("insert {k}: {e}"));
                k += 1;
            }
            k - 1000
        })
    };
    admin(leader).call("@AddCopy", vec![Value::Integer(p as i64), Value::Integer(taker as i64)]).expect("@AddCopy");
    eventually("the new copy is a replica on every host", || {
        hosts.iter().all(|h| placement(&h.client)[p].0.len() == 3 && placement(&h.client)[p].0.contains(&taker))
    });
    let line = wait_line(&hosts[taker].stderr, &format!("holds a copy of partition {p} from now on"));
    assert!(line.contains(&format!("taken from host {leader}")), "{line}");
    stop.store(true, Ordering::SeqCst);
    let during = writer.join().expect("no write failed while the copy was taken");
    let total = 300 + during;
    let clients: Vec<String> = hosts.iter().map(|h| h.client.clone()).collect();
    let copies = copies_agree(&clients);
    assert_eq!(copies[&p.to_string()], 3, "{copies:?}");
    assert!(copies.iter().filter(|(q, _)| **q != p.to_string()).all(|(_, n)| *n == 2), "{copies:?}");
    let again = admin(taker).call("@AddCopy", vec![Value::Integer(p as i64), Value::Integer(taker as i64)]);
    assert!(again.unwrap_err().to_string().contains("holds a copy"));

    // The partition's leader dies: the new copy leads, and has every write.
    let _ = hosts[leader].child.kill();
    let _ = hosts[leader].child.wait();
    let other = holders.iter().copied().find(|h| *h != leader).unwrap();
    eventually("the partition is led again", || {
        states(&hosts[taker].client)[leader].1 != "UP" && every_partition_led_by_a_live_host(&hosts[taker].client)
    });
    assert_eq!(placement(&hosts[taker].client)[p].1, taker, "the added copy leads");
    // (Refused as unavailable while the new leader settles its copies.)
    let count = settled_sql(&hosts[taker].client, "SELECT COUNT(*) FROM kv", vec![]);
    assert_eq!(count.tables[0].rows[0][0], Value::Integer(total));
    for k in 2000..2030i64 {
        sql(
            &hosts[[taker, other][k as usize % 2]].client,
            "INSERT INTO kv VALUES (?, 'after')",
            vec![Value::Integer(k)],
        );
    }
    assert_eq!(scalar(&hosts[other].client, "SELECT COUNT(*) FROM kv"), total + 30);
    assert_eq!(scalar(&hosts[other].client, "SELECT COUNT(*) FROM colors"), 1);
    let live = [hosts[taker].client.clone(), hosts[other].client.clone()];
    let copies = copies_agree(&live);
    assert_eq!(copies[&p.to_string()], 2, "the two live copies of partition {p} agree: {copies:?}");
    hosts.retain(|h| h.id as usize != leader);
}

/// A copy is sent beside the partition's stream: while it is whole on the
/// taking host but not level with the stream (held there by a failpoint on
/// the leader), writes to every partition, the copied one's too, go on and
/// the taker is no replica; once released, the batches shipped meanwhile
/// reach it in rounds, the leader says it is level, and only then is it
/// recorded, identical to the other copies.
#[test]
fn a_copy_whole_but_not_level_holds_no_write_back_and_is_no_replica() {
    let dirs: Vec<TempDir> = (0..3).map(|i| TempDir::new(&format!("copies-beside-{i}"))).collect();
    let hosts = form(&dirs, 1);
    sql(
        &hosts[0].client,
        "CREATE TABLE kv (k BIGINT NOT NULL PRIMARY KEY, v VARCHAR(40)); PARTITION TABLE kv ON COLUMN k;",
        vec![],
    );
    for k in 0..300i64 {
        let v = Value::from(format!("value {k}").as_str());
        sql(&hosts[k as usize % 3].client, "INSERT INTO kv VALUES (?, ?)", vec![Value::Integer(k), v]);
    }
    let (holders, leader) = placement(&hosts[0].client)[0].clone();
    let taker = (0..3).find(|x| !holders.contains(x)).unwrap();
    arm(dirs[leader].path(), "copy_beside_sent");

    let stop = Arc::new(AtomicBool::new(false));
    let written = Arc::new(std::sync::atomic::AtomicI64::new(0));
    let writer = {
        let (stop, written) = (stop.clone(), written.clone());
        let clients = hosts.iter().map(|h| h.client.clone()).collect::<Vec<_>>();
        std::thread::spawn(move || {
            let mut conns: Vec<_> = clients.iter().map(|c| connect(c)).collect();
            let mut k = 1000i64;
            while !stop.load(Ordering::SeqCst) {
                let v = Value::from(format!("during {k}").as_str());
                let args = vec![Value::from("INSERT INTO kv VALUES (?, ?)"), Value::Integer(k), v];
                conns[k as usize % 3].call("@AdHoc", args).unwrap_or_else(|e| panic!("insert {k}: {e}"));
                k += 1;
                written.store(k - 1000, Ordering::SeqCst);
            }
            k - 1000
        })
    };
    let mut admin = connect(&hosts[leader].admin);
    admin.call("@AddCopy", vec![Value::Integer(0), Value::Integer(taker as i64)]).expect("@AddCopy");
    wait_line(&hosts[leader].stderr, "failpoint copy_beside_sent");
    // Whole there, not level: writes go on, a third of them to partition 0
    // (were the copy in the stream, the first of those would wait for it),
    // and the taker, lacking them, is not recorded as a copy.
    let at = written.load(Ordering::SeqCst);
    let went_on = wait_until(std::time::Duration::from_secs(30), || written.load(Ordering::SeqCst) >= at + 150);
    assert!(went_on, "writes stalled while the copy was on its way: {at} -> {}", written.load(Ordering::SeqCst));
    assert!(!placement(&hosts[leader].client)[0].0.contains(&taker), "a copy not level is no replica");
    disarm(dirs[leader].path());

    let line = wait_line(&hosts[leader].stderr, &format!("host {taker}'s copy is level with the stream"));
    let meanwhile: u64 = field(&line, "sent beside it; ").parse().unwrap();
    let by_shipper: u64 = field(&line, "the last ").parse().unwrap();
    assert!(
        meanwhile > 16 && by_shipper <= 16,
        "the batches shipped meanwhile went in rounds beside the stream: {line}"
    );
    let line = wait_line(&hosts[taker].stderr, "holds a copy of partition 0 from now on");
    assert!(line.contains(&format!("taken from host {leader}")), "{line}");
    eventually("the new copy is a replica on every host", || {
        hosts.iter().all(|h| placement(&h.client)[0].0.len() == 3)
    });
    stop.store(true, Ordering::SeqCst);
    let total = 300 + writer.join().expect("no write failed while the copy was taken");
    let clients: Vec<String> = hosts.iter().map(|h| h.client.clone()).collect();
    let copies = copies_agree(&clients);
    assert_eq!(copies["0"], 3, "{copies:?}");
    // The new copy follows the stream.
    for k in 5000..5030i64 {
        sql(&hosts[k as usize % 3].client, "INSERT INTO kv VALUES (?, 'after')", vec![Value::Integer(k)]);
    }
    assert_eq!(copies_agree(&clients)["0"], 3);
    for h in &hosts {
        assert_eq!(scalar(&h.client, "SELECT COUNT(*) FROM kv"), total + 30);
    }
}

#[test]
fn an_added_copy_is_in_the_copy_logs_a_whole_cluster_restart_comes_back_from() {
    let args = ["--host-count", "3", "--kfactor", "1", "--command-log", "async", "--heartbeat-timeout", "3000"];
    let dirs: Vec<TempDir> = (0..3).map(|i| TempDir::new(&format!("copies-logged-{i}"))).collect();
    let mut hosts = form_all(&dirs, 1, &args[4..]);
    let ddl = "CREATE TABLE kv (k BIGINT NOT NULL PRIMARY KEY, v BIGINT NOT NULL); PARTITION TABLE kv ON COLUMN k;";
    sql(&hosts[0].client, ddl, vec![]);
    for k in 0..100i64 {
        sql(&hosts[k as usize % 3].client, "INSERT INTO kv VALUES (?, ?)", vec![Value::Integer(k), Value::Integer(k)]);
    }
    let (holders, _) = placement(&hosts[0].client)[0].clone();
    let taker = (0..3).find(|x| !holders.contains(x)).unwrap();
    connect(&hosts[taker].admin).call("@AddCopy", vec![Value::Integer(0), Value::Integer(taker as i64)]).unwrap();
    eventually("the new copy is a replica", || placement(&hosts[0].client)[0].0.contains(&taker));
    // After the copy: single-partition writes and a multi-partition one.
    for k in 100..150i64 {
        sql(&hosts[k as usize % 3].client, "INSERT INTO kv VALUES (?, ?)", vec![Value::Integer(k), Value::Integer(k)]);
    }
    sql(&hosts[1].client, "UPDATE kv SET v = v + 1", vec![]);
    let expected = (150, (0..150i64).sum::<i64>() + 150);

    // Every host killed at once and started again: each comes back from
    // its copy logs, the added copy included.
    for h in &mut hosts {
        let _ = h.child.kill();
        let _ = h.child.wait();
    }
    drop(hosts);
    let starting: Vec<Starting> = dirs.iter().map(|d| spawn(d.path(), &args)).collect();
    let hosts: Vec<Host> = starting.into_iter().map(Starting::ready).collect();
    eventually("every partition led", || every_partition_led_by_a_live_host(&hosts[0].client));
    for h in &hosts {
        let r = settled_sql(&h.client, "SELECT COUNT(*), SUM(v) FROM kv", vec![]);
        assert_eq!(r.tables[0].rows[0], vec![Value::Integer(expected.0), Value::Integer(expected.1)]);
    }
    let clients: Vec<String> = hosts.iter().map(|h| h.client.clone()).collect();
    let mut copies = BTreeMap::new();
    eventually("the copies agree, three of partition 0", || {
        copies = copies_agree(&clients);
        copies.get("0") == Some(&3)
    });
    assert!(copies.iter().filter(|(q, _)| q.as_str() != "0").all(|(_, n)| *n == 2), "{copies:?}");
}

#[test]
fn a_host_of_the_formation_is_removed_by_making_its_copies_again_on_the_others() {
    remove_host_0_under_writes(1);
}

#[test]
fn with_k0_a_removed_host_s_partitions_move_whole_and_keep_every_acknowledged_write() {
    remove_host_0_under_writes(0);
}

/// Three hosts formed with `k`; host 0 removed with `joule cluster remove`
/// while writes go on through the other two.
fn remove_host_0_under_writes(k: u32) {
    let dirs: Vec<TempDir> = (0..3).map(|i| TempDir::new(&format!("copies-remove-k{k}-{i}"))).collect();
    let mut hosts = form(&dirs, k);
    let ddl = "CREATE TABLE kv (k BIGINT NOT NULL PRIMARY KEY, v VARCHAR(40)); PARTITION TABLE kv ON COLUMN k; \
               CREATE TABLE colors (name VARCHAR(10) NOT NULL PRIMARY KEY);";
    sql(&hosts[0].client, ddl, vec![]);
    sql(&hosts[0].client, "INSERT INTO colors VALUES ('red')", vec![]);
    for k in 0..300i64 {
        sql(&hosts[k as usize % 3].client, "INSERT INTO kv VALUES (?, 'before')", vec![Value::Integer(k)]);
    }
    // Writes go on through the hosts that stay; each is acknowledged or
    // fails, and which is recorded.
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let (stop, clients) = (stop.clone(), [hosts[1].client.clone(), hosts[2].client.clone()]);
        std::thread::spawn(move || {
            let mut conns: Vec<_> = clients.iter().map(|c| connect(c)).collect();
            let (mut acknowledged, mut failed) = (Vec::new(), Vec::new());
            let mut k = 1000i64;
            while !stop.load(Ordering::SeqCst) {
                let args = vec![Value::from("INSERT INTO kv VALUES (?, 'during')"), Value::Integer(k)];
                match conns[k as usize % 2].call("@AdHoc", args) {
                    Ok(_) => acknowledged.push(k),
                    Err(e) => failed.push((k, e.to_string())),
                }
                k += 1;
            }
            (acknowledged, failed)
        })
    };
    std::thread::sleep(std::time::Duration::from_millis(300));
    let (ok, out, err) = cluster_remove(&hosts[1].admin, &["0"]);
    assert!(ok, "joule cluster remove 0: {out}\n{err}");
    assert!(out.contains("hosts [0] left the cluster"), "{out}");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    let exit = loop {
        if let Some(status) = hosts[0].child.try_wait().unwrap() {
            break status;
        }
        assert!(std::time::Instant::now() < deadline, "the removed host did not stop");
        std::thread::sleep(std::time::Duration::from_millis(100));
    };
    assert!(exit.success(), "the removed host stops cleanly: {exit:?}");
    // Everything it said (the channel ends with its output): it stopped
    // the threads serving partitions it held rather than waiting them out.
    let said: Vec<String> = hosts[0].stderr.iter().collect();
    assert!(said.iter().any(|l| l.contains("JouleDB stopped")), "its output to the end: {said:?}");
    let waited: Vec<&String> = said.iter().filter(|l| l.contains("did not finish within")).collect();
    assert!(waited.is_empty(), "the removed host waited for its own work at shutdown: {waited:?}");
    std::thread::sleep(std::time::Duration::from_millis(300));
    stop.store(true, Ordering::SeqCst);
    let (acknowledged, failed) = writer.join().unwrap();
    eprintln!("while host 0 left: {} writes acknowledged, failed: {failed:?}", acknowledged.len());
    assert!(acknowledged.len() > 10, "writes went on: {}", acknowledged.len());
    // Host 0 handed its partitions over drained, and the calls waiting on
    // it or on their new leaders went on: none failed.
    assert!(failed.is_empty(), "writes failed while host 0 left: {failed:?}");

    // The two hosts that stay hold k+1 copies of every partition, and
    // lead them all.
    let stay = [hosts[1].client.clone(), hosts[2].client.clone()];
    assert_eq!(states(&stay[0]), vec![(1, "UP".into()), (2, "UP".into())]);
    for (p, (copies, leader)) in placement(&stay[0]).into_iter().enumerate() {
        assert_eq!(copies.len(), k as usize + 1, "partition {p}");
        assert!(copies.iter().all(|h| *h == 1 || *h == 2), "partition {p}: {copies:?}");
        assert!(copies.contains(&leader), "partition {p}");
    }
    // Every acknowledged write is there, on both copies.
    let r = sql(&stay[0], "SELECT k FROM kv", vec![]);
    let keys: std::collections::BTreeSet<i64> = r.tables[0]
        .rows
        .iter()
        .map(|row| match row[0] {
            Value::Integer(k) => k,
            ref v => panic!("{v:?}"),
        })
        .collect();
    assert!((0..300).chain(acknowledged.iter().copied()).all(|k| keys.contains(&k)));
    assert!(keys.len() <= 300 + acknowledged.len() + failed.len());
    let copies = copies_agree(&stay);
    assert!(copies.values().all(|n| *n == k as usize + 1), "{copies:?}");
    assert_eq!(scalar(&stay[1], "SELECT COUNT(*) FROM colors"), 1);
    for k in 100_000..100_030i64 {
        sql(&stay[k as usize % 2], "INSERT INTO kv VALUES (?, 'after')", vec![Value::Integer(k)]);
    }
    assert_eq!(scalar(&stay[0], "SELECT COUNT(*) FROM kv"), keys.len() as i64 + 30);
    hosts.remove(0);
}

/// A pipelined writer whose calls all enter through one host that stays
/// sees each key's calls run in the order it sent them while host 0 hands
/// its partitions over and leaves: each call moves a key's counter from
/// `n` to `n + 1` only if it stands at `n`, so a call overtaken by the
/// next one for its key changes nothing and says so. Multi-partition
/// writes through another host go on meanwhile (host 0, their
/// coordinator, hands the coordination over drained): none fails, and
/// each acknowledged one counted once.
///
/// With `hold_forwarding`, host 1 holds the calls it forwards until host 0
/// has left the cluster: those queued for host 0 were never sent, and go
/// to the partitions' new leaders instead, ahead of the calls that came
/// after them.
fn calls_through_one_host_keep_their_order_while_host_0_leaves(k: u32, hold_forwarding: bool) {
    const KEYS: i64 = 24;
    const IN_FLIGHT: usize = 64;
    let dirs: Vec<TempDir> = (0..3).map(|i| TempDir::new(&format!("copies-order-k{k}-{i}"))).collect();
    let mut hosts = form(&dirs, k);
    let ddl = "CREATE TABLE ctr (k BIGINT NOT NULL PRIMARY KEY, n BIGINT NOT NULL); PARTITION TABLE ctr ON COLUMN k; \
               CREATE PROCEDURE Step PARTITION ON TABLE ctr COLUMN k AS UPDATE ctr SET n = n + 1 WHERE k = ? AND n = ?; \
               CREATE TABLE total (id BIGINT NOT NULL PRIMARY KEY, n BIGINT NOT NULL);";
    sql(&hosts[0].client, ddl, vec![]);
    for key in 0..KEYS {
        sql(&hosts[1].client, "INSERT INTO ctr VALUES (?, 0)", vec![Value::Integer(key)]);
    }
    sql(&hosts[1].client, "INSERT INTO total VALUES (0, 0)", vec![]);
    let stop = Arc::new(AtomicBool::new(false));
    // Multi-partition writes (a replicated table) through host 2 meanwhile:
    // host 0 coordinates them, and hands the coordination over drained.
    let mp_writer = {
        let (stop, entry) = (stop.clone(), hosts[2].client.clone());
        std::thread::spawn(move || {
            let mut c = connect(&entry);
            let (mut acknowledged, mut failed) = (0i64, Vec::new());
            while !stop.load(Ordering::SeqCst) {
                match c.call("@AdHoc", vec![Value::from("UPDATE total SET n = n + 1 WHERE id = 0")]) {
                    Ok(_) => acknowledged += 1,
                    Err(e) => failed.push(e.to_string()),
                }
            }
            (acknowledged, failed)
        })
    };
    let writer = {
        let (stop, entry) = (stop.clone(), hosts[1].client.clone());
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
            rt.block_on(async move {
                // One connection to host 1: every call enters there.
                let client = client_through(&entry).await;
                let permits = Arc::new(tokio::sync::Semaphore::new(IN_FLIGHT));
                let (tx, rx) = std::sync::mpsc::channel();
                let mut n = 0i64;
                while !stop.load(Ordering::SeqCst) {
                    for key in 0..KEYS {
                        let permit = permits.clone().acquire_owned().await.unwrap();
                        let tx = tx.clone();
                        let params = vec![Value::Integer(key), Value::Integer(n)];
                        let sent = client.call_with("Step", params, move |r| {
                            let changed = r.map(|r| r.tables[0].rows[0][0].clone()).map_err(|e| e.to_string());
                            let _ = tx.send((key, n, changed));
                            drop(permit);
                        });
                        sent.expect("the call goes out");
                    }
                    n += 1;
                }
                let _all = permits.acquire_many(IN_FLIGHT as u32).await.unwrap();
                drop(tx);
                (n, rx.into_iter().collect::<Vec<_>>())
            })
        })
    };
    std::thread::sleep(std::time::Duration::from_millis(500));
    if hold_forwarding {
        arm(dirs[1].path(), "forwarding_held");
    }
    let (ok, out, err) = cluster_remove(&hosts[1].admin, &["0"]);
    assert!(ok, "joule cluster remove 0: {out}\n{err}");
    if hold_forwarding {
        eventually("host 1 sees host 0 gone", || states(&hosts[1].client).iter().all(|(h, _)| *h != 0));
        disarm(dirs[1].path());
    }
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while hosts[0].child.try_wait().unwrap().is_none() {
        assert!(std::time::Instant::now() < deadline, "the removed host did not stop");
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    std::thread::sleep(std::time::Duration::from_millis(500));
    stop.store(true, Ordering::SeqCst);
    let (rounds, results) = writer.join().unwrap();
    let (mp_acknowledged, mp_failed) = mp_writer.join().unwrap();
    eprintln!("while host 0 left: {rounds} rounds of {KEYS} calls, {mp_acknowledged} multi-partition writes");
    assert!(mp_failed.is_empty(), "multi-partition writes failed while host 0 left: {mp_failed:?}");
    assert!(mp_acknowledged > 10, "multi-partition writes went on: {mp_acknowledged}");
    assert_eq!(scalar(&hosts[1].client, "SELECT n FROM total"), mp_acknowledged);
    assert!(rounds > 20, "calls went on: {rounds} rounds");
    let failed: Vec<_> = results.iter().filter(|(_, _, r)| r.is_err()).collect();
    assert!(failed.is_empty(), "calls failed while host 0 left: {failed:?}");
    let overtaken: Vec<_> = results.iter().filter(|(_, _, r)| *r != Ok(Value::Integer(1))).collect();
    assert!(overtaken.is_empty(), "calls ran out of the order they were sent in: {overtaken:?}");
    assert_eq!(results.len() as i64, rounds * KEYS);
    for key in 0..KEYS {
        let q = format!("SELECT n FROM ctr WHERE k = {key}");
        assert_eq!(scalar(&hosts[2].client, &q), rounds, "key {key}");
    }
    hosts.remove(0);
}

#[test]
fn calls_through_one_host_keep_their_order_while_a_k1_host_leaves() {
    calls_through_one_host_keep_their_order_while_host_0_leaves(1, false);
}

#[test]
fn calls_through_one_host_keep_their_order_while_a_k0_host_leaves() {
    calls_through_one_host_keep_their_order_while_host_0_leaves(0, false);
}

/// Calls a host forwarded to one that left before they were sent are not
/// refused: they go to the new leaders, in order.
#[test]
fn calls_queued_for_a_host_that_left_go_to_the_new_leaders_in_order() {
    calls_through_one_host_keep_their_order_while_host_0_leaves(0, true);
}

#[test]
fn a_removal_whose_copy_taker_dies_finishes_once_it_is_back() {
    let dirs: Vec<TempDir> = (0..3).map(|i| TempDir::new(&format!("copies-taker-dies-{i}"))).collect();
    let mut hosts = form(&dirs, 1);
    sql(&hosts[0].client, "CREATE TABLE kv (k BIGINT NOT NULL PRIMARY KEY); PARTITION TABLE kv ON COLUMN k;", vec![]);
    for k in 0..200i64 {
        settled_sql(&hosts[k as usize % 3].client, "INSERT INTO kv VALUES (?)", vec![Value::Integer(k)]);
    }
    // Host 2 dies once its copy of one of host 0's partitions is whole,
    // before the copy is recorded.
    std::fs::create_dir_all(dirs[2].path().join("failpoints")).unwrap();
    std::fs::write(dirs[2].path().join("failpoints").join("copy_loaded_not_recorded"), b"").unwrap();
    connect(&hosts[1].admin).call("@ElasticRemove", vec![Value::Integer(0)]).expect("the removal starts");
    assert!(hosts[2].child.wait().unwrap().code().is_none(), "host 2 dies at the failpoint");
    let line = wait_line(&hosts[2].stderr, "failpoint copy_loaded_not_recorded");
    assert!(line.contains("dies here"), "{line}");
    eventually("host 2 declared failed", || states(&hosts[1].client)[2].1 == "FAILED");
    // Writes go on meanwhile (every partition still has a copy up); host 0
    // does not leave while a partition lacks its copies on staying hosts.
    for k in 200..260i64 {
        // (Refused as unavailable while host 2's partitions' new leaders
        // settle their copies.)
        settled_sql(&hosts[1].client, "INSERT INTO kv VALUES (?)", vec![Value::Integer(k)]);
    }
    assert!(hosts[0].child.try_wait().unwrap().is_none(), "host 0 waits for its copies to be made");
    assert_eq!(states(&hosts[1].client).len(), 3);
    // Host 2 back (disarmed): it rejoins, takes the copy again, and host 0
    // leaves.
    std::fs::remove_file(dirs[2].path().join("failpoints").join("copy_loaded_not_recorded")).unwrap();
    hosts[2] = spawn(dirs[2].path(), &["--host-count", "3", "--kfactor", "1"]).ready();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while hosts[0].child.try_wait().unwrap().is_none() {
        assert!(std::time::Instant::now() < deadline, "host 0 did not leave");
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    let stay = [hosts[1].client.clone(), hosts[2].client.clone()];
    eventually("hosts 1 and 2 are the cluster", || states(&stay[0]).len() == 2);
    assert_eq!(states(&stay[0]), vec![(1, "UP".into()), (2, "UP".into())]);
    for h in &stay {
        assert_eq!(scalar(h, "SELECT COUNT(*) FROM kv"), 260);
    }
    let copies = copies_agree(&stay);
    assert!(copies.len() == 3 && copies.values().all(|n| *n == 2), "{copies:?}");
    hosts.remove(0);
}

/// Multi-partition calls that reach a leaving host while it hands the
/// coordination over are held there, in order, for the next coordinator;
/// if the host stops before that (SIGTERM), each gets an answer — refused,
/// nothing run — rather than a connection that closes on it.
#[test]
fn multi_partition_calls_held_by_a_leaving_host_are_answered_when_it_stops() {
    let dirs: Vec<TempDir> = (0..3).map(|i| TempDir::new(&format!("copies-held-mp-{i}"))).collect();
    let mut hosts = form(&dirs, 1);
    sql(&hosts[0].client, "CREATE TABLE total (id BIGINT NOT NULL PRIMARY KEY, n BIGINT NOT NULL);", vec![]);
    sql(&hosts[1].client, "INSERT INTO total VALUES (0, 0)", vec![]);
    // Host 0 coordinates; it stops just before its hand-over is recorded.
    arm(dirs[0].path(), "hand_over_not_recorded");
    let admin = hosts[1].admin.clone();
    let removal = std::thread::spawn(move || cluster_remove(&admin, &["0"]));
    wait_line(&hosts[0].stderr, "failpoint hand_over_not_recorded is armed");
    let (tx, rx) = std::sync::mpsc::channel();
    for _ in 0..3 {
        let (tx, entry) = (tx.clone(), hosts[0].client.clone());
        std::thread::spawn(move || {
            let r = connect(&entry).call("@AdHoc", vec![Value::from("UPDATE total SET n = n + 1 WHERE id = 0")]);
            let _ = tx.send(r.map(|_| ()).map_err(|e| (e.code(), e.to_string())));
        });
    }
    assert!(rx.recv_timeout(std::time::Duration::from_secs(1)).is_err(), "the calls are held, not answered");
    let pid = hosts[0].child.id().to_string();
    assert!(std::process::Command::new("kill").args(["-TERM", &pid]).status().unwrap().success());
    for _ in 0..3 {
        let answer = rx.recv_timeout(std::time::Duration::from_secs(20)).expect("a held call is answered");
        let (code, message) = answer.expect_err("held when the host stopped: refused");
        assert_eq!(code, ErrorCode::Unavailable, "{message}");
        assert!(message.contains("shutting down"), "{message}");
    }
    disarm(dirs[0].path());
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while hosts[0].child.try_wait().unwrap().is_none() {
        assert!(std::time::Instant::now() < deadline, "host 0 did not stop");
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    // Refused means not run: the total is untouched.
    assert_eq!(scalar(&hosts[1].client, "SELECT n FROM total WHERE id = 0"), 0);
    drop(removal);
    hosts.remove(0);
}

/// A call's latency, as `@Statistics LATENCY` gives it (and the auto-scaler
/// and a rebalance steer by it), runs until its answer is released: in a
/// cluster, once the partition's replicas have the write. A replica that
/// hangs holds the answers of its partitions' writes that long, and the
/// leader's figures show the wait (they showed the site's run alone).
#[test]
fn a_calls_latency_includes_the_wait_for_its_replicas() {
    let dirs: Vec<TempDir> = (0..2).map(|i| TempDir::new(&format!("released-{i}"))).collect();
    let hosts = form(&dirs, 1);
    let entry = hosts[0].client.clone();
    sql(&entry, "CREATE TABLE t (id BIGINT NOT NULL PRIMARY KEY); PARTITION TABLE t ON COLUMN id", vec![]);
    assert!(placement(&entry).iter().any(|(_, leader)| *leader == 0), "host 0 leads a partition");
    for id in 0..20i64 {
        sql(&entry, "INSERT INTO t VALUES (?)", vec![Value::Integer(id)]);
    }
    let max_micros = || stats(&entry, "LATENCY")[0].last().unwrap().parse::<u64>().unwrap();
    // (Read once: the next read gives the interval since.)
    max_micros();
    let pid = hosts[1].child.id() as libc::pid_t;
    // SAFETY: signalling a child process this test started.
    unsafe { libc::kill(pid, libc::SIGSTOP) };
    // Writes to every partition, through host 0: those host 0 leads run
    // there and wait for host 1's copies (the heartbeat timeout is 1 s).
    std::thread::scope(|s| {
        for id in 20..40i64 {
            let entry = &entry;
            s.spawn(move || sql(entry, "INSERT INTO t VALUES (?)", vec![Value::Integer(id)]));
        }
        std::thread::sleep(std::time::Duration::from_millis(500));
        // SAFETY: as above.
        unsafe { libc::kill(pid, libc::SIGCONT) };
    });
    assert_eq!(scalar(&entry, "SELECT COUNT(*) FROM t"), 40);
    let waited = max_micros();
    assert!(waited >= 300_000, "the largest latency since is {waited} µs, not the replica's wait");
}
