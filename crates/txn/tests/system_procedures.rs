//! System procedures answered from the schema.

mod common;

use common::*;
use joule_common::{ErrorCode, Value};

#[test]
fn catalog_explain_information_and_partition_keys() {
    let host = host(3);
    let mut c = host.client();
    exec(&mut c, "CREATE TABLE t (id BIGINT NOT NULL PRIMARY KEY, name VARCHAR(10) DEFAULT 'x'); PARTITION TABLE t ON COLUMN id; CREATE TABLE r (k INT, UNIQUE (k))");
    exec(&mut c, "CREATE PROCEDURE GetT PARTITION ON TABLE t COLUMN id AS SELECT name FROM t WHERE id = ?");

    let r = ok(c.call("@Explain", vec![text("SELECT name FROM t WHERE id = 5")]));
    let plan = format!("{:?}", r.results[0].rows);
    assert!(plan.contains("SINGLE PARTITION"), "{plan}");
    let r = ok(c.call("@ExplainProc", vec![text("GetT")]));
    assert_eq!(r.results[0].rows[0][0], text("SELECT name FROM t WHERE id = ?"));
    assert_eq!(fails(c.call("@ExplainProc", vec![text("Nope")])), ErrorCode::UndefinedProcedure);
    assert_eq!(fails(c.call("@Explain", vec![])), ErrorCode::WrongParameterCount);

    let catalog = |c: &mut joule_txn::Client, s: &str| ok(c.call("@SystemCatalog", vec![text(s)])).results.remove(0);
    let tables = catalog(&mut c, "TABLES");
    assert_eq!(tables.columns[2].name, "TABLE_NAME");
    let t_row = tables.rows.iter().find(|r| r[2] == text("T")).unwrap();
    assert_eq!(t_row[4], text("{\"partitionColumn\":\"ID\"}"));
    let columns = catalog(&mut c, "COLUMNS");
    assert_eq!(columns.rows.iter().filter(|r| r[2] == text("T")).count(), 2);
    let name_col = columns.rows.iter().find(|r| r[3] == text("NAME")).unwrap();
    assert_eq!((name_col[5].clone(), name_col[6].clone(), name_col[12].clone()), (text("VARCHAR"), int(10), text("x")));
    let pks = catalog(&mut c, "PRIMARYKEYS");
    assert_eq!(pks.rows.len(), 1);
    assert_eq!(pks.rows[0][3], text("ID"));
    assert_eq!(catalog(&mut c, "INDEXINFO").rows.len(), 2);
    let procs = catalog(&mut c, "PROCEDURES");
    let names: Vec<&Value> = procs.rows.iter().map(|r| &r[2]).collect();
    assert!(names.contains(&&text("GetT")) && names.contains(&&text("T.insert")), "{names:?}");
    let params = catalog(&mut c, "PROCEDURECOLUMNS");
    let get_t: Vec<_> = params.rows.iter().filter(|r| r[2] == text("GetT")).collect();
    assert_eq!(get_t.len(), 1);
    assert_eq!(get_t[0][8], text("PARTITION_PARAMETER"));
    assert_eq!(fails(c.call("@SystemCatalog", vec![text("NOPE")])), ErrorCode::InvalidArgument);

    let info = ok(c.call("@SystemInformation", vec![])).results.remove(0);
    assert!(info.rows.iter().any(|r| r[1] == text("PARTITIONS") && r[2] == text("3")));
    let deployment = ok(c.call("@SystemInformation", vec![text("DEPLOYMENT")])).results.remove(0);
    assert!(deployment.rows.iter().any(|r| r[0] == text("sitesperhost")));

    // One key per partition, and each key really lives there.
    let h = host.hashinator();
    for kind in ["INTEGER", "STRING", "VARBINARY"] {
        let keys = ok(c.call("@GetPartitionKeys", vec![text(kind)])).results.remove(0);
        assert_eq!(keys.rows.len(), 3, "{kind}");
        for row in &keys.rows {
            let Value::Integer(p) = row[0] else { panic!() };
            assert_eq!(h.partition_for(&row[1]).unwrap() as i64, p, "{kind}");
        }
    }
    assert_eq!(fails(c.call("@GetPartitionKeys", vec![text("FLOAT")])), ErrorCode::InvalidArgument);
    ok(c.call("@Quiesce", vec![]));
}

#[test]
fn swap_tables_exchanges_rows_on_every_partition() {
    let host = host(3);
    let mut c = host.client();
    exec(
        &mut c,
        "CREATE TABLE cur (id BIGINT NOT NULL PRIMARY KEY, v VARCHAR(5)); PARTITION TABLE cur ON COLUMN id; \
         CREATE TABLE nxt (id BIGINT NOT NULL PRIMARY KEY, v VARCHAR(5)); PARTITION TABLE nxt ON COLUMN id; \
         CREATE TABLE other (id BIGINT NOT NULL PRIMARY KEY, v VARCHAR(6)); PARTITION TABLE other ON COLUMN id",
    );
    for i in 0..30 {
        ok(c.call("CUR.insert", vec![int(i), text("old")]));
    }
    for i in 100..110 {
        ok(c.call("NXT.insert", vec![int(i), text("new")]));
    }
    ok(c.call("@SwapTables", vec![text("CUR"), text("NXT")]));
    assert_eq!(scalar(&mut c, "SELECT COUNT(*) FROM cur"), int(10));
    assert_eq!(scalar(&mut c, "SELECT COUNT(*) FROM nxt"), int(30));
    // Indexes moved with the rows: key lookups on each partition find them.
    let r = ok(c.call("CUR.select", vec![int(105)]));
    assert_eq!(r.results[0].rows, vec![vec![int(105), text("new")]]);
    assert_eq!(ok(c.call("NXT.select", vec![int(7)])).results[0].rows.len(), 1);
    assert_eq!(misplaced(&mut c), 0);
    // The SQL form, and what cannot be swapped.
    exec(&mut c, "SWAP TABLE cur WITH nxt");
    assert_eq!(scalar(&mut c, "SELECT COUNT(*) FROM cur"), int(30));
    assert_eq!(fails(c.call("@SwapTables", vec![text("CUR"), text("OTHER")])), ErrorCode::InvalidSchemaDefinition);
    assert_eq!(fails(c.call("@SwapTables", vec![text("CUR"), text("CUR")])), ErrorCode::InvalidArgument);
    assert_eq!(fails(c.call("@SwapTables", vec![text("CUR"), text("NOPE")])), ErrorCode::UndefinedTable);
    exec(&mut c, "CREATE VIEW per_v (v, n) AS SELECT v, COUNT(*) FROM cur GROUP BY v");
    assert_eq!(fails(c.call("@SwapTables", vec![text("CUR"), text("NXT")])), ErrorCode::DependentObjectsExist);
    assert_eq!(scalar(&mut c, "SELECT COUNT(*) FROM cur"), int(30));
}
