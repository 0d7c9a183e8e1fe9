//! Moving hashinator ranges on a running node (`@Rebalance`, `@MoveRange`)
//! under a voter load, over the real binary: no vote fails, the vote
//! totals equal the votes accepted, rows sit where the ring says; a
//! stopped rebalance stays stopped, a `kill -9` in the middle of one loses
//! nothing, and calling `@Rebalance` again finishes it.

mod common;

use common::cluster::{connect, eventually, misplaced, stats};
use common::{elastic_config, start_in, Node, TempDir};
use joule_client::{Options, SyncConnection};
use joule_common::Value;
use joule_voter::{CallGenerator, CONTESTANTS, DDL, VOTE_ACCEPTED};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

fn admin(node: &Node) -> SyncConnection {
    SyncConnection::connect(&node.admin_addr(), &Options::default()).expect("admin port")
}

/// The votes accepted by writers voting until `stop`: (accepted, failed calls).
struct Voters {
    threads: Vec<std::thread::JoinHandle<()>>,
    accepted: Arc<AtomicU64>,
    failures: Arc<std::sync::Mutex<Vec<String>>>,
    stop: Arc<AtomicBool>,
}

fn vote_until_stopped(addr: &str, writers: u64, seed: u64) -> Voters {
    let accepted = Arc::new(AtomicU64::new(0));
    let failures = Arc::new(std::sync::Mutex::new(Vec::new()));
    let stop = Arc::new(AtomicBool::new(false));
    let threads = (0..writers)
        .map(|w| {
            let (addr, accepted, failures, stop) = (addr.to_string(), accepted.clone(), failures.clone(), stop.clone());
            std::thread::spawn(move || {
                let mut c = connect(&addr);
                let mut calls = CallGenerator::new(seed * 100 + w, 6);
                while !stop.load(Ordering::SeqCst) {
                    let (phone, who) = calls.next_call();
                    match c.call("Vote", vec![Value::Integer(phone), Value::Integer(who), Value::Integer(2)]) {
                        Ok(r) => {
                            if int(&r.tables[0].rows[0][0]) == VOTE_ACCEPTED {
                                accepted.fetch_add(1, Ordering::SeqCst);
                            }
                        }
                        Err(e) => {
                            failures.lock().unwrap().push(e.to_string());
                            return;
                        }
                    }
                }
            })
        })
        .collect();
    Voters { threads, accepted, failures, stop }
}

impl Voters {
    fn finish(self) -> u64 {
        self.stop.store(true, Ordering::SeqCst);
        for t in self.threads {
            t.join().unwrap();
        }
        let failures = self.failures.lock().unwrap();
        assert!(failures.is_empty(), "votes failed: {failures:?}");
        self.accepted.load(Ordering::SeqCst)
    }
}

fn int(v: &Value) -> i64 {
    match v {
        Value::Integer(i) => *i,
        v => panic!("not an integer: {v:?}"),
    }
}

/// The single number a query returns (a SUM of no rows, NULL, as 0).
fn scalar(c: &mut SyncConnection, sql: &str) -> i64 {
    match &c.execute(sql, vec![]).unwrap_or_else(|e| panic!("{sql}: {e}")).tables[0].rows[0][0] {
        Value::Null => 0,
        v => int(v),
    }
}

/// Votes counted three ways: rows, the per-phone view, the results board's view.
fn vote_totals(addr: &str) -> [i64; 3] {
    let mut c = connect(addr);
    [
        scalar(&mut c, "SELECT COUNT(*) FROM votes"),
        scalar(&mut c, "SELECT SUM(num_votes) FROM v_votes_by_phone_number"),
        scalar(&mut c, "SELECT SUM(num_votes) FROM v_votes_by_contestant_number_state"),
    ]
}

/// `@Statistics REBALANCE`'s STATUS (empty before the first job).
fn rebalance_status(addr: &str) -> String {
    stats(addr, "REBALANCE").first().map(|r| r[3].clone()).unwrap_or_default()
}

fn rebalance(node: &Node, params: Vec<Value>) -> Vec<Vec<Value>> {
    admin(node).call("@Rebalance", params).expect("@Rebalance starts").tables[0].rows.clone()
}

fn setup(node: &Node) {
    let mut c = connect(&node.client_addr());
    c.execute(DDL, vec![]).expect("voter schema");
    c.call("Initialize", vec![Value::Integer(6), Value::from(CONTESTANTS)]).expect("Initialize");
}

