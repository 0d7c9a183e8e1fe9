//! JouleDB's single-partition engine side by side with SQLite (in memory).
//!
//! Four workloads, one thread, one partition, each a criterion group with the
//! functions `joule` and `sqlite`:
//!
//! * `insert` — bulk insert through a prepared `INSERT INTO accounts VALUES (?,?,?,?)`
//!   into a fresh table, rows/s (SQLite inside one transaction per batch);
//! * `point_select` — `SELECT name, balance FROM accounts WHERE id = ?` on a
//!   100k-row table, keys from a deterministic pseudo-random sequence, queries/s;
//! * `range_scan` — `SELECT id, balance FROM accounts WHERE balance >= ? AND balance < ?`
//!   through the secondary index `accounts_balance`, ~1000 rows per query, rows/s;
//! * `group_by` — `SELECT region, COUNT(*), SUM(balance), MIN(balance), MAX(balance)
//!   FROM accounts GROUP BY region` over 1M rows in 100 regions, rows scanned/s.
//!
//! ```text
//! cargo bench -p joule-engine --bench engine                 # everything, then the ratio table
//! cargo bench -p joule-engine --bench engine -- point_select # one group
//! JOULE_BENCH_QUICK=1 cargo bench -p joule-engine --bench engine   # small sizes, short runs
//! JOULE_BENCH_ENGINES=sqlite cargo bench -p joule-engine --bench engine  # one engine only
//! ```
//!
//! After criterion, a benchmark run (`--bench`) also times every selected
//! workload for about a second per engine and prints
//! `workload | joule ops/s | sqlite ops/s | joule/sqlite`. Under `cargo test
//! --benches` criterion runs each benchmark once, with the quick sizes.
//!
//! Fairness to SQLite: statements come from `prepare_cached`, bulk inserts
//! run in one transaction, `journal_mode=OFF` and `synchronous=OFF`, and the
//! key is declared `INTEGER PRIMARY KEY` (SQLite's clustered rowid key; the
//! same 64-bit integer key JouleDB gets as `BIGINT NOT NULL PRIMARY KEY`).
//! Both engines hand back every result row as owned values, and every
//! engine's answers are checked once before timing.

use criterion::measurement::WallTime;
use criterion::{BatchSize, BenchmarkGroup, Criterion, SamplingMode, Throughput};
use joule_common::Value;
use joule_engine::{Database, ExecResult, Prepared};
use rusqlite::Connection;
use std::hint::black_box;
use std::time::{Duration, Instant};

/// The allocator the `joule` binary ships with (see docs/performance.md).
/// SQLite allocates through its own `malloc` calls and is unaffected.
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

const JOULE_DDL: &str =
    "CREATE TABLE accounts(id BIGINT NOT NULL PRIMARY KEY, name VARCHAR(32), balance BIGINT, region INTEGER)";
const SQLITE_DDL: &str =
    "CREATE TABLE accounts(id INTEGER NOT NULL PRIMARY KEY, name VARCHAR(32), balance BIGINT, region INTEGER)";
const INSERT: &str = "INSERT INTO accounts VALUES (?,?,?,?)";
const POINT: &str = "SELECT name, balance FROM accounts WHERE id = ?";
const INDEX: &str = "CREATE INDEX accounts_balance ON accounts(balance)";
const RANGE: &str = "SELECT id, balance FROM accounts WHERE balance >= ? AND balance < ?";
const GROUP: &str = "SELECT region, COUNT(*), SUM(balance), MIN(balance), MAX(balance) FROM accounts GROUP BY region";

/// Balances are uniform in `0..BALANCE_RANGE`.
const BALANCE_RANGE: i64 = 1_000_000;
const REGIONS: i64 = 100;
/// Rows a range query should return on average.
const ROWS_PER_RANGE: usize = 1000;

/// Table sizes and timings.
struct Sizes {
    insert_batch: usize,
    table: usize,
    lookups: usize,
    range_queries: usize,
    group_table: usize,
    measurement: Duration,
    warm_up: Duration,
    ratio_time: Duration,
}

