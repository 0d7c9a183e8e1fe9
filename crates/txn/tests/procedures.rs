//! Stored procedures: DDL procedures, native procedures, CRUD procedures,
//! their errors, and atomicity when they fail part way.

mod common;

use common::*;
use joule_common::{ErrorCode, Result, Value};
use joule_txn::procedure::param_i64;
use joule_txn::{ProcedureContext, ProcedureRegistry, ResultTable, Status};

const SCHEMA: &str = "CREATE TABLE acct (id BIGINT NOT NULL PRIMARY KEY, owner VARCHAR(20), bal BIGINT NOT NULL); \
                      PARTITION TABLE acct ON COLUMN id; \
                      CREATE TABLE rates (cur VARCHAR(3) NOT NULL PRIMARY KEY, rate FLOAT)";

/// Inserts accounts `first..first+n`, then aborts with app status 7 when
/// asked to.
struct OpenThenMaybeAbort;

impl joule_txn::Procedure for OpenThenMaybeAbort {
    fn statements(&self) -> &[&'static str] {
        &["INSERT INTO acct VALUES (?, 'x', 0)"]
    }

    fn run(&self, ctx: &mut ProcedureContext<'_>, params: &[Value]) -> Result<Vec<ResultTable>> {
        let (first, n, abort) = (param_i64(params, 0)?, param_i64(params, 1)?, param_i64(params, 2)?);
        for id in first..first + n {
            ctx.queue(0, [Value::Integer(id)]);
        }
        ctx.execute()?;
        if abort == 1 {
            return Err(ctx.abort(7, "changed my mind"));
        }
        ctx.set_app_status(3, Some("opened".into()));
        Ok(vec![ResultTable::scalar(n)])
    }
}

/// Queues a statement with the wrong parameter count, or a bad index.
struct Misuse;

impl joule_txn::Procedure for Misuse {
    fn statements(&self) -> &[&'static str] {
        &["SELECT bal FROM acct WHERE id = ?"]
    }

    fn run(&self, ctx: &mut ProcedureContext<'_>, params: &[Value]) -> Result<Vec<ResultTable>> {
        match param_i64(params, 0)? {
            0 => ctx.queue(0, []),
            _ => ctx.queue(5, [Value::Integer(1)]),
        }
        ctx.execute()
    }
}

fn registry() -> ProcedureRegistry {
    let mut r = ProcedureRegistry::new();
    r.register("test.Open", OpenThenMaybeAbort).register("test.Misuse", Misuse);
    r
}

#[test]
fn ddl_procedures_single_statement_and_blocks() {
    let host = host(3);
    let mut c = host.client();
    exec(&mut c, SCHEMA);
    exec(
        &mut c,
        "CREATE PROCEDURE Deposit PARTITION ON TABLE acct COLUMN id PARAMETER 1 AS UPDATE acct SET bal = bal + ? WHERE id = ?; \
         CREATE PROCEDURE OpenAndFund PARTITION ON TABLE acct COLUMN id AS BEGIN \
           INSERT INTO acct VALUES (?, ?, 0); \
           UPDATE acct SET bal = bal + ? WHERE id = ?; \
           SELECT bal FROM acct WHERE id = ?; END; \
         CREATE PROCEDURE Total AS SELECT COUNT(*), SUM(bal) FROM acct",
    );
    let r = ok(c.call("OpenAndFund", vec![int(5), text("ann"), int(40), int(5), int(5)]));
    assert_eq!(r.results.len(), 3, "one result per statement");
    assert_eq!(r.results[2].rows, vec![vec![int(40)]]);
    assert!(!was_multi_partition(&r));
    let r = ok(c.call("Deposit", vec![int(2), int(5)]));
    assert_eq!(r.results[0].as_i64(), Some(1));
    let r = ok(c.call("Total", vec![]));
    assert!(was_multi_partition(&r));
    assert_eq!(r.results[0].rows, vec![vec![int(1), int(42)]]);
    // Names are case-sensitive, with a case-insensitive fallback.
    ok(c.call("total", vec![]));
    // Wrong parameter counts and unknown procedures are clean errors.
    assert_eq!(fails(c.call("Deposit", vec![int(2)])), ErrorCode::WrongParameterCount);
    assert_eq!(fails(c.call("OpenAndFund", vec![int(6)])), ErrorCode::WrongParameterCount);
    assert_eq!(fails(c.call("NoSuchProc", vec![])), ErrorCode::UndefinedProcedure);
    assert_eq!(fails(c.call("@NoSuchSysProc", vec![])), ErrorCode::UndefinedProcedure);
    // A failing statement in a block leaves nothing of the block behind.
    assert_eq!(
        fails(c.call("OpenAndFund", vec![int(5), text("dup"), int(1), int(5), int(5)])),
        ErrorCode::UniqueViolation
    );
    assert_eq!(
        fails(c.call("OpenAndFund", vec![int(8), text("way too long a name for it"), int(1), int(8), int(8)])),
        ErrorCode::StringTooLong
    );
    assert_eq!(query(&mut c, "SELECT id, bal FROM acct"), vec![vec![int(5), int(42)]]);
}