#[test]
fn ranges_move_under_a_voter_load_without_a_failed_vote() {
    let dir = TempDir::new("rebalance");
    let node = start_in(dir.path(), &["--sites", "3"]);
    setup(&node);
    let addr = node.client_addr();
    let voters = vote_until_stopped(&addr, 3, 1);
    eventually("votes come in", || vote_totals(&addr)[0] > 2000);
    // Most of partition 0's ring to partition 2, in pieces; then back.
    let moves = rebalance(&node, vec![Value::Integer(i32::MIN as i64), Value::Integer(-(1 << 30)), Value::Integer(2)]);
    assert_eq!(moves, vec![vec![Value::Integer(i32::MIN as i64), Value::Integer(-(1 << 30)), Value::Integer(2)]]);
    // One job at a time.
    let e = admin(&node).call("@Rebalance", vec![]).map(|_| ()).err();
    assert!(e.as_ref().is_none_or(|e| e.to_string().contains("running already")), "{e:?}");
    eventually("the first rebalance is done", || rebalance_status(&addr) == "DONE");
    let row = &stats(&addr, "REBALANCE")[0];
    assert_eq!(row[5], "100", "PERCENTAGE_MOVED: {row:?}");
    assert!(row[6].parse::<u64>().unwrap() > 0, "rows moved: {row:?}");
    assert!(row[11].parse::<u64>().unwrap() > 1, "in several pieces: {row:?}");
    assert_eq!(misplaced(&addr), 0);
    // The giving partition indexed its rows by token in steps first.
    let profile = stats(&addr, "PROCEDUREPROFILE");
    let steps = profile.iter().find(|r| r[1] == "@IndexTokens").unwrap_or_else(|| panic!("{profile:?}"));
    assert!(steps[3].parse::<u64>().unwrap() >= 1 && steps[8] == "0", "{steps:?}");
    let back = rebalance(&node, vec![]);
    assert_eq!(back.len(), 1, "one range goes back: {back:?}");
    eventually("the second rebalance is done", || rebalance_status(&addr) == "DONE");
    let accepted = voters.finish() as i64;
    assert_eq!(vote_totals(&addr), [accepted; 3], "every accepted vote counted once");
    assert_eq!(misplaced(&addr), 0);
    // Back on the even ring: nothing left to move.
    assert!(rebalance(&node, vec![]).is_empty());
    let events = common::cluster::http_get(&format!("127.0.0.1:{}", node.http), "/console/stats");
    assert!(events.contains("rebalance started") && events.contains("rebalance done"), "{events}");
}

#[test]
fn a_rebalance_killed_half_way_loses_nothing_and_finishes_when_asked_again() {
    let dir = TempDir::new("rebalance-kill");
    // Slow enough that the kill lands half way.
    let config = elastic_config(&dir, "duration_ms = 5\nthroughput_mb = 0.05");
    let data = dir.path().join("data");
    let args = ["--command-log", "sync", "--config", &config];
    let mut node = start_in(&data, &args);
    setup(&node);
    let addr = node.client_addr();
    let voters = vote_until_stopped(&addr, 2, 2);
    eventually("votes come in", || vote_totals(&addr)[0] > 3000);
    rebalance(&node, vec![Value::Integer(0), Value::Integer(i32::MAX as i64), Value::Integer(0)]);
    let moved = || stats(&addr, "REBALANCE")[0][6].parse::<u64>().unwrap();
    eventually("the rebalance has moved some rows", || moved() > 0);
    // Stopped, it stays stopped; asked again, it goes on from there.
    rebalance(&node, vec![Value::from("STOP")]);
    eventually("the rebalance stops", || rebalance_status(&addr) == "STOPPED");
    let e = admin(&node).call("@Rebalance", vec![Value::from("STOP")]).unwrap_err();
    assert!(e.to_string().contains("no rebalance is running"), "{e}");
    let left = rebalance(&node, vec![Value::Integer(0), Value::Integer(i32::MAX as i64), Value::Integer(0)]);
    assert!(int(&left[0][0]) > 0, "what moved before the stop stays moved: {left:?}");
    eventually("the rebalance goes on", || moved() > 0);
    assert_eq!(rebalance_status(&addr), "RUNNING", "killed half way");
    node.kill();
    // Votes acknowledged before the kill are all there; at most the calls
    // in flight (one per writer) may have landed unacknowledged.
    let accepted = voters.stop_after_kill();
    elastic_config(&dir, "throughput_mb = 0");
    let node = start_in(&data, &args);
    let addr = node.client_addr();
    let totals = vote_totals(&addr);
    assert!(totals[0] >= accepted && totals[0] <= accepted + 2, "accepted {accepted}, found {totals:?}");
    assert_eq!(totals, [totals[0]; 3]);
    assert_eq!(misplaced(&addr), 0);
    assert_eq!(rebalance_status(&addr), "", "a restarted node runs no job until asked");
    // Asked again, the rebalance moves only what is left.
    let left = rebalance(&node, vec![Value::Integer(0), Value::Integer(i32::MAX as i64), Value::Integer(0)]);
    assert_eq!(left.len(), 1);
    assert!(int(&left[0][0]) > 0, "part of the range moved before the kill: {left:?}");
    eventually("the rest moves", || rebalance_status(&addr) == "DONE");
    assert_eq!(misplaced(&addr), 0);
    assert_eq!(vote_totals(&addr), totals);
    let mut stats_rows = stats(&addr, "TABLE");
    stats_rows.retain(|r| r[5] == "DEFAULT.VOTES");
    let on_partition_1: i64 = stats_rows.iter().filter(|r| r[4] == "1").map(|r| r[7].parse::<i64>().unwrap()).sum();
    assert_eq!(on_partition_1, 0, "partition 1's whole half of the ring went to partition 0: {stats_rows:?}");
}

