//! Voter throughput, in process (no network): `Vote` transactions per
//! second on a host with `JOULE_BENCH_SITES` sites (default 2), then
//! multi-partition transactions per second (a two-account transfer across
//! partitions, and the voter results board, a read of every partition).
//!
//! `cargo bench -p joule-voter --bench voter`
//! (`JOULE_BENCH_SECONDS` sets each phase's length, default 10;
//! `JOULE_BENCH_PHASE=vote` or `=mp` runs one phase only;
//! `JOULE_BENCH_LOG=sync` or `=async` runs with a command log in a
//! temporary directory, default none.)
//!
//! One load thread keeps up to `WINDOW` invocations outstanding, as a
//! pipelining client does; responses are counted by a sink on the sites'
//! threads. Figures go to docs/performance.md.

use joule_common::Value;
use joule_txn::{Client, Host, HostConfig, ProcedureRegistry, Response, ResponseSink};
use joule_voter::{register, CallGenerator, CONTESTANTS, DDL};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Default)]
struct Counter {
    done: AtomicU64,
    failed: AtomicU64,
    by_code: [AtomicU64; 3],
}

impl ResponseSink for Counter {
    fn deliver(&self, _handle: u64, response: Response) {
        if response.is_success() {
            if let Some(code) = response.results.first().and_then(|t| t.as_i64()) {
                if let Some(c) = self.by_code.get(code as usize) {
                    c.fetch_add(1, Ordering::Relaxed);
                }
            }
        } else if self.failed.fetch_add(1, Ordering::Relaxed) == 0 {
            eprintln!("first failure: {:?}", response.error);
        }
        self.done.fetch_add(1, Ordering::Release);
    }
}

const WINDOW: u64 = 20_000;

