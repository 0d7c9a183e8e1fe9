//! Crash tests over real processes: `joule start` with a command log, many
//! concurrent clients writing single- and multi-partition transactions,
//! `kill -9` at a seeded random moment, restart on the same data
//! directory, and check:
//!
//! * every acknowledged write is there (synchronous log), or every one
//!   missing was acknowledged within the fsync window (asynchronous log);
//! * no transaction is visible in part: the account balances are exactly
//!   what the transfers present in the database add up to, and the total
//!   never changes;
//! * nothing appears that no client attempted.
//!
//! Each seed runs several kill/restart rounds on one directory, so
//! recovery also has to replay logs written after an earlier recovery;
//! one variant keeps snapshots running while it writes (so the kill often
//! lands in the middle of one, and recovery starts from a snapshot).

mod common;

use common::{start_in, Node, TempDir};
use joule_client::{BlockingClient, Options};
use joule_common::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const ACCOUNTS: i64 = 16;
const INITIAL: i64 = 1000;
const KV_WRITERS: i64 = 3;
const TRANSFER_WRITER: i64 = 100;

const SCHEMA: &str = "
CREATE TABLE kv (k BIGINT NOT NULL PRIMARY KEY, v VARCHAR(40) NOT NULL);
PARTITION TABLE kv ON COLUMN k;
CREATE TABLE acct (id BIGINT NOT NULL PRIMARY KEY, bal BIGINT NOT NULL);
PARTITION TABLE acct ON COLUMN id;
CREATE TABLE transfers (writer INTEGER NOT NULL, seq BIGINT NOT NULL, PRIMARY KEY (writer, seq));
CREATE PROCEDURE Transfer AS BEGIN
  UPDATE acct SET bal = bal - ? WHERE id = ?;
  UPDATE acct SET bal = bal + ? WHERE id = ?;
  INSERT INTO transfers VALUES (?, ?);
END;
";

/// A small deterministic generator (xorshift64*).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// What the clients attempted and what was acknowledged (with when).
#[derive(Default)]
struct Ledger {
    kv_attempted: BTreeSet<i64>,
    kv_acked: Vec<(i64, Instant)>,
    /// (writer, seq) -> (amount, from, to)
    transfers_attempted: BTreeMap<(i64, i64), (i64, i64, i64)>,
    transfers_acked: Vec<((i64, i64), Instant)>,
    /// Failures seen before the kill (there must be none).
    early_errors: Vec<String>,
}

enum Mode {
    Sync,
    /// Asynchronous with this fsync window.
    Async(Duration),
}

fn connect(addr: &str) -> BlockingClient {
    let options = Options { call_timeout: Some(Duration::from_secs(30)), ..Default::default() };
    BlockingClient::connect(&[addr], options).expect("connect")
}

fn rows(c: &BlockingClient, sql: &str) -> Vec<Vec<Value>> {
    c.execute(sql, vec![]).unwrap_or_else(|e| panic!("{sql}: {e}")).tables[0].rows.clone()
}

fn int(v: &Value) -> i64 {
    match v {
        Value::Integer(i) => *i,
        other => panic!("not an integer: {other:?}"),
    }
}

