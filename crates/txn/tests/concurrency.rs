//! Serializability under concurrency: many client threads move money
//! between accounts with single-partition transfers (both accounts on one
//! partition) and multi-partition transfers (accounts on different
//! partitions), some of which abort for lack of funds, while an auditor
//! checks after every step that the total never changes and no balance is
//! negative.

mod common;

use common::*;
use joule_common::{Result, Value};
use joule_txn::procedure::param_i64;
use joule_txn::{ProcedureContext, ProcedureRegistry, ResultTable, Status};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

const ACCOUNTS: i64 = 64;
const START: i64 = 100;

/// `Transfer(from, to, amount)`: reads both balances, aborts (app status 1)
/// if `from` cannot pay, else moves the money. Bound twice: partitioned on
/// `from` for same-partition pairs, and multi-partition.
struct Transfer;

impl joule_txn::Procedure for Transfer {
    fn statements(&self) -> &[&'static str] {
        &["SELECT bal FROM acct WHERE id = ?", "UPDATE acct SET bal = bal + ? WHERE id = ?"]
    }

    fn run(&self, ctx: &mut ProcedureContext<'_>, params: &[Value]) -> Result<Vec<ResultTable>> {
        let (from, to, amount) = (param_i64(params, 0)?, param_i64(params, 1)?, param_i64(params, 2)?);
        ctx.queue(0, [Value::Integer(from)]);
        ctx.queue(0, [Value::Integer(to)]);
        let balances = ctx.execute()?;
        let have = balances[0].as_i64().unwrap_or(0);
        if balances[1].rows.is_empty() {
            return Err(ctx.abort(2, "no such account"));
        }
        // Take the money first: the abort below must undo this write.
        ctx.queue(1, [Value::Integer(-amount), Value::Integer(from)]);
        ctx.execute()?;
        if have < amount {
            return Err(ctx.abort(1, "insufficient funds"));
        }
        ctx.queue(1, [Value::Integer(amount), Value::Integer(to)]);
        ctx.execute()?;
        Ok(vec![])
    }
}

#[test]
fn transfers_keep_the_total_and_no_balance_goes_negative() {
    let mut registry = ProcedureRegistry::new();
    registry.register("bank.Transfer", Transfer);
    let host = Arc::new(host_with(3, registry));
    let mut c = host.client();
    exec(
        &mut c,
        "CREATE TABLE acct (id BIGINT NOT NULL PRIMARY KEY, bal BIGINT NOT NULL); PARTITION TABLE acct ON COLUMN id",
    );
    exec(
        &mut c,
        "CREATE PROCEDURE LocalTransfer PARTITION ON TABLE acct COLUMN id FROM CLASS bank.Transfer; \
         CREATE PROCEDURE GlobalTransfer FROM CLASS bank.Transfer; \
         CREATE PROCEDURE Audit AS SELECT SUM(bal), MIN(bal), COUNT(*) FROM acct",
    );
    for id in 0..ACCOUNTS {
        ok(c.call("ACCT.insert", vec![int(id), int(START)]));
    }
    let h = host.hashinator();
    let owner = move |id: i64| h.partition_for(&int(id)).unwrap();

    let stop = Arc::new(AtomicBool::new(false));
    let committed = Arc::new(AtomicU64::new(0));
    let aborted = Arc::new(AtomicU64::new(0));
    let mut workers = Vec::new();
    for t in 0..6u64 {
        let host = host.clone();
        let (stop, committed, aborted) = (stop.clone(), committed.clone(), aborted.clone());
        let owner = owner.clone();
        workers.push(std::thread::spawn(move || {
            let mut c = host.client();
            let mut state = t * 7919 + 1;
            let mut next = move || {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                state
            };
            for _ in 0..1500 {
                let from = (next() % ACCOUNTS as u64) as i64;
                let to = (next() % ACCOUNTS as u64) as i64;
                let amount = (next() % 150) as i64 + 1;
                let name = if owner(from) == owner(to) { "LocalTransfer" } else { "GlobalTransfer" };
                let r = c.call(name, vec![int(from), int(to), int(amount)]);
                match r.status {
                    Status::Success => committed.fetch_add(1, Ordering::Relaxed),
                    Status::UserAbort => {
                        assert_eq!(r.app_status, 1, "{r:?}");
                        aborted.fetch_add(1, Ordering::Relaxed)
                    }
                    _ => panic!("{name} failed: {r:?}"),
                };
                if stop.load(Ordering::Relaxed) {
                    break;
                }
            }
        }));
    }
    // The auditor: every snapshot it sees is a serial point in time.
    let mut audits = 0;
    while workers.iter().any(|w| !w.is_finished()) {
        let r = ok(c.call("Audit", vec![]));
        let row = &r.results[0].rows[0];
        assert_eq!(row[0], int(ACCOUNTS * START), "the total changed: {row:?}");
        assert!(matches!(row[1], Value::Integer(m) if m >= 0), "a balance went negative: {row:?}");
        assert_eq!(row[2], int(ACCOUNTS));
        audits += 1;
    }
    stop.store(true, Ordering::Relaxed);
    for w in workers {
        w.join().expect("worker");
    }
    let (committed, aborted) = (committed.load(Ordering::Relaxed), aborted.load(Ordering::Relaxed));
    assert!(committed > 100 && aborted > 0, "committed {committed}, aborted {aborted}");
    assert!(audits > 0);
    assert_eq!(scalar(&mut c, "SELECT SUM(bal) FROM acct"), int(ACCOUNTS * START));
    assert_eq!(scalar(&mut c, "SELECT COUNT(*) FROM acct WHERE bal < 0"), int(0));
    assert_eq!(misplaced(&mut c), 0);
}