impl Sizes {
    fn new(quick: bool) -> Sizes {
        if quick {
            Sizes {
                insert_batch: 1_000,
                table: 10_000,
                lookups: 1_000,
                range_queries: 4,
                group_table: 10_000,
                measurement: Duration::from_millis(500),
                warm_up: Duration::from_millis(200),
                ratio_time: Duration::from_millis(200),
            }
        } else {
            Sizes {
                insert_batch: 10_000,
                table: 100_000,
                lookups: 1_000,
                range_queries: 10,
                group_table: 1_000_000,
                measurement: Duration::from_secs(3),
                warm_up: Duration::from_secs(1),
                ratio_time: Duration::from_secs(1),
            }
        }
    }
}

/// A seeded generator (splitmix64) with signed draws.
struct Rng(joule_common::splitmix::SplitMix64);

impl Rng {
    fn new(seed: u64) -> Rng {
        Rng(joule_common::splitmix::SplitMix64(seed))
    }

    fn below(&mut self, n: i64) -> i64 {
        self.0.below(n as u64) as i64
    }
}

/// One row as JouleDB parameters: id, name, balance, region.
type Account = [Value; 4];

/// `n` accounts with ids `0..n` in a scrambled order (a multiplicative
/// permutation, so no id repeats).
fn accounts(n: usize, seed: u64) -> Vec<Account> {
    let mut rng = Rng::new(seed);
    let step = 1_000_003; // prime, so coprime with every n below it
    (0..n)
        .map(|i| {
            let id = ((i as u64 * step) % n as u64) as i64;
            [
                Value::Integer(id),
                Value::String(format!("account-{id:08}")),
                Value::Integer(rng.below(BALANCE_RANGE)),
                Value::Integer(rng.below(REGIONS)),
            ]
        })
        .collect()
}

fn int(v: &Value) -> i64 {
    match v {
        Value::Integer(i) => *i,
        other => panic!("expected an integer, got {other:?}"),
    }
}

fn text(v: &Value) -> &str {
    match v {
        Value::String(s) => s,
        other => panic!("expected a string, got {other:?}"),
    }
}

/// `count` half-open balance ranges of about [`ROWS_PER_RANGE`] rows each
/// in a table of `rows` rows, and the exact number of rows they select.
fn ranges(data: &[Account], count: usize) -> (Vec<(i64, i64)>, usize) {
    let width = (BALANCE_RANGE * ROWS_PER_RANGE as i64 / data.len() as i64).clamp(1, BALANCE_RANGE);
    let mut rng = Rng::new(7);
    let ranges: Vec<(i64, i64)> = (0..count)
        .map(|_| {
            let lo = rng.below(BALANCE_RANGE - width + 1);
            (lo, lo + width)
        })
        .collect();
    let expected = ranges.iter().map(|&(lo, hi)| data.iter().filter(|r| (lo..hi).contains(&int(&r[2]))).count()).sum();
    (ranges, expected)
}

/// What each engine must do.
trait Engine {
    /// A fresh database holding the empty `accounts` table.
    fn open() -> Self;
    /// Insert rows through a prepared statement (one transaction in SQLite).
    fn insert(&mut self, rows: &[Account]);
    fn create_index(&mut self);
    /// Point selects by primary key; returns the rows found.
    fn point(&mut self, keys: &[i64]) -> usize;
    /// Range scans on the balance index; returns the rows returned.
    fn range(&mut self, ranges: &[(i64, i64)]) -> usize;
    /// The GROUP BY; returns the number of groups and the sum of their counts.
    fn group(&mut self) -> (usize, i64);
}

/// JouleDB with its prepared statements.
struct Joule {
    db: Database,
    insert: Option<Prepared>,
    point: Option<Prepared>,
    range: Option<Prepared>,
    group: Option<Prepared>,
}

fn joule_rows(r: joule_common::Result<ExecResult>, what: &str) -> Vec<joule_common::Row> {
    match r {
        Ok(ExecResult::Rows { rows, .. }) => rows,
        other => panic!("JouleDB {what}: expected rows, got {other:?}"),
    }
}

impl Engine for Joule {
    fn open() -> Self {
        let mut db = Database::new();
        db.execute(JOULE_DDL).expect("JouleDB: create table");
        Joule { db, insert: None, point: None, range: None, group: None }
    }

