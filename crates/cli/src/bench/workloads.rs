//! The workloads `joule bench` runs: each creates its schema and initial
//! data when they are absent, and makes one call at a time from a
//! generator the load threads share.
//!
//! * `voter`: VoltDB's voter — 6 contestants, at most 2 votes per phone,
//!   callers drawn as VoltDB's benchmark draws them (`CallGenerator`).
//! * `kv`: YCSB-style key-value mixes over `kv(k BIGINT, v VARCHAR(100))`:
//!   `a` 50 % reads / 50 % updates, `b` 95 / 5, `c` reads only; keys drawn
//!   as YCSB's `ScrambledZipfianGenerator` draws them: a Zipfian rank
//!   (θ 0.99) over 10¹⁰ items, hashed (FNV-1a) onto the records.
//! * `tpcb`: pgbench's TPC-B transaction as one procedure: an account
//!   update and read, a teller and a branch update, a history insert;
//!   scale factor `s` = `s` branches, `10 s` tellers, `100000 s` accounts.
//!   Keys are drawn as pgbench draws them — branch, teller and account
//!   each uniform over all of them, independently. Everything is
//!   partitioned by branch: when the teller and the account belong to the
//!   drawn branch (always at scale 1) the call is `TpcbTxn`, a
//!   single-partition procedure; otherwise `TpcbTxnMp`, the same
//!   statements as a multi-partition one. `--local-keys` draws the teller
//!   and account within the branch instead (always single-partition: the
//!   workload a JouleDB user would design).

use joule_client::{BlockingClient, Response};
use joule_common::{ErrorCode, Result, Value};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

/// One workload.
pub trait Workload: Send + Sync {
    fn name(&self) -> String;
    /// Create the schema and data if absent.
    fn setup(&self, client: &BlockingClient) -> Result<()>;
    /// The next call: procedure and parameters.
    fn next_call(&self) -> (&'static str, Vec<Value>);
}

/// A lock-free stream of well-mixed numbers (SplitMix64 over a counter).
pub struct Stream(AtomicU64);

impl Stream {
    pub fn new(seed: u64) -> Stream {
        Stream(AtomicU64::new(seed))
    }

