//! Durability throughput, in process, on real files:
//!
//! 1. snapshot save: a table of `JOULE_BENCH_ROWS` rows (default 2,000,000)
//!    on 2 partitions, saved blocking; MB/s and the longest site pause;
//! 2. then `JOULE_BENCH_TXNS` logged single-partition updates (default
//!    500,000) with the asynchronous log;
//! 3. recovery of that directory: snapshot rows loaded per second, logged
//!    transactions replayed per second.
//!
//! `cargo bench -p joule-durability --bench durability`. Figures go to
//! docs/performance.md.

use joule_common::Value;
use joule_durability::manager::{SaveRequest, Snapshots};
use joule_durability::node::{AttachableLog, DataDir};
use joule_durability::recovery::recover_node;
use joule_durability::{CommandLogWriter, LogConfig, LogMode};
use joule_txn::{Host, HostConfig, Response, ResponseSink};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

const SITES: usize = 2;

fn env(name: &str, default: u64) -> u64 {
    std::env::var(name).ok().and_then(|s| s.parse().ok()).unwrap_or(default)
}

struct Count(AtomicU64, AtomicU64);

impl ResponseSink for Count {
    fn deliver(&self, _: u64, r: Response) {
        if r.error.is_some() && self.1.fetch_add(1, Ordering::Relaxed) == 0 {
            eprintln!("failure: {:?}", r.error);
        }
        self.0.fetch_add(1, Ordering::Release);
    }
}

struct Wait(mpsc::SyncSender<Response>);

impl ResponseSink for Wait {
    fn deliver(&self, _: u64, r: Response) {
        let _ = self.0.send(r);
    }
}

fn start_host(log: &Arc<AttachableLog>, resume_after: Option<joule_txn::TxnIds>) -> joule_common::Result<Host> {
    let command_log: Arc<dyn joule_txn::logging::CommandLog> = log.clone();
    Host::start(HostConfig {
        sites_per_host: SITES,
        command_log: Some(command_log),
        resume_after,
        ..Default::default()
    })
}

fn main() {
    let rows = env("JOULE_BENCH_ROWS", 2_000_000) as i64;
    let txns = env("JOULE_BENCH_TXNS", 500_000) as i64;
    let root = std::env::temp_dir().join(format!("joule-durability-bench-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&root);
    let data = DataDir::new(&root);
    data.open(SITES as u32).unwrap();
    let log = Arc::new(AttachableLog::new());
    let host = start_host(&log, None).unwrap();
    let mut client = host.client();
    let r = client.adhoc(
        "CREATE TABLE kv (k BIGINT NOT NULL PRIMARY KEY, v VARCHAR(64) NOT NULL, n BIGINT NOT NULL); \
         PARTITION TABLE kv ON COLUMN k",
        vec![],
    );
    assert!(r.error.is_none(), "{r:?}");
    let t = Instant::now();
    for chunk in (0..rows).collect::<Vec<_>>().chunks(100_000) {
        let batch = chunk
            .iter()
            .map(|&k| {
                vec![
                    Value::Integer(k),
                    Value::String(format!("value number {k:>12} of the bench")),
                    Value::Integer(k * 3),
                ]
            })
            .collect();
        let r = client.load_rows(vec![("KV".to_string(), batch)], None);
        assert!(r.error.is_none(), "{r:?}");
    }
    println!("loaded {rows} rows in {:.2} s", t.elapsed().as_secs_f64());
    let writer = CommandLogWriter::start(
        LogConfig {
            dir: data.log_dir(),
            mode: LogMode::Async { frequency: Duration::from_millis(200) },
            segment_bytes: 64 << 20,
            partitions: SITES as u32,
            first_segment: data.next_segment().unwrap(),
        },
        Box::new(|e| panic!("command log failed: {e}")),
    )
    .unwrap();
    let writer = Arc::new(writer);
    log.attach(writer.clone()).unwrap();

    // 1. Snapshot save.
    let snapshots = Snapshots::new(data.snapshot_dir(), log.clone(), 2);
    let (tx, rx) = mpsc::sync_channel(1);
    let t = Instant::now();
    let request = SaveRequest { dir: None, nonce: "bench".into(), blocking: true, automatic: false };
    snapshots.save(&mut client, request, 0, Arc::new(Wait(tx)));
    let r = rx.recv().unwrap();
    assert!(r.error.is_none(), "{r:?}");
    let seconds = t.elapsed().as_secs_f64();
    let status = snapshots.history().pop().unwrap();
    println!(
        "snapshot save: {} rows, {:.1} MB in {seconds:.3} s = {:.0} MB/s; longest site pause {} µs",
        status.rows,
        status.bytes as f64 / 1e6,
        status.bytes as f64 / 1e6 / seconds,
        status.max_pause_micros
    );

    // 2. Logged transactions after the snapshot.
    let count = Arc::new(Count(AtomicU64::new(0), AtomicU64::new(0)));
    let sink: Arc<dyn ResponseSink> = count.clone();
    let t = Instant::now();
    for i in 0..txns {
        while i as u64 - count.0.load(Ordering::Acquire) >= 20_000 {
            std::thread::sleep(Duration::from_micros(200));
        }
        let k = (i * 7919) % rows;
        let params =
            vec![Value::Integer(k), Value::String(format!("updated {i}")), Value::Integer(i), Value::Integer(k)];
        client.call_async("KV.update", params, i as u64, sink.clone());
    }
    while count.0.load(Ordering::Acquire) < txns as u64 {
        std::thread::sleep(Duration::from_millis(1));
    }
    println!(
        "logged {txns} updates in {:.2} s ({} failed)",
        t.elapsed().as_secs_f64(),
        count.1.load(Ordering::Relaxed)
    );
    let checksum = client.call("@Checksum", vec![]);
    host.shutdown();
    writer.stop();
    drop(client);

    // 3. Recovery.
    let fresh = Arc::new(AttachableLog::new());
    let t = Instant::now();
    let (host, report) = recover_node(&data, SITES as u32, false, |resume| start_host(&fresh, resume)).unwrap();
    let total = t.elapsed().as_secs_f64();
    let replay_seconds = total - report.snapshot_seconds;
    println!("recovery: {report}");
    println!(
        "recovery: snapshot {} rows in {:.3} s = {:.0} rows/s; replay {} transactions in {:.3} s = {:.0} txn/s",
        rows,
        report.snapshot_seconds,
        rows as f64 / report.snapshot_seconds,
        report.transactions,
        replay_seconds,
        report.transactions as f64 / replay_seconds
    );
    let again = host.client().call("@Checksum", vec![]);
    assert_eq!(checksum.results, again.results, "recovered state equals the state before");
    host.shutdown();
    let _ = std::fs::remove_dir_all(&root);
}