    fn insert(&mut self, rows: &[Account]) {
        let stmt = self.insert.get_or_insert_with(|| self.db.prepare(INSERT).expect("JouleDB: prepare insert"));
        for row in rows {
            match self.db.execute_prepared(stmt, row) {
                Ok(ExecResult::Modified(1)) => {}
                other => panic!("JouleDB insert: {other:?}"),
            }
        }
    }

    fn create_index(&mut self) {
        self.db.execute(INDEX).expect("JouleDB: create index");
    }

    fn point(&mut self, keys: &[i64]) -> usize {
        let stmt = self.point.get_or_insert_with(|| self.db.prepare(POINT).expect("JouleDB: prepare point select"));
        let mut found = 0;
        for &k in keys {
            let rows = joule_rows(self.db.execute_prepared(stmt, &[Value::Integer(k)]), "point select");
            found += rows.len();
            black_box(rows);
        }
        found
    }

    fn range(&mut self, ranges: &[(i64, i64)]) -> usize {
        let stmt = self.range.get_or_insert_with(|| self.db.prepare(RANGE).expect("JouleDB: prepare range scan"));
        let mut n = 0;
        for &(lo, hi) in ranges {
            let rows = joule_rows(self.db.execute_prepared(stmt, &[Value::Integer(lo), Value::Integer(hi)]), "range");
            n += rows.len();
            black_box(rows);
        }
        n
    }

    fn group(&mut self) -> (usize, i64) {
        let stmt = self.group.get_or_insert_with(|| self.db.prepare(GROUP).expect("JouleDB: prepare group by"));
        let rows = joule_rows(self.db.execute_prepared(stmt, &[]), "group by");
        let counted = rows.iter().map(|r| int(&r[1])).sum();
        (black_box(rows).len(), counted)
    }
}

/// SQLite in memory, statements from `prepare_cached`.
struct Sqlite(Connection);

impl Engine for Sqlite {
    fn open() -> Self {
        let conn = Connection::open_in_memory().expect("SQLite: open");
        conn.execute_batch("PRAGMA journal_mode=OFF; PRAGMA synchronous=OFF;").expect("SQLite: pragmas");
        conn.execute_batch(SQLITE_DDL).expect("SQLite: create table");
        Sqlite(conn)
    }

    fn insert(&mut self, rows: &[Account]) {
        self.0.execute_batch("BEGIN").expect("SQLite: begin");
        {
            let mut stmt = self.0.prepare_cached(INSERT).expect("SQLite: prepare insert");
            for r in rows {
                let n = stmt.execute((int(&r[0]), text(&r[1]), int(&r[2]), int(&r[3]))).expect("SQLite: insert");
                assert_eq!(n, 1);
            }
        }
        self.0.execute_batch("COMMIT").expect("SQLite: commit");
    }

    fn create_index(&mut self) {
        self.0.execute_batch(INDEX).expect("SQLite: create index");
    }

    fn point(&mut self, keys: &[i64]) -> usize {
        let mut stmt = self.0.prepare_cached(POINT).expect("SQLite: prepare point select");
        let mut found = 0;
        for &k in keys {
            let rows: Vec<(String, i64)> = stmt
                .query_map([k], |r| Ok((r.get(0)?, r.get(1)?)))
                .and_then(Iterator::collect)
                .expect("SQLite: point select");
            found += rows.len();
            black_box(rows);
        }
        found
    }

    fn range(&mut self, ranges: &[(i64, i64)]) -> usize {
        let mut stmt = self.0.prepare_cached(RANGE).expect("SQLite: prepare range scan");
        let mut n = 0;
        for &(lo, hi) in ranges {
            let rows: Vec<(i64, i64)> = stmt
                .query_map([lo, hi], |r| Ok((r.get(0)?, r.get(1)?)))
                .and_then(Iterator::collect)
                .expect("SQLite: range scan");
            n += rows.len();
            black_box(rows);
        }
        n
    }