    pub fn next(&self) -> u64 {
        let mut z = self.0.fetch_add(0x9e37_79b9_7f4a_7c15, Ordering::Relaxed).wrapping_add(0x9e37_79b9_7f4a_7c15);
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in `lo..=hi`.
    pub fn between(&self, lo: i64, hi: i64) -> i64 {
        lo + (self.next() % (hi - lo + 1) as u64) as i64
    }

    /// Uniform in [0, 1).
    pub fn unit(&self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// Whether `table` exists (a cheap query that fails with UndefinedTable if not).
fn has_table(client: &BlockingClient, table: &str) -> Result<bool> {
    match client.execute(&format!("SELECT COUNT(*) FROM {table}"), vec![]) {
        Ok(_) => Ok(true),
        Err(e) if e.code() == ErrorCode::UndefinedTable => Ok(false),
        Err(e) => Err(e),
    }
}

fn count(client: &BlockingClient, table: &str) -> Result<i64> {
    let r: Response = client.execute(&format!("SELECT COUNT(*) FROM {table}"), vec![])?;
    r.table(0)?.get::<i64>(0, 0)
}

/// Run `make(i)` for `0..n` with many calls in flight; fails on the first error.
fn load(client: &BlockingClient, n: i64, make: impl Fn(i64) -> (&'static str, Vec<Value>)) -> Result<()> {
    let pending = std::sync::Arc::new((Mutex::new((0i64, None::<joule_common::Error>)), std::sync::Condvar::new()));
    for i in 0..n {
        {
            let (m, cv) = &*pending;
            let mut g = m.lock().unwrap_or_else(|e| e.into_inner());
            while g.0 >= 1000 {
                g = cv.wait(g).unwrap_or_else(|e| e.into_inner());
            }
            if let Some(e) = g.1.take() {
                return Err(e);
            }
            g.0 += 1;
        }
        let (procedure, params) = make(i);
        let p = pending.clone();
        client.client().call_with(procedure, params, move |r| {
            let (m, cv) = &*p;
            let mut g = m.lock().unwrap_or_else(|e| e.into_inner());
            g.0 -= 1;
            if let Err(e) = r {
                g.1.get_or_insert(e);
            }
            cv.notify_all();
        })?;
    }
    let (m, cv) = &*pending;
    let mut g = m.lock().unwrap_or_else(|e| e.into_inner());
    while g.0 > 0 {
        g = cv.wait(g).unwrap_or_else(|e| e.into_inner());
    }
    match g.1.take() {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

/// VoltDB's voter.
pub struct Voter {
    calls: Mutex<joule_voter::CallGenerator>,
}

impl Voter {
    pub fn new() -> Voter {
        Voter { calls: Mutex::new(joule_voter::CallGenerator::new(1, 6)) }
    }
}

impl Workload for Voter {
    fn name(&self) -> String {
        "voter".into()
    }

    fn setup(&self, client: &BlockingClient) -> Result<()> {
        if !has_table(client, "votes")? {
            client.execute(joule_voter::DDL, vec![])?;
        }
        client.call("Initialize", vec![Value::Integer(6), Value::from(joule_voter::CONTESTANTS)])?;
        Ok(())
    }

    fn next_call(&self) -> (&'static str, Vec<Value>) {
        let (phone, contestant) = self.calls.lock().unwrap_or_else(|e| e.into_inner()).next_call();
        ("Vote", vec![Value::Integer(phone), Value::Integer(contestant), Value::Integer(2)])
    }
}

/// YCSB's `ScrambledZipfianGenerator` over `0..n`: a Zipfian rank over
/// YCSB's 10¹⁰ items (θ = 0.99, its precomputed ζ), hashed onto the keys.
pub struct Zipfian {
    n: u64,
    theta: f64,
    alpha: f64,
    zetan: f64,
    eta: f64,
}

/// YCSB's item count and ζ(10¹⁰, 0.99) for the scrambled generator.
const YCSB_ITEMS: f64 = 10_000_000_000.0;
const YCSB_ZETAN: f64 = 26.469_028_201_783_02;

impl Zipfian {
    pub fn new(n: u64) -> Zipfian {
        let theta = 0.99;
        let zeta2 = 1.0 + 0.5f64.powf(theta);
        let alpha = 1.0 / (1.0 - theta);
        let eta = (1.0 - (2.0 / YCSB_ITEMS).powf(1.0 - theta)) / (1.0 - zeta2 / YCSB_ZETAN);
        Zipfian { n: n.max(1), theta, alpha, zetan: YCSB_ZETAN, eta }
    }

    /// A rank over YCSB's items (0 = most popular) for a uniform `u` in [0, 1).
    pub fn rank(&self, u: f64) -> u64 {
        let uz = u * self.zetan;
        if uz < 1.0 {
            return 0;
        }
        if uz < 1.0 + 0.5f64.powf(self.theta) {
            return 1;
        }
        (YCSB_ITEMS * (self.eta * u - self.eta + 1.0).powf(self.alpha)) as u64
    }

    /// A key: the rank hashed (FNV-1a 64) onto the records, as YCSB.
    pub fn key(&self, u: f64) -> u64 {
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        for b in self.rank(u).to_le_bytes() {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
        h % self.n
    }
}

/// YCSB-style key-value mixes.
pub struct KeyValue {
    records: u64,
    read_share: f64,
    mix: char,
    keys: Zipfian,
    random: Stream,
    value: String,
}

impl KeyValue {
    pub fn new(mix: char, records: u64) -> Result<KeyValue> {
        if records == 0 {
            joule_common::bail!(InvalidArgument, "kv needs at least one record");
        }
        let read_share = match mix {
            'a' => 0.5,
            'b' => 0.95,
            'c' => 1.0,
            m => joule_common::bail!(InvalidArgument, "kv mix {m:?} is not one of a, b, c"),
        };
        Ok(KeyValue {
            records,
            read_share,
            mix,
            keys: Zipfian::new(records),
            random: Stream::new(7),
            value: "x".repeat(100),
        })
    }
}

impl Workload for KeyValue {
    fn name(&self) -> String {
        format!("kv (YCSB {}, {} records)", self.mix.to_ascii_uppercase(), self.records)
    }

    fn setup(&self, client: &BlockingClient) -> Result<()> {
        if !has_table(client, "kv")? {
            client.execute(
                "CREATE TABLE kv (k BIGINT NOT NULL PRIMARY KEY, v VARCHAR(100) NOT NULL); PARTITION TABLE kv ON COLUMN k",
                vec![],
            )?;
        }
        if count(client, "kv")? < self.records as i64 {
            let v = self.value.clone();
            load(client, self.records as i64, |k| ("KV.upsert", vec![Value::Integer(k), Value::from(v.as_str())]))?;
        }
        Ok(())
    }

    fn next_call(&self) -> (&'static str, Vec<Value>) {
        let k = Value::Integer(self.keys.key(self.random.unit()) as i64);
        if self.random.unit() < self.read_share {
            ("KV.select", vec![k])
        } else {
            ("KV.update", vec![k.clone(), Value::from(self.value.as_str()), k])
        }
    }
}

/// pgbench's TPC-B.
pub struct Tpcb {
    scale: i64,
    /// Teller and account from the drawn branch (always single-partition).
    local_keys: bool,
    random: Stream,
}

/// The schema: pgbench's tables, partitioned by branch.
const TPCB_DDL: &str = "
CREATE TABLE pgbench_branches (bid INTEGER NOT NULL PRIMARY KEY, bbalance INTEGER NOT NULL, filler VARCHAR(88));
PARTITION TABLE pgbench_branches ON COLUMN bid;
CREATE TABLE pgbench_tellers (tid INTEGER NOT NULL, bid INTEGER NOT NULL, tbalance INTEGER NOT NULL, filler VARCHAR(84), PRIMARY KEY (bid, tid));
PARTITION TABLE pgbench_tellers ON COLUMN bid;
CREATE TABLE pgbench_accounts (aid INTEGER NOT NULL, bid INTEGER NOT NULL, abalance INTEGER NOT NULL, filler VARCHAR(84), PRIMARY KEY (bid, aid));
PARTITION TABLE pgbench_accounts ON COLUMN bid;
CREATE TABLE pgbench_history (tid INTEGER, bid INTEGER NOT NULL, aid INTEGER, delta INTEGER, mtime TIMESTAMP, filler VARCHAR(22));
PARTITION TABLE pgbench_history ON COLUMN bid;
";

/// The transaction: the same statements single- and multi-partition.
const TPCB_BODY: &str = "BEGIN
  UPDATE pgbench_accounts SET abalance = abalance + ? WHERE bid = ? AND aid = ?;
  SELECT abalance FROM pgbench_accounts WHERE bid = ? AND aid = ?;
  UPDATE pgbench_tellers SET tbalance = tbalance + ? WHERE bid = ? AND tid = ?;
  UPDATE pgbench_branches SET bbalance = bbalance + ? WHERE bid = ?;
  INSERT INTO pgbench_history (tid, bid, aid, delta, mtime) VALUES (?, ?, ?, ?, NOW());
END;
";

impl Tpcb {
    pub fn new(scale: i64, local_keys: bool) -> Tpcb {
        Tpcb { scale: scale.max(1), local_keys, random: Stream::new(11) }
    }
}

impl Workload for Tpcb {
    fn name(&self) -> String {
        format!("tpcb (scale {})", self.scale)
    }

    fn setup(&self, client: &BlockingClient) -> Result<()> {
        if !has_table(client, "pgbench_branches")? {
            let procedures = format!(
                "CREATE PROCEDURE TpcbTxn PARTITION ON TABLE pgbench_branches COLUMN bid PARAMETER 1 AS {TPCB_BODY}\n\
                 CREATE PROCEDURE TpcbTxnMp AS {TPCB_BODY}"
            );
            client.execute(&format!("{TPCB_DDL}{procedures}"), vec![])?;
        }
        if count(client, "pgbench_accounts")? < self.scale * 100_000 {
            let s = self.scale;
            load(client, s, |b| {
                ("PGBENCH_BRANCHES.upsert", vec![Value::Integer(b + 1), Value::Integer(0), Value::Null])
            })?;
            load(client, s * 10, |t| {
                (
                    "PGBENCH_TELLERS.upsert",
                    vec![Value::Integer(t + 1), Value::Integer(t / 10 + 1), Value::Integer(0), Value::Null],
                )
            })?;
            load(client, s * 100_000, |a| {
                let row = vec![Value::Integer(a + 1), Value::Integer(a / 100_000 + 1), Value::Integer(0), Value::Null];
                ("PGBENCH_ACCOUNTS.upsert", row)
            })?;
        }
        Ok(())
    }

    fn next_call(&self) -> (&'static str, Vec<Value>) {
        let bid = self.random.between(1, self.scale);
        let (aid, tid) = if self.local_keys {
            ((bid - 1) * 100_000 + self.random.between(1, 100_000), (bid - 1) * 10 + self.random.between(1, 10))
        } else {
            // As pgbench: each uniform over all of them.
            (self.random.between(1, self.scale * 100_000), self.random.between(1, self.scale * 10))
        };
        let (account_branch, teller_branch) = ((aid - 1) / 100_000 + 1, (tid - 1) / 10 + 1);
        let delta = self.random.between(-5000, 5000);
        let v = Value::Integer;
        // The statements' `?`s in order: each row is addressed by its own
        // branch (parameter 1 routes the single-partition procedure).
        let params = vec![
            v(delta),
            v(account_branch),
            v(aid),
            v(account_branch),
            v(aid),
            v(delta),
            v(teller_branch),
            v(tid),
            v(delta),
            v(bid),
            v(tid),
            v(bid),
            v(aid),
            v(delta),
        ];
        if account_branch == bid && teller_branch == bid {
            ("TpcbTxn", params)
        } else {
            ("TpcbTxnMp", params)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zipfian_keys_stay_in_range_and_favour_a_few() {
        let z = Zipfian::new(10_000);
        let s = Stream::new(3);
        let mut counts = std::collections::HashMap::new();
        for _ in 0..100_000 {
            let k = z.key(s.unit());
            assert!(k < 10_000);
            *counts.entry(k).or_insert(0u32) += 1;
        }
        let mut top: Vec<u32> = counts.values().copied().collect();
        top.sort_unstable_by(|a, b| b.cmp(a));
        // The hottest key takes a few percent (YCSB: about 3.8 %); a
        // uniform draw would give it 0.01 %.
        assert!(top[0] > 2_000 && top[0] < 6_000, "{}", top[0]);
    }

    #[test]
    fn tpcb_draws_keys_as_pgbench_and_routes_by_branch() {
        let n = |p: &[Value], i: usize| if let Value::Integer(x) = p[i] { x } else { panic!() };
        // pgbench's draw: at scale 3, two in three accounts lie in another
        // branch than the one drawn, and those calls are multi-partition.
        let t = Tpcb::new(3, false);
        let (mut single, mut multi) = (0, 0);
        for _ in 0..3000 {
            let (name, p) = t.next_call();
            let (bid, aid, tid) = (n(&p, 9), n(&p, 2), n(&p, 7));
            assert!((1..=3).contains(&bid) && (1..=300_000).contains(&aid) && (1..=30).contains(&tid));
            let local = (aid - 1) / 100_000 + 1 == bid && (tid - 1) / 10 + 1 == bid;
            assert_eq!(name, if local { "TpcbTxn" } else { "TpcbTxnMp" });
            if local {
                single += 1
            } else {
                multi += 1
            }
        }
        assert!(single > 200 && multi > 2000, "{single} single, {multi} multi");
        // Scale 1 and --local-keys: always single-partition.
        for t in [Tpcb::new(1, false), Tpcb::new(3, true)] {
            for _ in 0..500 {
                assert_eq!(t.next_call().0, "TpcbTxn");
            }
        }
    }
}