/// Run `next` invocations for `seconds`; returns completed per second.
fn drive(
    client: &mut Client,
    seconds: f64,
    counter: &Arc<Counter>,
    mut next: impl FnMut() -> (&'static str, Vec<Value>),
) -> f64 {
    let sink: Arc<dyn ResponseSink> = counter.clone();
    let start_done = counter.done.load(Ordering::Acquire);
    let mut sent = 0u64;
    let start = Instant::now();
    let deadline = start + Duration::from_secs_f64(seconds);
    while Instant::now() < deadline {
        for _ in 0..256 {
            // A full window: sleep rather than spin, leaving the cores to
            // the sites (a window holds tens of milliseconds of work).
            while sent - (counter.done.load(Ordering::Acquire) - start_done) >= WINDOW {
                std::thread::sleep(Duration::from_micros(500));
            }
            let (name, params) = next();
            client.call_async(name, params, sent, sink.clone());
            sent += 1;
        }
    }
    while counter.done.load(Ordering::Acquire) - start_done < sent {
        std::thread::sleep(Duration::from_micros(200));
    }
    sent as f64 / start.elapsed().as_secs_f64()
}

fn main() {
    let sites: usize = std::env::var("JOULE_BENCH_SITES").ok().and_then(|s| s.parse().ok()).unwrap_or(2);
    let seconds: f64 = std::env::var("JOULE_BENCH_SECONDS").ok().and_then(|s| s.parse().ok()).unwrap_or(10.0);
    let mut registry = ProcedureRegistry::new();
    register(&mut registry);
    let log_dir = std::env::temp_dir().join(format!("joule-voter-bench-log-{}", std::process::id()));
    let mode = match std::env::var("JOULE_BENCH_LOG").unwrap_or_default().as_str() {
        "sync" => Some(joule_durability::LogMode::Sync),
        "async" => Some(joule_durability::LogMode::Async { frequency: Duration::from_millis(200) }),
        _ => None,
    };
    let log = mode.map(|mode| {
        let config = joule_durability::LogConfig {
            dir: log_dir.clone(),
            mode,
            segment_bytes: 64 << 20,
            partitions: sites as u32,
            first_segment: 1,
        };
        Arc::new(
            joule_durability::CommandLogWriter::start(config, Box::new(|e| panic!("command log failed: {e}"))).unwrap(),
        )
    });
    let command_log = log.clone().map(|l| l as Arc<dyn joule_txn::logging::CommandLog>);
    let host = Host::start(HostConfig { sites_per_host: sites, registry, command_log, ..Default::default() })
        .expect("host starts");
    let mut client = host.client();
    let ok = |r: Response| assert!(r.is_success(), "{r:?}");
    ok(client.adhoc(DDL, vec![]));
    ok(client.call("Initialize", vec![Value::Integer(6), Value::String(CONTESTANTS.into())]));

    let phase = std::env::var("JOULE_BENCH_PHASE").unwrap_or_default();
    let counter = Arc::new(Counter::default());
    let mut calls = CallGenerator::new(1, 6);
    let mut vote = || {
        let (phone, contestant) = calls.next_call();
        ("Vote", vec![Value::Integer(phone), Value::Integer(contestant), Value::Integer(2)])
    };
    let vote_seconds = if phase == "mp" { 0.5 } else { seconds };
    drive(&mut client, 1.0, &counter, &mut vote);
    let votes = drive(&mut client, vote_seconds, &counter, &mut vote);
    let codes: Vec<u64> = counter.by_code.iter().map(|c| c.load(Ordering::Relaxed)).collect();
    if let Some(l) = &log {
        let s = l.stats();
        let syncs = s.syncs.load(Ordering::Relaxed).max(1);
        println!(
            "command log {:?}: {} records, {} fsyncs ({} records per fsync, mean fsync {} µs)",
            l.mode(),
            s.records.load(Ordering::Relaxed),
            syncs,
            s.records.load(Ordering::Relaxed) / syncs,
            s.sync_micros.load(Ordering::Relaxed) / syncs
        );
    }
    println!(
        "voter: {sites} sites, {votes:.0} Vote/s (accepted {}, bad contestant {}, over limit {}, failed {})",
        codes[0],
        codes[1],
        codes[2],
        counter.failed.load(Ordering::Relaxed)
    );

    if phase == "vote" {
        host.shutdown();
        let _ = std::fs::remove_dir_all(&log_dir);
        return;
    }
    // Multi-partition: transfers between accounts on different partitions.
    ok(client.adhoc(
        "CREATE TABLE acct (id BIGINT NOT NULL PRIMARY KEY, bal BIGINT NOT NULL); \
         PARTITION TABLE acct ON COLUMN id; \
         CREATE PROCEDURE Transfer AS BEGIN \
           UPDATE acct SET bal = bal - ? WHERE id = ?; \
           UPDATE acct SET bal = bal + ? WHERE id = ?; END",
        vec![],
    ));
    let accounts = 1000i64;
    for id in 0..accounts {
        ok(client.call("ACCT.insert", vec![Value::Integer(id), Value::Integer(1_000_000)]));
    }
    let hash = host.hashinator();
    let owner = |id: i64| hash.partition_for(&Value::Integer(id)).unwrap();
    let pairs: Vec<(i64, i64)> = (0..accounts)
        .flat_map(|a| (0..accounts).map(move |b| (a, b)))
        .filter(|(a, b)| owner(*a) != owner(*b))
        .step_by(97)
        .take(10_000)
        .collect();
    let counter = Arc::new(Counter::default());
    let mut i = 0usize;
    let mut transfer = || {
        let (a, b) = pairs[i % pairs.len()];
        i += 1;
        ("Transfer", vec![Value::Integer(1), Value::Integer(a), Value::Integer(1), Value::Integer(b)])
    };
    drive(&mut client, 1.0, &counter, &mut transfer);
    let transfers = drive(&mut client, seconds, &counter, &mut transfer);
    println!("multi-partition: {transfers:.0} Transfer/s (failed {})", counter.failed.load(Ordering::Relaxed));
    let counter = Arc::new(Counter::default());
    let results = drive(&mut client, seconds, &counter, || ("Results", vec![]));
    println!("multi-partition: {results:.0} Results/s (failed {})", counter.failed.load(Ordering::Relaxed));
    let r = client.adhoc("SELECT SUM(bal) FROM acct", vec![]);
    assert_eq!(r.results[0].as_i64(), Some(accounts * 1_000_000), "transfers keep the total");
    host.shutdown();
    let _ = std::fs::remove_dir_all(&log_dir);
}