    fn group(&mut self) -> (usize, i64) {
        let mut stmt = self.0.prepare_cached(GROUP).expect("SQLite: prepare group by");
        let rows: Vec<(i64, i64, i64, i64, i64)> = stmt
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?)))
            .and_then(Iterator::collect)
            .expect("SQLite: group by");
        let counted = rows.iter().map(|r| r.1).sum();
        (black_box(rows).len(), counted)
    }
}

/// The shared inputs of all workloads.
struct Data {
    batch: Vec<Account>,
    table: Vec<Account>,
    keys: Vec<i64>,
    ranges: Vec<(i64, i64)>,
    range_rows: usize,
    group_table: Vec<Account>,
}

impl Data {
    fn new(s: &Sizes) -> Data {
        let table = accounts(s.table, 2);
        let mut rng = Rng::new(3);
        let keys = (0..s.lookups).map(|_| rng.below(s.table as i64)).collect();
        let (ranges, range_rows) = ranges(&table, s.range_queries);
        Data {
            batch: accounts(s.insert_batch, 1),
            table,
            keys,
            ranges,
            range_rows,
            group_table: accounts(s.group_table, 4),
        }
    }
}

/// Tables of one engine, loaded (and checked) on first use.
struct Fixture<E> {
    name: &'static str,
    indexed: Option<E>,
    grouped: Option<E>,
}

impl<E: Engine> Fixture<E> {
    fn new(name: &'static str) -> Self {
        Fixture { name, indexed: None, grouped: None }
    }

    /// The point/range table: `table` rows plus the balance index.
    fn indexed(&mut self, d: &Data) -> &mut E {
        let name = self.name;
        self.indexed.get_or_insert_with(|| {
            let mut e = E::open();
            e.insert(&d.table);
            e.create_index();
            assert_eq!(e.point(&d.keys), d.keys.len(), "{name}: point selects must find every key");
            assert_eq!(e.range(&d.ranges), d.range_rows, "{name}: range scans returned the wrong number of rows");
            e
        })
    }

    /// The GROUP BY table.
    fn grouped(&mut self, d: &Data) -> &mut E {
        let name = self.name;
        self.grouped.get_or_insert_with(|| {
            let mut e = E::open();
            e.insert(&d.group_table);
            let groups = (REGIONS as usize).min(d.group_table.len());
            let rows = d.group_table.len() as i64;
            assert_eq!(e.group(), (groups, rows), "{name}: GROUP BY must return {groups} groups counting {rows} rows");
            e
        })
    }
}

/// The four workloads, in report order.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Workload {
    Insert,
    PointSelect,
    RangeScan,
    GroupBy,
}

const WORKLOADS: [Workload; 4] = [Workload::Insert, Workload::PointSelect, Workload::RangeScan, Workload::GroupBy];

impl Workload {
    /// The criterion group's name.
    fn name(self) -> &'static str {
        match self {
            Workload::Insert => "insert",
            Workload::PointSelect => "point_select",
            Workload::RangeScan => "range_scan",
            Workload::GroupBy => "group_by",
        }
    }

    /// What the ratio table counts.
    fn unit(self) -> &'static str {
        match self {
            Workload::PointSelect => "queries/s",
            _ => "rows/s",
        }
    }

    /// Elements per unit of work (criterion's throughput).
    fn elements(self, d: &Data) -> u64 {
        (match self {
            Workload::Insert => d.batch.len(),
            Workload::PointSelect => d.keys.len(),
            Workload::RangeScan => d.range_rows,
            Workload::GroupBy => d.group_table.len(),
        }) as u64
    }
}

/// One engine's fixture, whether it is benchmarked, and which workloads ran
/// (criterion only calls a benchmark that matches its filter).
struct Side<E> {
    enabled: bool,
    fixture: Fixture<E>,
    ran: [bool; 4],
}

impl<E: Engine> Side<E> {
    fn new(name: &'static str, enabled: bool) -> Self {
        Side { enabled, fixture: Fixture::new(name), ran: [false; 4] }
    }

