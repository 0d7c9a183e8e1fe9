//! A voter load on a cluster of real `joule` processes, for tests that
//! change the cluster under it: writers voting through the hosts until
//! stopped, counting the votes accepted, and the totals the database keeps.

use super::cluster::connect;
use joule_client::{Options, SyncConnection};
use joule_common::{ErrorCode, Value};
use joule_voter::{CallGenerator, CONTESTANTS, DDL, VOTE_ACCEPTED};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

fn int(v: &Value) -> i64 {
    match v {
        Value::Integer(i) => *i,
        v => panic!("not an integer: {v:?}"),
    }
}

/// The voter schema and its contestants, through `addr`.
pub fn setup(addr: &str) {
    let mut c = connect(addr);
    c.execute(DDL, vec![]).expect("voter schema");
    c.call("Initialize", vec![Value::Integer(6), Value::from(CONTESTANTS)]).expect("Initialize");
}

/// Writers voting through the given hosts until stopped.
pub struct Voters {
    threads: Vec<std::thread::JoinHandle<()>>,
    accepted: Arc<AtomicU64>,
    /// Calls whose outcome the client was not told (a host died under
    /// them): each may or may not have counted.
    unknown: Arc<AtomicU64>,
    failures: Arc<std::sync::Mutex<Vec<String>>>,
    stop: Arc<AtomicBool>,
}

/// With `tolerant`, a call that fails as `Unavailable` or `OutcomeUnknown`
/// (a host was killed) is counted as unknown and the writer goes on
/// through the next host; any other failure ends the writer and the test.
pub fn vote_until_stopped(addrs: &[String], seed: u64, tolerant: bool) -> Voters {
    let accepted = Arc::new(AtomicU64::new(0));
    let unknown = Arc::new(AtomicU64::new(0));
    let failures = Arc::new(std::sync::Mutex::new(Vec::new()));
    let stop = Arc::new(AtomicBool::new(false));
    let threads = (0..addrs.len())
        .map(|w| {
            let addrs = addrs.to_vec();
            let (accepted, unknown, failures, stop) =
                (accepted.clone(), unknown.clone(), failures.clone(), stop.clone());
            std::thread::spawn(move || {
                let mut at = w;
                let mut c = SyncConnection::connect(&addrs[at], &Options::default()).ok();
                let mut calls = CallGenerator::new(seed * 100 + w as u64, 6);
                while !stop.load(Ordering::SeqCst) {
                    let Some(conn) = c.as_mut() else {
                        at = (at + 1) % addrs.len();
                        c = SyncConnection::connect(&addrs[at], &Options::default()).ok();
                        std::thread::sleep(std::time::Duration::from_millis(50));
                        continue;
                    };
                    let (phone, who) = calls.next_call();
                    match conn.call("Vote", vec![Value::Integer(phone), Value::Integer(who), Value::Integer(2)]) {
                        Ok(r) => {
                            if int(&r.tables[0].rows[0][0]) == VOTE_ACCEPTED {
                                accepted.fetch_add(1, Ordering::SeqCst);
                            }
                        }
                        Err(e)
                            if tolerant
                                && matches!(
                                    e.code(),
                                    ErrorCode::Unavailable | ErrorCode::OutcomeUnknown | ErrorCode::IoError
                                ) =>
                        {
                            unknown.fetch_add(1, Ordering::SeqCst);
                            c = None;
                        }
                        Err(e) => {
                            failures.lock().unwrap().push(format!("{e} ({:?})", e.code()));
                            return;
                        }
                    }
                }
            })
        })
        .collect();
    Voters { threads, accepted, unknown, failures, stop }
}

impl Voters {
    /// (votes accepted, calls whose outcome is unknown).
    pub fn finish(self) -> (i64, i64) {
        self.stop.store(true, Ordering::SeqCst);
        for t in self.threads {
            t.join().unwrap();
        }
        let failures = self.failures.lock().unwrap();
        assert!(failures.is_empty(), "votes failed: {failures:?}");
        (self.accepted.load(Ordering::SeqCst) as i64, self.unknown.load(Ordering::SeqCst) as i64)
    }
}

/// The single number a query returns (a SUM of no rows, NULL, as 0).
fn scalar(addr: &str, sql: &str) -> i64 {
    let r = connect(addr).execute(sql, vec![]).unwrap_or_else(|e| panic!("{sql}: {e}"));
    match &r.tables[0].rows[0][0] {
        Value::Null => 0,
        v => int(v),
    }
}

/// Votes counted three ways: rows, the per-phone view, the results board's view.
pub fn vote_totals(addr: &str) -> [i64; 3] {
    [
        scalar(addr, "SELECT COUNT(*) FROM votes"),
        scalar(addr, "SELECT SUM(num_votes) FROM v_votes_by_phone_number"),
        scalar(addr, "SELECT SUM(num_votes) FROM v_votes_by_contestant_number_state"),
    ]
}
