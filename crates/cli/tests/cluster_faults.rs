//! A 3-host cluster of real `joule` processes (k = 1, and k = 2, where a
//! new leader's repair step has copies to reconcile) under a mixed write
//! load — single-partition bank transfers and inserts, multi-partition
//! updates, and reads and writes of one register — while faults come at
//! moments a seed chooses: `kill -9` of a host, `SIGSTOP` (a hung host)
//! and later `SIGCONT`, or the network between two hosts cut (connections
//! closed) or hung (nothing passes) while both still reach the third, then
//! healed. Every link runs through a fault-injecting proxy (see
//! `Mesh`). Each host declared failed is started again and rejoins. The
//! k = 1 runs keep copy logs (`--command-log async`), so a host killed and
//! started again before failure detection noticed recovers first, is
//! failed by the others, and rejoins; the k = 2 runs keep none.
//!
//! Afterwards: every acknowledged insert is present, the bank's total is
//! unchanged, every partition's copies are identical (checksums), and the
//! register's history is linearizable (`linearizable.rs`, the checker the
//! metadata group's tests use). Seeds come from `JOULE_SEEDS` (k = 1;
//! comma-separated; default 1, 2 and 21) and `JOULE_K2_SEEDS` (k = 2;
//! default 3 and 34), and a failure names its seed.

mod common;

use common::cluster::*;
use common::fault_proxy::{linearizable, Link};
use common::TempDir;
use joule_client::{Options, SyncConnection};
use joule_common::splitmix::SplitMix64;
use joule_common::{ErrorCode, Value};
use linearizable::{Call, Op, Outcome};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const ACCOUNTS: i64 = 40;
const START_BALANCE: i64 = 1000;
const LOAD_FOR: Duration = Duration::from_secs(6);

/// The client addresses of the hosts, replaced as hosts restart.
type Addresses = Arc<Mutex<Vec<String>>>;

/// What a call's error says about whether it ran.
fn outcome_of(e: &joule_common::Error) -> Outcome {
    if e.code() == ErrorCode::OutcomeUnknown {
        Outcome::Unknown
    } else {
        // Refused before it ran: unavailable, or failed in full.
        Outcome::Refused
    }
}

/// A client that talks to one host at a time, moving to another when its
/// host stops answering.
struct Roamer {
    addresses: Addresses,
    rng: SplitMix64,
    connection: Option<SyncConnection>,
}

impl Roamer {
    fn call(&mut self, sql: &str, params: Vec<Value>) -> Result<joule_client::Response, joule_common::Error> {
        if self.connection.is_none() {
            let all = self.addresses.lock().unwrap().clone();
            let pick = &all[(self.rng.next_u64() % all.len() as u64) as usize];
            let options = Options { call_timeout: Some(Duration::from_secs(10)), ..Default::default() };
            match SyncConnection::connect(pick, &options) {
                Ok(c) => self.connection = Some(c),
                Err(e) => return Err(joule_common::Error::new(ErrorCode::Unavailable, e.to_string())),
            }
        }
        let mut all = vec![Value::from(sql)];
        all.extend(params);
        let r = self.connection.as_mut().map(|c| c.call("@AdHoc", all)).unwrap_or_else(|| unreachable!());
        if let Err(e) = &r {
            if matches!(e.code(), ErrorCode::OutcomeUnknown | ErrorCode::Unavailable) {
                self.connection = None;
            }
        }
        r
    }
}

/// Wait until `watcher` sees every host up; otherwise fail with what each
/// host said on stderr.
fn all_up_or_explain(hosts: &[Host], watcher: &str, seed: u64, faults: &[String]) {
    let all_up = || try_states(watcher).is_some_and(|s| s.iter().all(|(_, s)| s == "UP"));
    if !wait_until(Duration::from_secs(20), all_up) {
        let said: Vec<String> = hosts
            .iter()
            .map(|h| format!("host {}:\n{}", h.id, h.stderr.try_iter().collect::<Vec<_>>().join("\n")))
            .collect();
        panic!("seed {seed}: not every host up within 20 s; faults: {faults:?}; the hosts said:\n{}", said.join("\n"));
    }
}

fn modified(r: &joule_client::Response) -> i64 {
    match r.tables.first().and_then(|t| t.rows.first()).map(|row| &row[0]) {
        Some(Value::Integer(n)) => *n,
        _ => 0,
    }
}

/// Seeds from `variable` (comma-separated), else `default`.
fn seeds(variable: &str, default: &[u64]) -> Vec<u64> {
    std::env::var(variable)
        .map(|s| s.split(',').filter_map(|x| x.trim().parse().ok()).collect())
        .unwrap_or_else(|_| default.to_vec())
}

