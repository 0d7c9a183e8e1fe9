//! A 3-host k=1 cluster of real `joule` processes on this machine:
//! failover and rejoin times.
//!
//! `cargo bench -p joule-cli --bench cluster`
//!
//! 1. **Failover**: one client writes to a key of a partition the victim
//!    leads, through another host, as fast as it can; the victim gets
//!    `kill -9`; measured from the kill to the first write on that
//!    partition that succeeds. Repeated `JOULE_BENCH_FAILOVERS` times
//!    (default 5), the victim started again and rejoined in between.
//! 2. **Rejoin**: `JOULE_REJOIN_MB` MB (default 1024) of rows are loaded,
//!    a host is killed and started again, and the time from its start to
//!    its "rejoined" line is reported (the host's own figure for loading
//!    its copies is printed too) — while a client keeps writing.
//! 3. **Whole-cluster restart**: with those rows loaded, every host gets
//!    `kill -9`; all three are started again at once, and the time from
//!    their start until every host is up and serves is reported, with each
//!    host's own figure for replaying its copy logs.
//!
//! The hosts keep copy logs (`--command-log async`, the default).

#[path = "../tests/common/mod.rs"]
mod common;

use common::cluster::*;
use common::TempDir;
use joule_client::{Options, SyncConnection};
use joule_common::Value;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

fn main() {
    let dirs: Vec<TempDir> = (0..3).map(|i| TempDir::new(&format!("bench-cluster-{i}"))).collect();
    let mut hosts = form_all(&dirs, 1, &ARGS[4..]);
    sql(
        &hosts[0].client,
        "CREATE TABLE kv (k BIGINT NOT NULL PRIMARY KEY, v VARCHAR(1000) NOT NULL); PARTITION TABLE kv ON COLUMN k;",
        vec![],
    );
    failover(&dirs, &mut hosts);
    rejoin(&dirs, &mut hosts);
    whole_restart(&dirs, hosts);
}

const ARGS: [&str; 6] = ["--host-count", "3", "--kfactor", "1", "--command-log", "async"];

fn whole_restart(dirs: &[TempDir], mut hosts: Vec<Host>) {
    let count = |addr: &str| -> i64 {
        match &sql(addr, "SELECT COUNT(*) FROM kv", vec![]).tables[0].rows[0][0] {
            Value::Integer(n) => *n,
            other => panic!("{other:?}"),
        }
    };
    let before = count(&hosts[0].client);
    let logs: u64 = dirs.iter().map(|d| dir_bytes(&d.path().join("copies"))).sum();
    for h in &mut hosts {
        let _ = h.child.kill();
        let _ = h.child.wait();
    }
    drop(hosts);
    let started = Instant::now();
    let starting: Vec<Starting> = dirs.iter().map(|d| spawn(d.path(), &ARGS)).collect();
    let mut said = Vec::new();
    for s in &starting {
        said.push(wait_line(&s.stderr, "recovered the copies of"));
    }
    let hosts: Vec<Host> = starting.into_iter().map(Starting::ready).collect();
    all_up_and_led(&hosts);
    let mut served = None;
    while served.is_none() {
        served = match connect(&hosts[1].client).call("@AdHoc", vec![Value::from("SELECT COUNT(*) FROM kv")]) {
            Ok(r) => Some(r),
            Err(_) if started.elapsed() < Duration::from_secs(600) => {
                std::thread::sleep(Duration::from_millis(20));
                None
            }
            Err(e) => panic!("no answer after the restart: {e}"),
        };
    }
    let took = started.elapsed();
    let after = count(&hosts[2].client);
    assert_eq!(after, before, "rows lost in the whole-cluster restart");
    println!(
        "whole-cluster restart ({:.0} MB of copy logs on the three hosts): {took:.1?} from start to serving; {}",
        logs as f64 / 1e6,
        said.iter().map(|l| l.trim_start_matches("joule: cluster: ")).collect::<Vec<_>>().join("; ")
    );
    let clients: Vec<String> = hosts.iter().map(|h| h.client.clone()).collect();
    match replicas_agree(&clients, 2) {
        Ok(n) => println!("after the restart every partition's copies agree ({n} partition tables)"),
        Err(why) => panic!("copies differ after the restart: {why}"),
    }
}

/// Bytes in the files under `dir`.
fn dir_bytes(dir: &std::path::Path) -> u64 {
    std::fs::read_dir(dir).map_or(0, |entries| {
        entries
            .filter_map(|e| e.ok())
            .map(|e| match e.file_type() {
                Ok(t) if t.is_dir() => dir_bytes(&e.path()),
                _ => e.metadata().map_or(0, |m| m.len()),
            })
            .sum()
    })
}