/// With a target no call can meet (1 µs), the job's share of the time
/// starts at its floor (a fifth of `busy_percent`) and stays there, and
/// `@Statistics REBALANCE` and the job's end event say so; the votes go on
/// unharmed.
#[test]
fn a_rebalance_slows_its_moves_while_the_calls_p99_is_over_its_target() {
    let dir = TempDir::new("rebalance-governed");
    let config = elastic_config(&dir, "throughput_mb = 0.01\nbusy_percent = 25\ntarget_p99_ms = 0.001");
    let node = start_in(&dir.path().join("data"), &["--config", &config]);
    setup(&node);
    let addr = node.client_addr();
    let voters = vote_until_stopped(&addr, 2, 3);
    eventually("votes come in", || vote_totals(&addr)[0] > 3000);
    rebalance(&node, vec![Value::Integer(0), Value::Integer(i32::MAX as i64), Value::Integer(0)]);
    let column = |i: usize| stats(&addr, "REBALANCE")[0][i].clone();
    // BUSY_PERCENT starts at the floor, LOAD_P99 unknown until sampled;
    // the p99 over the target keeps the share there.
    assert_eq!(column(16), "5");
    eventually("the load's p99 sampled", || column(17).parse::<f64>().is_ok_and(|p| p > 0.001));
    assert_eq!(column(16), "5");
    assert_eq!(column(3), "RUNNING");
    rebalance(&node, vec![Value::from("STOP")]);
    eventually("the rebalance stops", || rebalance_status(&addr) == "STOPPED");
    let accepted = voters.finish() as i64;
    assert_eq!(vote_totals(&addr), [accepted; 3], "every accepted vote counted once");
    assert_eq!(misplaced(&addr), 0);
    let events = common::cluster::http_get(&format!("127.0.0.1:{}", node.http), "/console/stats");
    assert!(events.contains("moves ran 5.0–25 % of the time to keep the calls' p99 under 0.001 ms"), "{events}");
}

impl Voters {
    /// After a kill: the writers' calls fail from now on; the votes
    /// acknowledged as accepted before.
    fn stop_after_kill(self) -> i64 {
        self.stop.store(true, Ordering::SeqCst);
        for t in self.threads {
            t.join().unwrap();
        }
        self.accepted.load(Ordering::SeqCst) as i64
    }
}

/// `joule rebalance ARGS` against `node`'s admin port: (success, stdout, stderr).
fn joule_rebalance(node: &Node, args: &[&str]) -> (bool, String, String) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_joule"))
        .args(["rebalance", "--host", "127.0.0.1", "--port", &node.admin.to_string()])
        .args(args)
        .output()
        .expect("joule rebalance runs");
    let text = |b: &[u8]| String::from_utf8_lossy(b).to_string();
    (out.status.success(), text(&out.stdout), text(&out.stderr))
}

#[test]
fn joule_rebalance_moves_a_range_and_follows_it_to_the_end() {
    let dir = TempDir::new("rebalance-cli");
    let node = start_in(dir.path(), &[]);
    let addr = node.client_addr();
    let mut c = connect(&addr);
    c.execute("CREATE TABLE t (k BIGINT NOT NULL PRIMARY KEY, v VARCHAR(40)); PARTITION TABLE t ON COLUMN k", vec![])
        .unwrap();
    for k in 0..2000 {
        c.call("T.insert", vec![Value::Integer(k), Value::from("some value to move")]).unwrap();
    }
    let (ok, out, err) = joule_rebalance(&node, &["--first", "-2147483648", "--last", "-1", "--to", "1"]);
    assert!(ok, "{out}\n{err}");
    assert!(out.contains("DONE") && out.contains("100.0 %"), "{out}");
    let mut rows = stats(&addr, "TABLE");
    rows.retain(|r| r[5] == "DEFAULT.T");
    assert!(rows.iter().all(|r| (r[4] == "1") == (r[7] == "2000")), "every row on partition 1: {rows:?}");
    let (ok, out, _) = joule_rebalance(&node, &["--even"]);
    assert!(ok && out.contains("DONE"), "{out}");
    let (ok, out, _) = joule_rebalance(&node, &["--even"]);
    assert!(ok && out.contains("nothing to move"), "{out}");
    assert_eq!(misplaced(&addr), 0);
    // Bad requests say what is wrong and fail.
    let (ok, _, err) = joule_rebalance(&node, &["--first", "5"]);
    assert!(!ok && err.contains("--last"), "{err}");
    let (ok, _, err) = joule_rebalance(&node, &["--first", "0", "--last", "9", "--to", "7"]);
    assert!(!ok && err.contains("partition 7 does not exist"), "{err}");
    let (ok, _, err) = joule_rebalance(&node, &["--stop"]);
    assert!(!ok && err.contains("no rebalance is running"), "{err}");
}