#[test]
fn procedure_ddl_is_checked_when_created() {
    let host = host(2);
    let mut c = host.client();
    exec(&mut c, SCHEMA);
    let bad = [
        ("CREATE PROCEDURE p AS SELECT * FROM nowhere", ErrorCode::UndefinedTable),
        ("CREATE PROCEDURE p AS SELEC 1", ErrorCode::SyntaxError),
        ("CREATE PROCEDURE p PARTITION ON TABLE acct COLUMN owner AS SELECT 1", ErrorCode::InvalidSchemaDefinition),
        ("CREATE PROCEDURE p PARTITION ON TABLE rates COLUMN cur AS SELECT 1", ErrorCode::InvalidSchemaDefinition),
        (
            "CREATE PROCEDURE p PARTITION ON TABLE acct COLUMN id PARAMETER 3 AS SELECT * FROM acct WHERE id = ?",
            ErrorCode::InvalidSchemaDefinition,
        ),
        // A single-partition procedure cannot write a replicated table.
        (
            "CREATE PROCEDURE p PARTITION ON TABLE acct COLUMN id AS DELETE FROM rates WHERE cur = ?",
            ErrorCode::FeatureNotSupported,
        ),
        ("CREATE PROCEDURE p AS CREATE TABLE x (a INT)", ErrorCode::FeatureNotSupported),
        ("CREATE PROCEDURE FROM CLASS no.such.Class", ErrorCode::UndefinedObject),
        ("CREATE PROCEDURE @Mine AS SELECT 1", ErrorCode::InvalidSchemaDefinition),
    ];
    for (sql, code) in bad {
        assert_eq!(fails(c.adhoc(sql, vec![])), code, "{sql}");
    }
    // None of them left a procedure behind.
    assert_eq!(fails(c.call("p", vec![])), ErrorCode::UndefinedProcedure);
    exec(&mut c, "CREATE PROCEDURE p AS SELECT COUNT(*) FROM rates");
    assert_eq!(fails(c.adhoc("CREATE PROCEDURE p AS SELECT 1", vec![])), ErrorCode::DuplicateObject);
    // A table a procedure reads cannot be dropped from under it.
    assert_eq!(fails(c.adhoc("DROP TABLE rates", vec![])), ErrorCode::DependentObjectsExist);
    ok(c.call("p", vec![]));
    exec(&mut c, "DROP PROCEDURE p; DROP TABLE rates");
    assert_eq!(fails(c.call("p", vec![])), ErrorCode::UndefinedProcedure);
    exec(&mut c, "DROP PROCEDURE IF EXISTS p");
    assert_eq!(fails(c.adhoc("DROP PROCEDURE p", vec![])), ErrorCode::UndefinedProcedure);
    // PARTITION PROCEDURE makes an existing procedure single-partition.
    exec(&mut c, "CREATE PROCEDURE Get AS SELECT bal FROM acct WHERE id = ?");
    exec(&mut c, "INSERT INTO acct VALUES (1, 'a', 10)");
    assert!(was_multi_partition(&ok(c.call("Get", vec![int(1)]))));
    exec(&mut c, "PARTITION PROCEDURE Get ON TABLE acct COLUMN id");
    let r = ok(c.call("Get", vec![int(1)]));
    assert!(!was_multi_partition(&r));
    assert_eq!(r.results[0].rows, vec![vec![int(10)]]);
}