/// Seed 21 often (about half its runs) cuts host 2 off while it leads a
/// partition in the middle of a multi-partition commit: it learns it was
/// deposed between the prepare and the outcome. Before that case was
/// handled, its confirmation told the coordinator every copy had the
/// outcome, the new leader waited on it forever, and every later
/// multi-partition transaction and the rejoin hung.
#[test]
fn a_cluster_under_load_survives_kills_hangs_and_network_cuts() {
    for seed in seeds("JOULE_SEEDS", &[1, 2, 21]) {
        run(seed, 1, &["--command-log", "async"]);
    }
}

/// k = 2: every partition on all three hosts, so a leader's death leaves
/// two copies that may differ by the batch it was sending — the new
/// leader's repair step must bring them level (the checks below compare
/// all three copies). Seed 34 hangs the coordinator's host mid-commit: it
/// used to take over 10 s to stop on waking (in about 1 run in 7), its
/// settling held up by a leader waiting for metadata that would never
/// name it coordinator again.
#[test]
fn a_k2_cluster_under_load_repairs_its_copies_after_faults() {
    for seed in seeds("JOULE_K2_SEEDS", &[3, 34]) {
        run(seed, 2, &[]);
    }
}

/// One fault run: seed `seed`, k-factor `k`, every host started with
/// `extra` too.
fn run(seed: u64, k: u32, extra: &[&str]) {
    let dirs: Vec<TempDir> = (0..3).map(|i| TempDir::new(&format!("faults-k{k}-{seed}-{i}"))).collect();
    let (mut hosts, mesh) = form_meshed(&dirs, k, extra);
    let first = hosts[0].client.clone();
    sql(
        &first,
        "CREATE TABLE accounts (id BIGINT NOT NULL PRIMARY KEY, a BIGINT NOT NULL, b BIGINT NOT NULL, \
         touched BIGINT NOT NULL); PARTITION TABLE accounts ON COLUMN id; \
         CREATE TABLE acks (id BIGINT NOT NULL PRIMARY KEY); PARTITION TABLE acks ON COLUMN id; \
         CREATE TABLE reg (k BIGINT NOT NULL PRIMARY KEY, v BIGINT NOT NULL); PARTITION TABLE reg ON COLUMN k;",
        vec![],
    );
    for id in 0..ACCOUNTS {
        sql(
            &first,
            "INSERT INTO accounts VALUES (?, ?, ?, 0)",
            vec![Value::Integer(id), Value::Integer(START_BALANCE), Value::Integer(START_BALANCE)],
        );
    }
    sql(&first, "INSERT INTO reg VALUES (1, 0)", vec![]);
    let addresses: Addresses = Arc::new(Mutex::new(hosts.iter().map(|h| h.client.clone()).collect()));
    let stop = Arc::new(AtomicBool::new(false));
    let started = Instant::now();
    let micros = move || started.elapsed().as_micros() as u64;
    let mut workers = Vec::new();

    // Bank transfers and inserts (single-partition), two clients.
    for w in 0..2u64 {
        let (addresses, stop) = (addresses.clone(), stop.clone());
        workers.push(std::thread::spawn(move || {
            let mut c = Roamer { addresses, rng: SplitMix64(seed * 100 + w), connection: None };
            let mut acked = Vec::new();
            let mut next = (w as i64 + 1) * 1_000_000;
            while !stop.load(Ordering::Relaxed) {
                let id = (c.rng.next_u64() % ACCOUNTS as u64) as i64;
                let amount = (c.rng.next_u64() % 50) as i64 - 25;
                let _ = c.call(
                    "UPDATE accounts SET a = a - ?, b = b + ? WHERE id = ?",
                    vec![Value::Integer(amount), Value::Integer(amount), Value::Integer(id)],
                );
                next += 1;
                if c.call("INSERT INTO acks VALUES (?)", vec![Value::Integer(next)]).is_ok() {
                    acked.push(next);
                }
            }
            (acked, Vec::<Call>::new())
        }));
    }
    // Multi-partition writes.
    {
        let (addresses, stop) = (addresses.clone(), stop.clone());
        workers.push(std::thread::spawn(move || {
            let mut c = Roamer { addresses, rng: SplitMix64(seed * 100 + 7), connection: None };
            while !stop.load(Ordering::Relaxed) {
                let _ = c.call("UPDATE accounts SET touched = touched + 1", vec![]);
                std::thread::sleep(Duration::from_millis(20));
            }
            (Vec::new(), Vec::new())
        }));
    }
    // The register: reads, writes and compare-and-sets of key 1.
    for w in 0..2usize {
        let (addresses, stop) = (addresses.clone(), stop.clone());
        workers.push(std::thread::spawn(move || {
            let mut c = Roamer { addresses, rng: SplitMix64(seed * 100 + 20 + w as u64), connection: None };
            let mut history = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                let value = (c.rng.next_u64() % 5) as i64;
                let invoked = micros();
                let (op, result) = match c.rng.next_u64() % 3 {
                    0 => {
                        let r = c.call("SELECT v FROM reg WHERE k = 1", vec![]);
                        let read = r.as_ref().ok().and_then(|r| match r.tables[0].rows.first().map(|row| &row[0]) {
                            Some(Value::Integer(v)) => Some(*v),
                            _ => None,
                        });
                        (Op::Read(read.unwrap_or(-1)), r.map(|_| Outcome::Ok))
                    }
                    1 => {
                        let r = c.call("UPDATE reg SET v = ? WHERE k = 1", vec![Value::Integer(value)]);
                        (Op::Write(value), r.map(|_| Outcome::Ok))
                    }
                    _ => {
                        let expected = (c.rng.next_u64() % 5) as i64;
                        let r = c.call(
                            "UPDATE reg SET v = ? WHERE k = 1 AND v = ?",
                            vec![Value::Integer(value), Value::Integer(expected)],
                        );
                        let outcome = r.map(|r| if modified(&r) == 1 { Outcome::Ok } else { Outcome::Refused });
                        (Op::Cas { expected, new: value }, outcome)
                    }
                };
                match result {
                    Ok(outcome) => history.push(Call { client: w, op, outcome, invoked, completed: Some(micros()) }),
                    Err(e) if outcome_of(&e) == Outcome::Unknown => {
                        if std::env::var_os("JOULE_ECHO_UNKNOWN").is_some() {
                            eprintln!("unknown outcome: {e}");
                        }
                        history.push(Call { client: w, op, outcome: Outcome::Unknown, invoked, completed: None })
                    }
                    // Refused before it ran: it did nothing.
                    Err(_) => {}
                }
            }
            (Vec::new(), history)
        }));
    }

    // Faults: one at a time, at moments the seed chooses.
    let mut rng = SplitMix64(seed);
    let mut faults = Vec::new();
    while started.elapsed() < LOAD_FOR - Duration::from_secs(2) {
        std::thread::sleep(Duration::from_millis(300 + rng.next_u64() % 700));
        let mut victim = (rng.next_u64() % 3) as usize;
        let pid = hosts[victim].child.id() as libc::pid_t;
        match rng.next_u64() % 3 {
            0 => {
                faults.push(format!("{:?}: kill -9 host {}", started.elapsed(), hosts[victim].id));
                let _ = hosts[victim].child.kill();
                let _ = hosts[victim].child.wait();
                std::thread::sleep(Duration::from_millis(200 + rng.next_u64() % 800));
            }
            1 => {
                faults.push(format!("{:?}: SIGSTOP host {}", started.elapsed(), hosts[victim].id));
                // SAFETY: signalling a child process this test started.
                unsafe { libc::kill(pid, libc::SIGSTOP) };
                std::thread::sleep(Duration::from_millis(1500 + rng.next_u64() % 1000));
                // SAFETY: as above.
                unsafe { libc::kill(pid, libc::SIGCONT) };
                // Declared failed while it hung, it stops on waking; a pause the
                // others did not notice is no failure.
                let child = &mut hosts[victim].child;
                if !wait_until(Duration::from_secs(10), || child.try_wait().ok().flatten().is_some()) {
                    let state = states(&hosts[(victim + 1) % 3].client)[victim].1.clone();
                    assert_eq!(state, "UP", "host {victim} was declared failed and did not stop: {faults:?}");
                    faults.push(format!("{:?}: host {victim} was not declared failed", started.elapsed()));
                    continue;
                }
            }
            _ => {
                let other = (victim + 1 + (rng.next_u64() % 2) as usize) % 3;
                let link = if rng.next_u64().is_multiple_of(2) { Link::Cut } else { Link::Hang };
                faults.push(format!("{:?}: {link:?} between hosts {victim} and {other}", started.elapsed()));
                mesh.set(victim, other, link);
                std::thread::sleep(Duration::from_millis(1500 + rng.next_u64() % 1000));
                mesh.heal();
                // At most one end is declared failed (or none, if the cut
                // was too short to notice); it stops once it learns so.
                let third = 3 - victim - other;
                let mut exited = None;
                let deadline = Instant::now() + Duration::from_secs(10);
                while exited.is_none() && Instant::now() < deadline {
                    exited = [victim, other].into_iter().find(|h| hosts[*h].child.try_wait().ok().flatten().is_some());
                    std::thread::sleep(Duration::from_millis(100));
                }
                let down = || -> Vec<u64> {
                    states(&hosts[third].client).into_iter().filter(|(_, s)| s != "UP").map(|(h, _)| h).collect()
                };
                if let Some(h) = exited {
                    eventually("the third host sees the stopped host down", || down() == vec![h as u64]);
                }
                let down = down();
                assert!(down.len() <= 1, "a cut between two hosts failed both: {down:?}; {faults:?}");
                match exited {
                    Some(h) => {
                        victim = h;
                        faults.push(format!("{:?}: host {h} was declared failed", started.elapsed()));
                    }
                    None => {
                        assert!(down.is_empty(), "hosts {down:?} declared failed and did not stop: {faults:?}");
                        faults.push(format!("{:?}: neither host was declared failed", started.elapsed()));
                        continue;
                    }
                }
            }
        }
        eprintln!("seed {seed}: {}", faults.last().map_or("", String::as_str));
        let args = [&["--host-count", "3", "--kfactor", "1"][..], &mesh.args(victim), extra].concat();
        let again = spawn(dirs[victim].path(), &args).ready();
        assert_eq!(again.id, hosts[victim].id);
        addresses.lock().unwrap()[victim] = again.client.clone();
        hosts[victim] = again;
        let watcher = hosts[(victim + 1) % 3].client.clone();
        all_up_or_explain(&hosts, &watcher, seed, &faults);
        faults.push(format!("{:?}: host {} rejoined", started.elapsed(), hosts[victim].id));
    }
    while started.elapsed() < LOAD_FOR {
        std::thread::sleep(Duration::from_millis(50));
    }
    stop.store(true, Ordering::Relaxed);
    let mut acked = Vec::new();
    let mut history = Vec::new();
    for w in workers {
        let (a, h) = w.join().expect("a worker panicked");
        acked.extend(a);
        history.extend(h);
    }
    all_up_or_explain(&hosts, &hosts[0].client, seed, &faults);
    let variable = if k == 1 { "JOULE_SEEDS" } else { "JOULE_K2_SEEDS" };
    let context = format!("seed {seed}, k = {k} (replay with {variable}={seed}); faults: {faults:?}");
    let unknown = history.iter().filter(|c| c.outcome == Outcome::Unknown).count();
    eprintln!(
        "seed {seed}, k = {k}: {} acknowledged inserts, {} register calls ({unknown} of unknown outcome); {faults:?}",
        acked.len(),
        history.len()
    );
    assert!(acked.len() >= 20, "too little got through: {context}");

    let clients: Vec<String> = hosts.iter().map(|h| h.client.clone()).collect();
    // Every partition's two copies are identical.
    if let Err(why) = replicas_agree(&clients, k as usize + 1) {
        panic!("{why}: {context}");
    }
    // Every acknowledged insert is there, read through every host.
    for addr in &clients {
        let present: std::collections::BTreeSet<i64> = sql(addr, "SELECT id FROM acks", vec![]).tables[0]
            .rows
            .iter()
            .map(|r| match r[0] {
                Value::Integer(v) => v,
                _ => -1,
            })
            .collect();
        let missing: Vec<&i64> = acked.iter().filter(|id| !present.contains(id)).collect();
        assert!(missing.is_empty(), "acknowledged inserts missing via {addr}: {missing:?}; {context}");
        // Transfers move money within an account: the total never changes.
        assert_eq!(scalar(addr, "SELECT SUM(a + b) FROM accounts"), ACCOUNTS * 2 * START_BALANCE, "{context}");
    }
    // Every multi-partition update touched every account: all alike, unless
    // one committed on some partitions and not others (a partition leader or
    // the coordinator died during its commit, and the two-phase commit did
    // not hold).
    let touched = scalar(&clients[0], "SELECT MAX(touched) - MIN(touched) FROM accounts");
    assert_eq!(touched, 0, "a multi-partition update committed on some partitions only: {context}");
    let checking = Instant::now();
    let checked = linearizable::check(0, &history);
    eprintln!("seed {seed}, k = {k}: the register's history checked in {:?}", checking.elapsed());
    if let Err(why) = checked {
        panic!("the register's history is not linearizable: {why}; {context}\nhistory: {history:?}");
    }
}