/// One client thread: from `seq + 1` on, call what `next` makes of each
/// sequence number until a call fails; records acknowledgements (and any
/// failure before the kill) in the ledger. Returns the last number tried.
fn writer(
    addr: String,
    ledger: Arc<Mutex<Ledger>>,
    killed: Arc<AtomicBool>,
    mut seq: i64,
    mut next: impl FnMut(i64, &mut Ledger) -> (&'static str, Vec<Value>, Acked) + Send + 'static,
) -> std::thread::JoinHandle<i64> {
    std::thread::spawn(move || {
        let c = connect(&addr);
        loop {
            seq += 1;
            let (procedure, params, acked) = next(seq, &mut ledger.lock().unwrap());
            match c.call(procedure, params) {
                Ok(_) => {
                    let mut l = ledger.lock().unwrap();
                    match acked {
                        Acked::Row(k) => l.kv_acked.push((k, Instant::now())),
                        Acked::Transfer(t) => l.transfers_acked.push((t, Instant::now())),
                    }
                }
                Err(e) => {
                    if !killed.load(Ordering::SeqCst) {
                        ledger.lock().unwrap().early_errors.push(e.to_string());
                    }
                    return seq;
                }
            }
        }
    })
}

/// What a successful call acknowledges.
enum Acked {
    Row(i64),
    Transfer((i64, i64)),
}

/// Run writers against `node` until `kill_after`, then `kill -9` it.
fn write_until_killed(
    node: &mut Node,
    ledger: &Arc<Mutex<Ledger>>,
    seqs: &mut [i64],
    seed: u64,
    kill_after: Duration,
    snapshots: bool,
) -> Instant {
    let killed = Arc::new(AtomicBool::new(false));
    let mut threads = Vec::new();
    for w in 0..KV_WRITERS {
        threads.push(writer(node.client_addr(), ledger.clone(), killed.clone(), seqs[w as usize], move |seq, l| {
            let key = w * 1_000_000_000 + seq;
            l.kv_attempted.insert(key);
            ("KV.insert", vec![Value::Integer(key), Value::String(format!("w{w}-{seq}"))], Acked::Row(key))
        }));
    }
    let mut rng = Rng(seed ^ 0x9e37_79b9_7f4a_7c15);
    threads.push(writer(
        node.client_addr(),
        ledger.clone(),
        killed.clone(),
        seqs[KV_WRITERS as usize],
        move |seq, l| {
            let from = rng.below(ACCOUNTS as u64) as i64;
            let to = (from + 1 + rng.below(ACCOUNTS as u64 - 1) as i64) % ACCOUNTS;
            let amount = 1 + rng.below(9) as i64;
            l.transfers_attempted.insert((TRANSFER_WRITER, seq), (amount, from, to));
            let params = [amount, from, amount, to, TRANSFER_WRITER, seq].map(Value::Integer).to_vec();
            ("Transfer", params, Acked::Transfer((TRANSFER_WRITER, seq)))
        },
    ));
    let snapshotter = snapshots.then(|| {
        let (killed, addr) = (killed.clone(), node.admin_addr());
        std::thread::spawn(move || {
            let c = connect(&addr);
            let mut i = 0;
            while !killed.load(Ordering::SeqCst) {
                i += 1;
                let nonce = format!("s{}_{i}", common::rand_suffix());
                // Non-blocking: the kill often lands while one is written.
                let _ = c.call("@SnapshotSave", vec![Value::from(""), Value::from(nonce.as_str()), Value::Integer(0)]);
                std::thread::sleep(Duration::from_millis(60));
            }
        })
    });
    std::thread::sleep(kill_after);
    killed.store(true, Ordering::SeqCst);
    let killed_at = Instant::now();
    node.kill();
    for (i, t) in threads.into_iter().enumerate() {
        seqs[i] = t.join().unwrap();
    }
    if let Some(t) = snapshotter {
        t.join().unwrap();
    }
    killed_at
}

/// Check the restarted node against the ledger.
fn verify(node: &Node, ledger: &Ledger, mode: &Mode, killed_at: Instant) -> (usize, usize) {
    assert!(ledger.early_errors.is_empty(), "calls failed before the kill: {:?}", ledger.early_errors);
    let c = connect(&node.client_addr());
    let kv: BTreeSet<i64> = rows(&c, "SELECT k FROM kv").iter().map(|r| int(&r[0])).collect();
    let transfers: BTreeSet<(i64, i64)> =
        rows(&c, "SELECT writer, seq FROM transfers").iter().map(|r| (int(&r[0]), int(&r[1]))).collect();
    // Nothing nobody attempted.
    assert!(kv.is_subset(&ledger.kv_attempted), "rows no client wrote");
    assert!(transfers.iter().all(|t| ledger.transfers_attempted.contains_key(t)), "transfers no client made");
    // Acknowledged writes: all there (sync), or missing only inside the window (async).
    let missing_kv: Vec<&(i64, Instant)> = ledger.kv_acked.iter().filter(|(k, _)| !kv.contains(k)).collect();
    let missing_tr: Vec<&((i64, i64), Instant)> =
        ledger.transfers_acked.iter().filter(|(t, _)| !transfers.contains(t)).collect();
    match mode {
        Mode::Sync => {
            assert!(missing_kv.is_empty(), "{} acknowledged rows lost, e.g. {:?}", missing_kv.len(), missing_kv[0].0);
            assert!(missing_tr.is_empty(), "{} acknowledged transfers lost", missing_tr.len());
        }
        Mode::Async(window) => {
            // Generous slack for a loaded machine; a process kill (not a
            // power loss) should in fact lose nothing written.
            let bound = *window + Duration::from_millis(500);
            for t in missing_kv.iter().map(|m| m.1).chain(missing_tr.iter().map(|m| m.1)) {
                assert!(
                    killed_at.duration_since(t) <= bound,
                    "a write acknowledged {:?} before the kill was lost",
                    killed_at.duration_since(t)
                );
            }
        }
    }
    // Atomicity: balances are exactly the effect of the transfers present.
    let mut expected: BTreeMap<i64, i64> = (0..ACCOUNTS).map(|a| (a, INITIAL)).collect();
    for t in &transfers {
        let (amount, from, to) = ledger.transfers_attempted[t];
        *expected.get_mut(&from).unwrap() -= amount;
        *expected.get_mut(&to).unwrap() += amount;
    }
    let balances: BTreeMap<i64, i64> =
        rows(&c, "SELECT id, bal FROM acct").iter().map(|r| (int(&r[0]), int(&r[1]))).collect();
    assert_eq!(balances, expected, "balances do not match the transfers present (a partial transaction?)");
    assert_eq!(balances.values().sum::<i64>(), ACCOUNTS * INITIAL);
    (missing_kv.len(), missing_tr.len())
}

fn crash_rounds(seed: u64, mode: Mode, rounds: usize, snapshots: bool) {
    let dir = TempDir::new(&format!("crash-{seed}"));
    let schema = dir.path().with_extension("sql");
    std::fs::write(&schema, SCHEMA).unwrap();
    let log_args: Vec<String> = match &mode {
        Mode::Sync => vec!["--command-log".into(), "sync".into()],
        Mode::Async(w) => {
            vec!["--command-log".into(), "async".into(), "--command-log-frequency".into(), w.as_millis().to_string()]
        }
    };
    let mut args: Vec<&str> = log_args.iter().map(String::as_str).collect();
    args.extend(["--schema", schema.to_str().unwrap()]);
    let mut node = start_in(dir.path(), &args);
    let _ = std::fs::remove_file(&schema);
    {
        let c = connect(&node.client_addr());
        for a in 0..ACCOUNTS {
            c.call("ACCT.insert", vec![Value::Integer(a), Value::Integer(INITIAL)]).unwrap();
        }
    }
    let ledger = Arc::new(Mutex::new(Ledger::default()));
    let mut seqs = vec![0i64; KV_WRITERS as usize + 1];
    let mut rng = Rng(seed.wrapping_mul(0x1000_0000_01b3) | 1);
    for round in 0..rounds {
        let kill_after = Duration::from_millis(250 + rng.below(600));
        let killed_at = write_until_killed(&mut node, &ledger, &mut seqs, seed + round as u64, kill_after, snapshots);
        node = start_in(dir.path(), &log_args.iter().map(String::as_str).collect::<Vec<_>>());
        let mut l = ledger.lock().unwrap();
        let (lost_kv, lost_tr) = verify(&node, &l, &mode, killed_at);
        // Writes lost within the window stay lost: later rounds judge only
        // their own.
        let c = connect(&node.client_addr());
        let kv: BTreeSet<i64> = rows(&c, "SELECT k FROM kv").iter().map(|r| int(&r[0])).collect();
        let transfers: BTreeSet<(i64, i64)> =
            rows(&c, "SELECT writer, seq FROM transfers").iter().map(|r| (int(&r[0]), int(&r[1]))).collect();
        l.kv_acked.retain(|(k, _)| kv.contains(k));
        l.transfers_acked.retain(|(t, _)| transfers.contains(t));
        eprintln!(
            "seed {seed} round {round}: killed after {kill_after:?}; {} rows and {} transfers acknowledged so far, \
             {lost_kv}/{lost_tr} missing; recovery: {}",
            l.kv_acked.len(),
            l.transfers_acked.len(),
            node.startup.trim()
        );
        assert!(!l.kv_acked.is_empty() && !l.transfers_acked.is_empty(), "the round wrote something");
        if snapshots && round + 1 == rounds {
            assert!(node.startup.contains("loaded snapshot"), "recovery started from a snapshot: {}", node.startup);
        }
    }
}

#[test]
fn sync_log_keeps_every_acknowledged_write_seed_1() {
    crash_rounds(1, Mode::Sync, 3, false);
}

#[test]
fn sync_log_keeps_every_acknowledged_write_seed_2() {
    crash_rounds(2, Mode::Sync, 3, false);
}

#[test]
fn sync_log_keeps_every_acknowledged_write_seed_3() {
    crash_rounds(3, Mode::Sync, 3, false);
}

#[test]
fn sync_log_with_snapshots_running_seed_4() {
    crash_rounds(4, Mode::Sync, 3, true);
}

#[test]
fn sync_log_with_snapshots_running_seed_5() {
    crash_rounds(5, Mode::Sync, 3, true);
}

#[test]
fn async_log_loses_at_most_its_window_seed_6() {
    crash_rounds(6, Mode::Async(Duration::from_millis(100)), 2, false);
}

#[test]
fn async_log_with_snapshots_running_seed_7() {
    crash_rounds(7, Mode::Async(Duration::from_millis(100)), 2, true);
}

/// A full disk under a synchronous log, for real: the process runs under a
/// file-size limit (`ulimit -f`), so log writes past it fail with EFBIG as
/// on a full file system. The node must answer the write that hit it (and
/// any after) with an error, stop by itself, and on restart (without the
/// limit) hold exactly what was acknowledged.
#[test]
fn a_full_disk_stops_the_node_and_loses_nothing_acknowledged() {
    let dir = TempDir::new("full-disk");
    let mut cmd = std::process::Command::new("sh");
    // 512-byte blocks: a 96 KiB limit.
    cmd.args(["-c", "ulimit -f 192 && exec \"$0\" \"$@\"", env!("CARGO_BIN_EXE_joule"), "start"])
        .args([
            "--client-port",
            "0",
            "--admin-port",
            "0",
            "--http-port",
            "0",
            "--sites",
            "2",
            "--command-log",
            "sync",
            "--dir",
        ])
        .arg(dir.path());
    let mut node = common::start_command(&mut cmd);
    let c = connect(&node.client_addr());
    c.execute(
        "CREATE TABLE kv (k BIGINT NOT NULL PRIMARY KEY, v VARCHAR(400) NOT NULL); PARTITION TABLE kv ON COLUMN k",
        vec![],
    )
    .unwrap();
    let mut acked = Vec::new();
    let mut failure = None;
    for k in 0..2000i64 {
        match c.call("KV.insert", vec![Value::Integer(k), Value::String("x".repeat(300))]) {
            Ok(_) => acked.push(k),
            Err(e) => {
                failure = Some(e);
                break;
            }
        }
    }
    let e = failure.expect("the log hit the limit");
    use joule_common::ErrorCode::{IoError, OutcomeUnknown, Unavailable};
    assert!(matches!(e.code(), IoError | Unavailable | OutcomeUnknown), "{e}");
    let status = node.child.wait().unwrap();
    assert!(!status.success(), "the node stopped with a failure status");
    let stderr = node.stderr_after_exit();
    assert!(stderr.contains("command log") && stderr.contains("J6001"), "{stderr}");
    assert!(acked.len() > 10, "{} writes before the limit", acked.len());
    // Restart without the limit: exactly the acknowledged rows.
    let node = start_in(dir.path(), &["--command-log", "sync"]);
    let c = connect(&node.client_addr());
    let present: Vec<i64> = rows(&c, "SELECT k FROM kv ORDER BY k").iter().map(|r| int(&r[0])).collect();
    assert_eq!(present, acked, "recovery: {}", node.startup);
    c.call("KV.insert", vec![Value::Integer(-1), Value::from("after")]).expect("writes work again");
}
