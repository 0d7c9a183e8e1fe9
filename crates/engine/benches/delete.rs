//! What deleting rows in random order costs, and inserting into the holes
//! they leave.
//!
//! A deleted row's id is free for the next insert, which takes the lowest
//! free id (`storage/free_ids.rs`); a range move, a TTL sweep or a queue
//! drained out of order leaves hundreds of thousands of holes at once. This
//! bench measures it on one partition, one thread, in process:
//!
//! 1. a table `t (k BIGINT NOT NULL PRIMARY KEY, v VARCHAR(100))` of
//!    `JOULE_BENCH_ROWS` rows (default 1,000,000), 90-character values;
//! 2. half of them deleted in a seeded random order through a prepared
//!    `DELETE FROM t WHERE k = ?` (timed);
//! 3. the same keys inserted again, each into the lowest hole (timed).
//!
//! It prints the mean time per row of each step. `cargo bench -p
//! joule-engine --bench delete`; figures go to docs/performance.md
//! ("Deleting rows: the slab's free ids").

use joule_common::splitmix::SplitMix64;
use joule_common::Value;
use joule_engine::{Database, ExecResult, Prepared};
use std::time::{Duration, Instant};

/// The allocator the `joule` binary ships with.
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Run `stmt` once per key with the parameters `params` gives; the time
/// it took.
fn run(db: &mut Database, stmt: &Prepared, keys: &[i64], params: impl Fn(i64) -> Vec<Value>) -> Duration {
    let started = Instant::now();
    for &k in keys {
        match db.execute_prepared(stmt, &params(k)) {
            Ok(ExecResult::Modified(1)) => {}
            other => panic!("key {k}: {other:?}"),
        }
    }
    started.elapsed()
}

fn main() {
    let rows: i64 = std::env::var("JOULE_BENCH_ROWS").ok().and_then(|v| v.parse().ok()).unwrap_or(1_000_000);
    let mut db = Database::new();
    db.execute("CREATE TABLE t (k BIGINT NOT NULL PRIMARY KEY, v VARCHAR(100))").expect("create the table");
    let insert = db.prepare("INSERT INTO t VALUES (?, ?)").expect("prepare the insert");
    let delete = db.prepare("DELETE FROM t WHERE k = ?").expect("prepare the delete");
    let text = "x".repeat(90);
    let all: Vec<i64> = (0..rows).collect();
    let row = |k: i64| vec![Value::Integer(k), Value::from(text.as_str())];
    run(&mut db, &insert, &all, row);
    // A seeded shuffle (Fisher–Yates): the same order on every run.
    let mut keys = all;
    let mut rng = SplitMix64(7);
    for i in (1..keys.len()).rev() {
        keys.swap(i, rng.below(i as u64 + 1) as usize);
    }
    let gone = &keys[..keys.len() / 2];
    let per_row = |d: Duration| d.as_secs_f64() * 1e6 / gone.len().max(1) as f64;
    let deleted = run(&mut db, &delete, gone, |k| vec![Value::Integer(k)]);
    let inserted = run(&mut db, &insert, gone, row);
    println!(
        "{rows} rows, {} deleted in random order: delete {:.2} µs a row; insert into the holes {:.2} µs a row",
        gone.len(),
        per_row(deleted),
        per_row(inserted)
    );
}