    /// Add this engine's function to workload `w`'s group.
    fn bench(&mut self, g: &mut BenchmarkGroup<'_, WallTime>, w: Workload, d: &Data) {
        if !self.enabled {
            return;
        }
        let Side { fixture: f, ran, .. } = self;
        g.bench_function(f.name, |b| {
            ran[w as usize] = true;
            match w {
                Workload::Insert => b.iter_batched(
                    E::open,
                    |mut e| {
                        e.insert(&d.batch);
                        e // dropped outside the timing
                    },
                    BatchSize::PerIteration,
                ),
                Workload::PointSelect => {
                    let e = f.indexed(d);
                    b.iter(|| e.point(&d.keys))
                }
                Workload::RangeScan => {
                    let e = f.indexed(d);
                    b.iter(|| e.range(&d.ranges))
                }
                Workload::GroupBy => {
                    let e = f.grouped(d);
                    b.iter(|| e.group())
                }
            }
        });
    }

    /// Elements/s of workload `w` measured for about `time` (`None` when it
    /// did not run under criterion).
    fn rate(&mut self, w: Workload, time: Duration, d: &Data) -> Option<f64> {
        if !self.ran[w as usize] {
            return None;
        }
        let f = &mut self.fixture;
        let (mut done, mut spent) = (0u64, Duration::ZERO);
        while spent < time {
            let (n, t) = match w {
                Workload::Insert => {
                    let mut e = E::open();
                    let t = Instant::now();
                    e.insert(&d.batch);
                    (d.batch.len(), t.elapsed())
                }
                Workload::PointSelect => timed(|| f.indexed(d).point(&d.keys)),
                Workload::RangeScan => timed(|| f.indexed(d).range(&d.ranges)),
                Workload::GroupBy => {
                    let e = f.grouped(d);
                    let (_, t) = timed(|| e.group().0);
                    (d.group_table.len(), t)
                }
            };
            done += n as u64;
            spent += t;
        }
        Some(done as f64 / spent.as_secs_f64())
    }
}

fn timed(f: impl FnOnce() -> usize) -> (usize, Duration) {
    let t = Instant::now();
    let n = f();
    (n, t.elapsed())
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let has = |flag: &str| args.iter().any(|a| a == flag || a.starts_with(&format!("{flag}=")));
    let benchmarking = has("--bench") && !has("--test") && !has("--list") && !has("--profile-time");
    // `cargo test --benches` runs each benchmark once: keep that quick too.
    let quick = std::env::var("JOULE_BENCH_QUICK").is_ok_and(|v| v == "1") || !benchmarking;
    let engines = std::env::var("JOULE_BENCH_ENGINES").unwrap_or_else(|_| "joule,sqlite".into());

    let sizes = Sizes::new(quick);
    let data = Data::new(&sizes);
    let mut c = Criterion::default()
        .measurement_time(sizes.measurement)
        .warm_up_time(sizes.warm_up)
        .sample_size(if quick { 10 } else { 20 })
        .configure_from_args();
    let mut joule = Side::<Joule>::new("joule", engines.contains("joule"));
    let mut sqlite = Side::<Sqlite>::new("sqlite", engines.contains("sqlite"));

    for w in WORKLOADS {
        let mut g = c.benchmark_group(w.name());
        g.throughput(Throughput::Elements(w.elements(&data)));
        if w == Workload::GroupBy {
            // Each iteration scans the whole table: few, flat samples.
            g.sample_size(10).sampling_mode(SamplingMode::Flat).measurement_time(sizes.measurement * 2);
        }
        joule.bench(&mut g, w, &data);
        sqlite.bench(&mut g, w, &data);
        g.finish();
    }
    c.final_summary();

    if !benchmarking {
        return;
    }
    let show = |r: Option<f64>| r.map_or("-".to_string(), |r| format!("{r:.0}"));
    println!("\nworkload | joule ops/s | sqlite ops/s | joule/sqlite");
    println!("---|--:|--:|--:");
    for w in WORKLOADS {
        let (j, q) = (joule.rate(w, sizes.ratio_time, &data), sqlite.rate(w, sizes.ratio_time, &data));
        if j.is_none() && q.is_none() {
            continue;
        }
        let ratio = match (j, q) {
            (Some(a), Some(b)) if b > 0.0 => format!("{:.2}", a / b),
            _ => "-".into(),
        };
        println!("{} ({}) | {} | {} | {ratio}", w.name(), w.unit(), show(j), show(q));
    }
}
