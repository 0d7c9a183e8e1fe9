//! Atomicity: a procedure that fails or aborts part way leaves nothing of
//! itself behind — on one partition or on all of them, views included.

mod common;

use common::*;
use joule_common::{ErrorCode, Result, Value};
use joule_txn::procedure::param_i64;
use joule_txn::{ProcedureContext, ProcedureRegistry, ResultTable, Status};

/// Writes in a first batch, then either aborts (mode 0), runs a statement
/// that violates a constraint (mode 1), or swallows that error and returns
/// success (mode 2).
struct WriteThenFail;

impl joule_txn::Procedure for WriteThenFail {
    fn statements(&self) -> &[&'static str] {
        &["INSERT INTO t VALUES (?, ?)", "UPDATE t SET v = v + 1000 WHERE k = ?", "INSERT INTO t VALUES (?, 0)"]
    }

    fn run(&self, ctx: &mut ProcedureContext<'_>, params: &[Value]) -> Result<Vec<ResultTable>> {
        let (k, mode) = (param_i64(params, 0)?, param_i64(params, 1)?);
        ctx.queue(0, [Value::Integer(k + 1), Value::Integer(1)]);
        ctx.queue(1, [Value::Integer(k)]);
        ctx.execute()?;
        if mode == 0 {
            return Err(ctx.abort(9, "stop"));
        }
        // Inserting key `k` again violates the primary key.
        ctx.queue(2, [Value::Integer(k)]);
        let r = ctx.execute();
        if mode == 2 {
            assert!(r.is_err());
            return Ok(vec![]);
        }
        r
    }
}

fn setup(sites: usize) -> (joule_txn::Host, joule_txn::Client) {
    let mut registry = ProcedureRegistry::new();
    registry.register("test.WriteThenFail", WriteThenFail);
    let host = host_with(sites, registry);
    let mut c = host.client();
    exec(&mut c, "CREATE TABLE t (k BIGINT NOT NULL PRIMARY KEY, v BIGINT); PARTITION TABLE t ON COLUMN k");
    exec(&mut c, "CREATE VIEW per_v (v, n) AS SELECT v, COUNT(*) FROM t GROUP BY v");
    exec(
        &mut c,
        "CREATE PROCEDURE MpWrite FROM CLASS test.WriteThenFail; \
         CREATE PROCEDURE PARTITION ON TABLE t COLUMN k FROM CLASS test.WriteThenFail",
    );
    (host, c)
}

fn snapshot(c: &mut joule_txn::Client) -> (Vec<joule_common::Row>, Vec<joule_common::Row>) {
    (query(c, "SELECT k, v FROM t ORDER BY k"), query(c, "SELECT v, n FROM per_v ORDER BY v"))
}

#[test]
fn failures_part_way_leave_no_trace() {
    for sites in [1, 3] {
        let (host, mut c) = setup(sites);
        let h = host.hashinator();
        // Keys whose neighbour (k + 1) lives on the same partition, for the
        // single-partition runs.
        let keys: Vec<i64> = (0..2000)
            .step_by(10)
            .filter(|k| h.partition_for(&int(*k)).unwrap() == h.partition_for(&int(k + 1)).unwrap())
            .take(3)
            .collect();
        for &k in &keys {
            exec(&mut c, &format!("INSERT INTO t VALUES ({k}, 5)"));
        }
        let before = snapshot(&mut c);
        for proc in ["WriteThenFail", "MpWrite"] {
            let k = keys[0];
            let r = c.call(proc, vec![int(k), int(0)]);
            assert_eq!((r.status, r.app_status), (Status::UserAbort, 9), "{proc}: {r:?}");
            assert_eq!(snapshot(&mut c), before, "{proc} abort");
            let r = c.call(proc, vec![int(k), int(1)]);
            assert_eq!(fails(r), ErrorCode::UniqueViolation, "{proc}");
            assert_eq!(snapshot(&mut c), before, "{proc} constraint violation");
            // Swallowing the error does not save the transaction.
            let r = c.call(proc, vec![int(k), int(2)]);
            assert_eq!(fails(r), ErrorCode::UniqueViolation, "{proc}");
            assert_eq!(snapshot(&mut c), before, "{proc} swallowed error");
        }
        // And the same work without the failure commits.
        ok(c.adhoc(&format!("INSERT INTO t VALUES ({}, 1)", keys[1] + 1), vec![]));
        assert_ne!(snapshot(&mut c), before);
        assert_eq!(misplaced(&mut c), 0);
    }
}

#[test]
fn multi_partition_failure_on_one_partition_rolls_back_all() {
    let (host, mut c) = setup(4);
    let h = host.hashinator();
    // One row per partition; then an INSERT ... SELECT that copies them all
    // but collides on exactly one partition.
    let firsts: Vec<i64> =
        (0..4u32).map(|p| (0..1000).find(|k| h.partition_for(&int(*k)).unwrap() == p).unwrap()).collect();
    for k in &firsts {
        exec(&mut c, &format!("INSERT INTO t VALUES ({k}, {k})"));
    }
    exec(&mut c, &format!("INSERT INTO t VALUES ({}, 0)", firsts[2] + 1000));
    let before = snapshot(&mut c);
    let r = c.adhoc("INSERT INTO t SELECT k + 1000, v FROM t WHERE k < 1000", vec![]);
    assert_eq!(fails(r), ErrorCode::UniqueViolation);
    assert_eq!(snapshot(&mut c), before);
    let r = c.adhoc("UPDATE t SET v = v / (k - ?)", vec![int(firsts[3])]);
    assert_eq!(fails(r), ErrorCode::DivisionByZero);
    assert_eq!(snapshot(&mut c), before);
}

/// Writes, then panics.
struct Panics;

impl joule_txn::Procedure for Panics {
    fn statements(&self) -> &[&'static str] {
        &["INSERT INTO t VALUES (?, 1)"]
    }

    fn run(&self, ctx: &mut ProcedureContext<'_>, params: &[Value]) -> Result<Vec<ResultTable>> {
        ctx.queue(0, [params[0].clone()]);
        ctx.execute()?;
        let empty: Vec<i64> = Vec::new();
        Ok(vec![ResultTable::scalar(empty[params.len()])])
    }
}

#[test]
fn a_panicking_procedure_fails_alone() {
    let mut registry = ProcedureRegistry::new();
    registry.register("test.Panics", Panics);
    let host = host_with(2, registry);
    let mut c = host.client();
    exec(&mut c, "CREATE TABLE t (k BIGINT NOT NULL PRIMARY KEY, v BIGINT); PARTITION TABLE t ON COLUMN k");
    exec(&mut c, "CREATE PROCEDURE SpPanic PARTITION ON TABLE t COLUMN k FROM CLASS test.Panics; CREATE PROCEDURE MpPanic FROM CLASS test.Panics");
    for name in ["SpPanic", "MpPanic"] {
        let r = c.call(name, vec![int(5)]);
        assert_eq!(r.status, Status::UnexpectedFailure, "{r:?}");
        assert!(r.error.unwrap().message().contains("panicked"));
    }
    // Nothing remains, and every partition still serves.
    assert_eq!(scalar(&mut c, "SELECT COUNT(*) FROM t"), int(0));
    for k in 0..20 {
        ok(c.call("T.insert", vec![int(k), int(k)]));
    }
    assert_eq!(scalar(&mut c, "SELECT COUNT(*) FROM t"), int(20));
}
