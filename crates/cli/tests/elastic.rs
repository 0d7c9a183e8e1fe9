//! Adding a host to a running cluster of real `joule` processes: a 2-host
//! k = 0 cluster takes a third host started with `--add --join`; the new
//! host's partitions join the transaction order with the schema and the
//! replicated tables' rows, `@Rebalance` gives them ranges of the ring
//! while writes go on, and afterwards every row is where the ring says,
//! none lost, none doubled, and calls keyed on the new partitions run
//! there.

mod common;

use common::cluster::{connect, eventually, form_all, http_get, spawn, stats};
use common::TempDir;
use joule_client::{Options, SyncConnection};
use joule_common::Value;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

fn int(v: &Value) -> i64 {
    match v {
        Value::Integer(i) => *i,
        v => panic!("not an integer: {v:?}"),
    }
}

fn scalar(addr: &str, sql: &str) -> i64 {
    let r = connect(addr).execute(sql, vec![]).unwrap_or_else(|e| panic!("{sql}: {e}"));
    int(&r.tables[0].rows[0][0])
}

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
    std::fs::create_dir_all(config_dir.path()).unwrap();
    let config = config_dir.path().join("elastic.toml");
    std::fs::write(&config, "[elastic]\nduration_ms = 20\nthroughput_mb = 0\n").unwrap();
    let config = config.to_str().unwrap().to_string();
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
    let join = format!("127.0.0.1:{}", hosts[0].internal.rsplit(':').next().unwrap());
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

    // Ranges move to them while the writers go on.
    let mut admin = SyncConnection::connect(&hosts[1].admin, &Options::default()).unwrap();
    admin.call("@Rebalance", vec![]).expect("@Rebalance starts");
    eventually("the rebalance is done", || stats(&clients[1], "REBALANCE").first().is_some_and(|r| r[3] == "DONE"));
    stop.store(true, Ordering::SeqCst);
    for w in writers {
        w.join().unwrap();
    }

    let placed = rows_on_partitions(&all, "DEFAULT.KV");
    assert_eq!(placed.values().sum::<i64>(), ROWS, "{placed:?}");
    assert!(placed[&4] > ROWS / 10 && placed[&5] > ROWS / 10, "the new partitions took rows: {placed:?}");
    assert_eq!(scalar(&added.client, "SELECT COUNT(*) FROM kv"), ROWS);
    assert_eq!(scalar(&clients[0], "SELECT SUM(v) FROM kv"), bumped.load(Ordering::SeqCst) as i64);
    let misplaced: i64 = connect(&clients[1]).call("@ValidatePartitioning", vec![]).unwrap().tables[0]
        .rows
        .iter()
        .map(|r| int(&r[2]))
        .sum();
    assert_eq!(misplaced, 0);
    // Calls keyed anywhere, through any host, find their row and the
    // replicated rows on its partition.
    for (i, k) in (0..ROWS).step_by(97).enumerate() {
        let mut c = connect(&all[i % 3]);
        let r = c.call("LabelOf", vec![Value::Integer(k)]).unwrap();
        assert_eq!(r.tables[0].rows, vec![vec![Value::from(format!("label-{}", k % 7))]], "key {k}");
    }
}