#[test]
fn native_procedures_abort_and_misuse() {
    let host = host_with(2, registry());
    let mut c = host.client();
    exec(&mut c, SCHEMA);
    exec(
        &mut c,
        "CREATE PROCEDURE OpenMany FROM CLASS test.Open; \
         CREATE PROCEDURE PARTITION ON TABLE acct COLUMN id FROM CLASS test.Misuse",
    );
    // Multi-partition: rows land on both partitions, then the abort takes
    // them all back.
    let r = c.call("OpenMany", vec![int(100), int(20), int(1)]);
    assert_eq!(r.status, Status::UserAbort);
    assert_eq!(r.app_status, 7);
    assert_eq!(r.app_status_string.as_deref(), Some("changed my mind"));
    assert_eq!(r.error.as_ref().unwrap().code(), ErrorCode::ProcedureAborted);
    assert_eq!(scalar(&mut c, "SELECT COUNT(*) FROM acct"), int(0));
    let r = ok(c.call("OpenMany", vec![int(100), int(20), int(0)]));
    assert_eq!((r.app_status, r.app_status_string.as_deref()), (3, Some("opened")));
    assert_eq!(scalar(&mut c, "SELECT COUNT(*) FROM acct"), int(20));
    assert_eq!(misplaced(&mut c), 0);
    // Misuse of the batch API is an error, not a panic.
    assert_eq!(fails(c.call("Misuse", vec![int(0)])), ErrorCode::WrongParameterCount);
    assert_eq!(fails(c.call("Misuse", vec![int(1)])), ErrorCode::InvalidArgument);
}

/// A single-partition procedure that writes a row another partition owns.
struct WriteElsewhere;

impl joule_txn::Procedure for WriteElsewhere {
    fn statements(&self) -> &[&'static str] {
        &["INSERT INTO acct VALUES (?, 'x', 0)", "UPDATE acct SET bal = 1 WHERE id = ?"]
    }

    fn run(&self, ctx: &mut ProcedureContext<'_>, params: &[Value]) -> Result<Vec<ResultTable>> {
        let stmt = param_i64(params, 1)? as usize;
        ctx.queue(0, [params[0].clone()]);
        ctx.queue(stmt, [params[2].clone()]);
        ctx.execute()
    }
}

#[test]
fn mispartitioned_single_partition_work_fails_clearly() {
    let mut registry = ProcedureRegistry::new();
    registry.register("test.WriteElsewhere", WriteElsewhere);
    let host = host_with(4, registry);
    let mut c = host.client();
    exec(&mut c, SCHEMA);
    exec(&mut c, "CREATE PROCEDURE PARTITION ON TABLE acct COLUMN id FROM CLASS test.WriteElsewhere");
    let h = host.hashinator();
    let home = h.partition_for(&int(1)).unwrap();
    let away = (2..1000).find(|k| h.partition_for(&int(*k)).unwrap() != home).unwrap();
    let same = (2..1000).find(|k| h.partition_for(&int(*k)).unwrap() == home).unwrap();
    // Inserting a row of another partition, or pinning a statement to one.
    for stmt in [0, 1] {
        let r = c.call("WriteElsewhere", vec![int(1), int(stmt), int(away)]);
        let e = r.error.clone().expect("fails");
        assert_eq!(e.code(), ErrorCode::Mispartitioned, "{e}");
        assert!(e.message().contains("mispartitioned"), "{e}");
    }
    // Nothing of the failed transactions remains; the same work in the
    // right partition succeeds.
    assert_eq!(scalar(&mut c, "SELECT COUNT(*) FROM acct"), int(0));
    ok(c.call("WriteElsewhere", vec![int(1), int(0), int(same)]));
    assert_eq!(scalar(&mut c, "SELECT COUNT(*) FROM acct"), int(2));
    assert_eq!(misplaced(&mut c), 0);
}