fn failover(dirs: &[TempDir], hosts: &mut [Host]) {
    let rounds = env_or("JOULE_BENCH_FAILOVERS", 5);
    let mut times = Vec::new();
    for round in 0..rounds {
        let victim = (round % 3) as usize;
        let via = hosts[(victim + 1) % 3].client.clone();
        // A key whose partition the victim leads.
        let topo = stats(&via, "TOPO");
        let led: Vec<usize> = topo[..topo.len() - 1]
            .iter()
            .filter(|r| r[2].split(':').next() == Some(&victim.to_string()))
            .map(|r| r[0].parse().unwrap())
            .collect();
        let key = (0..10_000i64)
            .find(|k| led.contains(&(partition_of(*k, topo.len() - 1) as usize)))
            .expect("a key on a partition the victim leads");
        let mut c = SyncConnection::connect(&via, &Options::default()).expect("connects");
        let write = |c: &mut SyncConnection| {
            c.call("@AdHoc", vec![Value::from("UPSERT INTO kv VALUES (?, 'x')"), Value::Integer(key)]).is_ok()
        };
        assert!(write(&mut c), "writes before the kill");
        let _ = hosts[victim].child.kill();
        let killed = Instant::now();
        let _ = hosts[victim].child.wait();
        loop {
            if write(&mut c) {
                break;
            }
            if killed.elapsed() > Duration::from_secs(30) {
                panic!("no write succeeded within 30 s of the kill");
            }
        }
        let took = killed.elapsed();
        println!("failover {round}: host {victim} killed; first write on its partition after {took:.2?}");
        times.push(took);
        hosts[victim] = spawn(dirs[victim].path(), &ARGS).ready();
        eventually("every host up", || states(&via).iter().all(|(_, s)| s == "UP"));
    }
    times.sort();
    if times.is_empty() {
        return;
    }
    println!(
        "failover (kill -9 to the first write on the partition; default 1 s heartbeat timeout): median {:.2?}, worst {:.2?} over {} kills",
        times[times.len() / 2],
        times[times.len() - 1],
        times.len()
    );
}

/// The partition a BIGINT key hashes to with `partitions` partitions.
fn partition_of(key: i64, partitions: usize) -> u32 {
    joule_txn::Hashinator::even(partitions as u32, 1)
        .and_then(|h| h.partition_for(&Value::Integer(key)))
        .expect("hashes")
}

fn rejoin(dirs: &[TempDir], hosts: &mut [Host]) {
    let mb = env_or("JOULE_REJOIN_MB", 1024);
    let value = "v".repeat(1000);
    let rows = (mb << 20) / 1024;
    let started = Instant::now();
    let next = Arc::new(AtomicU64::new(0));
    let loaders: Vec<_> = (0..3)
        .map(|t| {
            let (addr, value, next) = (hosts[t].client.clone(), value.clone(), next.clone());
            std::thread::spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
                rt.block_on(async {
                    let client =
                        joule_client::Client::connect(&[addr.as_str()], Options::default()).await.expect("connects");
                    let mut pending = tokio::task::JoinSet::new();
                    loop {
                        let k = next.fetch_add(1, Ordering::Relaxed);
                        if k >= rows {
                            break;
                        }
                        let (c, v) = (client.clone(), value.clone());
                        pending.spawn(async move {
                            c.call("KV.upsert", vec![Value::Integer(k as i64), Value::from(v.as_str())]).await
                        });
                        while pending.len() >= 256 {
                            if let Some(r) = pending.join_next().await {
                                r.expect("task").expect("loads");
                            }
                        }
                    }
                    while let Some(r) = pending.join_next().await {
                        r.expect("task").expect("loads");
                    }
                });
            })
        })
        .collect();
    for l in loaders {
        l.join().expect("loader");
    }
    println!("loaded {rows} rows of 1 KB ({mb} MB) in {:.1?}", started.elapsed());
    let victim = 2;
    let _ = hosts[victim].child.kill();
    let _ = hosts[victim].child.wait();
    let watcher = hosts[0].client.clone();
    eventually("the victim declared failed", || states(&watcher)[victim].1 == "FAILED");
    // Writes go on during the rejoin.
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let (addr, stop) = (hosts[0].client.clone(), stop.clone());
        std::thread::spawn(move || {
            let mut c = SyncConnection::connect(&addr, &Options::default()).expect("connects");
            let mut n = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let k = (n % 100_000) as i64;
                if c.call("@AdHoc", vec![Value::from("UPSERT INTO kv VALUES (?, 'during')"), Value::Integer(k)]).is_ok()
                {
                    n += 1;
                }
            }
            n
        })
    };
    let restarted = Instant::now();
    let again = spawn(dirs[victim].path(), &ARGS);
    let said = wait_line(&again.stderr, "rejoined: copies of");
    let took = restarted.elapsed();
    hosts[victim] = again.ready();
    stop.store(true, Ordering::Relaxed);
    let writes = writer.join().expect("writer");
    println!("rejoin of {mb} MB: {took:.1?} from start to rejoined ({said}); {writes} writes acknowledged meanwhile");
    let clients: Vec<String> = hosts.iter().map(|h| h.client.clone()).collect();
    match replicas_agree(&clients, 2) {
        Ok(n) => println!("after the rejoin every partition's copies agree ({n} partition tables)"),
        Err(why) => panic!("copies differ after the rejoin: {why}"),
    }
}
