//! What a frozen copy costs the writes that follow it.
//!
//! A snapshot, a copy log's compaction and a partition's copy for a
//! rejoining host all freeze the partition's tables (`Table::freeze`): the
//! row slab's parts are shared with the copy until it is written, and the
//! first write to a shared part copies it (at most 64 references and 64
//! rows; 1024 rows when the slab was one level of chunks). Writes spread
//! over the whole table (updates of random accounts, the deletes of a range
//! move) therefore each copy a part for a while after every freeze. This
//! bench measures that on one partition, one thread, in process:
//!
//! 1. a table `kv (k BIGINT PRIMARY KEY, v VARCHAR(64), n BIGINT)` of
//!    `JOULE_BENCH_ROWS` rows (default 1,000,000);
//! 2. `JOULE_BENCH_UPDATES` updates (default 20,000) of random keys through
//!    a prepared `UPDATE kv SET n = ? WHERE k = ?`, with no frozen copy
//!    (after as many untimed ones, to warm up);
//! 3. a freeze of every table (timed: that is the site's pause), then the
//!    same number of updates of other random keys while the copy is held.
//!
//! For each run of updates it prints the mean, the 99th percentile and the
//! largest single update in µs, and the time of the first 1,000 updates (a
//! transaction's worth of scattered writes). `cargo bench -p joule-engine
//! --bench frozen`; figures go to docs/performance.md ("Writes while a copy
//! is frozen").

use joule_common::splitmix::SplitMix64;
use joule_common::Value;
use joule_engine::{Database, ExecResult, Prepared};
use std::time::{Duration, Instant};

#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn env(name: &str, default: u64) -> u64 {
    std::env::var(name).ok().and_then(|s| s.parse().ok()).unwrap_or(default)
}

/// One run of updates: each update's time, in order.
fn updates(db: &mut Database, stmt: &Prepared, rng: &mut SplitMix64, rows: u64, count: u64) -> Vec<Duration> {
    (0..count)
        .map(|i| {
            let k = rng.below(rows) as i64;
            let params = [Value::Integer(i as i64), Value::Integer(k)];
            let t = Instant::now();
            let r = db.execute_prepared(stmt, &params);
            let took = t.elapsed();
            assert!(matches!(r, Ok(ExecResult::Modified(1))), "update of key {k}: {r:?}");
            took
        })
        .collect()
}

fn report(what: &str, times: &[Duration]) {
    let mut sorted = times.to_vec();
    sorted.sort();
    let micros = |d: Duration| d.as_secs_f64() * 1e6;
    let mean = times.iter().sum::<Duration>() / times.len().max(1) as u32;
    let p99 = sorted[(sorted.len() * 99 / 100).min(sorted.len() - 1)];
    let first: Duration = times.iter().take(1000).sum();
    println!(
        "{what}: mean {:.2} µs, p99 {:.2} µs, max {:.1} µs; first 1,000 updates {:.2} ms",
        micros(mean),
        micros(p99),
        micros(*sorted.last().unwrap_or(&Duration::ZERO)),
        first.as_secs_f64() * 1e3
    );
}

fn main() {
    let rows = env("JOULE_BENCH_ROWS", 1_000_000).max(1);
    let count = env("JOULE_BENCH_UPDATES", 20_000).max(1);
    let mut db = Database::new();
    db.execute("CREATE TABLE kv (k BIGINT NOT NULL PRIMARY KEY, v VARCHAR(64) NOT NULL, n BIGINT NOT NULL)")
        .expect("create table");
    let insert = db.prepare("INSERT INTO kv VALUES (?, ?, ?)").expect("prepare insert");
    let t = Instant::now();
    for k in 0..rows as i64 {
        let row = [Value::Integer(k), Value::String(format!("value number {k:>12} of the bench")), Value::Integer(k)];
        db.execute_prepared(&insert, &row).expect("insert");
    }
    println!("loaded {rows} rows in {:.2} s", t.elapsed().as_secs_f64());
    let update = db.prepare("UPDATE kv SET n = ? WHERE k = ?").expect("prepare update");
    let mut rng = SplitMix64(7);
    // Warm up (caches, the allocator's free lists), then measure.
    updates(&mut db, &update, &mut rng, rows, count);
    let plain = updates(&mut db, &update, &mut rng, rows, count);
    report("updates, no frozen copy", &plain);

    let t = Instant::now();
    let frozen: Vec<_> = db.storage().tables().map(|t| t.freeze()).collect();
    let pause = t.elapsed();
    println!("freeze: {:.1} µs", pause.as_secs_f64() * 1e6);
    let shared = updates(&mut db, &update, &mut rng, rows, count);
    report("updates, copy frozen", &shared);
    // The copy still reads as it was frozen.
    let frozen_rows: usize = frozen.iter().map(|f| f.iter().count()).sum();
    assert_eq!(frozen_rows as u64, rows);
}