#[test]
fn crud_procedures_follow_voltdb_names_and_order() {
    let host = host(3);
    let mut c = host.client();
    exec(&mut c, SCHEMA);
    exec(&mut c, "CREATE TABLE nokey (a INT)");
    ok(c.call("ACCT.insert", vec![int(1), text("ann"), int(10)]));
    ok(c.call("ACCT.insert", vec![int(2), text("bob"), int(20)]));
    assert_eq!(fails(c.call("ACCT.insert", vec![int(1), text("dup"), int(0)])), ErrorCode::UniqueViolation);
    // update: every column, then the key.
    let r = ok(c.call("ACCT.update", vec![int(1), text("ann2"), int(11), int(1)]));
    assert_eq!(r.results[0].as_i64(), Some(1));
    assert!(!was_multi_partition(&r));
    ok(c.call("ACCT.upsert", vec![int(2), text("bob2"), int(21)]));
    ok(c.call("ACCT.upsert", vec![int(3), text("cy"), int(30)]));
    let r = ok(c.call("ACCT.select", vec![int(2)]));
    assert_eq!(r.results[0].rows, vec![vec![int(2), text("bob2"), int(21)]]);
    let r = ok(c.call("ACCT.delete", vec![int(3)]));
    assert_eq!(r.results[0].as_i64(), Some(1));
    assert_eq!(
        query(&mut c, "SELECT id, owner, bal FROM acct ORDER BY id"),
        vec![vec![int(1), text("ann2"), int(11)], vec![int(2), text("bob2"), int(21)],]
    );
    // Replicated tables get multi-partition CRUD procedures.
    let r = ok(c.call("RATES.insert", vec![text("EUR"), Value::Float(1.1)]));
    assert!(was_multi_partition(&r));
    for _ in 0..4 {
        // Any partition answers a replicated read the same.
        assert_eq!(query(&mut c, "SELECT cur FROM rates"), vec![vec![text("EUR")]]);
    }
    // Tables without a primary key have none.
    assert_eq!(fails(c.call("NOKEY.insert", vec![int(1)])), ErrorCode::UndefinedProcedure);
    // The partition parameter is cast to the column's type.
    let r = ok(c.call("ACCT.select", vec![text("2")]));
    assert_eq!(r.results[0].rows.len(), 1);
    assert_eq!(fails(c.call("ACCT.select", vec![text("two")])), ErrorCode::InvalidTextRepresentation);
}

#[test]
fn procedures_survive_schema_changes() {
    let host = host(2);
    let mut c = host.client();
    exec(&mut c, SCHEMA);
    exec(&mut c, "CREATE PROCEDURE Get PARTITION ON TABLE acct COLUMN id AS SELECT * FROM acct WHERE id = ?");
    ok(c.call("ACCT.insert", vec![int(1), text("ann"), int(10)]));
    // Adding a column re-plans the procedures: SELECT * now has four.
    exec(&mut c, "ALTER TABLE acct ADD COLUMN note VARCHAR(10) DEFAULT 'n'");
    let r = ok(c.call("Get", vec![int(1)]));
    assert_eq!(r.results[0].rows, vec![vec![int(1), text("ann"), int(10), text("n")]]);
    ok(c.call("ACCT.insert", vec![int(2), text("bob"), int(20), text("x")]));
    assert_eq!(fails(c.call("ACCT.insert", vec![int(3), text("cy"), int(30)])), ErrorCode::WrongParameterCount);
}
